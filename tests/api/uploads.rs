//! Media bytes never outlive their row: uploads stream to the store part by part, a cancelled
//! one leaves nothing behind, clients that vanish after the last byte leave objects and rows
//! equal, a global cap answers 503, and the cleanup job reconciles the store with the rows.
//! Each against the local directory and an S3 bucket.

use std::time::Duration;

use chrono::Utc;
use convcommerce::clock::ManualClock;
use convcommerce::config::{Config, MediaStoreConfig};
use convcommerce::db::Db;
use convcommerce::jobs::cleanup;
use convcommerce::storage::MediaStore;
use futures_util::future::join_all;
use futures_util::{StreamExt, TryStreamExt};
use secrecy::SecretString;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use uuid::Uuid;

use crate::cleanup::storage_used;
use crate::helpers::*;
use crate::media::{file, png, upload};

const BOUNDARY: &str = "cc-upload-boundary";
/// Larger than an S3 part (5 MiB), so every backend streams these uploads in several parts.
const LARGE: usize = 6 * 1024 * 1024;

for_each_media_backend!(
    uploads_cut_off_after_the_last_byte_leave_as_many_objects_as_rows,
    a_cancelled_upload_streams_and_leaves_nothing_behind,
    uploads_over_the_in_flight_cap_are_answered_503,
    the_cleanup_deletes_objects_no_row_names_after_an_hour,
    an_upload_whose_row_fails_before_its_commit_leaves_no_object,
);

/// The multipart body of one `file` part holding `bytes`.
fn multipart_body(bytes: &[u8]) -> Vec<u8> {
    let mut body = format!(
        "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"p.png\"\r\n\
         Content-Type: image/png\r\n\r\n"
    )
    .into_bytes();
    body.extend_from_slice(bytes);
    body.extend_from_slice(format!("\r\n--{BOUNDARY}--\r\n").as_bytes());
    body
}

/// The request head of an upload of a `len`-byte multipart body, sent by `tenant`'s owner.
fn upload_head(app: &TestApp, tenant: &TestTenant, len: usize) -> Vec<u8> {
    format!(
        "POST /api/v1/media HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\n\
         X-Tenant-ID: {}\r\nContent-Type: multipart/form-data; boundary={BOUNDARY}\r\n\
         Content-Length: {len}\r\n\r\n",
        app.base.trim_start_matches("http://"),
        token(&tenant.owner),
        tenant.id
    )
    .into_bytes()
}

async fn open(app: &TestApp) -> TcpStream {
    TcpStream::connect(app.base.trim_start_matches("http://"))
        .await
        .unwrap()
}

/// The tenant's objects in the store, as the server's own store sees them: (key, size).
pub(crate) async fn objects(config: &Config, tenant: &TestTenant) -> Vec<(String, u64)> {
    let store = MediaStore::from_config(config).unwrap();
    let prefix = format!("{}/", tenant.id);
    store
        .objects()
        .try_filter(|o| std::future::ready(o.location.as_ref().starts_with(&prefix)))
        .map_ok(|o| (o.location.to_string(), o.size))
        .try_collect()
        .await
        .unwrap()
}

/// Anything the store holds for the tenant that is not a finished object: files in the
/// tenant's directory (a half-written one included), or S3 multipart uploads in progress.
async fn unfinished(config: &Config, tenant: &TestTenant) -> usize {
    match &config.media_store {
        MediaStoreConfig::Directory(dir) => {
            match std::fs::read_dir(dir.join(tenant.id.to_string())) {
                Ok(entries) => entries
                    .filter(|e| {
                        let name = e.as_ref().unwrap().file_name();
                        name.to_string_lossy().contains('#')
                    })
                    .count(),
                Err(_) => 0,
            }
        }
        MediaStoreConfig::S3(s3) => {
            let endpoint = s3.endpoint.as_ref().unwrap().as_str().trim_end_matches('/');
            let listing = reqwest::get(format!("{endpoint}/{}?uploads", s3.bucket))
                .await
                .unwrap()
                .text()
                .await
                .unwrap();
            listing.matches("<Upload>").count()
        }
    }
}

/// Media rows of the tenant and their bytes, read from the database.
pub(crate) async fn rows(app: &TestApp, tenant: &TestTenant) -> (i64, i64) {
    let mut client = connect(&app.db.app_url).await;
    let tx = tenant_tx(&mut client, tenant.id).await;
    let row = tx
        .query_one(
            "SELECT count(*), coalesce(sum(size_bytes), 0)::bigint FROM media WHERE tenant_id = $1",
            &[&tenant.id],
        )
        .await
        .unwrap();
    (row.get(0), row.get(1))
}

