//! Request parsing that answers in problem+json: JSON bodies (422 with the failing field),
//! path ids (404: a malformed id names nothing) and list queries (limit and keyset cursor).

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::HeaderValue;
use axum::http::header::CONTENT_TYPE;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::error::{AppError, FieldError};

/// A JSON body; a body that does not fit the schema gives 422 naming the field.
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = AppError;

    async fn from_request(req: Request, state: &S) -> Result<Self, AppError> {
        if !has_json_content_type(&req) {
            return Err(not_json());
        }
        let bytes = read_body(req, state).await?;
        decode(&bytes).map(Self)
    }
}

/// A JSON body that may be left out (an action whose fields are all optional): no body, or
/// JSON `null`, reads as `T::default()`; any other body is read as [`ApiJson`] reads it.
pub struct OptionalJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Default> FromRequest<S> for OptionalJson<T> {
    type Rejection = AppError;

    async fn from_request(req: Request, state: &S) -> Result<Self, AppError> {
        let is_json = has_json_content_type(&req);
        let bytes = read_body(req, state).await?;
        match (bytes.is_empty(), is_json) {
            (true, _) => Ok(Self(T::default())),
            (false, true) => decode::<Option<T>>(&bytes).map(|t| Self(t.unwrap_or_default())),
            (false, false) => Err(not_json()),
        }
    }
}

fn has_json_content_type(req: &Request) -> bool {
    req.headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(is_json_content_type)
}

fn not_json() -> AppError {
    AppError::UnsupportedMediaType("Send the body as application/json.".into())
}

/// The whole body, within the route's body limit (413 beyond it).
async fn read_body<S: Send + Sync>(req: Request, state: &S) -> Result<axum::body::Bytes, AppError> {
    axum::body::Bytes::from_request(req, state)
        .await
        .map_err(|e| match e.status() {
            axum::http::StatusCode::PAYLOAD_TOO_LARGE => AppError::PayloadTooLarge,
            _ => AppError::BadRequest {
                code: "invalid_body",
                detail: "The body could not be read.".into(),
            },
        })
}

/// A JSON document already read (to check something before its shape) as `T`, answering
/// exactly as [`ApiJson`] would for that body.
pub fn from_value<T: DeserializeOwned>(value: serde_json::Value) -> Result<T, AppError> {
    let bytes = serde_json::to_vec(&value).map_err(anyhow::Error::from)?;
    decode(&bytes)
}

/// The body as `T`; JSON Schema counts `5.0` as an integer where serde does not, so a body
/// that fails is tried once more with such numbers written as integers.
fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, AppError> {
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    let err = match serde_path_to_error::deserialize(de) {
        Ok(value) => return Ok(value),
        Err(err) => err,
    };
    if err.inner().is_syntax() || err.inner().is_eof() {
        return Err(AppError::BadRequest {
            code: "malformed_json",
            detail: "The body is not valid JSON.".into(),
        });
    }
    if let Ok(mut value) = serde_json::from_slice::<serde_json::Value>(bytes)
        && integers_from_floats(&mut value)
        && let Ok(parsed) = serde_json::from_value(value)
    {
        return Ok(parsed);
    }
    let path = err.path().to_string();
    let message = strip_position(&err.into_inner().to_string());
    Err(AppError::Validation(vec![FieldError::new(
        field_of(&path, &message),
        message,
    )]))
}

/// Rewrites every number with no fractional part (`5.0`) as an integer; true if any was.
fn integers_from_floats(value: &mut serde_json::Value) -> bool {
    use serde_json::Value;
    match value {
        Value::Number(n) => match n.as_f64() {
            Some(f) if n.is_f64() && f.fract() == 0.0 && f.abs() < 9_007_199_254_740_992.0 => {
                *value = Value::from(f as i64);
                true
            }
            _ => false,
        },
        Value::Array(items) => items
            .iter_mut()
            .fold(false, |changed, item| integers_from_floats(item) | changed),
        Value::Object(fields) => fields
            .values_mut()
            .fold(false, |changed, item| integers_from_floats(item) | changed),
        _ => false,
    }
}

/// The field a deserialisation error is about. serde reports a missing field at the path of
/// the object that lacks it, so the field's name (from "missing field `x`") is appended.
fn field_of(path: &str, message: &str) -> String {
    let parent = (path != ".").then_some(path);
    let missing = message
        .strip_prefix("missing field `")
        .and_then(|rest| rest.split('`').next());
    match (parent, missing) {
        (Some(parent), Some(field)) => format!("{parent}.{field}"),
        (None, Some(field)) => field.to_string(),
        (Some(parent), None) => parent.to_string(),
        (None, None) => "body".to_string(),
    }
}

/// serde_json appends " at line L column C"; clients want the reason only.
fn strip_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(i) => message[..i].to_string(),
        None => message.to_string(),
    }
}

