//! What every handler shares, and how it is built from configuration.

use crate::auth::password::Passwords;
use crate::auth::session::SessionActivity;
use crate::auth::token::TokenKeys;
use crate::config::{Config, Environment};
use anyhow::Context;
use egec_commands::appender::Appender;
use egec_commands::codec::Codec;
use egec_commands::handler::CommandBus;
use egec_commands::master_key::MasterKey;
use egec_commands::store::{EventLog, open::Stores};
use egec_commands::vault::Vault;
use egec_projections::{ProjectionRunner, ReadModels, RunnerHandle};
use secrecy::{ExposeSecret, SecretString};
use std::sync::Arc;
use std::time::Duration;

#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub log: Arc<dyn EventLog>,
    pub bus: Arc<CommandBus>,
    pub runner: RunnerHandle,
    pub tokens: Arc<TokenKeys>,
    pub passwords: Arc<Passwords>,
    /// Last request time per session, for the idle timeout (this process only).
    pub sessions: Arc<SessionActivity>,
    /// Keys the streams of failed logins for unknown emails.
    pub account_keys: Arc<crate::auth::unknown_login::AccountKeys>,
    /// When this process last recorded each API key's use (at most once a minute).
    pub api_key_usage: Arc<crate::auth::api_key::ApiKeyUsage>,
    pub metrics: metrics_exporter_prometheus::PrometheusHandle,
    /// Rate-limit state and statistics of this process.
    pub rate_limits: Arc<crate::rate_limit::RateLimits>,
    /// Encrypted attachment contents under each customer's key.
    pub attachments: Arc<egec_commands::attachments::Attachments>,
    /// Cross-node signals over NATS (off without `NATS_URL`).
    pub signals: crate::signals::Signals,
    /// The PostgreSQL log, for its pools' gauges (`None` on SQLite).
    pub postgres: Option<Arc<egec_commands::store::postgres::PgLog>>,
}

impl AppState {
    /// The read models, as the projection runner keeps them.
    pub fn read(&self) -> &ReadModels {
        self.runner.read_models()
    }

    pub fn ryw_timeout(&self) -> Duration {
        Duration::from_millis(self.config.read_your_writes_timeout_ms)
    }

    /// Waits (bounded) until the projections have applied a write at `position`, so that the
    /// next request sees it: a read shows it, and a session it ended is refused.
    pub async fn wait_for_write(&self, position: Option<i64>) {
        if let Some(p) = position
            && !self.runner.wait_for(p, self.ryw_timeout()).await
        {
            tracing::warn!(position = p, "read-your-writes wait timed out");
        }
    }
}

/// The storage, vault, command bus and projection runner of one process.
pub struct Core {
    pub stores: Stores,
    pub bus: Arc<CommandBus>,
    pub runner: RunnerHandle,
}

/// Creates the data directory readable by its owner only: the read models in it hold
/// personal data in clear. An existing directory is left as the operator set it up.
fn ensure_private_dir(dir: &std::path::Path) -> anyhow::Result<()> {
    if dir.exists() {
        return Ok(());
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .with_context(|| format!("restricting {}", dir.display()))?;
    }
    Ok(())
}

/// Opens storage (running migrations), loads the master key and wires the write side.
pub async fn open_core(config: &Config) -> anyhow::Result<Core> {
    if config.database_url.is_none() || config.master_key.is_none() || config.jwt_secret.is_none() {
        ensure_private_dir(&config.data_dir)?;
    }
    let url = config
        .database_url
        .as_ref()
        .map(|u| u.expose_secret().to_owned());
    let stores =
        egec_commands::store::open::open_with(url.as_deref(), &config.data_dir, &config.db)
            .await
            .context("opening storage")?;
    let master = match &config.master_key {
        Some(k) => MasterKey::from_hex(k).context("EGEC_MASTER_KEY")?,
        None => {
            let (mk, created) =
                MasterKey::load_or_generate(&config.data_dir).context("development master key")?;
            if created {
                tracing::warn!(
                    path = %config.data_dir.join("master.key").display(),
                    "generated a development master key; set EGEC_MASTER_KEY in production"
                );
            }
            mk
        }
    };
    let previous = match &config.master_key_previous {
        Some(k) => vec![MasterKey::from_hex(k).context("EGEC_MASTER_KEY_PREVIOUS")?],
        None => Vec::new(),
    };
    let vault = Arc::new(Vault::new(stores.keys.clone(), master, 100_000).with_previous(previous));
    let codec = Arc::new(Codec::new(vault));
    let appender = Appender::spawn(stores.log.clone(), 1000);
    let bus = Arc::new(CommandBus::new(stores.log.clone(), appender, codec, 10_000));
    let runner = ProjectionRunner::start_with(
        &stores,
        &config.data_dir,
        bus.codec().clone(),
        bus.appender().subscribe_head(),
        egec_projections::RunnerOptions {
            poll: Duration::from_millis(config.projection_poll_ms),
            ..Default::default()
        },
    )
    .await
    .context("starting projections")?;
    Ok(Core {
        stores,
        bus,
        runner,
    })
}

/// The token signing secret: from configuration, or generated into the data directory in
/// development (production refuses to start without one; see `Config`).
pub fn token_secret(config: &Config) -> anyhow::Result<SecretString> {
    if let Some(s) = &config.jwt_secret {
        return Ok(s.clone());
    }
    anyhow::ensure!(
        config.env == Environment::Development,
        "EGEC_JWT_SECRET is required in production"
    );
    let path = config.data_dir.join("jwt.secret");
    match std::fs::read_to_string(&path) {
        Ok(s) => Ok(SecretString::from(s.trim().to_owned())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(&config.data_dir)?;
            let mut bytes = [0u8; 32];
            getrandom::fill(&mut bytes).map_err(|e| anyhow::anyhow!("random: {e}"))?;
            let secret = hex::encode(bytes);
            use std::io::Write;
            let mut opts = std::fs::OpenOptions::new();
            opts.write(true).create_new(true);
            #[cfg(unix)]
            {
                use std::os::unix::fs::OpenOptionsExt;
                opts.mode(0o600);
            }
            match opts.open(&path) {
                Ok(mut f) => {
                    f.write_all(secret.as_bytes())?;
                    f.sync_all()?;
                    tracing::warn!(
                        "generated a development token secret; set EGEC_JWT_SECRET in production"
                    );
                    Ok(SecretString::from(secret))
                }
                // Another process created it between our read and our write: use theirs.
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(SecretString::from(
                    std::fs::read_to_string(&path)?.trim().to_owned(),
                )),
                Err(e) => Err(e.into()),
            }
        }
        Err(e) => Err(e.into()),
    }
}
