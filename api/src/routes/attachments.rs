//! Customer attachments: upload (multipart), list, download.
//!
//! The real type is decided by the content's magic bytes (`infer`); the declared
//! `Content-Type` and the file name's extension play no part. Contents are encrypted under the
//! customer's key (`egec_commands::attachments`) before the `CustomerAttachmentAdded` event
//! that names them is appended, so erasing the customer makes them unreadable.

use crate::auth::actor::Actor;
use crate::error::{ApiError, from_handler};
use crate::routes::customers::{domain_error, visible};
use crate::routes::meta::RequestMeta;
use crate::state::AppState;
use axum::Json;
use axum::extract::multipart::{Field, MultipartError, MultipartRejection};
use axum::extract::{Multipart, Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use egec_commands::attachments::AttachmentError;
use egec_commands::handler::HandlerError;
use egec_commands::store::ReadBound;
use egec_domain::CustomerId;
use egec_domain::aggregate::CustomerAggregate;
use egec_domain::customer::{AddAttachment, AttachmentAdded, CustomerCommand, CustomerEvent};
use egec_domain::event::DomainEvent;
use egec_domain::permission::Action;
use egec_domain::personal::ERASED;
use egec_domain::values::{AttachmentType, FileName, Invalid, Sha256Hex};
use serde::Serialize;
use serde_json::json;
use uuid::Uuid;

/// Largest accepted file (API.md: files 5 MiB).
pub const MAX_FILE_BYTES: usize = 5 * 1024 * 1024;
/// Largest accepted upload body, multipart framing included (API.md: uploads 10 MiB).
pub const MAX_UPLOAD_BODY_BYTES: usize = 10 * 1024 * 1024;

/// Namespace of attachment ids derived from idempotency keys.
const ATTACHMENT_ID_NAMESPACE: Uuid = Uuid::from_u128(0x2b1f_93c4_7a6e_4d10_8e5f_a0c1_d2e3_f4a5);

/// An attachment as the API shows it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct AttachmentView {
    pub id: Uuid,
    pub customer_id: Uuid,
    /// `[ERASED]` once the customer was erased.
    pub file_name: String,
    pub content_type: String,
    pub size: u64,
    pub created_at: DateTime<Utc>,
}

impl AttachmentView {
    pub(crate) fn of(a: &AttachmentAdded) -> Self {
        Self {
            id: a.attachment_id,
            customer_id: a.customer_id.as_uuid(),
            file_name: a
                .file_name
                .known()
                .map_or_else(|| ERASED.to_owned(), |n| n.as_str().to_owned()),
            content_type: a.content_type.mime().to_owned(),
            size: a.size,
            created_at: a.at,
        }
    }
}

fn multipart_error(e: MultipartError) -> ApiError {
    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::PayloadTooLarge
    } else {
        ApiError::BadRequest("the multipart body is malformed".into())
    }
}

/// Reads a field chunk by chunk and stops as soon as it passes the file limit, so an
/// oversized file is refused after reading at most one chunk more than the limit.
async fn read_limited(field: &mut Field<'_>) -> Result<Vec<u8>, ApiError> {
    let mut content = Vec::new();
    while let Some(chunk) = field.chunk().await.map_err(multipart_error)? {
        if content.len() + chunk.len() > MAX_FILE_BYTES {
            return Err(ApiError::PayloadTooLarge);
        }
        content.extend_from_slice(&chunk);
    }
    Ok(content)
}

/// The type the content really has, from its magic bytes; 415 unless JPEG, PNG or PDF.
fn detect(content: &[u8]) -> Result<AttachmentType, ApiError> {
    infer::get(content)
        .and_then(|t| AttachmentType::from_mime(t.mime_type()).ok())
        .ok_or_else(|| {
            ApiError::UnsupportedMediaType("only JPEG, PNG and PDF files are accepted".into())
        })
}

/// A file sent without a name is called after its type.
fn default_name(t: AttachmentType) -> &'static str {
    match t {
        AttachmentType::Jpeg => "attachment.jpg",
        AttachmentType::Png => "attachment.png",
        AttachmentType::Pdf => "attachment.pdf",
    }
}

fn attachment_error(e: AttachmentError) -> ApiError {
    match e {
        AttachmentError::Erased => {
            ApiError::Unprocessable("the customer's personal data was erased".into())
        }
        other => ApiError::internal(other),
    }
}

