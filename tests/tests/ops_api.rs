//! Health, readiness, metrics, the OpenAPI document and the security headers.

mod support;

use reqwest::StatusCode;
use serde_json::Value;

both_backends!(
    health_readiness_metrics_and_openapi_answer,
    |app: support::TestApp| async move {
        assert_eq!(app.get("/healthz", None).await.status(), StatusCode::OK);
        let ready = app.get("/readyz", None).await;
        assert_eq!(ready.status(), StatusCode::OK);
        let body: Value = ready.json().await.unwrap();
        assert_eq!(body["status"], "ready");
        let metrics = app.get("/metrics", None).await.text().await.unwrap();
        assert!(metrics.contains("egec_projection"), "{metrics}");
        assert!(metrics.contains("egec_http_requests_total"), "{metrics}");
        assert!(metrics.contains("route=\"/healthz\""), "{metrics}");
        let doc: Value = app
            .get("/api/openapi.json", None)
            .await
            .json()
            .await
            .unwrap();
        assert!(doc["paths"]["/api/customers/{id}"].is_object());
        assert!(doc["paths"]["/api/auth/login"].is_object());
    }
);

both_backends!(
    every_response_carries_the_security_headers,
    |app: support::TestApp| async move {
        for path in ["/healthz", "/api/customers", "/nope"] {
            let r = app.get(path, None).await;
            let h = r.headers();
            assert_eq!(
                h["content-security-policy"],
                "default-src 'none'; frame-ancestors 'none'; base-uri 'none'"
            );
            assert_eq!(h["x-content-type-options"], "nosniff");
            assert_eq!(h["referrer-policy"], "no-referrer");
            assert_eq!(h["x-frame-options"], "DENY");
        }
        let r = app.get("/api/customers", None).await;
        assert_eq!(r.headers()["cache-control"], "no-store");
        let r = app.get("/nope", None).await;
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
    }
);
