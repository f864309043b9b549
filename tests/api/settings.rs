//! The one-per-tenant documents: seller profile and AI config (read by all, set by managers).

use serde_json::json;

use crate::helpers::*;

#[tokio::test]
async fn managers_set_the_seller_profile_and_everyone_reads_it() {
    let app = TestApp::spawn().await;
    let (tenant, other) = (app.tenant().await, app.tenant().await);
    let (staff, _) = app.member(&tenant, "staff").await;
    let (admin, _) = app.member(&tenant, "admin").await;
    app.get("/api/v1/seller-profile")
        .user(&staff)
        .tenant(tenant.id)
        .send()
        .await
        .expect_problem(404, "not_found");
    let profile = json!({
        "store_name": "Acme Threads", "slug": "acme-threads", "bio": "Tees",
        "logo_url": "https://cdn.acme.example/logo.png",
        "contact_email": "Hello@Acme.example", "contact_phone": "+55 11 91234-5678",
        "social_handles": {"instagram": "@acme"},
        "business_address": {"line1": "Rua Augusta 1500", "city": "São Paulo", "country": "br"}
    });
    app.put("/api/v1/seller-profile")
        .user(&staff)
        .tenant(tenant.id)
        .json(&profile)
        .send()
        .await
        .expect_problem(403, "forbidden");
    let saved = app
        .put("/api/v1/seller-profile")
        .user(&admin)
        .tenant(tenant.id)
        .json(&profile)
        .send()
        .await
        .expect(200);
    assert_eq!(saved.body["contact_phone"], "+5511912345678");
    assert_eq!(saved.body["contact_email"], "hello@acme.example");
    assert_eq!(saved.body["business_address"]["country"], "BR");
    assert_eq!(saved.body["social_handles"]["instagram"], "@acme");
    let read = app
        .get("/api/v1/seller-profile")
        .user(&staff)
        .tenant(tenant.id)
        .send()
        .await
        .expect(200);
    assert_eq!(read.body["store_name"], "Acme Threads");

    // PUT replaces: what is left out is cleared.
    let replaced = app
        .put("/api/v1/seller-profile")
        .owner_of(&tenant)
        .json(&json!({"store_name": "Acme", "slug": "acme"}))
        .send()
        .await
        .expect(200);
    assert!(replaced.body["bio"].is_null() && replaced.body["business_address"].is_null());
    assert_eq!(replaced.body["social_handles"], json!({}));

    let bad = app
        .put("/api/v1/seller-profile")
        .owner_of(&tenant)
        .json(&json!({
            "store_name": "", "slug": "Not A Slug", "logo_url": "javascript:alert(1)",
            "contact_email": "nope", "contact_phone": "11912345678",
            "social_handles": {"Insta Gram": "@x"},
            "business_address": {"line1": "x", "city": "y", "country": "Brazil"}
        }))
        .send()
        .await
        .expect_problem(422, "validation_failed");
    assert_eq!(
        error_fields(&bad),
        [
            "store_name",
            "slug",
            "logo_url",
            "contact_email",
            "contact_phone",
            "social_handles.Insta Gram",
            "business_address.country"
        ]
    );
    let kept = app
        .get("/api/v1/seller-profile")
        .owner_of(&tenant)
        .send()
        .await
        .expect(200);
    assert_eq!(
        kept.body["store_name"], "Acme",
        "the refused PUT changed nothing"
    );
    app.get("/api/v1/seller-profile")
        .owner_of(&other)
        .send()
        .await
        .expect_problem(404, "not_found");
}

#[tokio::test]
async fn ai_config_has_defaults_and_managers_change_it() {
    let app = TestApp::spawn().await;
    let (tenant, other) = (app.tenant().await, app.tenant().await);
    let (staff, _) = app.member(&tenant, "staff").await;
    let defaults = app
        .get("/api/v1/ai-config")
        .user(&staff)
        .tenant(tenant.id)
        .send()
        .await
        .expect(200);
    assert_eq!(defaults.body["auto_reply_enabled"], false);
    assert!(defaults.body["updated_at"].is_null());
    let config = json!({
        "bot_name": "Ana", "style_tone": "friendly", "auto_reply_enabled": true,
        "active_hours": {"timezone": "America/Sao_Paulo", "start": "22:00", "end": "06:00"},
        "languages": ["pt-BR", "en"], "system_prompt": "Be brief."
    });
    app.put("/api/v1/ai-config")
        .user(&staff)
        .tenant(tenant.id)
        .json(&config)
        .send()
        .await
        .expect_problem(403, "forbidden");
    let saved = app
        .put("/api/v1/ai-config")
        .owner_of(&tenant)
        .json(&config)
        .send()
        .await
        .expect(200);
    assert_eq!(saved.body["active_hours"]["start"], "22:00");
    assert_eq!(saved.body["languages"], json!(["pt-BR", "en"]));
    assert!(saved.body["updated_at"].is_string());
    let read = app
        .get("/api/v1/ai-config")
        .user(&staff)
        .tenant(tenant.id)
        .send()
        .await
        .expect(200);
    assert_eq!(read.body["bot_name"], "Ana");

    let bad = app
        .put("/api/v1/ai-config")
        .owner_of(&tenant)
        .json(&json!({
            "bot_name": "", "style_tone": "friendly", "auto_reply_enabled": true,
            "active_hours": {"timezone": "Mars/Olympus", "start": "25:00", "end": "6am"},
            "languages": ["pt_BR", "en", "EN"]
        }))
        .send()
        .await
        .expect_problem(422, "validation_failed");
    assert_eq!(
        error_fields(&bad),
        [
            "bot_name",
            "active_hours.timezone",
            "active_hours.start",
            "active_hours.end",
            "languages[0]",
            "languages[2]"
        ]
    );
    let tone = app
        .put("/api/v1/ai-config")
        .owner_of(&tenant)
        .json(&json!({"bot_name": "x", "style_tone": "grumpy", "auto_reply_enabled": false, "languages": ["en"]}))
        .send()
        .await
        .expect_problem(422, "validation_failed");
    assert_eq!(error_fields(&tone), ["style_tone"]);
    let kept = app
        .get("/api/v1/ai-config")
        .owner_of(&tenant)
        .send()
        .await
        .expect(200);
    assert_eq!(kept.body["bot_name"], "Ana");
    let theirs = app
        .get("/api/v1/ai-config")
        .owner_of(&other)
        .send()
        .await
        .expect(200);
    assert!(
        theirs.body["updated_at"].is_null(),
        "another tenant still has the defaults"
    );
}

