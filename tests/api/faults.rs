//! PostgreSQL restarted and killed under load (issue 8): outage answers are 503 problem+json
//! with `Retry-After` within 2 s (no hang, no 500), the service is healthy again within 5 s
//! of PostgreSQL accepting connections, and every acknowledged order exists afterwards while
//! no refused one does.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use convcommerce::db::bootstrap;
use convcommerce::db::embedded::{Durability, EmbeddedPostgres};
use serde_json::json;
use tokio::sync::Mutex;
use uuid::Uuid;

use crate::helpers::*;

const CLIENTS: usize = 32;
/// The slowest answer allowed while PostgreSQL is away.
const ANSWER_WITHIN: Duration = Duration::from_secs(2);
/// How soon after PostgreSQL accepts connections both paths must succeed again.
const HEALTHY_WITHIN: Duration = Duration::from_secs(5);

/// What the clients saw.
#[derive(Default)]
struct Tally {
    created: Vec<Uuid>,
    /// Orders whose COMMIT went unanswered: 503 with `outcome: unknown` and their id.
    in_doubt: Vec<Uuid>,
    ok_reads: u64,
    unavailable: u64,
    /// Answers that are neither success nor 503 `service_unavailable` with `Retry-After`.
    wrong: Vec<String>,
    slowest: Duration,
    /// When orders and reads succeeded.
    order_successes: Vec<Instant>,
    read_successes: Vec<Instant>,
}