#[utoipa::path(post, path = "/api/customers/{id}/attachments", params(("id" = Uuid, Path)),
    request_body(content_type = "multipart/form-data", description = "field `file`: a JPEG, PNG or PDF of at most 5 MiB"),
    responses((status = 201, body = AttachmentView), (status = 404), (status = 413), (status = 415), (status = 422)),
    tag = "customers")]
pub async fn upload(
    State(state): State<AppState>,
    actor: Actor,
    meta: RequestMeta,
    Path(id): Path<Uuid>,
    multipart: Result<Multipart, MultipartRejection>,
) -> Result<Response, ApiError> {
    let customer_id = CustomerId::from_uuid(id);
    let row = visible(&state, &actor, customer_id).await?;
    actor.require(Action::CustomersEdit)?;
    // Refused before a byte of the body is read; the domain decides again on the append.
    if row.deleted {
        return Err(ApiError::NotFound);
    }
    if row.erased {
        return Err(attachment_error(AttachmentError::Erased));
    }
    let mut multipart = multipart
        .map_err(|_| ApiError::BadRequest("expected a multipart/form-data body".into()))?;
    let mut file = None;
    while let Some(mut field) = multipart.next_field().await.map_err(multipart_error)? {
        if field.name() != Some("file") {
            continue;
        }
        let name = field.file_name().map(str::to_owned);
        file = Some((name, read_limited(&mut field).await?));
        break;
    }
    let Some((name, content)) = file else {
        return Err(ApiError::field("file", "a file is required"));
    };
    let content_type = detect(&content)?;
    let file_name = match name.filter(|n| !n.trim().is_empty()) {
        Some(n) => FileName::parse(&n).map_err(|Invalid(m)| ApiError::field("file_name", m))?,
        None => FileName::parse(default_name(content_type))
            .map_err(|Invalid(m)| ApiError::field("file_name", m))?,
    };
    // A retried upload (same idempotency key) lands on the same id and event.
    let attachment_id = match meta.idempotency_key {
        Some(k) => Uuid::new_v5(&ATTACHMENT_ID_NAMESPACE, k.as_bytes()),
        None => Uuid::now_v7(),
    };
    let stored = state
        .attachments
        .store(customer_id, attachment_id, &content)
        .await
        .map_err(attachment_error)?;
    let ciphertext_hash = Sha256Hex::parse(&stored.ciphertext_hash)
        .map_err(|Invalid(m)| ApiError::internal(anyhow::anyhow!(m)))?;
    let result = state
        .bus
        .execute::<CustomerAggregate>(
            &customer_id.stream_id(),
            &customer_id.subject(),
            None,
            meta.command_id,
            &meta.metadata(&actor),
            CustomerCommand::AddAttachment(AddAttachment {
                attachment_id,
                file_name,
                content_type,
                size: content.len() as u64,
                ciphertext_hash,
            }),
        )
        .await;
    let done = match result {
        Ok(done) => done,
        Err(e) => {
            // Refused for certain (the domain said no, or writers kept winning): no event
            // names the blob, so it goes. After a storage or appender failure the append may
            // still have committed, so the blob stays; if it did not, the orphan is unreadable
            // by anyone, since every download starts from an event naming it.
            let refused = matches!(
                e,
                HandlerError::Domain(_)
                    | HandlerError::VersionConflict { .. }
                    | HandlerError::Contention(_)
            );
            if stored.created
                && refused
                && let Err(d) = state.attachments.discard(attachment_id).await
            {
                tracing::warn!(%attachment_id, error = %d, "orphan attachment blob left behind");
            }
            return Err(from_handler(e, domain_error));
        }
    };
    state.wait_for_write(done.position).await;
    // The event just appended, or, for a retry that appended nothing, the one the first
    // attempt appended: the answer always describes what the log holds.
    let added = done.events.into_iter().find_map(|e| match e {
        CustomerEvent::AttachmentAdded(a) => Some(a),
        _ => None,
    });
    let added = match added {
        Some(a) => a,
        None => recorded(&state, customer_id)
            .await?
            .into_iter()
            .find(|a| a.attachment_id == attachment_id)
            .ok_or_else(|| {
                ApiError::internal(anyhow::anyhow!("attachment {attachment_id} not recorded"))
            })?,
    };
    Ok((StatusCode::CREATED, Json(AttachmentView::of(&added))).into_response())
}

/// Every attachment recorded on the customer's stream.
async fn recorded(state: &AppState, id: CustomerId) -> Result<Vec<AttachmentAdded>, ApiError> {
    let events = state
        .bus
        .stream_events(&id.stream_id(), ReadBound::None)
        .await
        .map_err(ApiError::internal)?;
    Ok(events
        .into_iter()
        .filter_map(|env| match env.event {
            DomainEvent::Customer(CustomerEvent::AttachmentAdded(a)) => Some(a),
            _ => None,
        })
        .collect())
}

