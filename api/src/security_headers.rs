//! Response headers of API responses that the static header layers of `app::router` cannot
//! give: `Cache-Control: no-store` on every `/api` response, including those produced
//! outside the API's routes (the 404 fallback, refusals by outer middleware).

use axum::extract::Request;
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::Response;

pub async fn api_no_store(req: Request, next: Next) -> Response {
    let api = req.uri().path() == "/api" || req.uri().path().starts_with("/api/");
    let mut resp = next.run(req).await;
    if api {
        resp.headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    resp
}
