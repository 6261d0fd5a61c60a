//! API keys for integrations (superadmin): issue, list, revoke, rotate.

use crate::auth::actor::Actor;
use crate::auth::api_key::{NewKey, generate};
use crate::error::{ApiError, from_handler};
use crate::json::ApiJson;
use crate::routes::meta::RequestMeta;
use crate::state::AppState;
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use egec_domain::aggregate::ApiKeyAggregate;
use egec_domain::api_key::{
    ApiKeyCommand, ApiKeyError, ApiKeyName, IssueApiKey, MAX_GRACE_SECONDS, RotateApiKey,
    SecretHash,
};
use egec_domain::ids::ApiKeyId;
use egec_domain::permission::Action;
use egec_projections::ApiKeyRow;
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use uuid::Uuid;

/// How long the previous secret keeps working after a rotation when the request names no
/// grace period.
pub const DEFAULT_GRACE_SECONDS: i64 = 24 * 3600;

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateApiKeyBody {
    pub name: String,
    /// Permission names such as `customers:view`.
    pub permissions: Vec<String>,
    /// RFC 3339; absent or null: the key does not expire.
    pub expires_at: Option<String>,
}

#[derive(Deserialize, Default, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RotateApiKeyBody {
    /// How long the previous key keeps working, 0 to 2,592,000 (default 86,400).
    pub grace_seconds: Option<i64>,
}

/// Namespace of key ids derived from idempotency keys.
const API_KEY_ID_NAMESPACE: Uuid = Uuid::from_u128(0x1c2e_57a0_93b4_4d6f_8e1a_2b3c_4d5e_6f70);

/// A new key's id: derived from the client's idempotency key when it sent one (a retried
/// request lands on the same stream and is recognised), otherwise fresh and time-ordered.
fn new_key_id(meta: &RequestMeta) -> ApiKeyId {
    ApiKeyId::from_uuid(match meta.idempotency_key {
        Some(k) => Uuid::new_v5(&API_KEY_ID_NAMESPACE, k.as_bytes()),
        None => Uuid::now_v7(),
    })
}

fn api_key_error(e: ApiKeyError) -> ApiError {
    match e {
        ApiKeyError::AlreadyExists => ApiError::Conflict("the key exists already".into()),
        ApiKeyError::NotFound => ApiError::NotFound,
        ApiKeyError::Revoked => ApiError::Conflict("the key is revoked".into()),
        ApiKeyError::NoPermissions | ApiKeyError::NotGrantable(_) => {
            ApiError::field("permissions", e.to_string())
        }
        ApiKeyError::ExpiryInPast => ApiError::field("expires_at", e.to_string()),
        ApiKeyError::BadGrace => ApiError::field("grace_seconds", e.to_string()),
    }
}

fn time_json(t: Option<DateTime<Utc>>) -> Value {
    t.map_or(Value::Null, |t| {
        json!(t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
    })
}

/// A key as listed: never its secret nor the secret's hash.
fn key_json(r: &ApiKeyRow) -> Value {
    json!({
        "id": r.id,
        "name": r.name,
        "prefix": r.prefix,
        "permissions": r.permissions,
        "expires_at": time_json(r.expires_at),
        "created_at": time_json(Some(r.created_at)),
        "last_used_at": time_json(r.last_used_at),
        "revoked": r.revoked_at.is_some(),
        "revoked_at": time_json(r.revoked_at),
        "previous_valid_until": time_json(r.previous_hash.as_ref().and(r.grace_until)),
    })
}

/// The one answer that carries a key's secret.
fn issued_json(r: &ApiKeyRow, key: &NewKey) -> Value {
    json!({
        "id": r.id,
        "name": r.name,
        "key": key.secret,
        "prefix": r.prefix,
        "permissions": r.permissions,
        "expires_at": time_json(r.expires_at),
    })
}

fn secret_hash(key: &NewKey) -> Result<SecretHash, ApiError> {
    SecretHash::parse(&key.hash).map_err(|e| ApiError::internal(anyhow::anyhow!("{e}")))
}

async fn read_key(state: &AppState, id: ApiKeyId) -> Result<ApiKeyRow, ApiError> {
    state
        .read()
        .get_api_key(id)
        .await
        .map_err(ApiError::internal)?
        .ok_or_else(|| ApiError::internal(anyhow::anyhow!("api key not in the read model")))
}

#[utoipa::path(post, path = "/api/api-keys", request_body = CreateApiKeyBody,
    responses((status = 201), (status = 403), (status = 422)), tag = "api-keys")]
