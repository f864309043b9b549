//! `convcommerce demo`: seeds a demo tenant (trust level 3, its settings, owner, seller
//! profile, products, orders in several states, a conversation, AI config) through the same
//! stores the API uses, and tells how to try it. Running it again with the same slug finds the
//! tenant instead of seeding twice.

use std::time::Duration;

use anyhow::Context;
use secrecy::SecretString;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::admin::model::NewTenant;
use crate::commerce::ai_config::model::PutAiConfig;
use crate::commerce::conversations::model::PostMessage;
use crate::commerce::orders::model::{CreateOrder, NewRating, OrderStatus, StatusChange};
use crate::commerce::products::model::CreateProduct;
use crate::commerce::profile::model::PutSellerProfile;
use crate::commerce::settings;
use crate::commerce::settings::model::PutTenantSettings;
use crate::commerce::{ai_config, conversations, orders, products, profile};
use crate::config::{Config, Environment};
use crate::db::{Db, TenantDb};
use crate::monitoring::activity::model::Category;
use crate::monitoring::activity::{Change, Recorder};
use crate::notify::Notifier;
use crate::trust;
use crate::trust::level::PREMIUM;
use crate::types::{Email, Slug};
use crate::{admin, auth, dev};

/// The demo tenant's owner (the `sub` of the printed token).
pub const DEMO_OWNER: &str = "demo-owner";

pub struct Demo {
    pub tenant_id: Uuid,
    /// False when the tenant was already there.
    pub created: bool,
}

/// Parses a JSON literal into a request type, as the API would.
fn body<T: serde::de::DeserializeOwned>(value: Value) -> anyhow::Result<T> {
    serde_json::from_value(value).context("a demo request body")
}

/// Finds or creates the tenant `slug` and fills it.
pub async fn seed(db: &Db, slug: &Slug) -> anyhow::Result<Demo> {
    if let Some(tenant_id) = admin::store::id_by_slug(db, slug.as_str()).await? {
        return Ok(Demo {
            tenant_id,
            created: false,
        });
    }
    let new = NewTenant {
        name: "Demo Store".into(),
        slug: slug.clone(),
        owner_external_id: DEMO_OWNER.into(),
        owner_email: Email::parse("owner@demo.example").map_err(anyhow::Error::msg)?,
    };
    let tenant = match admin::store::create(db, &new).await {
        Ok(tenant) => tenant,
        // Another `demo` run created it meanwhile.
        Err(admin::store::TenantError::SlugTaken) => {
            let tenant_id = admin::store::id_by_slug(db, slug.as_str())
                .await?
                .context("the demo tenant vanished")?;
            return Ok(Demo {
                tenant_id,
                created: false,
            });
        }
        Err(e) => return Err(e.into()),
    };
    tracing::info!(target: "audit", tenant_id = %tenant.id, slug = slug.as_str(), "demo tenant created");
    fill(&db.for_tenant(tenant.id)).await?;
    Ok(Demo {
        tenant_id: tenant.id,
        created: true,
    })
}

/// Why the demo tenant is premium (its trust document shows it).
const DEMO_LEVEL_REASON: &str =
    "Demo tenant: premium and locked, so that every trust-gated feature can be tried";