/// The tenant's media rows as the objects they name: (key, size), in key order.
async fn row_objects(app: &TestApp, tenant: &TestTenant) -> Vec<(String, u64)> {
    let mut client = connect(&app.db.app_url).await;
    let tx = tenant_tx(&mut client, tenant.id).await;
    tx.query(
        "SELECT storage_key, size_bytes FROM media WHERE tenant_id = $1 ORDER BY storage_key",
        &[&tenant.id],
    )
    .await
    .unwrap()
    .iter()
    .map(|r| (r.get(0), r.get::<_, i64>(1) as u64))
    .collect()
}

/// Asserts that the store holds exactly the tenant's rows: one finished object per row, of
/// the row's size, and nothing unfinished (an abandoned upload is aborted in the background,
/// so that part is awaited).
pub(crate) async fn assert_objects_are_rows(app: &TestApp, tenant: &TestTenant) {
    let aborted = eventually(Duration::from_secs(10), || async {
        unfinished(&app.config, tenant).await == 0
    })
    .await;
    assert!(aborted, "no unfinished upload is left in the store");
    let mut stored = objects(&app.config, tenant).await;
    stored.sort();
    assert_eq!(stored, row_objects(app, tenant).await, "objects and rows");
}

async fn uploads_cut_off_after_the_last_byte_leave_as_many_objects_as_rows(backend: MediaBackend) {
    let app = TestApp::spawn_with(backend.configure().await).await;
    let tenant = app.tenant().await;
    // Over HTTP/1.1 the socket closes after the last byte; over HTTP/2 the stream is reset.
    // Either cancels the server's handler; the i-th client waits i x 10 ms first, so the
    // cancellations fall at every step of the server's work, from reading to committing (the
    // tenth of each kind waits for its answer).
    let closed = (0..10).map(|i| {
        let body = multipart_body(&png(1_000 + i * 997));
        let head = upload_head(&app, &tenant, body.len());
        let app = &app;
        async move {
            let mut socket = open(app).await;
            socket.write_all(&head).await.unwrap();
            socket.write_all(&body).await.unwrap();
            if i == 9 {
                // The last one waits for its answer: some upload is always stored.
                let mut answer = vec![0; 12];
                socket.read_exact(&mut answer).await.unwrap();
            } else {
                tokio::time::sleep(Duration::from_millis(i as u64 * 10)).await;
            }
            drop(socket);
        }
    });
    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let reset = (0..10).map(|i| {
        let body = multipart_body(&png(2_000 + i * 991));
        let (sent, last_byte) = tokio::sync::oneshot::channel::<()>();
        let chunks = futures_util::stream::iter([Ok::<_, std::io::Error>(body)]).chain(
            futures_util::stream::once(async move {
                let _ = sent.send(());
                Ok(Vec::new())
            }),
        );
        let request = h2
            .post(format!("{}/api/v1/media", app.base))
            .bearer_auth(token(&tenant.owner))
            .header("X-Tenant-ID", tenant.id.to_string())
            .header(
                "content-type",
                format!("multipart/form-data; boundary={BOUNDARY}"),
            )
            .body(reqwest::Body::wrap_stream(chunks))
            .send();
        async move {
            if i == 9 {
                request.await.unwrap();
                return;
            }
            tokio::select! {
                _ = request => {}
                _ = async {
                    let _ = last_byte.await;
                    tokio::time::sleep(Duration::from_millis(i as u64 * 10)).await;
                } => {}
            }
        }
    });
    tokio::join!(join_all(closed), join_all(reset));

    // Settled: nothing changes over half a second.
    let snapshot = || async {
        (
            objects(&app.config, &tenant).await,
            rows(&app, &tenant).await,
        )
    };
    let mut last = snapshot().await;
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = snapshot().await;
        if now == last {
            break;
        }
        last = now;
    }
    let (stored_objects, (count, bytes)) = last;
    assert!(count > 0, "the clients that waited longest were answered");
    assert_eq!(
        stored_objects.len() as i64,
        count,
        "as many objects as rows"
    );
    let stored: u64 = stored_objects.iter().map(|(_, size)| size).sum();
    assert_eq!(stored as i64, bytes, "the rows' sizes are the objects'");
    assert_eq!(
        storage_used(&app, &tenant).await,
        bytes,
        "the quota counts them"
    );
    assert_eq!(unfinished(&app.config, &tenant).await, 0);
}