#[tokio::test]
async fn tenant_settings_default_to_utc_and_managers_change_them() {
    let app = TestApp::spawn().await;
    let tenant = app.new_tenant().await;
    let (staff, _) = app.member(&tenant, "staff").await;
    let defaults = app
        .get("/api/v1/tenant/settings")
        .user(&staff)
        .tenant(tenant.id)
        .send()
        .await
        .expect(200);
    assert_eq!(
        defaults.body,
        json!({"timezone": "UTC", "auto_confirm_orders": false, "updated_at": null})
    );
    let put = |body: serde_json::Value| {
        app.put("/api/v1/tenant/settings")
            .owner_of(&tenant)
            .json(&body)
            .send()
    };
    let wanted = json!({"timezone": "America/Sao_Paulo", "auto_confirm_orders": false});
    app.put("/api/v1/tenant/settings")
        .user(&staff)
        .tenant(tenant.id)
        .json(&wanted)
        .send()
        .await
        .expect_problem(403, "forbidden");
    let bad = put(json!({"timezone": "Mars/Olympus", "auto_confirm_orders": false}))
        .await
        .expect_problem(422, "validation_failed");
    assert_eq!(error_fields(&bad), ["timezone"]);
    let shape = put(json!({"timezone": 5}))
        .await
        .expect_problem(422, "validation_failed");
    assert_eq!(error_fields(&shape), ["timezone"]);
    // Automatic confirmation needs trust level 1, checked before the body is validated: a
    // time zone left out, invalid or of the wrong type is not looked at. Refused PUTs change
    // nothing.
    for asked in [
        json!({"auto_confirm_orders": true}),
        json!({"timezone": "America/Sao_Paulo", "auto_confirm_orders": true}),
        json!({"timezone": "Mars/Olympus", "auto_confirm_orders": true}),
        json!({"timezone": 5, "auto_confirm_orders": true, "colour": "red"}),
    ] {
        let gated = put(asked.clone())
            .await
            .expect_problem(403, "feature_not_available");
        assert_eq!(gated.body["feature"], "auto_confirm_orders", "{asked}");
        assert_eq!(gated.body["required_level"], 1, "{asked}");
    }
    let unchanged = app
        .get("/api/v1/tenant/settings")
        .owner_of(&tenant)
        .send()
        .await
        .expect(200);
    assert_eq!(unchanged.body, defaults.body);

    let saved = put(wanted.clone()).await.expect(200);
    assert_eq!(saved.body["timezone"], "America/Sao_Paulo");
    assert!(saved.body["updated_at"].is_string());
    let read = app
        .get("/api/v1/tenant/settings")
        .owner_of(&tenant)
        .send()
        .await
        .expect(200);
    assert_eq!(read.body, saved.body);
    // PUT replaces the document: a field left out takes its default.
    crate::trust::set_level(&app, &tenant, 1, true).await;
    let confirming = put(json!({"auto_confirm_orders": true})).await.expect(200);
    assert_eq!(
        (
            &confirming.body["timezone"],
            &confirming.body["auto_confirm_orders"]
        ),
        (&json!("UTC"), &json!(true))
    );
    let zoned = put(json!({"timezone": "Europe/Lisbon"})).await.expect(200);
    assert_eq!(
        (&zoned.body["timezone"], &zoned.body["auto_confirm_orders"]),
        (&json!("Europe/Lisbon"), &json!(false))
    );
    let reset = put(json!({})).await.expect(200);
    assert_eq!(
        (&reset.body["timezone"], &reset.body["auto_confirm_orders"]),
        (&json!("UTC"), &json!(false))
    );

    // Each saved PUT is a data change, recorded with its transaction (the refused ones are
    // not); newest first.
    let owner_id = app.owner_id(&tenant).await.to_string();
    let logged = app
        .get("/api/v1/activities?action=tenant_settings.updated")
        .owner_of(&tenant)
        .send()
        .await
        .expect(200);
    let items = logged.body["items"].as_array().unwrap();
    assert_eq!(items.len(), 4, "{items:#?}");
    let last = &items[0];
    assert_eq!(last["category"], "data");
    assert_eq!(last["resource_type"], "tenant_settings");
    assert_eq!(last["resource_id"], json!(tenant.id));
    assert_eq!(last["actor"], owner_id);
    assert_eq!(last["actor_type"], "user");
    assert_eq!(last["method"], "PUT");
    assert_eq!(last["status"], 200);
    assert_eq!(
        last["details"],
        json!({"timezone": "UTC", "auto_confirm_orders": false})
    );
    assert_eq!(items[3]["details"]["timezone"], "America/Sao_Paulo");
}
