//! The seller profile, its request body and validation.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio_postgres::Row;
use utoipa::ToSchema;

use crate::commerce::{Address, json_column};
use crate::error::{AppError, Fields, sent};
use crate::types::{self, Email, Phone, Slug};

#[derive(Debug, Serialize, ToSchema)]
pub struct SellerProfile {
    pub store_name: String,
    pub slug: String,
    #[schema(required = true)]
    pub bio: Option<String>,
    #[schema(required = true)]
    pub logo_url: Option<String>,
    #[schema(required = true)]
    pub banner_url: Option<String>,
    #[schema(required = true)]
    pub contact_email: Option<String>,
    /// E.164.
    #[schema(required = true)]
    pub contact_phone: Option<String>,
    /// Network name to handle, e.g. `{"instagram": "@acme"}`.
    pub social_handles: BTreeMap<String, String>,
    #[schema(required = true)]
    pub business_address: Option<Address>,
    #[serde(serialize_with = "crate::types::timestamp")]
    pub created_at: DateTime<Utc>,
    #[serde(serialize_with = "crate::types::timestamp")]
    pub updated_at: DateTime<Utc>,
}

impl SellerProfile {
    pub const COLUMNS: &'static str = "store_name, slug, bio, logo_url, banner_url, contact_email, \
        contact_phone, social_handles, business_address, created_at, updated_at";

    pub fn from_row(row: &Row) -> Result<Self, crate::db::DbError> {
        Ok(Self {
            store_name: row.get("store_name"),
            slug: row.get("slug"),
            bio: row.get("bio"),
            logo_url: row.get("logo_url"),
            banner_url: row.get("banner_url"),
            contact_email: row.get("contact_email"),
            contact_phone: row.get("contact_phone"),
            social_handles: json_column(row, "social_handles")?,
            business_address: json_column(row, "business_address")?,
            created_at: row.get("created_at"),
            updated_at: row.get("updated_at"),
        })
    }
}

/// The whole profile: fields left out are cleared.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({
    "store_name": "Acme Threads",
    "slug": "acme-threads",
    "bio": "Hand-printed tees, shipped from São Paulo.",
    "logo_url": "https://cdn.acme.example/logo.png",
    "contact_email": "hello@acme.example",
    "contact_phone": "+5511912345678",
    "social_handles": {"instagram": "@acmethreads"},
    "business_address": {"line1": "Rua Augusta 1500", "city": "São Paulo", "region": "SP",
        "postal_code": "01304-001", "country": "BR"}
}))]
pub struct PutSellerProfile {
    #[schema(schema_with = types::schema::name::<200>)]
    pub store_name: String,
    #[schema(schema_with = types::schema::slug)]
    pub slug: String,
    #[schema(max_length = 2000, pattern = r"^[^\x00]*$")]
    pub bio: Option<String>,
    #[schema(schema_with = types::schema::http_url_or_null, required = false)]
    pub logo_url: Option<String>,
    #[schema(schema_with = types::schema::http_url_or_null, required = false)]
    pub banner_url: Option<String>,
    #[schema(schema_with = types::schema::email_or_null, required = false)]
    pub contact_email: Option<String>,
    #[schema(schema_with = types::schema::phone_or_null, required = false)]
    pub contact_phone: Option<String>,
    #[serde(default)]
    #[schema(schema_with = types::schema::social_handles::<MAX_SOCIAL_HANDLES>, required = false)]
    pub social_handles: BTreeMap<String, String>,
    pub business_address: Option<Address>,
}

pub struct ProfileInput {
    pub store_name: String,
    pub slug: Slug,
    pub bio: Option<String>,
    pub logo_url: Option<String>,
    pub banner_url: Option<String>,
    pub contact_email: Option<Email>,
    pub contact_phone: Option<Phone>,
    pub social_handles: BTreeMap<String, String>,
    pub business_address: Option<Address>,
}

const MAX_SOCIAL_HANDLES: usize = 10;

fn social_network(name: &str) -> bool {
    (1..=32).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

impl PutSellerProfile {
    pub fn validate(self) -> Result<ProfileInput, AppError> {
        let mut f = Fields::default();
        let store_name = f.check("store_name", types::name(&self.store_name, 200));
        let slug = f.check("slug", Slug::parse(&self.slug));
        let bio = f.check("bio", types::text(self.bio.as_deref(), 2000));
        let url = |f: &mut Fields, field: &str, raw: Option<String>| {
            f.check(field, raw.as_deref().map(types::http_url).transpose())
        };
        let logo_url = url(&mut f, "logo_url", self.logo_url);
        let banner_url = url(&mut f, "banner_url", self.banner_url);
        let contact_email = f.check(
            "contact_email",
            self.contact_email.as_deref().map(Email::parse).transpose(),
        );
        let contact_phone = f.check(
            "contact_phone",
            self.contact_phone.as_deref().map(Phone::parse).transpose(),
        );
        if self.social_handles.len() > MAX_SOCIAL_HANDLES {
            f.fail(
                "social_handles",
                format!("at most {MAX_SOCIAL_HANDLES} networks"),
            );
        }
        let mut social_handles = BTreeMap::new();
        for (network, handle) in self.social_handles {
            let field = format!("social_handles.{network}");
            if !social_network(&network) {
                f.fail(
                    field,
                    "network names are 1-32 lower-case letters, digits or _",
                );
            } else if let Some(handle) = f.check(field, types::name(&handle, 100)) {
                social_handles.insert(network, handle);
            }
        }
        let business_address = self
            .business_address
            .map(|a| a.parse("business_address", &mut f));
        f.finish(|| {
            Some(ProfileInput {
                store_name: store_name?,
                slug: slug?,
                bio: bio?,
                logo_url: logo_url?,
                banner_url: banner_url?,
                contact_email: contact_email?,
                contact_phone: contact_phone?,
                social_handles,
                business_address: sent(business_address)?,
            })
        })
    }
}
