//! Conventions every response follows: request ids, problem+json, docs, metrics, shutdown.

use convcommerce::clock::ManualClock;
use serde_json::json;

use crate::helpers::*;

#[tokio::test]
async fn request_ids_are_echoed_or_made() {
    let app = TestApp::spawn().await;
    let echoed = app
        .get("/health")
        .header("X-Request-ID", "abc-123")
        .send()
        .await
        .expect(200);
    assert_eq!(echoed.header("x-request-id"), Some("abc-123"));
    let made = app.get("/health").send().await;
    let id = made.header("x-request-id").unwrap();
    assert!(uuid::Uuid::parse_str(id).is_ok());
    let long = "x".repeat(500);
    let replaced = app
        .get("/health")
        .header("X-Request-ID", &long)
        .send()
        .await;
    assert_ne!(replaced.header("x-request-id"), Some(long.as_str()));
    // Errors carry it too.
    let error = app
        .get("/api/v1/users")
        .header("X-Request-ID", "err-1")
        .send()
        .await;
    assert_eq!(error.header("x-request-id"), Some("err-1"));
}

#[tokio::test]
async fn framework_errors_are_problem_documents() {
    let app = TestApp::spawn().await;
    app.get("/nowhere")
        .send()
        .await
        .expect_problem(404, "not_found");
    let not_allowed = app
        .call(reqwest::Method::PUT, "/api/v1/users")
        .send()
        .await
        .expect_problem(405, "method_not_allowed");
    assert!(not_allowed.header("allow").is_some());
    let huge = "x".repeat(2 * 1024 * 1024);
    app.post("/api/v1/admin/tenants")
        .user(ADMIN)
        .body("application/json", huge)
        .send()
        .await
        .expect_problem(413, "payload_too_large");
}