async fn client(
    app: Arc<TestApp>,
    tenant: Arc<TestTenant>,
    product: String,
    stop: Arc<AtomicBool>,
    tally: Arc<Mutex<Tally>>,
    n: usize,
) {
    let mut i = n;
    while !stop.load(Ordering::Relaxed) {
        i += 1;
        let order = i.is_multiple_of(2);
        let started = Instant::now();
        let response = if order {
            app.post("/api/v1/orders")
                .owner_of(&tenant)
                .json(&json!({
                    "customer": {"name": "Ana", "phone": "+5511912345678"},
                    "items": [{"product_id": product, "quantity": 1}],
                    "channel": "web"
                }))
                .send()
                .await
        } else {
            app.get("/api/v1/products?limit=5")
                .owner_of(&tenant)
                .send()
                .await
        };
        let took = started.elapsed();
        let mut t = tally.lock().await;
        t.slowest = t.slowest.max(took);
        let now = Instant::now();
        match response.status.as_u16() {
            201 if order => {
                t.created
                    .push(response.body["id"].as_str().unwrap().parse().unwrap());
                t.order_successes.push(now);
            }
            200 if !order => {
                t.ok_reads += 1;
                t.read_successes.push(now);
            }
            503 if response.code() == "service_unavailable"
                && response.header("content-type") == Some("application/problem+json")
                && response.header("retry-after").is_some() =>
            {
                t.unavailable += 1;
                if response.body["outcome"] == "unknown" {
                    t.in_doubt.push(
                        response.body["resource_id"]
                            .as_str()
                            .unwrap()
                            .parse()
                            .unwrap(),
                    );
                }
            }
            status => t.wrong.push(format!("{status} {}", response.body)),
        }
        drop(t);
        if response.status.as_u16() == 503 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Runs the clients through `fault` (which returns when PostgreSQL accepts connections again)
/// and checks what they saw.
/// The ids of the orders acknowledged with 201, and of those in doubt.
async fn drill<F, Fut>(
    app: &Arc<TestApp>,
    tenant: &Arc<TestTenant>,
    product: &str,
    fault: F,
) -> (Vec<Uuid>, Vec<Uuid>)
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = ()>,
{
    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Mutex::new(Tally::default()));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|n| {
            tokio::spawn(client(
                app.clone(),
                tenant.clone(),
                product.to_string(),
                stop.clone(),
                tally.clone(),
                n,
            ))
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(700)).await;
    fault().await;
    let back = Instant::now();
    tokio::time::sleep(HEALTHY_WITHIN + Duration::from_secs(1)).await;
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.await.unwrap();
    }

    let t = tally.lock().await;
    assert!(
        t.wrong.is_empty(),
        "answers other than success or 503: {:?}",
        &t.wrong[..t.wrong.len().min(5)]
    );
    assert!(t.slowest < ANSWER_WITHIN, "a request took {:?}", t.slowest);
    assert!(t.unavailable > 0, "the outage was seen (503s)");
    for (what, successes) in [("orders", &t.order_successes), ("reads", &t.read_successes)] {
        let healthy_at = successes
            .iter()
            .filter(|s| **s > back)
            .min()
            .copied()
            .unwrap_or_else(|| panic!("{what} never succeeded after the outage"));
        let recovered = healthy_at.saturating_duration_since(back);
        assert!(
            recovered < HEALTHY_WITHIN,
            "{what} healthy {recovered:?} after PostgreSQL came back"
        );
    }
    assert!(t.ok_reads > 0);
    eprintln!(
        "fault drill: {} orders acknowledged, {} in doubt, {} reads, {} answered 503, slowest {:?}",
        t.created.len(),
        t.in_doubt.len(),
        t.ok_reads,
        t.unavailable,
        t.slowest
    );
    (t.created.clone(), t.in_doubt.clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_restarted_and_killed_under_load_loses_no_acknowledged_order() {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("faults-{}", Uuid::now_v7().simple()));
    let pg = EmbeddedPostgres::start(&dir, Durability::Durable)
        .await
        .expect("a private cluster for the drill");
    let db = bootstrap::provision(
        &pg.superuser_url("postgres"),
        "convcommerce",
        pg.passwords(),
    )
    .await
    .expect("provisioning");
    let app = Arc::new(
        TestApp::spawn_on(db.clone(), |vars| {
            vars.insert("RATE_LIMITS".into(), "off".into());
            vars.insert("DB_POOL_SIZE".into(), "8".into());
        })
        .await,
    );
    // A second instance whose cache only NOTIFY can invalidate: after the outage its listener
    // must have reconnected.
    let other = TestApp::spawn_on(db.clone(), |vars| {
        vars.insert("TENANT_CACHE_TTL_SECONDS".into(), "3600".into());
    })
    .await;
    let tenant = Arc::new(app.tenant().await);
    let product = app.product(&tenant, json!({"stock": 1_000_000})).await["id"]
        .as_str()
        .unwrap()
        .to_string();

    let (mut acknowledged, mut in_doubt) = drill(&app, &tenant, &product, || async {
        pg.restart().await.expect("pg_ctl restart -m fast");
    })
    .await;
    let (created, doubtful) = drill(&app, &tenant, &product, || async {
        pg.crash().await.expect("SIGKILL");
        tokio::time::sleep(Duration::from_millis(500)).await;
        pg.recover().await.expect("starting after the crash");
    })
    .await;
    acknowledged.extend(created);
    in_doubt.extend(doubtful);

    let (staff, staff_id) = app.member(&tenant, "staff").await;
    let as_staff = || {
        other
            .get("/api/v1/users")
            .user(&staff)
            .tenant(tenant.id)
            .send()
    };
    as_staff().await.expect(200);
    app.delete(&format!("/api/v1/users/{staff_id}"))
        .owner_of(&tenant)
        .send()
        .await
        .expect(204);
    assert!(
        eventually(Duration::from_secs(3), || async {
            as_staff().await.status == 403
        })
        .await,
        "the other instance's NOTIFY listener reconnected after the crash"
    );

    // The orders the clients were told about are exactly the tenant's orders, and each took
    // its unit of stock.
    let mut owner = connect(&db.owner_url).await;
    let tx = tenant_tx(&mut owner, tenant.id).await;
    let mut stored: Vec<Uuid> = tx
        .query("SELECT id FROM orders WHERE tenant_id = $1", &[&tenant.id])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let stock: i32 = tx
        .query_one(
            "SELECT stock FROM products WHERE tenant_id = $1 AND id = $2",
            &[&tenant.id, &product.parse::<Uuid>().unwrap()],
        )
        .await
        .unwrap()
        .get(0);
    drop(tx);
    drop(owner);
    pg.stop().await.expect("stopping the drill's cluster");
    let _ = std::fs::remove_dir_all(&dir);

    acknowledged.sort();
    stored.sort();
    assert!(!acknowledged.is_empty());
    let lost: Vec<_> = acknowledged
        .iter()
        .filter(|id| !stored.contains(id))
        .collect();
    // An order stored though its request failed must have been answered as in doubt.
    let unacknowledged: Vec<_> = stored
        .iter()
        .filter(|id| !acknowledged.contains(id) && !in_doubt.contains(id))
        .collect();
    assert!(lost.is_empty(), "acknowledged orders lost: {lost:?}");
    assert!(
        unacknowledged.is_empty(),
        "orders stored though their request failed: {unacknowledged:?}"
    );
    assert_eq!(stock as usize, 1_000_000 - stored.len());
}
