//! Trust's API types: verifications and their requests, the trust document.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio_postgres::Row;
use utoipa::ToSchema;
use uuid::Uuid;

use super::level::FeatureState;
use super::score::{Factor, Requirement};
use crate::commerce::profile::model::SellerProfile;
use crate::commerce::text_enum;
use crate::error::{AppError, Fields};
use crate::types;

text_enum! {
    /// What a verification proves (SPEC §6).
    VerificationKind {
        Email => "email",
        Phone => "phone",
        BusinessInfo => "business_info",
        StoreSetup => "store_setup",
        Registration => "registration",
        TaxId => "tax_id",
        Address => "address",
        BankAccount => "bank_account",
    }
}

impl VerificationKind {
    /// The business documents, reviewed by platform admins.
    pub fn is_document(self) -> bool {
        matches!(
            self,
            Self::Registration | Self::TaxId | Self::Address | Self::BankAccount
        )
    }
}

text_enum! {
    /// `unverified` until started; `pending` while a code or a review is outstanding.
    VerificationStatus {
        Unverified => "unverified",
        Pending => "pending",
        Verified => "verified",
        Rejected => "rejected",
    }
}

text_enum! {
    /// The business documents a seller can submit.
    DocumentKind {
        Registration => "registration",
        TaxId => "tax_id",
        Address => "address",
        BankAccount => "bank_account",
    }
}

impl DocumentKind {
    pub fn kind(self) -> VerificationKind {
        match self {
            Self::Registration => VerificationKind::Registration,
            Self::TaxId => VerificationKind::TaxId,
            Self::Address => VerificationKind::Address,
            Self::BankAccount => VerificationKind::BankAccount,
        }
    }
}

/// One verification: an entry of `GET /api/v1/trust/verifications`, and what the document
/// and code endpoints answer.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Verification {
    pub id: Uuid,
    pub kind: VerificationKind,
    pub status: VerificationStatus,
    /// Why a document was rejected; what the seller profile lacks for `business_info` and
    /// `store_setup`.
    #[schema(required = true)]
    pub reason: Option<String>,
    /// Documents: the files submitted (empty for the other kinds).
    pub media_ids: Vec<Uuid>,
    /// Documents: what the seller wrote for the reviewer.
    pub fields: BTreeMap<String, String>,
    /// Documents: when the current submission was made.
    #[serde(serialize_with = "types::timestamp_opt")]
    #[schema(required = true)]
    pub submitted_at: Option<DateTime<Utc>>,
    /// Documents: when the current submission was made (as `submitted_at`); the other kinds:
    /// when the tenant was created.
    #[serde(serialize_with = "types::timestamp")]
    pub created_at: DateTime<Utc>,
    #[serde(serialize_with = "types::timestamp")]
    pub updated_at: DateTime<Utc>,
}

impl Verification {
    /// Columns of `trust_verifications v`, with the media in order. A document's
    /// `created_at` is its current submission's (what `POST .../documents` creates; the row
    /// itself exists from the tenant's creation).
    pub const COLUMNS: &'static str = "v.id, v.kind, v.status, v.reason, v.fields, \
        v.submitted_at, coalesce(v.submitted_at, v.created_at), v.updated_at, \
        ARRAY(SELECT vm.media_id FROM verification_media vm \
              WHERE vm.tenant_id = v.tenant_id AND vm.verification_id = v.id \
              ORDER BY vm.position) AS media_ids";

    pub fn from_row(row: &Row) -> Result<Self, crate::db::DbError> {
        Ok(Self {
            id: row.get(0),
            kind: row.get(1),
            status: row.get(2),
            reason: row.get(3),
            fields: crate::commerce::json_column(row, "fields")?,
            submitted_at: row.get(5),
            created_at: row.get(6),
            updated_at: row.get(7),
            media_ids: row.get(8),
        })
    }

    /// `business_info` and `store_setup` as the seller profile makes them: verified when the
    /// fields they need are filled in, else unverified with what is missing as the reason.
    pub fn derive(&mut self, profile: Option<&SellerProfile>) {
        let missing = match self.kind {
            VerificationKind::BusinessInfo => business_info_missing(profile),
            VerificationKind::StoreSetup => store_setup_missing(profile),
            _ => return,
        };
        if missing.is_empty() {
            self.status = VerificationStatus::Verified;
            self.reason = None;
        } else {
            self.status = VerificationStatus::Unverified;
            self.reason = Some(format!("The seller profile lacks {}.", missing.join(", ")));
        }
        if let Some(p) = profile {
            self.updated_at = self.updated_at.max(p.updated_at);
        }
    }
}

