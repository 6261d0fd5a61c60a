//! A JSON body extractor whose rejections speak the API's error format: malformed JSON, wrong
//! types and unknown fields are 400 `bad_request`; a body over the limit is 413.

use crate::error::ApiError;
use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use serde::de::DeserializeOwned;

pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(v)) => Ok(ApiJson(v)),
            Err(rejection) => Err(map_rejection(rejection)),
        }
    }
}

fn map_rejection(r: JsonRejection) -> ApiError {
    if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
        return ApiError::PayloadTooLarge;
    }
    match r {
        JsonRejection::JsonDataError(e) => {
            ApiError::BadRequest(format!("invalid request body: {}", e.body_text()))
        }
        JsonRejection::JsonSyntaxError(_) => {
            ApiError::BadRequest("request body is not valid JSON".into())
        }
        JsonRejection::MissingJsonContentType(_) => {
            ApiError::BadRequest("expected Content-Type: application/json".into())
        }
        other => ApiError::BadRequest(other.body_text()),
    }
}

/// Deserialises a field that may be absent (no change), `null` (clear) or a value (set).
pub fn double_option<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::Deserialize<'de>,
{
    serde::Deserialize::deserialize(d).map(Some)
}