/// Issues a key; the answer is the only place its secret ever appears.
pub async fn create(
    State(state): State<AppState>,
    actor: Actor,
    meta: RequestMeta,
    ApiJson(body): ApiJson<CreateApiKeyBody>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    actor.require(Action::ApiKeysManage)?;
    let mut problems = BTreeMap::new();
    let name = ApiKeyName::parse(&body.name)
        .map_err(|e| problems.insert("name".to_owned(), e.to_string()))
        .ok();
    let mut permissions = Vec::with_capacity(body.permissions.len());
    for p in &body.permissions {
        match Action::from_name(p) {
            Some(a) => permissions.push(a),
            None => {
                // The name is echoed: it is what the caller sent, and names are not secrets.
                let shown: String = p.chars().take(64).collect();
                problems.insert(
                    "permissions".to_owned(),
                    format!("unknown permission {shown}"),
                );
            }
        }
    }
    let expires_at = match body.expires_at.as_deref() {
        None => None,
        Some(s) => match DateTime::parse_from_rfc3339(s) {
            Ok(t) => Some(t.with_timezone(&Utc)),
            Err(_) => {
                problems.insert("expires_at".to_owned(), "not an RFC 3339 time".to_owned());
                None
            }
        },
    };
    let Some(name) = name.filter(|_| problems.is_empty()) else {
        return Err(ApiError::Validation(problems));
    };
    let key = generate()?;
    let id = new_key_id(&meta);
    let cmd = ApiKeyCommand::Issue(Box::new(IssueApiKey {
        key_id: id,
        name,
        permissions,
        expires_at,
        secret_hash: secret_hash(&key)?,
        prefix: key.prefix.clone(),
    }));
    let done = state
        .bus
        .execute_new::<ApiKeyAggregate>(
            &id.stream_id(),
            &id.subject(),
            meta.command_id,
            &meta.metadata(&actor),
            cmd,
        )
        .await
        .map_err(|e| from_handler(e, api_key_error))?;
    if done.events.is_empty() {
        // A retried request (same Idempotency-Key): the secret of the first answer is gone.
        return Err(ApiError::Conflict(
            "this request was already applied; its key was shown in the first answer".into(),
        ));
    }
    state.wait_for_write(done.position).await;
    let row = read_key(&state, id).await?;
    Ok((StatusCode::CREATED, Json(issued_json(&row, &key))))
}

#[utoipa::path(get, path = "/api/api-keys", responses((status = 200), (status = 403)), tag = "api-keys")]
/// Every key, revoked ones included, without secrets.
pub async fn list(State(state): State<AppState>, actor: Actor) -> Result<Json<Value>, ApiError> {
    actor.require(Action::ApiKeysManage)?;
    let rows = state
        .read()
        .list_api_keys()
        .await
        .map_err(ApiError::internal)?;
    let items: Vec<Value> = rows.iter().map(key_json).collect();
    Ok(Json(json!({ "items": items, "total": items.len() })))
}

#[utoipa::path(delete, path = "/api/api-keys/{id}", params(("id" = Uuid, Path)),
    responses((status = 204), (status = 403), (status = 404)), tag = "api-keys")]
/// Revokes a key; it is refused from the very next request on. Revoking again is a no-op.
pub async fn revoke(
    State(state): State<AppState>,
    actor: Actor,
    meta: RequestMeta,
    Path(id): Path<Uuid>,
) -> Result<StatusCode, ApiError> {
    actor.require(Action::ApiKeysManage)?;
    let id = ApiKeyId::from_uuid(id);
    let done = state
        .bus
        .execute::<ApiKeyAggregate>(
            &id.stream_id(),
            &id.subject(),
            None,
            meta.command_id,
            &meta.metadata(&actor),
            ApiKeyCommand::Revoke,
        )
        .await
        .map_err(|e| from_handler(e, api_key_error))?;
    state.wait_for_write(done.position).await;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(post, path = "/api/api-keys/{id}/rotate", params(("id" = Uuid, Path)),
    request_body = RotateApiKeyBody,
    responses((status = 201), (status = 403), (status = 404), (status = 409), (status = 422)), tag = "api-keys")]
/// Gives a key a new secret (shown once, here); the previous one keeps working for the
/// grace period.
pub async fn rotate(
    State(state): State<AppState>,
    actor: Actor,
    meta: RequestMeta,
    Path(id): Path<Uuid>,
    body: Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    actor.require(Action::ApiKeysManage)?;
    let body: RotateApiKeyBody = if body.iter().all(u8::is_ascii_whitespace) {
        RotateApiKeyBody::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|_| ApiError::BadRequest("invalid request body".into()))?
    };
    let grace_seconds = body.grace_seconds.unwrap_or(DEFAULT_GRACE_SECONDS);
    if !(0..=MAX_GRACE_SECONDS).contains(&grace_seconds) {
        return Err(api_key_error(ApiKeyError::BadGrace));
    }
    let id = ApiKeyId::from_uuid(id);
    let key = generate()?;
    let cmd = ApiKeyCommand::Rotate(Box::new(RotateApiKey {
        secret_hash: secret_hash(&key)?,
        prefix: key.prefix.clone(),
        grace_seconds,
    }));
    let done = state
        .bus
        .execute::<ApiKeyAggregate>(
            &id.stream_id(),
            &id.subject(),
            None,
            meta.command_id,
            &meta.metadata(&actor),
            cmd,
        )
        .await
        .map_err(|e| from_handler(e, api_key_error))?;
    if done.events.is_empty() {
        return Err(ApiError::Conflict(
            "this request was already applied; its key was shown in the first answer".into(),
        ));
    }
    state.wait_for_write(done.position).await;
    let row = read_key(&state, id).await?;
    Ok((StatusCode::CREATED, Json(issued_json(&row, &key))))
}
