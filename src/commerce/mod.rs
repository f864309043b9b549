//! The seller-facing API: everything here runs inside one tenant's context.

pub mod ai_config;
pub mod analytics;
pub mod conversations;
pub mod filter;
pub mod media;
pub mod orders;
pub mod products;
pub mod profile;
pub mod settings;
pub mod tenant;
pub mod usage;
pub mod users;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize};
use tokio_postgres::Row;
use utoipa::ToSchema;

use crate::db::DbError;
use crate::error::Fields;
use crate::types;

/// An enum stored as text: serde, OpenAPI and PostgreSQL (`FromSql`/`ToSql` on text columns)
/// all use the same snake_case names (utoipa reads `schema(rename)`, not `serde(rename)`, on
/// variants, so both are given).
macro_rules! text_enum {
    ($(#[$meta:meta])* $name:ident { $($variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize,
                 utoipa::ToSchema)]
        pub enum $name {
            $(#[serde(rename = $text)] #[schema(rename = $text)] $variant),+
        }

        impl $name {
            pub const ALL: &'static [Self] = &[$(Self::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $text),+
                }
            }
        }

        impl<'a> tokio_postgres::types::FromSql<'a> for $name {
            fn from_sql(
                ty: &tokio_postgres::types::Type,
                raw: &'a [u8],
            ) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
                match <&str as tokio_postgres::types::FromSql>::from_sql(ty, raw)? {
                    $($text => Ok(Self::$variant),)+
                    other => Err(format!(concat!("not a ", stringify!($name), ": {}"), other).into()),
                }
            }

            fn accepts(ty: &tokio_postgres::types::Type) -> bool {
                <&str as tokio_postgres::types::FromSql>::accepts(ty)
            }
        }

        impl tokio_postgres::types::ToSql for $name {
            fn to_sql(
                &self,
                ty: &tokio_postgres::types::Type,
                out: &mut bytes::BytesMut,
            ) -> Result<tokio_postgres::types::IsNull, Box<dyn std::error::Error + Sync + Send>> {
                self.as_str().to_sql(ty, out)
            }

            fn accepts(ty: &tokio_postgres::types::Type) -> bool {
                <&str as tokio_postgres::types::ToSql>::accepts(ty)
            }

            tokio_postgres::types::to_sql_checked!();
        }
    };
}
pub(crate) use text_enum;

text_enum! {
    /// Where a customer talks to the seller.
    Channel {
        Whatsapp => "whatsapp",
        Instagram => "instagram",
        Web => "web",
        Other => "other",
    }
}

/// For `PATCH` bodies: tells a field sent as `null` (`Some(None)`) from an absent one (`None`).
pub fn nullable<'de, D, T>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(deserializer).map(Some)
}

/// A value as a json(b) parameter.
pub fn to_json<T: Serialize>(value: &T) -> Result<serde_json::Value, DbError> {
    serde_json::to_value(value).map_err(|e| DbError::Decode(e.to_string()))
}

/// A json(b) column as `T` (SQL NULL reads as JSON null, so `T` may be an `Option`).
pub fn json_column<T: DeserializeOwned>(row: &Row, name: &str) -> Result<T, DbError> {
    let value: Option<serde_json::Value> = row.get(name);
    serde_json::from_value(value.unwrap_or_default())
        .map_err(|e| DbError::Decode(format!("{name}: {e}")))
}

/// A postal address (business address, delivery address).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"line1": "Rua Augusta 1500", "city": "São Paulo", "region": "SP",
    "postal_code": "01304-001", "country": "BR"}))]
pub struct Address {
    #[schema(schema_with = types::schema::name::<200>)]
    pub line1: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(max_length = 200, pattern = r"^[^\x00]*$")]
    pub line2: Option<String>,
    #[schema(schema_with = types::schema::name::<100>)]
    pub city: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(max_length = 100, pattern = r"^[^\x00]*$")]
    pub region: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(max_length = 20, pattern = r"^[^\x00]*$")]
    pub postal_code: Option<String>,
    #[schema(schema_with = types::schema::country)]
    pub country: String,
}

impl Address {
    /// The address with its parts trimmed and checked; errors are recorded under `field`.
    pub fn parse(self, field: &str, fields: &mut Fields) -> Option<Self> {
        let line1 = fields.check(format!("{field}.line1"), types::name(&self.line1, 200));
        let line2 = fields.check(
            format!("{field}.line2"),
            types::text(self.line2.as_deref(), 200),
        );
        let city = fields.check(format!("{field}.city"), types::name(&self.city, 100));
        let region = fields.check(
            format!("{field}.region"),
            types::text(self.region.as_deref(), 100),
        );
        let postal_code = fields.check(
            format!("{field}.postal_code"),
            types::text(self.postal_code.as_deref(), 20),
        );
        let country = self.country.trim().to_ascii_uppercase();
        let country_ok = country.len() == 2 && country.bytes().all(|b| b.is_ascii_uppercase());
        if !country_ok {
            fields.fail(
                format!("{field}.country"),
                "must be an ISO 3166-1 alpha-2 code, e.g. BR",
            );
        }
        Some(Self {
            line1: line1?,
            line2: line2?,
            city: city?,
            region: region?,
            postal_code: postal_code?,
            country: country_ok.then_some(country)?,
        })
    }
}
