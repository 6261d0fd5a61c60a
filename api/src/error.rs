//! The one error type of the HTTP edge and its single mapping to status codes and bodies.
//!
//! Every error body is `{"error": {"code", "message", "fields"?}}` as API.md fixes. Internal
//! failures are logged once, with their cause chain, and answered with a body that carries
//! no internals.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("authentication required")]
    Unauthorized,
    #[error("wrong email or password")]
    InvalidCredentials,
    #[error("not allowed")]
    Forbidden,
    /// A refusal by the permission module: 403, or 404 for a hidden customer; recorded as
    /// `ACCESS_DENIED` by `crate::denial::record`.
    #[error("{0}")]
    Denied(crate::denial::Denial),
    #[error("not found")]
    NotFound,
    #[error("the resource changed since version {expected}; it is now at {actual}")]
    VersionConflict { expected: i64, actual: i64 },
    #[error("{0}")]
    Conflict(String),
    #[error("request body is too large")]
    PayloadTooLarge,
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("some fields are not valid")]
    Validation(BTreeMap<String, String>),
    #[error("{0}")]
    Unprocessable(String),
    #[error("{0}")]
    WeakPassword(String),
    #[error("the account is locked after too many failed attempts")]
    AccountLocked { retry_after_seconds: i64 },
    #[error("a valid two-factor code is required")]
    TotpRequired,
    #[error("your role requires two-factor authentication: set it up first")]
    MfaSetupRequired,
    #[error("you must change your password first")]
    PasswordChangeRequired,
    #[error("the service is not ready")]
    Unavailable,
    /// The database gave up on a time limit (statement, lock or pool wait): nothing was
    /// done, and the same request may succeed shortly. 503 with `Retry-After`.
    #[error("the database is busy; retry shortly")]
    Busy,
    #[error("too many requests; retry later")]
    RateLimited { retry_after_seconds: u64 },
    #[error("HTTPS is required")]
    HttpsRequired,
    #[error("the API is not for direct browser navigation")]
    NavigationRefused,
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

impl ApiError {
    /// An unexpected failure: 500, unless the cause is a database time limit, which is
    /// a 503 the client may retry (see [`is_db_timeout`]).
    pub fn internal(e: impl Into<anyhow::Error>) -> Self {
        let e = e.into();
        if is_db_timeout(&e) {
            // Logged here, once, as a warning: an overloaded or blocked database is an
            // operational condition, not a bug; the chain names the statement's failure,
            // never a value.
            tracing::warn!(error = format!("{e:#}"), "database time limit reached");
            metrics::counter!("egec_db_timeouts_total").increment(1);
            return ApiError::Busy;
        }
        ApiError::Internal(e)
    }

    pub fn field(name: &str, problem: impl Into<String>) -> Self {
        ApiError::Validation(BTreeMap::from([(name.to_owned(), problem.into())]))
    }

    fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            ApiError::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            ApiError::Unauthorized => (StatusCode::UNAUTHORIZED, "unauthorized"),
            ApiError::InvalidCredentials => (StatusCode::UNAUTHORIZED, "invalid_credentials"),
            ApiError::Forbidden => (StatusCode::FORBIDDEN, "forbidden"),
            ApiError::Denied(d) if d.hides_existence() => (StatusCode::NOT_FOUND, "not_found"),
            ApiError::Denied(_) => (StatusCode::FORBIDDEN, "forbidden"),
            ApiError::NotFound => (StatusCode::NOT_FOUND, "not_found"),
            ApiError::VersionConflict { .. } => (StatusCode::CONFLICT, "version_conflict"),
            ApiError::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            ApiError::PayloadTooLarge => (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
            ApiError::UnsupportedMediaType(_) => {
                (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type")
            }
            ApiError::Validation(_) | ApiError::Unprocessable(_) => {
                (StatusCode::UNPROCESSABLE_ENTITY, "validation_failed")
            }
            ApiError::WeakPassword(_) => (StatusCode::UNPROCESSABLE_ENTITY, "weak_password"),
            ApiError::AccountLocked { .. } => (StatusCode::LOCKED, "account_locked"),
            ApiError::TotpRequired => (StatusCode::UNAUTHORIZED, "totp_required"),
            ApiError::MfaSetupRequired => (StatusCode::FORBIDDEN, "mfa_setup_required"),
            ApiError::PasswordChangeRequired => (StatusCode::FORBIDDEN, "password_change_required"),
            ApiError::Unavailable | ApiError::Busy => {
                (StatusCode::SERVICE_UNAVAILABLE, "unavailable")
            }
            ApiError::RateLimited { .. } => (StatusCode::TOO_MANY_REQUESTS, "rate_limited"),
            ApiError::HttpsRequired => (StatusCode::FORBIDDEN, "https_required"),
            ApiError::NavigationRefused => (StatusCode::FORBIDDEN, "navigation_refused"),
            ApiError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        if let ApiError::Internal(e) = &self {
            // The cause chain goes to the log (never personal data: store and codec errors
            // name positions and fields, not values); the client gets nothing internal.
            tracing::error!(error = format!("{e:#}"), "request failed");
            metrics::counter!("egec_http_internal_errors_total").increment(1);
        }
        let mut err = Map::new();
        err.insert("code".into(), json!(code));
        err.insert("message".into(), json!(self.to_string()));
        if let ApiError::Validation(fields) = &self {
            err.insert("fields".into(), json!(fields));
        }
        if let ApiError::AccountLocked {
            retry_after_seconds,
        } = &self
        {
            err.insert("retry_after_seconds".into(), json!(retry_after_seconds));
            let mut resp = (
                status,
                Json(json!({ "error": Value::Object(err), "retry_after_seconds": retry_after_seconds })),
            )
                .into_response();
            if let Ok(v) = axum::http::HeaderValue::from_str(&retry_after_seconds.to_string()) {
                resp.headers_mut()
                    .insert(axum::http::header::RETRY_AFTER, v);
            }
            return resp;
        }
        if let ApiError::Busy = &self {
            let mut resp = (status, Json(json!({ "error": Value::Object(err) }))).into_response();
            resp.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from_static("1"),
            );
            return resp;
        }
        if let ApiError::RateLimited {
            retry_after_seconds,
        } = &self
        {
            err.insert("retry_after_seconds".into(), json!(retry_after_seconds));
            let mut resp = (status, Json(json!({ "error": Value::Object(err) }))).into_response();
            resp.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                (*retry_after_seconds).into(),
            );
            return resp;
        }
        let mut resp = (status, Json(json!({ "error": Value::Object(err) }))).into_response();
        if let ApiError::Denied(d) = self {
            resp.extensions_mut().insert(d);
        }
        resp
    }
}

/// Maps a command-handler failure, given how to map the domain's own refusal.
pub fn from_handler<E: std::error::Error + Send + Sync + 'static>(
    e: egec_commands::handler::HandlerError<E>,
    domain: impl FnOnce(E) -> ApiError,
) -> ApiError {
    use egec_commands::handler::HandlerError as H;
    match e {
        H::Domain(d) => domain(d),
        H::VersionConflict { expected, actual } => ApiError::VersionConflict { expected, actual },
        other => ApiError::internal(other),
    }
}

/// Whether a failure was caused by a database time limit anywhere in its chain: a statement,
/// lock or idle-transaction timeout, or no pooled connection in time (see
/// `egec_commands::store::StoreError::is_timeout`). Wrappers such as `ProjectionError` and
/// `HandlerError` keep those errors as their sources, so the walk reaches them; the
/// appender's shared error is the one that must be asked itself.
pub fn is_db_timeout(e: &anyhow::Error) -> bool {
    e.chain().any(|cause| {
        cause
            .downcast_ref::<egec_commands::store::StoreError>()
            .is_some_and(|e| e.is_timeout())
            || cause
                .downcast_ref::<egec_commands::appender::AppendError>()
                .is_some_and(|e| e.is_timeout())
            || cause
                .downcast_ref::<egec_projections::StorageError>()
                .is_some_and(|e| e.is_timeout())
    })
}
