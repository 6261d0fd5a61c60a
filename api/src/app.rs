//! The HTTP application: routes, middleware, and serving.

use crate::config::Config;
use crate::state::{AppState, open_core, token_secret};
use crate::{auth, routes};
use anyhow::Context;
use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderName, HeaderValue, header};
use axum::routing::{get, post};
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use tower_http::set_header::SetResponseHeaderLayer;

/// JSON bodies above this are refused with 413 (API.md).
pub const JSON_BODY_LIMIT: usize = 100 * 1024;

/// The process-wide Prometheus recorder; installed once even when tests start many apps.
pub fn metrics_handle() -> anyhow::Result<metrics_exporter_prometheus::PrometheusHandle> {
    static HANDLE: OnceLock<metrics_exporter_prometheus::PrometheusHandle> = OnceLock::new();
    // Built and installed inside `get_or_init`, which runs once while concurrent callers
    // wait: two apps starting at once (tests) must not keep the handle of a recorder that
    // lost the race to become the global one, or /metrics renders nothing.
    Ok(HANDLE
        .get_or_init(|| {
            let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
            let handle = recorder.handle();
            // A failure here means another recorder was installed first (only possible in
            // tests that install their own); metrics then go there.
            let _ = metrics::set_global_recorder(recorder);
            handle
        })
        .clone())
}

pub fn router(state: AppState) -> Router {
    let api = Router::new()
        .route("/api/auth/login", post(routes::auth::login))
        .route("/api/auth/me", get(routes::auth::me))
        .route("/api/auth/logout", post(routes::auth::logout))
        .route("/api/auth/logout-all", post(routes::auth::logout_all))
        .route(
            "/api/auth/password",
            post(routes::credentials::change_password),
        )
        .route(
            "/api/auth/totp/setup",
            post(routes::credentials::totp_setup),
        )
        .route(
            "/api/auth/totp/enable",
            post(routes::credentials::totp_enable),
        )
        .route(
            "/api/auth/totp/disable",
            post(routes::credentials::totp_disable),
        )
        .route(
            "/api/customers",
            post(routes::customers::create).get(routes::customers::list),
        )
        .route(
            "/api/customers/{id}",
            get(routes::customers::get).patch(routes::customers::patch),
        )
        .route(
            "/api/customers/{id}/history",
            get(routes::customers::history),
        )
        .route("/api/gdpr/customers/{id}/export", get(routes::gdpr::export))
        .route("/api/gdpr/customers/{id}/erase", post(routes::gdpr::erase))
        // Uploads get their own body limit (API.md: 10 MiB) instead of the JSON one.
        .route(
            "/api/customers/{id}/attachments",
            post(routes::attachments::upload)
                .layer(DefaultBodyLimit::max(
                    routes::attachments::MAX_UPLOAD_BODY_BYTES,
                ))
                .get(routes::attachments::list),
        )
        .route("/api/attachments/{id}", get(routes::attachments::download))
        .route(
            "/api/customers/{id}/followups",
            post(routes::followups::create).get(routes::followups::list_for_customer),
        )
        .route("/api/followups", get(routes::followups::list))
        .route("/api/followups/{id}", get(routes::followups::get))
        .route(
            "/api/followups/{id}/complete",
            post(routes::followups::complete),
        )
        .route(
            "/api/customers/{id}",
            axum::routing::delete(routes::customers::delete),
        )
        .route(
            "/api/customers/{id}/agents",
            axum::routing::put(routes::customers::assign_agents),
        )
        .route(
            "/api/customers/bulk",
            post(routes::customer_bulk::bulk_edit),
        )
        .route(
            "/api/customers/bulk/{batch_id}/undo",
            post(routes::customer_bulk::undo),
        )
        // The import reads its body as a stream with its own limit (EGEC_IMPORT_MAX_BYTES);
        // the global JSON limit applies only to extractors that buffer the body.
        .route(
            "/api/customers/import",
            post(routes::customer_transfer::import),
        )
        .route(
            "/api/customers/export.csv",
            get(routes::customer_transfer::export),
        )
        .route(
            "/api/users",
            post(routes::users::create).get(routes::users::list),
        )
        .route(
            "/api/users/{id}",
            get(routes::users::get).patch(routes::users::patch),
        )
        .route("/api/users/{id}/unlock", post(routes::users::unlock))
        .route(
            "/api/users/{id}/force-logout",
            post(routes::users::force_logout),
        )
        .route(
            "/api/users/{id}/require-password-change",
            post(routes::credentials::require_password_change),
        )
        .route(
            "/api/api-keys",
            post(routes::api_keys::create).get(routes::api_keys::list),
        )
        .route(
            "/api/api-keys/{id}",
            axum::routing::delete(routes::api_keys::revoke),
        )
        .route("/api/api-keys/{id}/rotate", post(routes::api_keys::rotate))
        .route("/api/audit", get(routes::audit::list))
        .route("/api/audit/export.csv", get(routes::audit::export_csv))
        .route("/api/audit/verify", get(routes::audit::verify))
        .route(
            "/api/replay/streams/{stream_id}",
            get(routes::replay::stream),
        )
        .route("/api/openapi.json", get(routes::ops::openapi))
        .route("/api/admin/rate-limits", get(routes::admin::rate_limits))
        .layer(SetResponseHeaderLayer::overriding(
            header::CACHE_CONTROL,
            HeaderValue::from_static("no-store"),
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::denial::record,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::rate_limit::middleware::enforce,
        ));
    Router::new()
        .merge(api)
        .route("/healthz", get(routes::ops::healthz))
        .route("/readyz", get(routes::ops::readyz))
        .route("/metrics", get(routes::ops::metrics))
        .fallback(|| async { crate::error::ApiError::NotFound })
        .route_layer(axum::middleware::from_fn(crate::http_metrics::track))
        .layer(DefaultBodyLimit::max(JSON_BODY_LIMIT))
        .layer(axum::middleware::from_fn(
            crate::security_headers::api_no_store,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::net::transport::enforce,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::net::client_ip::resolve,
        ))
        .layer(SetResponseHeaderLayer::overriding(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static("default-src 'none'; frame-ancestors 'none'; base-uri 'none'"),
        ))
        .layer(SetResponseHeaderLayer::overriding(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ))
        .layer(SetResponseHeaderLayer::overriding(
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        ))
        .layer(SetResponseHeaderLayer::overriding(
            header::X_FRAME_OPTIONS,
            HeaderValue::from_static("DENY"),
        ))
        .layer(SetResponseHeaderLayer::overriding(
            HeaderName::from_static("cross-origin-resource-policy"),
            HeaderValue::from_static("same-origin"),
        ))
        .with_state(state)
}

