//! Media metadata, what an upload may be (sniffed from its bytes), and file names.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio_postgres::Row;
use utoipa::ToSchema;
use utoipa::openapi::response::{Response, ResponseBuilder};
use utoipa::openapi::schema::{KnownFormat, ObjectBuilder, SchemaFormat, Type};
use utoipa::openapi::{ContentBuilder, RefOr};
use uuid::Uuid;

use crate::storage::Upload;

#[derive(Debug, Serialize, ToSchema)]
pub struct Media {
    pub id: Uuid,
    /// What the bytes are, as sniffed from them: one of `image/png`, `image/jpeg`,
    /// `image/gif`, `image/webp`, `application/pdf`.
    pub content_type: String,
    #[schema(minimum = 1)]
    pub size_bytes: i64,
    /// The uploaded file's name, if it had one.
    #[schema(required = true)]
    pub filename: Option<String>,
    /// Where to GET the bytes (with the same headers as every tenant request).
    pub url: String,
    #[serde(serialize_with = "crate::types::timestamp")]
    pub created_at: DateTime<Utc>,
}

impl Media {
    pub const COLUMNS: &'static str = "id, content_type, size_bytes, filename, created_at";

    /// `base` is `PUBLIC_BASE_URL` without its trailing slash, or empty for a relative URL.
    pub fn from_row(row: &Row, base: &str) -> Self {
        let id: Uuid = row.get("id");
        Self {
            id,
            content_type: row.get("content_type"),
            size_bytes: row.get("size_bytes"),
            filename: row.get("filename"),
            url: format!("{base}/api/v1/media/{id}/content"),
            created_at: row.get("created_at"),
        }
    }
}

/// The multipart form of an upload.
#[derive(ToSchema)]
pub struct MediaUpload {
    /// JPEG, PNG, GIF, WebP or PDF; the type is read from the bytes.
    #[schema(value_type = String, format = Binary, content_media_type = "application/octet-stream")]
    pub file: Vec<u8>,
}

/// Every `content_type` an upload can have: what the sniffing recognises.
pub const CONTENT_TYPES: [&str; 5] = [
    "image/png",
    "image/jpeg",
    "image/gif",
    "image/webp",
    "application/pdf",
];

/// The answer of `GET /api/v1/media/{id}/content`: the raw bytes, in their own type.
pub struct MediaContent;

impl utoipa::IntoResponses for MediaContent {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        let mut response = ResponseBuilder::new()
            .description("The file's bytes, with their content type (`content_type` of the media)");
        for content_type in CONTENT_TYPES {
            let bytes = ObjectBuilder::new()
                .schema_type(Type::String)
                .format(Some(SchemaFormat::KnownFormat(KnownFormat::Binary)))
                .content_media_type(content_type);
            response = response.content(
                content_type,
                ContentBuilder::new().schema(Some(bytes)).build(),
            );
        }
        let header = |values: &[&str], description: &str| {
            let mut header = utoipa::openapi::header::Header::new(
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .enum_values(Some(values.iter().copied())),
            );
            header.description = Some(description.into());
            header
        };
        let response = response
            .header(
                "Content-Disposition",
                header(
                    &["inline", "attachment"],
                    "`inline` for images, `attachment` for documents",
                ),
            )
            .header(
                "Content-Security-Policy",
                header(&["sandbox"], "The bytes never run as a page"),
            )
            .header(
                "X-Content-Type-Options",
                header(&["nosniff"], "The type is the one sniffed at upload"),
            );
        BTreeMap::from([("200".to_string(), response.build().into())])
    }
}

/// An upload whose bytes are written to the store (not yet visible there) and whose row is
/// not yet inserted.
pub struct NewMedia {
    pub id: Uuid,
    pub storage_key: String,
    pub content_type: &'static str,
    pub filename: Option<String>,
    pub upload: Upload,
}

/// The last path component of a client's file name, without control characters, at most
/// 255 characters; `None` when nothing is left.
pub fn clean_filename(raw: &str) -> Option<String> {
    let name: String = raw
        .rsplit(['/', '\\'])
        .next()
        .unwrap_or("")
        .chars()
        .filter(|c| !c.is_control())
        .take(255)
        .collect();
    let name = name.trim();
    (!name.is_empty()).then(|| name.to_string())
}

/// The media types accepted, recognised by their first bytes (never by the client's word).
/// Bytes [`sniff`] needs to tell every accepted type (WebP's marker ends at 12).
pub const SNIFF_BYTES: usize = 12;

pub fn sniff(bytes: &[u8]) -> Option<&'static str> {
    let starts = |magic: &[u8]| bytes.starts_with(magic);
    if starts(&[0xFF, 0xD8, 0xFF]) {
        Some("image/jpeg")
    } else if starts(b"\x89PNG\r\n\x1a\n") {
        Some("image/png")
    } else if starts(b"GIF87a") || starts(b"GIF89a") {
        Some("image/gif")
    } else if starts(b"RIFF") && bytes.get(8..12) == Some(b"WEBP") {
        Some("image/webp")
    } else if starts(b"%PDF-") {
        Some("application/pdf")
    } else {
        None
    }
}

pub const ACCEPTED: &str = "JPEG, PNG, GIF, WebP or PDF";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filenames_lose_paths_and_control_characters() {
        assert_eq!(
            clean_filename("C:\\x\\photo.png").as_deref(),
            Some("photo.png")
        );
        assert_eq!(clean_filename("../../etc/pa\nss").as_deref(), Some("pass"));
        assert_eq!(clean_filename("  "), None);
        assert_eq!(clean_filename(&"a".repeat(300)).unwrap().len(), 255);
    }

    #[test]
    fn sniffs_by_magic_bytes() {
        assert_eq!(sniff(b"\xFF\xD8\xFF\xE0rest"), Some("image/jpeg"));
        assert_eq!(sniff(b"\x89PNG\r\n\x1a\nIHDR"), Some("image/png"));
        assert_eq!(sniff(b"GIF89a..."), Some("image/gif"));
        assert_eq!(sniff(b"RIFF\x10\0\0\0WEBPVP8 "), Some("image/webp"));
        assert_eq!(sniff(b"%PDF-1.7"), Some("application/pdf"));
        for other in [
            &b""[..],
            b"<svg xmlns='http://www.w3.org/2000/svg'/>",
            b"RIFF\x10\0\0\0WAVEfmt ",
            b"MZ\x90\0",
            b"\x89PN",
        ] {
            assert_eq!(sniff(other), None, "{other:?}");
        }
    }
}
