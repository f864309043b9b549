//! Media: sniffed types, size limit, byte-exact round trip, attachment to products, isolation;
//! each against the local directory and an S3 bucket.

use convcommerce::Application;
use convcommerce::config::Config;
use reqwest::multipart::{Form, Part};
use serde_json::json;

use crate::helpers::*;
use crate::uploads::{assert_objects_are_rows, objects};

/// A tiny but real PNG header followed by filler.
pub(crate) fn png(len: usize) -> Vec<u8> {
    let mut bytes = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR".to_vec();
    bytes.extend((0..len).map(|i| (i % 251) as u8));
    bytes
}

pub(crate) fn file(bytes: Vec<u8>, name: &str, declared: &str) -> Form {
    Form::new().part(
        "file",
        Part::bytes(bytes)
            .file_name(name.to_string())
            .mime_str(declared)
            .unwrap(),
    )
}

pub(crate) async fn upload(app: &TestApp, tenant: &TestTenant, form: Form) -> Response {
    app.post("/api/v1/media")
        .owner_of(tenant)
        .multipart(form)
        .send()
        .await
}

async fn raw_content(app: &TestApp, tenant: &TestTenant, id: &str) -> reqwest::Response {
    app.http
        .get(format!("{}/api/v1/media/{id}/content", app.base))
        .bearer_auth(token(&tenant.owner))
        .header("X-Tenant-ID", tenant.id.to_string())
        .send()
        .await
        .unwrap()
}

for_each_media_backend!(
    uploads_round_trip_with_their_sniffed_type,
    unsupported_too_large_and_malformed_uploads_are_refused,
    media_attach_to_products_and_deleting_detaches,
    another_tenants_media_is_not_found_nor_attachable,
    a_delete_refused_or_rolled_back_leaves_the_object,
);

async fn uploads_round_trip_with_their_sniffed_type(backend: MediaBackend) {
    let app = TestApp::spawn_with(backend.configure().await).await;
    let tenant = app.tenant().await;
    let (staff, _) = app.member(&tenant, "staff").await;
    let bytes = png(100_000);
    // The declared type is ignored: the bytes say PNG.
    let created = app
        .post("/api/v1/media")
        .user(&staff)
        .tenant(tenant.id)
        .multipart(file(bytes.clone(), "../shots/photo.jpg", "image/jpeg"))
        .send()
        .await
        .expect(201);
    let media = &created.body;
    let id = media["id"].as_str().unwrap();
    assert_eq!(media["content_type"], "image/png");
    assert_eq!(media["size_bytes"], bytes.len());
    assert_eq!(media["filename"], "photo.jpg");
    assert_eq!(media["url"], format!("/api/v1/media/{id}/content"));

    let meta = app
        .get(&format!("/api/v1/media/{id}"))
        .user(&staff)
        .tenant(tenant.id)
        .send()
        .await
        .expect(200);
    assert_eq!(meta.body, created.body);
    let content = raw_content(&app, &tenant, id).await;
    assert_eq!(content.status(), 200);
    assert_eq!(content.headers()["content-type"], "image/png");
    assert_eq!(content.headers()["x-content-type-options"], "nosniff");
    assert_eq!(content.headers()["content-disposition"], "inline");
    assert_eq!(content.headers()["content-security-policy"], "sandbox");
    assert_eq!(content.bytes().await.unwrap().as_ref(), bytes.as_slice());

    let pdf = upload(
        &app,
        &tenant,
        file(b"%PDF-1.7 tiny".to_vec(), "doc", "text/plain"),
    )
    .await
    .expect(201);
    assert_eq!(pdf.body["content_type"], "application/pdf");
    let served = raw_content(&app, &tenant, pdf.body["id"].as_str().unwrap()).await;
    assert_eq!(served.headers()["content-disposition"], "attachment");
    assert_eq!(served.headers()["content-security-policy"], "sandbox");
}