async fn fill(db: &TenantDb) -> anyhow::Result<()> {
    let system = Recorder::system(db.tenant_id());
    let notifier = Notifier::offline(std::sync::Arc::new(crate::clock::SystemClock));
    // Premium, so that every trust-gated feature can be tried; locked, so that the recompute
    // does not take it back (the demo meets none of level 3's requirements).
    let tx = db.begin().await?;
    let seed = trust::store::Override {
        level: PREMIUM,
        reason: DEMO_LEVEL_REASON,
        locked: true,
        score: None,
        now: chrono::Utc::now(),
    };
    trust::store::save_override(&tx, &seed).await?;
    let change = Change::new("trust.level_changed", "tenant", db.tenant_id())
        .category(Category::Trust)
        .details(json!({"from": 0, "to": PREMIUM, "reason": DEMO_LEVEL_REASON}));
    system.commit(tx, change).await?;
    let settings: PutTenantSettings = body(json!({
        "timezone": "America/Sao_Paulo", "auto_confirm_orders": false
    }))?;
    settings::store::put(db, &system, &settings.validate()?).await?;
    let profile: PutSellerProfile = body(json!({
        "store_name": "Demo Store", "slug": "demo-store",
        "bio": "Hand-printed tees and mugs, shipped from São Paulo.",
        "logo_url": "https://cdn.demo.example/logo.png",
        "contact_email": "hello@demo.example", "contact_phone": "+5511912345678",
        "social_handles": {"instagram": "@demostore"},
        "business_address": {"line1": "Rua Augusta 1500", "city": "São Paulo", "region": "SP",
                             "postal_code": "01304-001", "country": "BR"}
    }))?;
    profile::store::put(db, &system, &profile.validate()?).await?;
    let ai: PutAiConfig = body(json!({
        "bot_name": "Ana", "style_tone": "friendly", "auto_reply_enabled": true,
        "active_hours": {"timezone": "America/Sao_Paulo", "start": "08:00", "end": "22:00"},
        "languages": ["pt-BR", "en"],
        "system_prompt": "You sell the Demo Store's tees and mugs. Be brief and kind."
    }))?;
    ai_config::store::put(db, &system, &ai.validate()?).await?;

    let mut ids = Vec::new();
    for (name, sku, price, stock, status) in [
        ("Tee — Ipê print, M", "TEE-IPE-M", 8990, 25, "active"),
        ("Tee — Ipê print, L", "TEE-IPE-L", 8990, 3, "active"),
        ("Mug — Sunrise", "MUG-SUN", 4500, 40, "active"),
        ("Tote bag — Waves", "TOTE-WAV", 5990, 0, "draft"),
    ] {
        let product: CreateProduct = body(json!({
            "name": name, "sku": sku, "price_cents": price, "currency": "BRL",
            "stock": stock, "status": status
        }))?;
        ids.push(
            products::store::create(db, &system, &product.validate()?)
                .await?
                .id,
        );
    }

    let customers = [
        ("Maria Souza", "+5511987654321", "whatsapp"),
        ("João Lima", "+5521998765432", "instagram"),
        ("Carla Dias", "+5531976543210", "web"),
        ("Pedro Alves", "+5541965432109", "whatsapp"),
    ];
    let paths: [&[OrderStatus]; 4] = [
        &[],
        &[
            OrderStatus::Confirmed,
            OrderStatus::Processing,
            OrderStatus::Shipped,
        ],
        &[
            OrderStatus::Confirmed,
            OrderStatus::Processing,
            OrderStatus::Shipped,
            OrderStatus::Delivered,
        ],
        &[OrderStatus::Cancelled],
    ];
    let mut first_order = None;
    for (i, ((name, phone, channel), path)) in customers.into_iter().zip(paths).enumerate() {
        let order: CreateOrder = body(json!({
            "customer": {"name": name, "phone": phone},
            "items": [{"product_id": ids[i % 2], "quantity": 1},
                      {"product_id": ids[2], "quantity": 2}],
            "channel": channel
        }))?;
        let order =
            orders::store::create(db, &system, &notifier, &order.validate()?, false).await?;
        first_order.get_or_insert(order.id);
        for &status in path {
            let change = StatusChange {
                status,
                tracking_number: (status == OrderStatus::Shipped).then(|| format!("BR{i}0042")),
                carrier: (status == OrderStatus::Shipped).then(|| "Correios".to_string()),
                reason: None,
            };
            orders::store::transition(db, &system, &notifier, order.id, &change).await?;
        }
        if path.last() == Some(&OrderStatus::Delivered) {
            let rating = NewRating {
                stars: 5,
                comment: Some("Lindo! Chegou rápido.".into()),
            };
            orders::store::rate(db, &system, order.id, &rating).await?;
        }
    }

    for (sender, text, order) in [
        ("customer", "Oi! Ainda tem a camiseta Ipê no M?", None),
        (
            "bot",
            "Oi, Maria! Temos sim, R$ 89,90. Quer que eu reserve?",
            None,
        ),
        ("customer", "Quero! E uma caneca também.", first_order),
    ] {
        let message: PostMessage = body(json!({
            "customer_handle": "+5511987654321", "channel": "whatsapp",
            "sender_type": sender, "message": text, "order_id": order
        }))?;
        conversations::store::post(db, &system, &message.validate()?).await?;
    }
    Ok(())
}

/// Seeds the demo tenant in the configured database and returns what to print: the tenant
/// id and a dev token of its owner.
pub async fn run(config: &Config, slug: &str) -> anyhow::Result<String> {
    let slug = Slug::parse(slug).map_err(|m| anyhow::anyhow!("--slug {m}"))?;
    let url = config
        .database_url
        .as_ref()
        .context("DATABASE_URL is required")?;
    let db = Db::connect(url, 2, 0)?;
    let demo = seed(&db, &slug).await;
    db.close();
    let demo = demo?;
    let state = if demo.created {
        "created"
    } else {
        "already there"
    };
    if config.environment != Environment::Development {
        // Tokens are printed only in development (SPEC §10).
        return Ok(format!(
            "Demo tenant {slug} ({state}).\n\n  TENANT_ID={tenant}\n\nIts owner is {DEMO_OWNER}; \
             sign in as that subject with your identity provider.\n",
            slug = slug.as_str(),
            tenant = demo.tenant_id,
        ));
    }
    let secret: SecretString = match &config.jwt.hs256_secret {
        Some(secret) => secret.clone(),
        None => dev::dev_secret(&config.data_dir, false)?,
    };
    let token = auth::jwt::mint_hs256(
        &secret,
        config.jwt.issuer.as_deref(),
        DEMO_OWNER,
        Duration::from_secs(24 * 3600),
    )?;
    let base = format!("http://{}:{}", config.host, config.port);
    Ok(format!(
        "Demo tenant {slug} ({state}).\n\
         \n  TENANT_ID={tenant}\n  TOKEN={token}\n\
         \nThe token is the owner's ({DEMO_OWNER}), valid 24 h. With the server running \
         (`convcommerce serve`), open {base}/docs, press Authorize with the token and put the \
         tenant id in X-Tenant-ID, or:\n\
         \n  curl -s {base}/api/v1/products -H \"Authorization: Bearer {token}\" \
         -H 'X-Tenant-ID: {tenant}'\n",
        slug = slug.as_str(),
        tenant = demo.tenant_id,
    ))
}