#[tokio::test]
async fn health_readiness_and_metrics() {
    let app = TestApp::spawn().await;
    let live = app.get("/health").send().await.expect(200);
    assert_eq!(live.body["status"], "ok");
    let ready = app.get("/health/ready").send().await.expect(200);
    assert_eq!(ready.body["status"], "ready");
    app.get("/api/v1/tenant").send().await.expect(401);
    let metrics = app.get("/metrics").send().await.expect(200);
    let text = metrics.body.as_str().unwrap();
    assert!(
        text.contains(r#"convcommerce_http_requests_total{method="GET",route="/api/v1/tenant",status="401"} 1"#),
        "{text}"
    );
    assert!(text.contains("convcommerce_http_request_duration_seconds_bucket"));
}

#[tokio::test]
async fn openapi_documents_every_route_and_its_errors() {
    let app = TestApp::spawn().await;
    let doc = app
        .get("/api/v1/openapi.json")
        .send()
        .await
        .expect(200)
        .body;
    assert_eq!(doc["openapi"], "3.1.0");
    for (path, method) in [
        ("/api/v1/tenant", "get"),
        ("/api/v1/users", "get"),
        ("/api/v1/users", "post"),
        ("/api/v1/users/{id}", "get"),
        ("/api/v1/users/{id}", "patch"),
        ("/api/v1/users/{id}", "delete"),
        ("/api/v1/admin/tenants", "post"),
        ("/api/v1/admin/tenants", "get"),
        ("/api/v1/admin/tenants/{id}", "get"),
        ("/api/v1/admin/tenants/{id}", "patch"),
        ("/api/v1/tenant/usage", "get"),
        ("/api/v1/tenant/quotas", "get"),
        ("/api/v1/admin/tenants/{id}/usage", "get"),
        ("/api/v1/admin/tenants/{id}/quotas", "get"),
        ("/api/v1/seller-profile", "get"),
        ("/api/v1/seller-profile", "put"),
        ("/api/v1/products", "get"),
        ("/api/v1/products", "post"),
        ("/api/v1/products/{id}", "get"),
        ("/api/v1/products/{id}", "patch"),
        ("/api/v1/products/{id}", "delete"),
        ("/api/v1/orders", "get"),
        ("/api/v1/orders", "post"),
        ("/api/v1/orders/{id}", "get"),
        ("/api/v1/orders/{id}/transitions", "post"),
        ("/api/v1/orders/{id}/rating", "post"),
        ("/api/v1/conversations/messages", "post"),
        ("/api/v1/conversations", "get"),
        ("/api/v1/conversations/{thread_id}/messages", "get"),
        ("/api/v1/ai-config", "get"),
        ("/api/v1/ai-config", "put"),
        ("/api/v1/media", "post"),
        ("/api/v1/media/{id}", "get"),
        ("/api/v1/media/{id}", "delete"),
        ("/api/v1/media/{id}/content", "get"),
    ] {
        let op = &doc["paths"][path][method];
        assert!(op.is_object(), "{method} {path} is documented");
        assert!(
            op["responses"]["401"].is_object(),
            "{method} {path} documents 401"
        );
        assert!(
            op["responses"]["403"].is_object(),
            "{method} {path} documents 403"
        );
        let responses = op["responses"].as_object().unwrap();
        let mut expected = vec!["401", "403", "408", "500", "503"];
        if path.contains('{') {
            expected.push("404");
        }
        if op["requestBody"].is_object() {
            expected.extend(["400", "413", "415", "422"]);
        }
        let queried = op["parameters"]
            .as_array()
            .is_some_and(|ps| ps.iter().any(|p| p["in"] == "query"));
        if queried {
            expected.extend(["400", "422"]);
        }
        for status in expected {
            assert!(
                responses.contains_key(status),
                "{method} {path} documents {status}"
            );
        }
        for (status, response) in responses {
            if status.starts_with('4') || status.starts_with('5') {
                assert_eq!(
                    response["content"]["application/problem+json"]["schema"]["$ref"],
                    "#/components/schemas/Problem",
                    "{method} {path} {status} is a problem document"
                );
                assert!(
                    response["description"].as_str().unwrap().contains('`'),
                    "{method} {path} {status} names its codes"
                );
            }
        }
        assert!(
            responses["503"]["headers"]["Retry-After"].is_object(),
            "{method} {path} 503"
        );
        let tenant_scoped = !path.starts_with("/api/v1/admin");
        let has_header = op["parameters"].as_array().is_some_and(|ps| {
            ps.iter()
                .any(|p| p["name"] == "X-Tenant-ID" && p["in"] == "header")
        });
        assert_eq!(has_header, tenant_scoped, "{method} {path} X-Tenant-ID");
        if tenant_scoped {
            let limited = &op["responses"]["429"];
            assert!(
                limited["headers"]["Retry-After"].is_object(),
                "{method} {path} 429"
            );
            let ok = op["responses"]
                .as_object()
                .unwrap()
                .iter()
                .find(|(s, _)| s.starts_with('2'))
                .unwrap()
                .1;
            for header in [
                "X-RateLimit-Remaining-Minute",
                "X-RateLimit-Reset-Day",
                "RateLimit",
                "RateLimit-Policy",
            ] {
                assert!(
                    ok["headers"][header].is_object(),
                    "{method} {path} documents {header}"
                );
            }
        }
    }
    // Request bodies come with examples.
    for schema in [
        "PutSellerProfile",
        "CreateProduct",
        "UpdateProduct",
        "CreateOrder",
        "Transition",
        "RateOrder",
        "PostMessage",
        "PutAiConfig",
    ] {
        assert!(
            doc["components"]["schemas"][schema]["example"].is_object(),
            "{schema} has an example"
        );
    }
    assert!(
        doc["paths"]["/api/v1/media"]["post"]["requestBody"]["content"]["multipart/form-data"]
            .is_object()
    );
    for (path, method, status) in [
        ("/api/v1/products", "post", "409"),
        ("/api/v1/orders", "post", "409"),
        ("/api/v1/orders/{id}/transitions", "post", "409"),
        ("/api/v1/orders/{id}/rating", "post", "409"),
        ("/api/v1/users", "post", "409"),
        ("/api/v1/admin/tenants", "post", "409"),
        ("/api/v1/media", "post", "413"),
        ("/api/v1/media", "post", "415"),
        ("/health/ready", "get", "503"),
    ] {
        assert!(
            doc["paths"][path][method]["responses"][status].is_object(),
            "{method} {path} documents {status}"
        );
    }
    for path in ["/health", "/health/ready", "/metrics"] {
        assert!(doc["paths"][path]["get"].is_object(), "{path}");
    }
}

#[tokio::test]
async fn docs_pages_are_served_from_the_binary() {
    let app = TestApp::spawn().await;
    let swagger = app.get("/docs/").send().await.expect(200);
    assert!(swagger.body.as_str().unwrap().contains("swagger-ui"));
    let initializer = app
        .get("/docs/swagger-initializer.js")
        .send()
        .await
        .expect(200);
    assert!(
        initializer
            .body
            .as_str()
            .unwrap()
            .contains("/api/v1/openapi.json")
    );
    let redoc = app.get("/redoc").send().await.expect(200);
    let html = redoc.body.as_str().unwrap();
    assert!(
        html.contains("/redoc/redoc.standalone.js") && !html.contains("cdn."),
        "{html}"
    );
    let js = app
        .get("/redoc/redoc.standalone.js")
        .send()
        .await
        .expect(200);
    assert!(
        js.header("content-type")
            .unwrap()
            .starts_with("application/javascript")
    );
    assert!(js.body.as_str().unwrap().len() > 500_000);
}

#[tokio::test]
async fn graceful_shutdown_finishes_and_stops() {
    let app = TestApp::spawn().await;
    let base = app.base.clone();
    app.get("/health").send().await.expect(200);
    app.stop().await;
    assert!(
        reqwest::get(format!("{base}/health")).await.is_err(),
        "the port is closed"
    );
}

#[tokio::test]
async fn custom_methods_answer_501_and_mint_no_metric_labels() {
    let app = TestApp::spawn().await;
    let tenant = app.tenant().await;
    // The series (a metric and its labels), not the bytes: values grow in digits.
    let series = || async {
        let text = app.get("/metrics").send().await.body;
        text.as_str()
            .unwrap()
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| l.rsplit_once(' ').map(|(series, _)| series.to_string()))
            .collect::<std::collections::BTreeSet<_>>()
    };
    series().await;
    // Warm every label the loop below can produce (route templates and `other`).
    for path in ["/api/v1/products", "/no/such/path"] {
        let method = reqwest::Method::from_bytes(b"WARMUP").unwrap();
        app.call(method, path).owner_of(&tenant).send().await;
    }
    let before = series().await;
    for i in 0..1_000 {
        let method = reqwest::Method::from_bytes(format!("M{i}X").as_bytes()).unwrap();
        let path = if i % 2 == 0 {
            "/api/v1/products".to_string()
        } else {
            format!("/unmatched/{i}")
        };
        let answer = app.call(method, &path).owner_of(&tenant).send().await;
        if i == 0 {
            answer.expect_problem(501, "not_implemented");
        }
    }
    let after = series().await;
    assert!(before.len() > 10, "the metrics were read");
    assert_eq!(
        before, after,
        "1,000 custom methods and paths add no metric series"
    );
    let text = app.get("/metrics").send().await.body;
    let text = text.as_str().unwrap();
    assert!(text.contains(r#"method="other""#), "{text}");
    assert!(!text.contains("M0X"), "no client-made label");
}

#[tokio::test]
async fn browsers_may_read_the_rate_limit_headers() {
    // A clock that stays mid-minute, so the second request meets the first one's window.
    let clock = ManualClock::new(chrono::Utc::now());
    let app = TestApp::spawn_full(database().await, Some(clock), |vars| {
        vars.insert(
            "BACKEND_CORS_ORIGINS".into(),
            r#"["http://shop.example"]"#.into(),
        );
    })
    .await;
    let tenant = app.tenant().await;
    app.set_limits(&tenant, json!({"requests_per_minute": 1}))
        .await;
    let call = || {
        app.get("/api/v1/products")
            .owner_of(&tenant)
            .header("Origin", "http://shop.example")
            .send()
    };
    let admitted = call().await.expect(200);
    let refused = call().await.expect_problem(429, "rate_limited");
    let mut expected = vec![
        "x-request-id".to_string(),
        "retry-after".to_string(),
        "ratelimit".to_string(),
        "ratelimit-policy".to_string(),
    ];
    for field in ["limit", "remaining", "reset"] {
        for window in ["minute", "hour", "day"] {
            expected.push(format!("x-ratelimit-{field}-{window}"));
        }
    }
    for answer in [&admitted, &refused] {
        let exposed: Vec<String> = answer
            .header("access-control-expose-headers")
            .unwrap_or_default()
            .split(',')
            .map(|h| h.trim().to_ascii_lowercase())
            .collect();
        for name in &expected {
            assert!(exposed.contains(name), "{name} exposed: {exposed:?}");
        }
        // Every rate-limit header the answer carries is among them.
        let carried: Vec<&str> = answer
            .headers
            .keys()
            .map(|h| h.as_str())
            .filter(|h| {
                h.starts_with("x-ratelimit") || h.starts_with("ratelimit") || *h == "retry-after"
            })
            .collect();
        assert!(carried.len() >= 11, "{carried:?}");
        for name in carried {
            assert!(
                exposed.iter().any(|e| e == name),
                "{name} exposed: {exposed:?}"
            );
        }
    }
    assert!(refused.header("retry-after").is_some());
}