async fn unsupported_too_large_and_malformed_uploads_are_refused(backend: MediaBackend) {
    let app = TestApp::spawn_with(backend.configure().await).await;
    let tenant = app.tenant().await;
    for bytes in [
        b"just some text".to_vec(),
        b"<svg xmlns=\"http://www.w3.org/2000/svg\"></svg>".to_vec(),
    ] {
        upload(&app, &tenant, file(bytes, "x.png", "image/png"))
            .await
            .expect_problem(415, "unsupported_media_type");
    }
    assert_objects_are_rows(&app, &tenant).await;
    // The tests run with MEDIA_MAX_BYTES=262144: the first is refused at its last bytes, the
    // second after a part (the directory's 256 KiB) went to the store.
    upload(&app, &tenant, file(png(262_144), "big.png", "image/png"))
        .await
        .expect_problem(413, "payload_too_large");
    upload(&app, &tenant, file(png(4_000_000), "huge.png", "image/png"))
        .await
        .expect_problem(413, "payload_too_large");
    assert_objects_are_rows(&app, &tenant).await;
    assert!(objects(&app.config, &tenant).await.is_empty());
    upload(
        &app,
        &tenant,
        file(png(262_144 - 16), "fits.png", "image/png"),
    )
    .await
    .expect(201);
    let missing = upload(
        &app,
        &tenant,
        Form::new().part("other", Part::bytes(png(10))),
    )
    .await
    .expect_problem(422, "validation_failed");
    assert_eq!(error_fields(&missing), ["file"]);
    upload(&app, &tenant, file(vec![], "empty.png", "image/png"))
        .await
        .expect_problem(422, "validation_failed");
    app.post("/api/v1/media")
        .owner_of(&tenant)
        .json(&json!({"file": "aGVsbG8="}))
        .send()
        .await
        .expect_problem(415, "unsupported_media_type");
    assert_eq!(
        objects(&app.config, &tenant).await.len(),
        1,
        "the one that fit"
    );
    assert_objects_are_rows(&app, &tenant).await;
}

async fn media_attach_to_products_and_deleting_detaches(backend: MediaBackend) {
    let app = TestApp::spawn_with(backend.configure().await).await;
    let tenant = app.tenant().await;
    let first = upload(&app, &tenant, file(png(10), "a.png", "image/png"))
        .await
        .expect(201)
        .body;
    let second = upload(&app, &tenant, file(png(20), "b.png", "image/png"))
        .await
        .expect(201)
        .body;
    let product = app
        .product(&tenant, json!({"media_ids": [second["id"], first["id"]]}))
        .await;
    assert_eq!(product["media_ids"], json!([second["id"], first["id"]]));
    let path = format!("/api/v1/products/{}", product["id"].as_str().unwrap());
    assert_eq!(objects(&app.config, &tenant).await.len(), 2);

    let media_path = format!("/api/v1/media/{}", second["id"].as_str().unwrap());
    app.delete(&media_path)
        .owner_of(&tenant)
        .send()
        .await
        .expect(204);
    // The bytes are gone from the store by the time the delete is answered.
    let left = objects(&app.config, &tenant).await;
    assert_eq!(left.len(), 1);
    assert!(left[0].0.ends_with(first["id"].as_str().unwrap()));
    assert_objects_are_rows(&app, &tenant).await;
    app.get(&media_path)
        .owner_of(&tenant)
        .send()
        .await
        .expect_problem(404, "not_found");
    assert_eq!(
        raw_content(&app, &tenant, second["id"].as_str().unwrap())
            .await
            .status(),
        404
    );
    let after = app.get(&path).owner_of(&tenant).send().await.expect(200);
    assert_eq!(after.body["media_ids"], json!([first["id"]]));

    let reordered = app
        .patch(&path)
        .owner_of(&tenant)
        .json(&json!({"media_ids": []}))
        .send()
        .await
        .expect(200);
    assert_eq!(reordered.body["media_ids"], json!([]));
    let gone = app
        .patch(&path)
        .owner_of(&tenant)
        .json(&json!({"media_ids": [first["id"], second["id"]]}))
        .send()
        .await
        .expect_problem(404, "not_found");
    assert!(
        gone.body["detail"]
            .as_str()
            .unwrap()
            .starts_with("media_ids[1]")
    );
}

async fn another_tenants_media_is_not_found_nor_attachable(backend: MediaBackend) {
    let app = TestApp::spawn_with(backend.configure().await).await;
    let (a, b) = (app.tenant().await, app.tenant().await);
    let theirs = upload(&app, &b, file(png(10), "b.png", "image/png"))
        .await
        .expect(201)
        .body;
    let id = theirs["id"].as_str().unwrap();
    let path = format!("/api/v1/media/{id}");
    app.get(&path)
        .owner_of(&a)
        .send()
        .await
        .expect_problem(404, "not_found");
    assert_eq!(raw_content(&app, &a, id).await.status(), 404);
    app.delete(&path)
        .owner_of(&a)
        .send()
        .await
        .expect_problem(404, "not_found");
    assert_eq!(
        objects(&app.config, &b).await.len(),
        1,
        "the refused delete left the bytes"
    );

    let refused = app
        .post("/api/v1/products")
        .owner_of(&a)
        .json(&json!({"name": "x", "price_cents": 1, "currency": "USD", "media_ids": [id]}))
        .send()
        .await
        .expect_problem(404, "not_found");
    assert!(
        refused.body["detail"]
            .as_str()
            .unwrap()
            .starts_with("media_ids[0]")
    );
    let list = app
        .get("/api/v1/products")
        .owner_of(&a)
        .send()
        .await
        .expect(200);
    assert!(ids(&list).is_empty(), "the refused product was not created");
    app.get(&path).owner_of(&b).send().await.expect(200);
    assert_eq!(raw_content(&app, &b, id).await.status(), 200);
}

