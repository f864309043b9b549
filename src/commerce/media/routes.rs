//! Media endpoints: multipart upload (sniffed, size-capped), metadata, bytes, delete.

use axum::Json;
use axum::body::Body;
use axum::extract::multipart::MultipartRejection;
use axum::extract::{DefaultBodyLimit, FromRequest, Multipart, Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::BytesMut;
use futures_util::TryStreamExt;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::model::{ACCEPTED, SNIFF_BYTES, sniff};
use super::model::{Media, MediaContent, MediaUpload, NewMedia, clean_filename};
use super::store::{self, MediaError};
use crate::error::{AppError, AppResult};
use crate::extract::IdPath;
use crate::state::AppState;
use crate::storage::MediaStore;
use crate::tenancy::TenantCtx;

/// Room for the multipart framing around the file.
const MULTIPART_OVERHEAD: u64 = 64 * 1024;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(upload_media))
        // The upload enforces MEDIA_MAX_BYTES itself instead of the 1 MiB JSON body limit.
        .layer(DefaultBodyLimit::disable())
        .routes(routes!(get_media, delete_media))
        .routes(routes!(get_media_content))
}

fn base_url(state: &AppState) -> String {
    state
        .config
        .public_base_url
        .as_ref()
        .map(|u| u.as_str().trim_end_matches('/').to_string())
        .unwrap_or_default()
}

fn read_error(err: axum::extract::multipart::MultipartError) -> AppError {
    if err.status() == StatusCode::PAYLOAD_TOO_LARGE {
        AppError::PayloadTooLarge
    } else {
        AppError::BadRequest {
            code: "invalid_body",
            detail: "The multipart body could not be read.".into(),
        }
    }
}

/// Streams the `file` part (at most `max` bytes) into an object under `tenant`'s prefix,
/// deciding its type from its first bytes. The object stays invisible until the returned
/// upload is finished; an error, or the request being dropped, aborts it.
async fn stream_upload(
    mut multipart: Multipart,
    media: &MediaStore,
    tenant: Uuid,
    max: u64,
) -> AppResult<NewMedia> {
    while let Some(mut field) = multipart.next_field().await.map_err(read_error)? {
        if field.name() != Some("file") {
            continue;
        }
        let filename = field.file_name().and_then(clean_filename);
        let mut head = BytesMut::new();
        let mut rest = None;
        while head.len() < SNIFF_BYTES {
            match field.chunk().await.map_err(read_error)? {
                Some(chunk) if head.is_empty() && chunk.len() >= SNIFF_BYTES => {
                    rest = Some(chunk);
                    break;
                }
                Some(chunk) => head.extend_from_slice(&chunk),
                None => break,
            }
        }
        let head = rest.unwrap_or_else(|| head.freeze());
        if head.is_empty() {
            return Err(AppError::validation("file", "must not be empty"));
        }
        let content_type = sniff(&head).ok_or_else(|| {
            AppError::UnsupportedMediaType(format!("The file must be {ACCEPTED}."))
        })?;
        let id = Uuid::now_v7();
        let storage_key = MediaStore::key(tenant, id);
        let mut upload = media.upload(&storage_key);
        let mut next = Some(head);
        while let Some(chunk) = next {
            if upload.written() + chunk.len() as u64 > max {
                return Err(AppError::PayloadTooLarge);
            }
            upload
                .write(chunk)
                .await
                .map_err(|e| MediaError::Storage(e.context("writing an upload")))?;
            next = field.chunk().await.map_err(read_error)?;
        }
        return Ok(NewMedia {
            id,
            storage_key,
            content_type,
            filename,
            upload,
        });
    }
    Err(AppError::validation(
        "file",
        "a part named file is required",
    ))
}

/// Uploads a file (multipart, part `file`). The type is sniffed from the bytes; the size is
/// limited by `MEDIA_MAX_BYTES` (10 MiB by default).
#[utoipa::path(post, path = "/api/v1/media", tag = "media",
    request_body(content = inline(MediaUpload), content_type = "multipart/form-data"),
    responses(
        (status = 201, description = "Stored", body = Media),
        (status = 413, description = "`payload_too_large`"),
        (status = 415, description = "`unsupported_media_type`: not multipart, or not JPEG, PNG, GIF, WebP or PDF"),
        (status = 422, description = "`validation_failed`: no `file` part, or an empty one"),
        (status = 503, description = "`service_unavailable`: every upload place is taken (`MEDIA_MAX_CONCURRENT_UPLOADS`); retry after `Retry-After`"),
    ))]