async fn a_cancelled_upload_streams_and_leaves_nothing_behind(backend: MediaBackend) {
    let app = TestApp::spawn_with({
        let configure = backend.configure().await;
        move |vars| {
            configure(vars);
            vars.insert("MEDIA_MAX_BYTES".into(), (2 * LARGE).to_string());
        }
    })
    .await;
    let tenant = app.tenant().await;
    let body = multipart_body(&png(LARGE));
    let mut socket = open(&app).await;
    socket
        .write_all(&upload_head(&app, &tenant, body.len()))
        .await
        .unwrap();
    socket.write_all(&body[..body.len() - 4096]).await.unwrap();

    let streaming = eventually(Duration::from_secs(10), || async {
        unfinished(&app.config, &tenant).await > 0
    })
    .await;
    assert!(
        streaming,
        "the bytes reach the store before the body has ended"
    );
    assert!(
        objects(&app.config, &tenant).await.is_empty(),
        "nothing visible yet"
    );

    drop(socket);
    let cleaned = eventually(Duration::from_secs(10), || async {
        unfinished(&app.config, &tenant).await == 0
    })
    .await;
    assert!(cleaned, "the cancelled upload is aborted in the store");
    assert!(objects(&app.config, &tenant).await.is_empty());
    assert_eq!(rows(&app, &tenant).await, (0, 0));
    assert_eq!(storage_used(&app, &tenant).await, 0);

    let done = upload(&app, &tenant, file(png(LARGE), "p.png", "image/png"))
        .await
        .expect(201);
    let stored = objects(&app.config, &tenant).await;
    assert_eq!(
        stored.len(),
        1,
        "a whole upload in several parts is one object"
    );
    assert_eq!(stored[0].1, done.body["size_bytes"].as_u64().unwrap());
}

async fn uploads_over_the_in_flight_cap_are_answered_503(backend: MediaBackend) {
    let app = TestApp::spawn_with({
        let configure = backend.configure().await;
        move |vars| {
            configure(vars);
            vars.insert("MEDIA_MAX_CONCURRENT_UPLOADS".into(), "1".into());
        }
    })
    .await;
    let tenant = app.tenant().await;
    let body = multipart_body(&png(10_000));
    let mut stalled = open(&app).await;
    stalled
        .write_all(&upload_head(&app, &tenant, body.len()))
        .await
        .unwrap();
    stalled.write_all(&body[..5_000]).await.unwrap();

    // The stalled upload holds the one place once its head has been read.
    let capped = eventually(Duration::from_secs(5), || async {
        upload(&app, &tenant, file(png(100), "p.png", "image/png"))
            .await
            .status
            == 503
    })
    .await;
    assert!(capped, "the second upload finds no place");
    let before = rows(&app, &tenant).await;
    let refused = upload(&app, &tenant, file(png(100), "p.png", "image/png"))
        .await
        .expect_problem(503, "service_unavailable");
    assert!(refused.header("retry-after").is_some());
    assert!(app.metric("convcommerce_media_uploads_refused_total").await >= 1.0);
    assert_eq!(
        rows(&app, &tenant).await,
        before,
        "the refusal stored nothing"
    );

    stalled.write_all(&body[5_000..]).await.unwrap();
    let mut answer = vec![0; 12];
    stalled.read_exact(&mut answer).await.unwrap();
    assert_eq!(&answer, b"HTTP/1.1 201");
    upload(&app, &tenant, file(png(100), "p.png", "image/png"))
        .await
        .expect(201);
}

async fn the_cleanup_deletes_objects_no_row_names_after_an_hour(backend: MediaBackend) {
    // A database of its own: the job visits every tenant of it.
    let app = TestApp::spawn_on(private_database().await, backend.configure().await).await;
    let tenant = app.tenant().await;
    let kept = upload(&app, &tenant, file(png(100), "p.png", "image/png"))
        .await
        .expect(201);
    let store = MediaStore::from_config(&app.config).unwrap();
    let orphan = MediaStore::key(tenant.id, Uuid::now_v7());
    store.put(&orphan, png(50).into()).await.unwrap();
    let foreign = "not-ours/readme.txt";
    store.put(foreign, "left alone".into()).await.unwrap();
    let db = Db::connect(&SecretString::from(app.db.app_url.clone()), 2, 0).unwrap();

    let early = cleanup::run_at(&db, &store, Utc::now() + chrono::Duration::minutes(50))
        .await
        .unwrap();
    assert_eq!(
        early.orphans_deleted, 0,
        "an object younger than an hour stays"
    );
    assert_eq!(objects(&app.config, &tenant).await.len(), 2);

    let report = cleanup::run_at(&db, &store, Utc::now() + chrono::Duration::minutes(70))
        .await
        .unwrap();
    assert_eq!(report.orphans_deleted, 1);
    let left = objects(&app.config, &tenant).await;
    let kept_key = format!("{}/{}", tenant.id, kept.body["id"].as_str().unwrap());
    assert_eq!(left.len(), 1);
    assert!(left[0].0.ends_with(&kept_key), "the media with a row stays");
    let keys: Vec<String> = store
        .objects()
        .map_ok(|o| o.location.to_string())
        .try_collect()
        .await
        .unwrap();
    assert!(
        keys.iter().any(|k| k == foreign),
        "keys not shaped as media stay"
    );
    app.get(&format!(
        "/api/v1/media/{}/content",
        kept.body["id"].as_str().unwrap()
    ))
    .owner_of(&tenant)
    .send()
    .await
    .expect(200);
}