async fn a_delete_refused_or_rolled_back_leaves_the_object(backend: MediaBackend) {
    // A database of its own: the test installs a trigger that fails a delete at its commit.
    let app = TestApp::spawn_on(private_database().await, backend.configure().await).await;
    let tenant = app.tenant().await;
    let kept = upload(&app, &tenant, file(png(10), "k.png", "image/png"))
        .await
        .expect(201)
        .body;
    let held = upload(&app, &tenant, file(png(20), "h.png", "image/png"))
        .await
        .expect(201)
        .body;
    let path =
        |media: &serde_json::Value| format!("/api/v1/media/{}", media["id"].as_str().unwrap());

    // Refused: a verification document names it.
    app.post("/api/v1/trust/verifications/documents")
        .owner_of(&tenant)
        .json(&json!({"kind": "registration", "media_ids": [held["id"]]}))
        .send()
        .await
        .expect(201);
    app.delete(&path(&held))
        .owner_of(&tenant)
        .send()
        .await
        .expect_problem(409, "media_in_use");
    assert_eq!(
        objects(&app.config, &tenant).await.len(),
        2,
        "the refused delete left the bytes"
    );

    // Rolled back: the DELETE statement and the activity succeed, the COMMIT fails (a
    // deferred trigger raises there). Bytes removed before the commit would be lost now.
    let owner = connect(&app.db.owner_url).await;
    owner
        .batch_execute(
            "CREATE FUNCTION failed_commit() RETURNS trigger LANGUAGE plpgsql AS
                 $$ BEGIN RAISE EXCEPTION 'injected failure at commit'; END $$;
             CREATE CONSTRAINT TRIGGER failed_commit AFTER DELETE ON media
                 DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION failed_commit();",
        )
        .await
        .unwrap();
    app.delete(&path(&kept))
        .owner_of(&tenant)
        .send()
        .await
        .expect_problem(500, "internal_error");
    app.get(&path(&kept))
        .owner_of(&tenant)
        .send()
        .await
        .expect(200);
    assert_eq!(
        objects(&app.config, &tenant).await.len(),
        2,
        "the rolled-back delete left the bytes"
    );
    assert_objects_are_rows(&app, &tenant).await;

    owner
        .batch_execute("DROP TRIGGER failed_commit ON media")
        .await
        .unwrap();
    app.delete(&path(&kept))
        .owner_of(&tenant)
        .send()
        .await
        .expect(204);
    let left = objects(&app.config, &tenant).await;
    assert_eq!(left.len(), 1);
    assert!(left[0].0.ends_with(held["id"].as_str().unwrap()));
    assert_objects_are_rows(&app, &tenant).await;
}

#[tokio::test]
async fn s3_objects_are_keyed_by_tenant_and_media_under_the_prefix() {
    let bucket = S3Bucket::create().await;
    let app = TestApp::spawn_with(|vars| vars.extend(bucket.vars())).await;
    let tenant = app.tenant().await;
    let bytes = png(1000);
    let created = upload(&app, &tenant, file(bytes.clone(), "p.png", "image/png"))
        .await
        .expect(201);
    let id = created.body["id"].as_str().unwrap();
    let key = format!("{S3_PREFIX}/{}/{id}", tenant.id);
    assert_eq!(bucket.objects().await, [(key, bytes.len() as u64)]);

    app.delete(&format!("/api/v1/media/{id}"))
        .owner_of(&tenant)
        .send()
        .await
        .expect(204);
    assert_eq!(bucket.objects().await, []);
}

#[tokio::test]
async fn s3_a_bucket_that_cannot_be_listed_stops_the_server() {
    let bucket = S3Bucket::create().await;
    let mut vars = config_vars(&database().await);
    vars.extend(bucket.vars());
    vars.insert("MEDIA_STORE".into(), "s3://cc-no-such-bucket/media".into());
    let err = match Application::build(Config::from_source(&vars).unwrap()).await {
        Ok(_) => panic!("the server must not start without its bucket"),
        Err(e) => format!("{e:#}"),
    };
    assert!(
        err.starts_with("MEDIA_STORE cannot be used: ") && err.contains("NoSuchBucket"),
        "{err}"
    );
}
