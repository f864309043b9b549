//! Tokens: HS256 when configured, RS256/ES256 through a JWKS served by a local HTTP server,
//! and the forgeries that must fail.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::routing::get;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;

use crate::helpers::*;

/// Serves `tests/fixtures/jwks.json` on a local port; counts fetches.
async fn jwks_server() -> (String, Arc<AtomicUsize>) {
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    let jwks: serde_json::Value = serde_json::from_slice(&fixture("jwks.json")).unwrap();
    let router = axum::Router::new().route(
        "/.well-known/jwks.json",
        get(move || {
            counter.fetch_add(1, Ordering::SeqCst);
            let body = jwks.clone();
            async move { axum::Json(body) }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!(
        "http://{}/.well-known/jwks.json",
        listener.local_addr().unwrap()
    );
    tokio::spawn(async move { axum::serve(listener, router).await });
    (url, hits)
}

async fn app_with_jwks(extra: &[(&str, &str)]) -> (TestApp, Arc<AtomicUsize>) {
    let (url, hits) = jwks_server().await;
    let extra: Vec<(String, String)> = extra
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let app = TestApp::spawn_with(move |vars| {
        vars.insert("JWT_JWKS_URL".into(), url);
        vars.extend(extra);
    })
    .await;
    (app, hits)
}

fn rsa(name: &str) -> EncodingKey {
    EncodingKey::from_rsa_pem(&fixture(name)).unwrap()
}

fn with_kid(alg: Algorithm, kid: &str) -> Header {
    let mut header = Header::new(alg);
    header.kid = Some(kid.to_string());
    header
}

fn claims(sub: &str) -> serde_json::Value {
    json!({"sub": sub, "exp": now() + 600})
}

/// The tenant endpoint as `token`: 200 for a member, 401 for a bad token.
async fn tenant_status(app: &TestApp, tenant: &TestTenant, token: &str) -> u16 {
    app.get("/api/v1/tenant")
        .token(token)
        .tenant(tenant.id)
        .send()
        .await
        .status
        .as_u16()
}

#[tokio::test]
async fn rs256_and_es256_tokens_verify_through_the_jwks() {
    let (app, _) = app_with_jwks(&[]).await;
    let tenant = app.tenant().await;
    let rs = sign(
        with_kid(Algorithm::RS256, "rsa-a"),
        &claims(&tenant.owner),
        &rsa("rsa_a.pem"),
    );
    assert_eq!(tenant_status(&app, &tenant, &rs).await, 200);
    let ec_key = EncodingKey::from_ec_pem(&fixture("ec_a.pem")).unwrap();
    let es = sign(
        with_kid(Algorithm::ES256, "ec-a"),
        &claims(&tenant.owner),
        &ec_key,
    );
    assert_eq!(tenant_status(&app, &tenant, &es).await, 200);
}

#[tokio::test]
async fn forged_tokens_are_refused() {
    let (app, _) = app_with_jwks(&[]).await;
    let tenant = app.tenant().await;
    let sub = &tenant.owner;
    let public_pem = fixture("rsa_a.pub.pem");

    let wrong_secret = sign(
        Header::new(Algorithm::HS256),
        &claims(sub),
        &EncodingKey::from_secret(b"another-secret-that-is-long-enough-000"),
    );
    let expired = sign(
        Header::new(Algorithm::HS256),
        &json!({"sub": sub, "exp": now() - 3600}),
        &EncodingKey::from_secret(SECRET.as_bytes()),
    );
    let not_yet = sign(
        Header::new(Algorithm::HS256),
        &json!({"sub": sub, "exp": now() + 3600, "nbf": now() + 1800}),
        &EncodingKey::from_secret(SECRET.as_bytes()),
    );
    let no_exp = sign(
        Header::new(Algorithm::HS256),
        &json!({"sub": sub}),
        &EncodingKey::from_secret(SECRET.as_bytes()),
    );
    // Key confusion: an HS256 token whose "secret" is the RSA public key, with and
    // without the kid of that key.
    let confused = sign(
        Header::new(Algorithm::HS256),
        &claims(sub),
        &EncodingKey::from_secret(&public_pem),
    );
    let confused_kid = sign(
        with_kid(Algorithm::HS256, "rsa-a"),
        &claims(sub),
        &EncodingKey::from_secret(&public_pem),
    );
    // Signed by a key the JWKS does not publish, under a published kid and an unknown one.
    let wrong_rsa = sign(
        with_kid(Algorithm::RS256, "rsa-a"),
        &claims(sub),
        &rsa("rsa_b.pem"),
    );
    let unknown_kid = sign(
        with_kid(Algorithm::RS256, "rsa-b"),
        &claims(sub),
        &rsa("rsa_b.pem"),
    );
    let no_kid = sign(
        Header::new(Algorithm::RS256),
        &claims(sub),
        &rsa("rsa_a.pem"),
    );
    // An ES256 header over an RSA kid.
    let ec_key = EncodingKey::from_ec_pem(&fixture("ec_a.pem")).unwrap();
    let alg_swap = sign(with_kid(Algorithm::ES256, "rsa-a"), &claims(sub), &ec_key);
    // alg: none, hand-made: header and claims, empty signature.
    let none = format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"JWT"}"#),
        URL_SAFE_NO_PAD.encode(claims(sub).to_string())
    );
    // A valid token with its payload swapped for another subject's.
    let valid = token(sub);
    let parts: Vec<&str> = valid.split('.').collect();
    let tampered = format!(
        "{}.{}.{}",
        parts[0],
        URL_SAFE_NO_PAD.encode(claims(ADMIN).to_string()),
        parts[2]
    );

    assert_eq!(
        tenant_status(&app, &tenant, &valid).await,
        200,
        "the control passes"
    );
    for (name, forged) in [
        ("wrong secret", wrong_secret),
        ("expired", expired),
        ("not yet valid", not_yet),
        ("no exp", no_exp),
        ("HS256 with the RSA public key", confused),
        ("HS256 with the RSA public key and kid", confused_kid),
        ("RS256 by an unpublished key", wrong_rsa),
        ("RS256 with an unknown kid", unknown_kid),
        ("RS256 without kid", no_kid),
        ("ES256 over an RSA kid", alg_swap),
        ("alg none", none),
        ("tampered payload", tampered),
        ("garbage", "not.a.token".to_string()),
    ] {
        let response = app
            .get("/api/v1/tenant")
            .token(&forged)
            .tenant(tenant.id)
            .send()
            .await;
        assert_eq!(response.status.as_u16(), 401, "{name} must be refused");
        assert_eq!(response.code(), "unauthorized", "{name}");
        assert_eq!(
            response.header("www-authenticate"),
            Some("Bearer"),
            "{name}"
        );
    }
}

#[tokio::test]
async fn hs256_is_refused_when_no_secret_is_configured() {
    let (app, _) = app_with_jwks(&[]).await;
    let tenant = app.tenant().await;
    let (url, _) = jwks_server().await;
    let strict = TestApp::spawn_with(move |vars| {
        vars.remove("JWT_HS256_SECRET");
        vars.insert("JWT_JWKS_URL".into(), url);
    })
    .await;
    assert_eq!(
        tenant_status(&strict, &tenant, &token(&tenant.owner)).await,
        401
    );
    let rs = sign(
        with_kid(Algorithm::RS256, "rsa-a"),
        &claims(&tenant.owner),
        &rsa("rsa_a.pem"),
    );
    assert_eq!(tenant_status(&strict, &tenant, &rs).await, 200);
}

#[tokio::test]
async fn the_issuer_is_checked_when_configured() {
    let (app, _) = app_with_jwks(&[("JWT_ISSUER", "https://clerk.acme.example")]).await;
    let admin_token = |iss: &str| {
        sign(
            with_kid(Algorithm::RS256, "rsa-a"),
            &json!({"sub": ADMIN, "exp": now() + 600, "iss": iss}),
            &rsa("rsa_a.pem"),
        )
    };
    let list = |token: String| app.get("/api/v1/admin/tenants").token(&token).send();
    list(admin_token("https://clerk.acme.example"))
        .await
        .expect(200);
    list(admin_token("https://evil.example"))
        .await
        .expect_problem(401, "unauthorized");
    let no_iss = sign(
        with_kid(Algorithm::RS256, "rsa-a"),
        &claims(ADMIN),
        &rsa("rsa_a.pem"),
    );
    list(no_iss).await.expect_problem(401, "unauthorized");
}

#[tokio::test]
async fn unknown_kids_refetch_the_jwks_at_most_once_per_interval() {
    let (app, hits) = app_with_jwks(&[]).await;
    let tenant = app.tenant().await;
    let good = sign(
        with_kid(Algorithm::RS256, "rsa-a"),
        &claims(&tenant.owner),
        &rsa("rsa_a.pem"),
    );
    assert_eq!(tenant_status(&app, &tenant, &good).await, 200);
    assert_eq!(tenant_status(&app, &tenant, &good).await, 200);
    assert_eq!(
        hits.load(Ordering::SeqCst),
        1,
        "known keys are served from the cache"
    );
    for i in 0..10 {
        let forged = sign(
            with_kid(Algorithm::RS256, &format!("unknown-{i}")),
            &claims(&tenant.owner),
            &rsa("rsa_b.pem"),
        );
        assert_eq!(tenant_status(&app, &tenant, &forged).await, 401);
    }
    assert_eq!(
        hits.load(Ordering::SeqCst),
        1,
        "a burst of unknown kids cannot hammer the JWKS"
    );
}

#[tokio::test]
async fn a_key_removed_from_the_jwks_stops_verifying_once_its_max_age_passes() {
    let jwks: serde_json::Value = serde_json::from_slice(&fixture("jwks.json")).unwrap();
    let served = Arc::new(std::sync::RwLock::new(jwks.clone()));
    let body = served.clone();
    let router = axum::Router::new().route(
        "/jwks.json",
        get(move || {
            let jwks = body.read().unwrap().clone();
            async move { ([("cache-control", "public, max-age=1")], axum::Json(jwks)) }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/jwks.json", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await });
    let app = TestApp::spawn_with(move |vars| {
        vars.insert("JWT_JWKS_URL".into(), url);
        vars.insert("JWT_JWKS_REFETCH_SECONDS".into(), "1".into());
    })
    .await;
    let tenant = app.tenant().await;
    let token = sign(
        with_kid(Algorithm::RS256, "rsa-a"),
        &claims(&tenant.owner),
        &rsa("rsa_a.pem"),
    );
    assert_eq!(tenant_status(&app, &tenant, &token).await, 200);

    let mut rotated = jwks;
    rotated["keys"]
        .as_array_mut()
        .unwrap()
        .retain(|k| k["kid"] != "rsa-a");
    *served.write().unwrap() = rotated;
    assert_eq!(
        tenant_status(&app, &tenant, &token).await,
        200,
        "within its max-age the cached set still verifies"
    );
    tokio::time::sleep(std::time::Duration::from_millis(1_300)).await;
    assert_eq!(
        tenant_status(&app, &tenant, &token).await,
        401,
        "after max-age the set is fetched again and the removed key is gone"
    );
}
