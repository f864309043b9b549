//! The storage quota and the cleanup job: unreferenced media after 24 hours, conversations
//! past the tenant's retention, freed bytes. The media ones run against both media backends.

use chrono::{Duration, Utc};
use convcommerce::db::Db;
use convcommerce::jobs::cleanup;
use convcommerce::storage::MediaStore;
use futures_util::future::join_all;
use secrecy::SecretString;
use serde_json::json;

use crate::conversations::say;
use crate::helpers::*;
use crate::media::{file, png, upload};
use crate::uploads::assert_objects_are_rows;

pub(crate) async fn storage_used(app: &TestApp, tenant: &TestTenant) -> i64 {
    let quotas = app
        .get("/api/v1/tenant/quotas")
        .owner_of(tenant)
        .send()
        .await
        .expect(200);
    quotas.body["storage_bytes"]["used"].as_i64().unwrap()
}

for_each_media_backend!(
    uploads_are_held_to_the_storage_quota,
    cleanup_purges_media_unreferenced_for_a_day_and_frees_their_bytes,
);

async fn uploads_are_held_to_the_storage_quota(backend: MediaBackend) {
    let app = TestApp::spawn_with(backend.configure().await).await;
    let tenant = app.tenant().await;
    let size = png(984).len() as i64; // 1000 bytes
    app.set_limits(&tenant, json!({"max_storage_bytes": 3 * size + 10}))
        .await;
    let uploads = (0..10).map(|_| upload(&app, &tenant, file(png(984), "p.png", "image/png")));
    let responses = join_all(uploads).await;
    let created: Vec<&Response> = responses.iter().filter(|r| r.status == 201).collect();
    assert_eq!(created.len(), 3, "ten racing uploads, room for three");
    let refused = responses.iter().find(|r| r.status == 403).unwrap();
    assert_eq!(refused.code(), "quota_exceeded");
    assert_eq!(refused.body["quota"], "storage_bytes");
    assert_eq!(refused.body["used"], 3 * size);
    assert_eq!(storage_used(&app, &tenant).await, 3 * size);
    // The refused uploads' bytes went with their refusal.
    assert_objects_are_rows(&app, &tenant).await;

    let id = created[0].body["id"].as_str().unwrap();
    app.delete(&format!("/api/v1/media/{id}"))
        .owner_of(&tenant)
        .send()
        .await
        .expect(204);
    assert_eq!(
        storage_used(&app, &tenant).await,
        2 * size,
        "deleting frees the bytes"
    );
    assert_objects_are_rows(&app, &tenant).await;
    upload(&app, &tenant, file(png(984), "p.png", "image/png"))
        .await
        .expect(201);
}

/// The job's own handles on the app's database and media store.
pub fn job_parts(app: &TestApp) -> (Db, MediaStore) {
    let db = Db::connect(&SecretString::from(app.db.app_url.clone()), 2, 0).unwrap();
    (db, MediaStore::from_config(&app.config).unwrap())
}

async fn cleanup_purges_media_unreferenced_for_a_day_and_frees_their_bytes(backend: MediaBackend) {
    // A database of its own: the job visits every tenant, and must not purge other tests'.
    let app = TestApp::spawn_on(private_database().await, backend.configure().await).await;
    let tenant = app.tenant().await;
    let mut ids = vec![];
    for _ in 0..3 {
        let created = upload(&app, &tenant, file(png(100), "p.png", "image/png")).await;
        ids.push(created.expect(201).body["id"].as_str().unwrap().to_string());
    }
    let [loose, shown, dropped] = [&ids[0], &ids[1], &ids[2]];
    let product = app
        .product(&tenant, json!({"media_ids": [shown, dropped]}))
        .await;
    let product_id = product["id"].as_str().unwrap();
    app.patch(&format!("/api/v1/products/{product_id}"))
        .owner_of(&tenant)
        .json(&json!({"media_ids": [shown]}))
        .send()
        .await
        .expect(200);
    let before = storage_used(&app, &tenant).await;

    let (db, store) = job_parts(&app);
    let soon = cleanup::run_at(&db, &store, Utc::now() + Duration::hours(23))
        .await
        .unwrap();
    assert_eq!(soon.media_purged, 0, "nothing is a day old yet");

    let report = cleanup::run_at(&db, &store, Utc::now() + Duration::hours(25))
        .await
        .unwrap();
    assert_eq!(report.media_purged, 2, "the loose and the detached media");
    assert_eq!(report.bytes_freed, 2 * png(100).len() as i64);
    for gone in [&loose, &dropped] {
        app.get(&format!("/api/v1/media/{gone}"))
            .owner_of(&tenant)
            .send()
            .await
            .expect_problem(404, "not_found");
        app.get(&format!("/api/v1/media/{gone}/content"))
            .owner_of(&tenant)
            .send()
            .await
            .expect(404);
    }
    app.get(&format!("/api/v1/media/{shown}/content"))
        .owner_of(&tenant)
        .send()
        .await
        .expect(200);
    assert_eq!(
        storage_used(&app, &tenant).await,
        before - report.bytes_freed
    );
}

#[tokio::test]
async fn cleanup_purges_conversations_past_the_retention() {
    let app = TestApp::spawn_on(private_database().await, |_| {}).await;
    let (short, long) = (app.tenant().await, app.tenant().await);
    app.set_limits(&short, json!({"conversation_retention_days": 1}))
        .await;
    for tenant in [&short, &long] {
        say(
            &app,
            tenant,
            "+15550001111",
            "whatsapp",
            "customer",
            "hello",
        )
        .await;
        say(&app, tenant, "+15550001111", "whatsapp", "merchant", "hi!").await;
    }
    let (db, store) = job_parts(&app);
    let report = cleanup::run_at(&db, &store, Utc::now() + Duration::days(2))
        .await
        .unwrap();
    assert_eq!(report.messages_purged, 2);
    assert_eq!(report.threads_purged, 1);
    let threads = |tenant: &TestTenant| app.get("/api/v1/conversations").owner_of(tenant).send();
    assert_eq!(threads(&short).await.expect(200).body["items"], json!([]));
    assert_eq!(
        threads(&long).await.expect(200).body["items"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

#[tokio::test]
async fn cleanup_goes_on_to_the_next_tenant_when_one_fails() {
    let app = TestApp::spawn_on(private_database().await, |_| {}).await;
    let broken = app.tenant().await;
    let fine = app.tenant().await;
    for tenant in [&broken, &fine] {
        upload(&app, tenant, file(png(100), "p.png", "image/png"))
            .await
            .expect(201);
    }
    // An injected failure: deleting the first tenant's media raises.
    let owner = connect(&app.db.owner_url).await;
    owner
        .batch_execute(&format!(
            "CREATE FUNCTION injected_failure() RETURNS trigger LANGUAGE plpgsql AS
                 $$ BEGIN RAISE EXCEPTION 'injected failure'; END $$;
             CREATE TRIGGER injected_failure BEFORE DELETE ON media FOR EACH ROW
                 WHEN (OLD.tenant_id = '{}') EXECUTE FUNCTION injected_failure();",
            broken.id
        ))
        .await
        .unwrap();

    let (db, store) = job_parts(&app);
    let report = cleanup::run_at(&db, &store, Utc::now() + Duration::hours(25))
        .await
        .unwrap();
    assert_eq!(report.tenants_failed, 1);
    assert_eq!(report.media_purged, 1, "the other tenant was still cleaned");
    assert_eq!(storage_used(&app, &fine).await, 0);
    assert_eq!(storage_used(&app, &broken).await, png(100).len() as i64);
}