/// Business information: how to reach and find the business.
fn business_info_missing(profile: Option<&SellerProfile>) -> Vec<&'static str> {
    let Some(p) = profile else {
        return vec!["contact_email", "contact_phone", "business_address"];
    };
    let mut missing = Vec::new();
    if p.contact_email.is_none() {
        missing.push("contact_email");
    }
    if p.contact_phone.is_none() {
        missing.push("contact_phone");
    }
    if p.business_address.is_none() {
        missing.push("business_address");
    }
    missing
}

/// Store setup: what a customer sees of the store.
fn store_setup_missing(profile: Option<&SellerProfile>) -> Vec<&'static str> {
    let Some(p) = profile else {
        return vec!["store_name", "slug", "bio", "logo_url"];
    };
    let mut missing = Vec::new();
    if p.bio.is_none() {
        missing.push("bio");
    }
    if p.logo_url.is_none() {
        missing.push("logo_url");
    }
    missing
}

/// `POST /api/v1/trust/verifications/email/send`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"email": "owner@acme.example"}))]
pub struct SendEmailCode {
    /// Where the code goes.
    #[schema(schema_with = types::schema::email)]
    pub email: String,
}

/// `POST /api/v1/trust/verifications/phone/send`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"phone": "+5511912345678"}))]
pub struct SendPhoneCode {
    /// E.164; where the code goes by SMS.
    #[schema(schema_with = types::schema::phone)]
    pub phone: String,
}

/// What a code send answers.
#[derive(Debug, Serialize, ToSchema)]
pub struct CodeSent {
    pub kind: VerificationKind,
    pub status: VerificationStatus,
    /// When the code stops working (10 minutes).
    #[serde(serialize_with = "types::timestamp")]
    pub expires_at: DateTime<Utc>,
}

/// `POST /api/v1/trust/verifications/{email|phone}/confirm`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"code": "042917"}))]
pub struct ConfirmCode {
    /// The six digits received (anything else is a wrong code: 422 `code_invalid`).
    #[schema(pattern = "^[0-9]{6}$")]
    pub code: String,
}

impl ConfirmCode {
    /// The code as sent, without surrounding blanks. Anything but the live code's six digits
    /// is a wrong code (422 `code_invalid`, a try spent), whatever its shape.
    pub fn code(&self) -> &str {
        self.code.trim()
    }
}

/// The most files one document submission can have.
pub const MAX_DOCUMENT_MEDIA: usize = 10;
/// The most fields one document submission can have.
pub const MAX_DOCUMENT_FIELDS: usize = 20;

/// `POST /api/v1/trust/verifications/documents`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({
    "kind": "registration",
    "media_ids": ["01935a3e-8f00-7cc0-9a1e-2b3c4d5e6f70"],
    "fields": {"registration_number": "12.345.678/0001-90", "legal_name": "Acme Threads Ltda"}
}))]
pub struct SubmitDocument {
    pub kind: DocumentKind,
    /// 1-10 media of this tenant: the scans or photos of the document.
    #[schema(schema_with = document_media)]
    pub media_ids: Vec<Uuid>,
    /// Free-form notes for the reviewer: up to 20 fields, names 1-64 and values 1-500
    /// characters (not checked per kind).
    #[serde(default)]
    #[schema(schema_with = document_fields, required = false)]
    pub fields: BTreeMap<String, String>,
}

fn document_media() -> utoipa::openapi::schema::Array {
    let mut ids = types::schema::unique_ids::<MAX_DOCUMENT_MEDIA>();
    ids.min_items = Some(1);
    ids
}

fn document_fields() -> utoipa::openapi::schema::Object {
    use utoipa::openapi::schema::{ObjectBuilder, Type};
    ObjectBuilder::new()
        .schema_type(Type::Object)
        .max_properties(Some(MAX_DOCUMENT_FIELDS))
        .property_names(Some(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .min_length(Some(1))
                .max_length(Some(64))
                .pattern(Some(r"^[^\x00]*$")),
        ))
        .additional_properties(Some(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .min_length(Some(1))
                .max_length(Some(500))
                .pattern(Some(r"^[^\x00]*\S[^\x00]*$")),
        ))
        .build()
}