/// `application/json` or any `application/*+json`, parameters ignored.
fn is_json_content_type(value: &str) -> bool {
    let essence = value
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

/// A UUID path parameter; anything else is a resource that cannot exist: 404.
pub struct IdPath(pub Uuid);

impl<S: Send + Sync> FromRequestParts<S> for IdPath {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, AppError> {
        let axum::extract::Path(raw) =
            axum::extract::Path::<String>::from_request_parts(parts, state)
                .await
                .map_err(|_| AppError::NotFound("resource"))?;
        Uuid::parse_str(&raw)
            .map(Self)
            .map_err(|_| AppError::NotFound("resource"))
    }
}

pub const DEFAULT_LIMIT: i64 = 20;
pub const MAX_LIMIT: i64 = 100;

/// `?limit=&cursor=` of every list.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// Items per page, 1-100 (default 20).
    #[param(minimum = 1, maximum = 100, default = 20)]
    pub limit: Option<i64>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// A validated page request: how many rows to fetch and the key to continue after.
#[derive(Debug, Clone, Copy)]
pub struct PageRequest {
    pub limit: i64,
    pub after: Option<Uuid>,
}

impl PageQuery {
    pub fn parse(&self) -> Result<PageRequest, AppError> {
        let limit = self.limit.unwrap_or(DEFAULT_LIMIT);
        if !(1..=MAX_LIMIT).contains(&limit) {
            return Err(AppError::validation(
                "limit",
                format!("must be between 1 and {MAX_LIMIT}"),
            ));
        }
        let after = self.cursor.as_deref().map(decode_cursor).transpose()?;
        Ok(PageRequest { limit, after })
    }
}

/// Cursors are opaque to clients: a versioned, base64url-encoded keyset position.
fn decode_cursor(raw: &str) -> Result<Uuid, AppError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(raw)
        .map_err(|_| AppError::invalid_cursor())?;
    let text = std::str::from_utf8(&bytes).map_err(|_| AppError::invalid_cursor())?;
    text.strip_prefix("v1:")
        .and_then(|id| Uuid::parse_str(id).ok())
        .ok_or_else(AppError::invalid_cursor)
}

fn encode_cursor(id: Uuid) -> String {
    URL_SAFE_NO_PAD.encode(format!("v1:{id}"))
}

/// One page of a list, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// Pass as `cursor` to get the next page; null on the last page.
    #[schema(required = true)]
    pub next_cursor: Option<String>,
}

impl<T> Page<T> {
    /// Builds a page from up to `limit + 1` rows fetched in key order: the extra row only
    /// tells that another page exists.
    pub fn from_rows(mut items: Vec<T>, request: PageRequest, key: impl Fn(&T) -> Uuid) -> Self {
        let more = items.len() as i64 > request.limit;
        items.truncate(request.limit as usize);
        let next_cursor = if more {
            items.last().map(|last| encode_cursor(key(last)))
        } else {
            None
        };
        Self { items, next_cursor }
    }
}

/// A page is answered as JSON written into one buffer sized for it up front (axum's `Json`
/// starts at 128 bytes and grows a page of products five times over).
impl<T: Serialize> IntoResponse for Page<T> {
    fn into_response(self) -> Response {
        let mut body = Vec::with_capacity(64 + self.items.len() * 512);
        match serde_json::to_writer(&mut body, &self) {
            Ok(()) => (
                [(CONTENT_TYPE, HeaderValue::from_static("application/json"))],
                body,
            )
                .into_response(),
            Err(e) => AppError::from(anyhow::Error::from(e)).into_response(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_field_is_named_by_its_path() {
        assert_eq!(field_of(".", "missing field `owner`"), "owner");
        assert_eq!(field_of("owner", "missing field `email`"), "owner.email");
        assert_eq!(
            field_of("items[2]", "missing field `quantity`"),
            "items[2].quantity"
        );
        assert_eq!(
            field_of("price_cents", "invalid type: string"),
            "price_cents"
        );
        assert_eq!(
            field_of(".", "invalid type: string, expected a map"),
            "body"
        );
    }

    #[test]
    fn cursors_round_trip_and_reject_forgeries() {
        let id = Uuid::now_v7();
        assert_eq!(decode_cursor(&encode_cursor(id)).unwrap(), id);
        for bad in [
            "",
            "!!",
            "djE6bm90LWEtdXVpZA",
            &URL_SAFE_NO_PAD.encode(id.to_string()),
        ] {
            assert_eq!(
                decode_cursor(bad).unwrap_err().code(),
                "invalid_cursor",
                "{bad}"
            );
        }
    }

    #[test]
    fn integral_floats_count_as_integers() {
        #[derive(Debug, Deserialize, PartialEq)]
        struct Body {
            stars: i16,
            tags: Vec<i64>,
        }
        let body: Body = decode(br#"{"stars": 5.0, "tags": [1, 2.0]}"#).unwrap();
        assert_eq!(
            body,
            Body {
                stars: 5,
                tags: vec![1, 2]
            }
        );
        let fractional = decode::<Body>(br#"{"stars": 4.5, "tags": []}"#).unwrap_err();
        assert_eq!(fractional.code(), "validation_failed");
        assert_eq!(decode::<Body>(b"{").unwrap_err().code(), "malformed_json");
    }

    #[test]
    fn limits_are_bounded() {
        for bad in [0, -1, 101] {
            let q = PageQuery {
                limit: Some(bad),
                cursor: None,
            };
            assert!(q.parse().is_err());
        }
        assert_eq!(PageQuery::default().parse().unwrap().limit, DEFAULT_LIMIT);
    }

    #[test]
    fn a_full_page_points_to_the_next() {
        let ids: Vec<Uuid> = (0..3).map(|_| Uuid::now_v7()).collect();
        let req = PageRequest {
            limit: 2,
            after: None,
        };
        let page = Page::from_rows(ids.clone(), req, |id| *id);
        assert_eq!(page.items.len(), 2);
        assert_eq!(
            decode_cursor(page.next_cursor.as_ref().unwrap()).unwrap(),
            ids[1]
        );
        let last = Page::from_rows(ids[..2].to_vec(), req, |id| *id);
        assert!(last.next_cursor.is_none());
    }
}