#[tracing::instrument(skip_all)]
pub async fn upload_media(
    State(state): State<AppState>,
    ctx: TenantCtx,
    request: Request,
) -> AppResult<(StatusCode, Json<Media>)> {
    let Some(place) = state.media.admit_upload() else {
        state.metrics.media_upload_refused();
        return Err(AppError::Unavailable("Upload capacity"));
    };
    let max = state.media.max_bytes;
    let limited = request.map(|body| {
        Body::new(http_body_util::Limited::new(
            body,
            (max + MULTIPART_OVERHEAD) as usize,
        ))
    });
    let multipart =
        Multipart::from_request(limited, &state)
            .await
            .map_err(|e: MultipartRejection| {
                tracing::debug!(error = %e, "not a multipart upload");
                AppError::UnsupportedMediaType(
                    "Send the file as multipart/form-data in a part named file.".into(),
                )
            })?;
    let new = stream_upload(multipart, &state.media, ctx.tenant_id(), max).await?;
    // Every byte is in: from here the work runs in a task of its own, so a client that goes
    // away now cannot leave bytes without their row, or a row without its bytes.
    let (db, activity) = (ctx.db().clone(), ctx.activity().clone());
    let (media, base) = (state.media.clone(), base_url(&state));
    let stored = tokio::spawn(async move {
        let _place = place;
        store::create(&db, &activity, &media, &base, new).await
    })
    .await
    .map_err(|e| anyhow::Error::new(e).context("storing an upload"))??;
    Ok((StatusCode::CREATED, Json(stored)))
}

/// A media's metadata.
#[utoipa::path(get, path = "/api/v1/media/{id}", tag = "media",
    params(("id" = uuid::Uuid, Path, description = "Media id")),
    responses(
        (status = 200, description = "The media", body = Media),
        (status = 404, description = "`not_found` (also for another tenant's media)"),
    ))]
pub async fn get_media(
    State(state): State<AppState>,
    ctx: TenantCtx,
    IdPath(id): IdPath,
) -> AppResult<Json<Media>> {
    Ok(Json(store::get(ctx.db(), id, &base_url(&state)).await?))
}

/// Deletes a media and its bytes; products that showed it no longer do.
#[utoipa::path(delete, path = "/api/v1/media/{id}", tag = "media",
    params(("id" = uuid::Uuid, Path, description = "Media id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "`not_found`"),
        (status = 409, description = "`media_in_use`: a verification document names it"),
    ))]
#[tracing::instrument(skip_all, fields(media_id = %id))]
pub async fn delete_media(
    State(state): State<AppState>,
    ctx: TenantCtx,
    IdPath(id): IdPath,
) -> AppResult<StatusCode> {
    store::delete(ctx.db(), ctx.activity(), &state.media, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The bytes, with their content type. Served so a browser never runs them: images `inline`,
/// anything else (PDF) as an `attachment`, `nosniff`, and a `sandbox` content security policy.
#[utoipa::path(get, path = "/api/v1/media/{id}/content", tag = "media",
    params(("id" = uuid::Uuid, Path, description = "Media id")),
    responses(
        MediaContent,
    ))]
pub async fn get_media_content(
    State(state): State<AppState>,
    ctx: TenantCtx,
    IdPath(id): IdPath,
) -> AppResult<Response> {
    let (content_type, size, key) = store::locate(ctx.db(), id).await?;
    let stream = state.media.get(&key).await?;
    let disposition = if content_type.starts_with("image/") {
        "inline"
    } else {
        "attachment"
    };
    Ok((
        [
            (header::CONTENT_DISPOSITION, disposition.to_string()),
            (header::CONTENT_SECURITY_POLICY, "sandbox".to_string()),
            (header::CONTENT_TYPE, content_type),
            (header::CONTENT_LENGTH, size.to_string()),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff".to_string()),
            (header::CACHE_CONTROL, "private, max-age=3600".to_string()),
        ],
        Body::from_stream(stream.map_err(std::io::Error::other)),
    )
        .into_response())
}

impl From<MediaError> for AppError {
    #[track_caller]
    fn from(err: MediaError) -> Self {
        match err {
            MediaError::NotFound => Self::NotFound("media"),
            MediaError::InUse => Self::Conflict {
                code: "media_in_use",
                detail: "A verification document names this media; it is kept for the review."
                    .into(),
            },
            MediaError::Db(e) => e.into(),
            MediaError::Storage(cause) => cause.context("media object store").into(),
        }
    }
}