/// A validated [`SubmitDocument`].
pub struct NewDocument {
    pub kind: VerificationKind,
    pub media_ids: Vec<Uuid>,
    pub fields: BTreeMap<String, String>,
}

impl SubmitDocument {
    pub fn validate(self) -> Result<NewDocument, AppError> {
        let mut f = Fields::default();
        if self.media_ids.is_empty() || self.media_ids.len() > MAX_DOCUMENT_MEDIA {
            f.fail(
                "media_ids",
                format!("1-{MAX_DOCUMENT_MEDIA} media of this tenant"),
            );
        }
        for (i, id) in self.media_ids.iter().enumerate() {
            if self.media_ids[..i].contains(id) {
                f.fail(format!("media_ids[{i}]"), "is listed twice");
            }
        }
        if self.fields.len() > MAX_DOCUMENT_FIELDS {
            f.fail("fields", format!("at most {MAX_DOCUMENT_FIELDS} fields"));
        }
        let mut fields = BTreeMap::new();
        for (name, value) in self.fields {
            let field = format!("fields.{name}");
            if name.is_empty() || name.chars().count() > 64 || name.contains('\0') {
                f.fail(field, "field names are 1-64 characters");
            } else if let Some(value) = f.check(field, types::name(&value, 500)) {
                fields.insert(name, value);
            }
        }
        f.finish(|| {
            Some(NewDocument {
                kind: self.kind.kind(),
                media_ids: self.media_ids,
                fields,
            })
        })
    }
}

/// `POST /api/v1/admin/verifications/{id}/approve|reject`.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"reason": "The registration number matches the document."}))]
pub struct Decision {
    /// Why (1-1000 characters); required to reject, optional to approve.
    #[schema(max_length = 1000, pattern = r"^[^\x00]*$")]
    pub reason: Option<String>,
}

impl Decision {
    pub fn validate(self, required: bool) -> Result<Option<String>, AppError> {
        let mut f = Fields::default();
        let reason = match self.reason {
            Some(r) => f.check("reason", types::name(&r, 1000).map(Some)),
            None if required => {
                f.fail("reason", "a rejection needs a reason");
                None
            }
            None => Some(None),
        };
        f.finish(|| reason)
    }
}

/// The grace period a tenant is in: its level's requirements are not met, and it is demoted
/// at `ends_at` unless they are met again.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Grace {
    #[serde(serialize_with = "types::timestamp")]
    pub started_at: DateTime<Utc>,
    #[serde(serialize_with = "types::timestamp")]
    pub ends_at: DateTime<Utc>,
    /// The requirements of the current level that are not met.
    pub unmet: Vec<&'static str>,
}

/// The next level and everything it needs.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct NextLevel {
    #[schema(minimum = 1, maximum = 3)]
    pub level: i16,
    pub level_name: &'static str,
    pub requirements: Vec<Requirement>,
}

/// `GET /api/v1/trust`: where the tenant stands and why.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct TrustDocument {
    #[schema(minimum = 0, maximum = 3)]
    pub level: i16,
    /// `unverified`, `verified`, `trusted` or `premium`.
    #[schema(example = "verified")]
    pub level_name: &'static str,
    #[schema(minimum = 0, maximum = 100)]
    pub score: i16,
    /// A platform admin fixed the level: the recompute does not change it.
    pub locked: bool,
    /// Why the level is what it is (the last change's reason).
    #[schema(required = true)]
    pub reason: Option<String>,
    pub factors: Vec<Factor>,
    pub verifications: Vec<Verification>,
    pub features: Vec<FeatureState>,
    /// The product cap of this level (null: only the product quota).
    #[schema(required = true)]
    pub product_cap: Option<i64>,
    /// Set while the current level's requirements are not met.
    #[schema(required = true)]
    pub grace: Option<Grace>,
    /// Null at level 3.
    #[schema(required = true)]
    pub next_level: Option<NextLevel>,
    #[serde(serialize_with = "types::timestamp")]
    pub computed_at: DateTime<Utc>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_name_each_bad_field() {
        let body: SubmitDocument = serde_json::from_value(serde_json::json!({
            "kind": "tax_id", "media_ids": [], "fields": {"": "x", "number": " "}
        }))
        .unwrap();
        let Err(AppError::Validation(errors)) = body.validate() else {
            panic!("invalid");
        };
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["media_ids", "fields.", "fields.number"]);
    }
}