#[utoipa::path(get, path = "/api/customers/{id}/attachments", params(("id" = Uuid, Path)),
    responses((status = 200, body = Vec<AttachmentView>), (status = 404)), tag = "customers")]
pub async fn list(
    State(state): State<AppState>,
    actor: Actor,
    Path(id): Path<Uuid>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let id = CustomerId::from_uuid(id);
    visible(&state, &actor, id).await?;
    let items: Vec<AttachmentView> = recorded(&state, id)
        .await?
        .iter()
        .map(AttachmentView::of)
        .collect();
    Ok(Json(json!({ "items": items })))
}

/// Characters kept as they are in a quoted `filename=`; everything else becomes `_`.
fn ascii_fallback(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_graphic() && !matches!(c, '"' | '\\' | ';' | '%') || c == ' ' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// RFC 8187 encoding of the UTF-8 name for `filename*=`: attr-chars stay, the rest is %XX.
fn rfc8187(name: &str) -> String {
    let mut out = String::with_capacity(name.len() * 3);
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || b"!#$&+-.^_`|~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `attachment; filename="…"; filename*=UTF-8''…`: never inline, and the name can neither
/// break out of its quotes nor inject a header.
fn content_disposition(name: &str) -> Result<HeaderValue, ApiError> {
    HeaderValue::from_str(&format!(
        "attachment; filename=\"{}\"; filename*=UTF-8''{}",
        ascii_fallback(name),
        rfc8187(name)
    ))
    .map_err(ApiError::internal)
}

#[utoipa::path(get, path = "/api/attachments/{id}", params(("id" = Uuid, Path)),
    responses((status = 200, description = "the file's bytes", content_type = "application/octet-stream"), (status = 404)),
    tag = "customers")]
pub async fn download(
    State(state): State<AppState>,
    actor: Actor,
    Path(id): Path<Uuid>,
) -> Result<Response, ApiError> {
    actor.require(Action::CustomersView)?;
    let owner = state
        .attachments
        .owner(id)
        .await
        .map_err(ApiError::internal)?
        .ok_or(ApiError::NotFound)?;
    // An attachment of a customer the caller may not see does not exist for them.
    visible(&state, &actor, owner).await?;
    let record = recorded(&state, owner)
        .await?
        .into_iter()
        .find(|a| a.attachment_id == id)
        .ok_or(ApiError::NotFound)?;
    let content = match state
        .attachments
        .open(owner, id, record.ciphertext_hash.as_str())
        .await
    {
        Ok(c) => c,
        // Erased: the key is gone, and with it the content.
        Err(AttachmentError::Erased) => return Err(ApiError::NotFound),
        Err(e) => return Err(ApiError::internal(e)),
    };
    let file_name = record
        .file_name
        .known()
        .map_or("attachment", |n| n.as_str());
    let mut resp = content.to_vec().into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(record.content_type.mime()),
    );
    h.insert(header::CONTENT_DISPOSITION, content_disposition(file_name)?);
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_cannot_break_out_of_the_content_disposition_header() {
        let v = content_disposition("a\"b;c\\d%e.pdf").unwrap();
        assert_eq!(
            v.to_str().unwrap(),
            "attachment; filename=\"a_b_c_d_e.pdf\"; filename*=UTF-8''a%22b%3Bc%5Cd%25e.pdf"
        );
        let v = content_disposition("Séance 1.pdf").unwrap();
        assert_eq!(
            v.to_str().unwrap(),
            "attachment; filename=\"S_ance 1.pdf\"; filename*=UTF-8''S%C3%A9ance%201.pdf"
        );
    }

    #[test]
    fn only_jpeg_png_and_pdf_magic_bytes_are_accepted() {
        assert_eq!(
            detect(b"\xFF\xD8\xFF\xE0\0\x10JFIF\0").ok(),
            Some(AttachmentType::Jpeg)
        );
        assert_eq!(
            detect(b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR").ok(),
            Some(AttachmentType::Png)
        );
        assert_eq!(detect(b"%PDF-1.7\n").ok(), Some(AttachmentType::Pdf));
        for bad in [
            &b"MZ\x90\0\x03\0\0\0\x04\0"[..],
            b"<!DOCTYPE html><html>",
            b"GIF89a\x01\0\x01\0",
            b"",
        ] {
            assert!(detect(bad).is_err());
        }
    }
}