/// A server that is listening; dropping it does not stop it (the task runs to completion).
pub struct Running {
    pub addr: SocketAddr,
    pub state: AppState,
    pub task: tokio::task::JoinHandle<std::io::Result<()>>,
    /// The log publisher (`NATS_URL` set); stopped when this is dropped.
    pub publisher: Option<crate::bus::Handle>,
}

/// Opens storage, starts projections and serves on `config.listen` (port 0 picks a free one).
pub async fn start(config: Config) -> anyhow::Result<Running> {
    let metrics = metrics_handle()?;
    let core = open_core(&config).await?;
    // A token never outlives the absolute session timeout (the extractor checks it too, from
    // `iat`, so lowering the setting also ends tokens issued before).
    let tokens = Arc::new(
        auth::token::TokenKeys::new(
            &token_secret(&config)?,
            config
                .token_ttl_seconds
                .min(config.sessions.absolute.num_seconds().max(1)),
        )
        .with_previous(config.jwt_secret_previous.as_ref()),
    );
    let sessions = Arc::new(auth::session::SessionActivity::new(config.sessions));
    let account_keys = Arc::new(auth::unknown_login::AccountKeys::new(&token_secret(
        &config,
    )?)?);
    // One core is always left to everything else: argon2id's 19 MiB per hash also evicts
    // the caches the other requests run on, which no scheduling priority prevents.
    let passwords = Arc::new(auth::password::Passwords::new(
        std::thread::available_parallelism()
            .map(|n| n.get().saturating_sub(1))
            .unwrap_or(1)
            .max(1),
    )?);
    let rate_limits = Arc::new(match &config.redis_url {
        None => crate::rate_limit::RateLimits::in_memory(config.rate_limits),
        Some(url) => {
            use secrecy::ExposeSecret;
            use sha2::Digest;
            // The limiter keys (addresses, account hashes) are digested under a key derived
            // from the token secret, which every node of a deployment shares.
            let pepper = sha2::Sha256::new()
                .chain_update(b"egec rate-limit keys\0")
                .chain_update(token_secret(&config)?.expose_secret().as_bytes())
                .finalize();
            crate::rate_limit::RateLimits::shared(
                config.rate_limits,
                url.expose_secret(),
                &config.redis_prefix,
                &pepper,
            )
            .map_err(|e| anyhow::anyhow!("REDIS_URL: {e}"))?
        }
    });
    crate::rate_limit::spawn_eviction(&rate_limits);
    if config.env == crate::config::Environment::Production && config.trusted_proxies.0.is_empty() {
        tracing::warn!(
            "production without EGEC_TRUSTED_PROXIES: every request but /healthz and /readyz \
             is refused as plain HTTP (TLS is terminated by a trusted proxy)"
        );
    }
    let signals = match &config.nats_url {
        None => crate::signals::Signals::off(),
        Some(url) => {
            use secrecy::ExposeSecret;
            crate::signals::Signals::connect(url.expose_secret(), &config.signals_subject)
                .await
                .map_err(|e| anyhow::anyhow!("NATS_URL: {e}"))?
        }
    };
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("binding {}", config.listen))?;
    let addr = listener.local_addr()?;
    let state = AppState {
        config: Arc::new(config),
        log: core.stores.log.clone(),
        bus: core.bus.clone(),
        runner: core.runner.clone(),
        tokens,
        passwords,
        sessions,
        account_keys,
        api_key_usage: Default::default(),
        metrics,
        rate_limits,
        attachments: Arc::new(egec_commands::attachments::Attachments::new(
            core.stores.blobs.clone(),
            core.bus.codec().vault().clone(),
        )),
        signals,
        postgres: core.stores.postgres.clone(),
    };
    crate::signals::spawn(&state);
    let publisher = state.config.nats_url.as_ref().map(|url| {
        use secrecy::ExposeSecret;
        let leadership = match &core.stores.postgres {
            Some(pg) => crate::bus::lease::Leadership::Postgres(pg.pool()),
            None => crate::bus::lease::Leadership::Sqlite(
                core.stores
                    .sqlite
                    .as_ref()
                    .map(|s| s.path().to_path_buf())
                    .unwrap_or_default(),
            ),
        };
        crate::bus::spawn(
            url.expose_secret().to_owned(),
            state.config.nats.clone(),
            core.stores.log.clone(),
            leadership,
            core.bus.appender().subscribe_head(),
        )
    });
    let app = router(state.clone()).into_make_service_with_connect_info::<SocketAddr>();
    let task = tokio::spawn(async move { axum::serve(listener, app).await });
    tracing::info!(%addr, backend = state.log.backend().as_str(), "serving");
    Ok(Running {
        addr,
        state,
        task,
        publisher,
    })
}