async fn an_upload_whose_row_fails_before_its_commit_leaves_no_object(backend: MediaBackend) {
    // A database of its own: the test ends the server's connection while it inserts the row.
    let app = TestApp::spawn_on(private_database().await, backend.configure().await).await;
    let tenant = app.tenant().await;
    // The quota row is held, so the INSERT's quota trigger waits on it.
    let mut holder = connect(&app.db.owner_url).await;
    let held = tenant_tx(&mut holder, tenant.id).await;
    held.execute(
        "SELECT 1 FROM tenant_quota_usage WHERE tenant_id = $1 FOR UPDATE",
        &[&tenant.id],
    )
    .await
    .unwrap();
    let superuser = connect(&superuser_url().await).await;
    let end_the_insert = async {
        let ended = eventually(Duration::from_secs(10), || async {
            superuser
                .query_one(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
                     WHERE datname = $1 AND wait_event_type = 'Lock'
                       AND query LIKE 'INSERT INTO media%'",
                    &[&app.db.database],
                )
                .await
                .unwrap()
                .get::<_, i64>(0)
                == 1
        })
        .await;
        assert!(ended, "the upload's INSERT waited on the quota row");
    };
    let (answer, ()) = tokio::join!(
        upload(&app, &tenant, file(png(1_000), "p.png", "image/png")),
        end_the_insert
    );
    answer.expect_problem(503, "service_unavailable");
    held.rollback().await.unwrap();
    assert_eq!(rows(&app, &tenant).await, (0, 0));
    assert_objects_are_rows(&app, &tenant).await;
    assert!(
        objects(&app.config, &tenant).await.is_empty(),
        "the bytes went with the row"
    );
}

/// The scheduled job (not `run_at`, which counts nothing) reconciles the store and counts the
/// objects it deleted in `convcommerce_media_orphans_deleted_total`.
#[tokio::test]
async fn the_cleanup_job_counts_the_orphans_it_deletes_in_metrics() {
    let clock = ManualClock::new(Utc::now());
    let app = TestApp::spawn_full(private_database().await, Some(clock.clone()), |vars| {
        vars.insert("CLEANUP_INTERVAL_SECONDS".into(), "1".into());
    })
    .await;
    let tenant = app.tenant().await;
    upload(&app, &tenant, file(png(100), "p.png", "image/png"))
        .await
        .expect(201);
    let store = MediaStore::from_config(&app.config).unwrap();
    let orphan = MediaStore::key(tenant.id, Uuid::now_v7());
    store.put(&orphan, png(50).into()).await.unwrap();
    let owner = connect(&app.db.owner_url).await;
    let finished = || async {
        owner
            .query_opt(
                "SELECT last_finished_at FROM job_runs WHERE name = 'cleanup'",
                &[],
            )
            .await
            .unwrap()
            .and_then(|r| r.get::<_, Option<chrono::DateTime<Utc>>>(0))
    };
    let metric = || app.metric("convcommerce_media_orphans_deleted_total");

    // A pass while the orphan is younger than an hour deletes and counts nothing.
    let start = finished().await;
    assert!(
        eventually(Duration::from_secs(10), || async {
            finished().await != start
        })
        .await,
        "the job ran a pass"
    );
    assert_eq!(metric().await, 0.0);
    assert_eq!(objects(&app.config, &tenant).await.len(), 2);

    clock.advance(chrono::Duration::minutes(70));
    assert!(
        eventually(Duration::from_secs(10), || async { metric().await == 1.0 }).await,
        "the orphan is counted"
    );
    let left = objects(&app.config, &tenant).await;
    assert_eq!(left.len(), 1);
    assert_ne!(
        left[0].0, orphan,
        "the orphan went, the media with a row stayed"
    );
    assert_objects_are_rows(&app, &tenant).await;
}
