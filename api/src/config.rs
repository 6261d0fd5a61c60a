//! Typed configuration from the environment (and `.env`), validated once at start-up.
//!
//! Every problem is collected and reported together, so an operator fixes a broken
//! deployment in one pass; no secret value is ever echoed in a message.

use secrecy::SecretString;
use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Environment {
    Development,
    Production,
}

#[derive(Clone)]
pub struct Config {
    pub env: Environment,
    pub database_url: Option<SecretString>,
    /// `redis://…` (`REDIS_URL`): rate limits shared by every node; unset, per node in memory.
    /// Secret because it may carry a password.
    pub redis_url: Option<SecretString>,
    /// `nats://…` (`NATS_URL`): cross-node signals and the log published to JetStream;
    /// unset, nodes poll and nothing is published. Secret because it may carry credentials.
    pub nats_url: Option<SecretString>,
    /// The core NATS subject of this deployment's signals (`EGEC_SIGNALS_SUBJECT`, default
    /// `egec.signals`), so deployments (or test runs) sharing one NATS never hear each other.
    pub signals_subject: String,
    /// How often a node looks at the log and the projection checkpoints without being told
    /// (`EGEC_PROJECTION_POLL_MS`, default 200): the fallback when signals do not arrive.
    pub projection_poll_ms: u64,
    /// Prefix of this deployment's Redis keys (`EGEC_REDIS_PREFIX`, default `egec`), so
    /// deployments (or test runs) sharing one Redis never share limits.
    pub redis_prefix: String,
    /// The JetStream stream the log is published to (`EGEC_NATS_*`).
    pub nats: crate::bus::Settings,
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    pub master_key: Option<SecretString>,
    pub jwt_secret: Option<SecretString>,
    pub token_ttl_seconds: i64,
    pub phone_default_region: Option<String>,
    /// PostgreSQL pools, time limits per query class and session role (`EGEC_DB_*`).
    pub db: egec_commands::store::postgres::PgSettings,
    pub password_policy: egec_domain::password_policy::PasswordPolicy,
    pub lockout: egec_domain::user::lockout::LockoutPolicy,
    /// How long a read waits for the projections to reach a write it follows.
    pub read_your_writes_timeout_ms: u64,
    pub sessions: SessionTimeouts,
    /// Proxies whose `X-Forwarded-For`/`-Proto` are believed (`EGEC_TRUSTED_PROXIES`).
    pub trusted_proxies: crate::net::client_ip::TrustedProxies,
    /// Networks superadmins and admins may call from (`EGEC_ADMIN_IP_ALLOWLIST`); `None`: any.
    pub admin_ip_allowlist: Option<Vec<ipnet::IpNet>>,
    /// The signing secret before the last rotation: still verifies tokens until they expire.
    pub jwt_secret_previous: Option<SecretString>,
    pub rate_limits: crate::rate_limit::Settings,
    /// The master key before a rotation (`EGEC_MASTER_KEY_PREVIOUS`): still unwraps subject
    /// keys until `egec keys rotate-master` re-wrapped them all.
    pub master_key_previous: Option<SecretString>,
    /// Passwords older than this must be changed (`EGEC_PASSWORD_MAX_AGE_DAYS`); `None`:
    /// never, the NIST default.
    pub password_max_age: Option<chrono::Duration>,
    /// Roles that must enrol in two-factor authentication before anything else
    /// (`EGEC_MFA_REQUIRED_ROLES`).
    pub mfa_required_roles: Vec<egec_domain::Role>,
    /// Email domains refused for customers: the shipped list plus
    /// `EGEC_DISPOSABLE_EMAIL_DOMAINS_FILE` (a file, one domain a line) and
    /// `EGEC_DISPOSABLE_EMAIL_DOMAINS` (a comma list).
    pub disposable_email_domains: std::sync::Arc<egec_domain::values::DisposableDomains>,
    /// The largest CSV body `POST /api/customers/import` reads (`EGEC_IMPORT_MAX_BYTES`,
    /// default 64 MiB); larger bodies are refused with 413 once that much has arrived.
    pub import_max_bytes: u64,
    /// Whole months IP addresses and user agents are kept (`EGEC_RETENTION_MONTHS`, default
    /// 24); older months' keys are destroyed by `egec retention apply` and daily by `serve`.
    pub retention_months: egec_domain::retention::RetentionMonths,
}

/// When a session ends without anyone ending it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionTimeouts {
    /// Without a request for this long, a session ends (`EGEC_SESSION_IDLE_SECONDS`).
    pub idle: chrono::Duration,
    /// This long after login a session ends, however active (`EGEC_SESSION_ABSOLUTE_SECONDS`).
    pub absolute: chrono::Duration,
}

impl Default for SessionTimeouts {
    fn default() -> Self {
        Self {
            idle: chrono::Duration::minutes(30),
            absolute: chrono::Duration::hours(12),
        }
    }
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("env", &self.env)
            .field("database_url", &self.database_url.as_ref().map(|_| "<set>"))
            .field("redis_url", &self.redis_url.as_ref().map(|_| "<set>"))
            .field("nats_url", &self.nats_url.as_ref().map(|_| "<set>"))
            .field("data_dir", &self.data_dir)
            .field("listen", &self.listen)
            .field("master_key", &self.master_key.as_ref().map(|_| "<set>"))
            .field("jwt_secret", &self.jwt_secret.as_ref().map(|_| "<set>"))
            .finish_non_exhaustive()
    }
}

/// Every problem found in the configuration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid configuration:\n  - {}", .0.join("\n  - "))]
pub struct ConfigErrors(pub Vec<String>);

/// Where values come from: the process environment in production, a map in tests.
pub trait Source {
    fn get(&self, key: &str) -> Option<String>;
    /// Whether the variable is present at all, even empty (where empty means "none").
    fn is_set(&self, key: &str) -> bool {
        self.get(key).is_some()
    }
}

pub struct ProcessEnv;

impl Source for ProcessEnv {
    fn get(&self, key: &str) -> Option<String> {
        std::env::var(key).ok().filter(|v| !v.is_empty())
    }
    fn is_set(&self, key: &str) -> bool {
        std::env::var_os(key).is_some()
    }
}

impl Source for std::collections::HashMap<String, String> {
    fn get(&self, key: &str) -> Option<String> {
        std::collections::HashMap::get(self, key)
            .cloned()
            .filter(|v| !v.is_empty())
    }
    fn is_set(&self, key: &str) -> bool {
        self.contains_key(key)
    }
}

impl Config {
    pub fn from_env() -> Result<Self, ConfigErrors> {
        Self::from_source(&ProcessEnv)
    }

    pub fn from_source(src: &dyn Source) -> Result<Self, ConfigErrors> {
        let mut errors = Vec::new();
        let env = match src.get("EGEC_ENV").as_deref() {
            None | Some("development") => Environment::Development,
            Some("production") => Environment::Production,
            Some(_) => {
                errors.push("EGEC_ENV must be `development` or `production`".to_owned());
                Environment::Development
            }
        };
        let database_url = src.get("DATABASE_URL");
        if let Some(url) = &database_url
            && !(url.starts_with("postgres://") || url.starts_with("postgresql://"))
        {
            errors.push("DATABASE_URL must start with postgres:// or postgresql://".to_owned());
        }
        // A PostgreSQL role: meaningless on the embedded store, where setting it is a mistake
        // worth stopping for (the operator believes the node runs with less privilege).
        let db_role = src
            .get("EGEC_DB_ROLE")
            .map(|r| r.trim().to_owned())
            .filter(|r| !r.is_empty());
        if let Some(role) = &db_role {
            if database_url.is_none() {
                errors.push(
                    "EGEC_DB_ROLE needs DATABASE_URL (it names a PostgreSQL role)".to_owned(),
                );
            }
            if !egec_commands::store::postgres::settings::is_plain_role_name(role) {
                errors.push(
                    "EGEC_DB_ROLE must be a plain role name (letters, digits, _ and -)".to_owned(),
                );
            }
        }
        let redis_url = src.get("REDIS_URL").filter(|u| !u.is_empty());
        if let Some(url) = &redis_url
            && !(url.starts_with("redis://")
                || url.starts_with("rediss://")
                || url.starts_with("redis+unix://"))
        {
            errors
                .push("REDIS_URL must start with redis://, rediss:// or redis+unix://".to_owned());
        }
        let redis_prefix = src
            .get("EGEC_REDIS_PREFIX")
            .unwrap_or_else(|| "egec".to_owned());
        if redis_prefix.is_empty()
            || redis_prefix.len() > 64
            || !redis_prefix
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
        {
            errors.push(
                "EGEC_REDIS_PREFIX must be 1 to 64 letters, digits, `-`, `_` or `.`".to_owned(),
            );
        }
        let nats_url = src.get("NATS_URL").filter(|u| !u.is_empty());
        if let Some(url) = &nats_url
            && !["nats://", "tls://", "ws://", "wss://"]
                .iter()
                .any(|scheme| url.starts_with(scheme))
        {
            errors.push("NATS_URL must start with nats://, tls://, ws:// or wss://".to_owned());
        }
        let signals_subject = src
            .get("EGEC_SIGNALS_SUBJECT")
            .unwrap_or_else(|| "egec.signals".to_owned());
        if signals_subject.is_empty()
            || signals_subject.len() > 128
            || signals_subject.split('.').any(|t| {
                t.is_empty()
                    || !t
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            })
        {
            errors.push(
                "EGEC_SIGNALS_SUBJECT must be dot-separated tokens of letters, digits, `-` and `_`"
                    .to_owned(),
            );
        }
        let projection_poll_ms = match src.get("EGEC_PROJECTION_POLL_MS") {
            None => 200,
            Some(v) => match v.parse::<u64>() {
                Ok(n) if (10..=60_000).contains(&n) => n,
                _ => {
                    errors.push(
                        "EGEC_PROJECTION_POLL_MS must be a whole number from 10 to 60000"
                            .to_owned(),
                    );
                    200
                }
            },
        };
        let nats = nats_settings(src, &mut errors);
        let data_dir = PathBuf::from(
            src.get("EGEC_DATA_DIR")
                .unwrap_or_else(|| "./egec-data".into()),
        );
        let listen = match src
            .get("EGEC_LISTEN")
            .unwrap_or_else(|| "127.0.0.1:8080".into())
            .parse()
        {
            Ok(a) => a,
            Err(_) => {
                errors.push("EGEC_LISTEN must be an address such as 127.0.0.1:8080".to_owned());
                SocketAddr::from(([127, 0, 0, 1], 8080))
            }
        };
        let master_key = src.get("EGEC_MASTER_KEY");
        if let Some(k) = &master_key
            && (k.len() != 64 || !k.chars().all(|c| c.is_ascii_hexdigit()))
        {
            errors.push("EGEC_MASTER_KEY must be exactly 64 hexadecimal characters".to_owned());
        }
        let jwt_secret = src.get("EGEC_JWT_SECRET");
        if let Some(s) = &jwt_secret
            && s.len() < 32
        {
            errors.push("EGEC_JWT_SECRET must be at least 32 bytes".to_owned());
        }
        if env == Environment::Production {
            if master_key.is_none() {
                errors.push(
                    "EGEC_MASTER_KEY is required in production (generated keys are refused)"
                        .to_owned(),
                );
            }
            if jwt_secret.is_none() {
                errors.push(
                    "EGEC_JWT_SECRET is required in production (generated secrets are refused)"
                        .to_owned(),
                );
            }
        }
        let mut number = |key: &str, default: u64, min: u64, max: u64| -> u64 {
            match src.get(key) {
                None => default,
                Some(v) => match v.parse::<u64>() {
                    Ok(n) if (min..=max).contains(&n) => n,
                    _ => {
                        errors.push(format!("{key} must be a whole number from {min} to {max}"));
                        default
                    }
                },
            }
        };
        let token_ttl_seconds =
            number("EGEC_TOKEN_TTL_SECONDS", 12 * 3600, 60, 7 * 24 * 3600) as i64;
        // Zero means "no limit" for the statement and idle timeouts, as in PostgreSQL.
        let ms = std::time::Duration::from_millis;
        let db = egec_commands::store::postgres::PgSettings {
            pool_size: number("EGEC_DB_POOL_SIZE", 16, 1, 512) as usize,
            maintenance_pool_size: number("EGEC_DB_MAINTENANCE_POOL_SIZE", 2, 1, 64) as usize,
            statement_timeout: ms(number("EGEC_DB_STATEMENT_TIMEOUT_MS", 15_000, 0, 3_600_000)),
            maintenance_statement_timeout: ms(number(
                "EGEC_DB_MAINTENANCE_STATEMENT_TIMEOUT_MS",
                3_600_000,
                0,
                86_400_000,
            )),
            idle_in_transaction_timeout: ms(number(
                "EGEC_DB_IDLE_IN_TRANSACTION_TIMEOUT_MS",
                60_000,
                0,
                3_600_000,
            )),
            acquire_timeout: ms(number("EGEC_DB_ACQUIRE_TIMEOUT_MS", 10_000, 10, 600_000)),
            connect_timeout: ms(number("EGEC_DB_CONNECT_TIMEOUT_MS", 10_000, 100, 600_000)),
            role: db_role,
        };
        let import_max_bytes = number("EGEC_IMPORT_MAX_BYTES", 64 << 20, 1024, 1 << 34);
        let lockout = egec_domain::user::lockout::LockoutPolicy {
            threshold: number("EGEC_LOCKOUT_THRESHOLD", 5, 1, 100) as u32,
            lock_for: chrono::Duration::seconds(number(
                "EGEC_LOCKOUT_SECONDS",
                900,
                1,
                7 * 24 * 3600,
            ) as i64),
        };
        let read_your_writes_timeout_ms =
            number("EGEC_READ_YOUR_WRITES_TIMEOUT_MS", 5000, 10, 60_000);
        let sessions = SessionTimeouts {
            idle: chrono::Duration::seconds(number(
                "EGEC_SESSION_IDLE_SECONDS",
                30 * 60,
                1,
                7 * 24 * 3600,
            ) as i64),
            absolute: chrono::Duration::seconds(number(
                "EGEC_SESSION_ABSOLUTE_SECONDS",
                12 * 3600,
                1,
                30 * 24 * 3600,
            ) as i64),
        };
        let password_max_age = match src.get("EGEC_PASSWORD_MAX_AGE_DAYS") {
            None => None,
            Some(v) => match v.parse::<i64>() {
                Ok(days) if (1..=3650).contains(&days) => Some(chrono::Duration::days(days)),
                _ => {
                    errors.push(
                        "EGEC_PASSWORD_MAX_AGE_DAYS must be a whole number from 1 to 3650 (unset = never)"
                            .to_owned(),
                    );
                    None
                }
            },
        };
        let mfa_required_roles = match mfa_required_roles(src) {
            Ok(roles) => roles,
            Err(e) => {
                errors.push(e);
                Vec::new()
            }
        };
        let phone_default_region = src
            .get("EGEC_PHONE_DEFAULT_REGION")
            .map(|r| r.to_ascii_uppercase());
        if let Some(r) = &phone_default_region
            && egec_domain::values::PhoneE164::parse("+442079460958", Some(r)).is_err()
        {
            errors.push(
                "EGEC_PHONE_DEFAULT_REGION must be an ISO 3166 alpha-2 country code".to_owned(),
            );
        }
        let password_policy = match src
            .get("EGEC_PASSWORD_POLICY")
            .as_deref()
            .unwrap_or("nist")
            .parse()
        {
            Ok(p) => p,
            Err(_) => {
                errors.push("EGEC_PASSWORD_POLICY must be `nist` or `composition`".to_owned());
                egec_domain::password_policy::PasswordPolicy::Nist
            }
        };
        let cidrs = |key: &str, errors: &mut Vec<String>| -> Option<Vec<ipnet::IpNet>> {
            let v = src.get(key)?;
            match crate::net::client_ip::parse_cidrs(&v) {
                Ok(nets) => Some(nets),
                Err(_) => {
                    errors.push(format!(
                        "{key} must be a comma-separated list of CIDRs such as 10.0.0.0/8"
                    ));
                    None
                }
            }
        };
        let trusted_proxies = crate::net::client_ip::TrustedProxies(
            cidrs("EGEC_TRUSTED_PROXIES", &mut errors).unwrap_or_default(),
        );
        let admin_ip_allowlist = cidrs("EGEC_ADMIN_IP_ALLOWLIST", &mut errors);
        let jwt_secret_previous = src.get("EGEC_JWT_SECRET_PREVIOUS");
        errors.extend(crate::config_checks::secret_problems(
            env,
            jwt_secret.as_deref(),
            jwt_secret_previous.as_deref(),
            master_key.as_deref(),
        ));
        let rate_limits = crate::rate_limit::Settings::from_source(src, &mut errors);
        let master_key_previous = src.get("EGEC_MASTER_KEY_PREVIOUS");
        if let Some(k) = &master_key_previous {
            if k.len() != 64 || !k.chars().all(|c| c.is_ascii_hexdigit()) {
                errors.push(
                    "EGEC_MASTER_KEY_PREVIOUS must be exactly 64 hexadecimal characters".to_owned(),
                );
            }
            if master_key.as_deref().map(str::to_ascii_lowercase) == Some(k.to_ascii_lowercase()) {
                errors.push("EGEC_MASTER_KEY_PREVIOUS must differ from EGEC_MASTER_KEY".to_owned());
            }
        }
        let disposable_email_domains = disposable_email_domains(src, &mut errors);
        let retention_months = match src.get("EGEC_RETENTION_MONTHS") {
            None => egec_domain::retention::RetentionMonths::default(),
            Some(v) => match v
                .trim()
                .parse::<i64>()
                .ok()
                .and_then(|n| egec_domain::retention::RetentionMonths::new(n).ok())
            {
                Some(m) => m,
                None => {
                    errors.push(
                        "EGEC_RETENTION_MONTHS must be a whole number of months of at least 1"
                            .to_owned(),
                    );
                    egec_domain::retention::RetentionMonths::default()
                }
            },
        };
        if !errors.is_empty() {
            return Err(ConfigErrors(errors));
        }
        Ok(Config {
            env,
            database_url: database_url.map(SecretString::from),
            redis_url: redis_url.map(SecretString::from),
            nats_url: nats_url.map(SecretString::from),
            signals_subject,
            projection_poll_ms,
            redis_prefix,
            nats,
            data_dir,
            listen,
            master_key: master_key.map(SecretString::from),
            jwt_secret: jwt_secret.map(SecretString::from),
            token_ttl_seconds,
            phone_default_region,
            db,
            password_policy,
            lockout,
            read_your_writes_timeout_ms,
            sessions,
            trusted_proxies,
            admin_ip_allowlist,
            jwt_secret_previous: jwt_secret_previous.map(SecretString::from),
            rate_limits,
            master_key_previous: master_key_previous.map(SecretString::from),
            password_max_age,
            mfa_required_roles,
            disposable_email_domains,
            import_max_bytes,
            retention_months,
        })
    }
}

/// The JetStream stream settings (`EGEC_NATS_*`); see [`crate::bus::Settings`].
fn nats_settings(src: &dyn Source, errors: &mut Vec<String>) -> crate::bus::Settings {
    let mut settings = crate::bus::Settings::default();
    if let Some(name) = src.get("EGEC_NATS_STREAM") {
        if crate::bus::valid_stream_name(&name) {
            settings.stream = name;
        } else {
            errors.push("EGEC_NATS_STREAM must be 1 to 64 letters, digits, `-` or `_`".to_owned());
        }
    }
    if let Some(prefix) = src.get("EGEC_NATS_SUBJECT_PREFIX") {
        if crate::bus::valid_subject_prefix(&prefix) {
            settings.subject_prefix = prefix;
        } else {
            errors.push(
                "EGEC_NATS_SUBJECT_PREFIX must be dot-separated tokens of letters, digits, `-` or `_` (no wildcards)"
                    .to_owned(),
            );
        }
    }
    let mut number = |key: &str, min: u64, max: u64| -> Option<u64> {
        let v = src.get(key)?;
        match v.trim().parse::<u64>() {
            Ok(n) if (min..=max).contains(&n) => Some(n),
            _ => {
                errors.push(format!("{key} must be a whole number from {min} to {max}"));
                None
            }
        }
    };
    if let Some(days) = number("EGEC_NATS_MAX_AGE_DAYS", 0, 36_500) {
        settings.max_age = std::time::Duration::from_secs(days * 24 * 3600);
    }
    if let Some(bytes) = number("EGEC_NATS_MAX_BYTES", 0, i64::MAX as u64) {
        settings.max_bytes = bytes;
    }
    if let Some(secs) = number("EGEC_NATS_DUPLICATE_WINDOW_SECONDS", 1, 7 * 24 * 3600) {
        settings.duplicate_window = std::time::Duration::from_secs(secs);
    }
    if let Some(n) = number("EGEC_NATS_REPLICAS", 1, 5) {
        settings.replicas = n as usize;
    }
    if !settings.max_age.is_zero() && settings.duplicate_window > settings.max_age {
        errors.push(
            "EGEC_NATS_DUPLICATE_WINDOW_SECONDS must not exceed EGEC_NATS_MAX_AGE_DAYS".to_owned(),
        );
    }
    settings
}

/// The shipped disposable-domain list extended by `EGEC_DISPOSABLE_EMAIL_DOMAINS_FILE` and
/// `EGEC_DISPOSABLE_EMAIL_DOMAINS`. An unreadable file is a configuration error: starting
/// without the operator's list would silently accept the domains they meant to refuse.
fn disposable_email_domains(
    src: &dyn Source,
    errors: &mut Vec<String>,
) -> std::sync::Arc<egec_domain::values::DisposableDomains> {
    let mut domains = egec_domain::values::DisposableDomains::shipped();
    if let Some(path) = src.get("EGEC_DISPOSABLE_EMAIL_DOMAINS_FILE") {
        match std::fs::read_to_string(&path) {
            Ok(text) => domains = domains.with_lines(&text),
            Err(e) => errors.push(format!(
                "EGEC_DISPOSABLE_EMAIL_DOMAINS_FILE cannot be read ({path}): {e}"
            )),
        }
    }
    if let Some(list) = src.get("EGEC_DISPOSABLE_EMAIL_DOMAINS") {
        domains = domains.with_comma_list(&list);
    }
    std::sync::Arc::new(domains)
}

/// `EGEC_MFA_REQUIRED_ROLES`: a comma list of roles; unset = superadmin and admin; empty (or
/// `none`) = no role.
fn mfa_required_roles(src: &dyn Source) -> Result<Vec<egec_domain::Role>, String> {
    use egec_domain::Role;
    let key = "EGEC_MFA_REQUIRED_ROLES";
    let Some(list) = src.get(key) else {
        return Ok(if src.is_set(key) {
            Vec::new()
        } else {
            vec![Role::Superadmin, Role::Admin]
        });
    };
    if list.trim().eq_ignore_ascii_case("none") {
        return Ok(Vec::new());
    }
    let mut roles = Vec::new();
    for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        let role: Role = name
            .parse()
            .map_err(|_| format!("{key} must list roles (superadmin, admin, superagent, agent, dataentry, auditor), separated by commas"))?;
        if !roles.contains(&role) {
            roles.push(role);
        }
    }
    Ok(roles)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn src(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_give_an_embedded_development_server_on_port_8080() {
        let c = Config::from_source(&src(&[])).unwrap();
        assert_eq!(c.env, Environment::Development);
        assert!(c.database_url.is_none());
        assert_eq!(c.listen.port(), 8080);
    }

    #[test]
    fn database_settings_are_read_and_a_role_needs_postgres_and_a_plain_name() {
        let pg = ("DATABASE_URL", "postgres://node@db/egec");
        let c = Config::from_source(&src(&[
            pg,
            ("EGEC_DB_STATEMENT_TIMEOUT_MS", "2500"),
            ("EGEC_DB_MAINTENANCE_STATEMENT_TIMEOUT_MS", "0"),
            ("EGEC_DB_MAINTENANCE_POOL_SIZE", "3"),
            ("EGEC_DB_ROLE", " egec_app "),
        ]))
        .unwrap();
        assert_eq!(
            c.db.statement_timeout,
            std::time::Duration::from_millis(2500)
        );
        assert!(c.db.maintenance_statement_timeout.is_zero());
        assert_eq!(c.db.maintenance_pool_size, 3);
        assert_eq!(c.db.role.as_deref(), Some("egec_app"));
        let defaults = Config::from_source(&src(&[])).unwrap();
        assert_eq!(
            defaults.db,
            egec_commands::store::postgres::PgSettings::default()
        );

        let err = Config::from_source(&src(&[("EGEC_DB_ROLE", "egec_app")])).unwrap_err();
        assert!(
            err.to_string().contains("EGEC_DB_ROLE needs DATABASE_URL"),
            "{err}"
        );
        let err = Config::from_source(&src(&[pg, ("EGEC_DB_ROLE", "app -c x=1")])).unwrap_err();
        assert!(err.to_string().contains("plain role name"), "{err}");
        let err =
            Config::from_source(&src(&[pg, ("EGEC_DB_STATEMENT_TIMEOUT_MS", "-1")])).unwrap_err();
        assert!(
            err.to_string().contains("EGEC_DB_STATEMENT_TIMEOUT_MS"),
            "{err}"
        );
    }

    #[test]
    fn every_problem_is_reported_at_once_and_no_secret_is_echoed() {
        let secret = "tooshort-secret-value";
        let err = Config::from_source(&src(&[
            ("EGEC_ENV", "staging"),
            ("EGEC_LISTEN", "nowhere"),
            ("EGEC_MASTER_KEY", "xyz"),
            ("EGEC_JWT_SECRET", secret),
            ("DATABASE_URL", "mysql://x"),
        ]))
        .unwrap_err();
        assert_eq!(err.0.len(), 5, "{err}");
        assert!(!err.to_string().contains(secret));
        assert!(!err.to_string().contains("xyz"));
    }

    #[test]
    fn session_timeouts_default_to_thirty_minutes_idle_and_twelve_hours_absolute() {
        let c = Config::from_source(&src(&[])).unwrap();
        assert_eq!(c.sessions, SessionTimeouts::default());
        assert_eq!(c.sessions.idle, chrono::Duration::seconds(1800));
        assert_eq!(c.sessions.absolute, chrono::Duration::seconds(43_200));
        let c = Config::from_source(&src(&[
            ("EGEC_SESSION_IDLE_SECONDS", "2"),
            ("EGEC_SESSION_ABSOLUTE_SECONDS", "5"),
        ]))
        .unwrap();
        assert_eq!(c.sessions.idle, chrono::Duration::seconds(2));
        assert_eq!(c.sessions.absolute, chrono::Duration::seconds(5));
        let err = Config::from_source(&src(&[
            ("EGEC_SESSION_IDLE_SECONDS", "0"),
            ("EGEC_SESSION_ABSOLUTE_SECONDS", "soon"),
        ]))
        .unwrap_err();
        assert_eq!(err.0.len(), 2, "{err}");
    }

    #[test]
    fn mfa_is_required_of_superadmins_and_admins_unless_configured_and_empty_means_none() {
        use egec_domain::Role;
        let c = Config::from_source(&src(&[])).unwrap();
        assert_eq!(c.mfa_required_roles, vec![Role::Superadmin, Role::Admin]);
        let c = Config::from_source(&src(&[("EGEC_MFA_REQUIRED_ROLES", "")])).unwrap();
        assert!(c.mfa_required_roles.is_empty());
        let c =
            Config::from_source(&src(&[("EGEC_MFA_REQUIRED_ROLES", "agent, auditor")])).unwrap();
        assert_eq!(c.mfa_required_roles, vec![Role::Agent, Role::Auditor]);
        let err =
            Config::from_source(&src(&[("EGEC_MFA_REQUIRED_ROLES", "admin,boss")])).unwrap_err();
        assert_eq!(err.0.len(), 1, "{err}");
    }

    #[test]
    fn passwords_never_expire_unless_a_maximum_age_in_days_is_set() {
        assert_eq!(
            Config::from_source(&src(&[])).unwrap().password_max_age,
            None
        );
        let c = Config::from_source(&src(&[("EGEC_PASSWORD_MAX_AGE_DAYS", "90")])).unwrap();
        assert_eq!(c.password_max_age, Some(chrono::Duration::days(90)));
        for bad in ["0", "-3", "ninety"] {
            assert!(
                Config::from_source(&src(&[("EGEC_PASSWORD_MAX_AGE_DAYS", bad)])).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn security_metadata_is_kept_for_twenty_four_months_unless_configured() {
        let c = Config::from_source(&src(&[])).unwrap();
        assert_eq!(c.retention_months.get(), 24);
        let c = Config::from_source(&src(&[("EGEC_RETENTION_MONTHS", "6")])).unwrap();
        assert_eq!(c.retention_months.get(), 6);
        for bad in ["0", "-1", "two years"] {
            let err = Config::from_source(&src(&[("EGEC_RETENTION_MONTHS", bad)])).unwrap_err();
            assert_eq!(err.0.len(), 1, "{bad}: {err}");
        }
    }

    #[test]
    fn the_bus_is_off_unless_nats_url_is_set_and_its_stream_settings_are_checked() {
        let c = Config::from_source(&src(&[])).unwrap();
        assert!(c.nats_url.is_none());
        assert_eq!(c.nats, crate::bus::Settings::default());
        let c = Config::from_source(&src(&[
            ("NATS_URL", "nats://127.0.0.1:4222"),
            ("EGEC_NATS_STREAM", "CRM_LOG"),
            ("EGEC_NATS_SUBJECT_PREFIX", "crm.log"),
            ("EGEC_NATS_MAX_AGE_DAYS", "7"),
            ("EGEC_NATS_MAX_BYTES", "1000000"),
            ("EGEC_NATS_DUPLICATE_WINDOW_SECONDS", "600"),
            ("EGEC_NATS_REPLICAS", "3"),
        ]))
        .unwrap();
        assert!(c.nats_url.is_some());
        assert_eq!(c.nats.stream, "CRM_LOG");
        assert_eq!(c.nats.subject_prefix, "crm.log");
        assert_eq!(c.nats.max_age.as_secs(), 7 * 86_400);
        assert_eq!(c.nats.max_bytes, 1_000_000);
        assert_eq!(c.nats.duplicate_window.as_secs(), 600);
        assert_eq!(c.nats.replicas, 3);
        let err = Config::from_source(&src(&[
            ("NATS_URL", "http://x"),
            ("EGEC_NATS_STREAM", "a.b"),
            ("EGEC_NATS_SUBJECT_PREFIX", "egec.>"),
            ("EGEC_NATS_REPLICAS", "0"),
        ]))
        .unwrap_err();
        assert_eq!(err.0.len(), 4, "{err}");
        let err = Config::from_source(&src(&[
            ("EGEC_NATS_MAX_AGE_DAYS", "1"),
            ("EGEC_NATS_DUPLICATE_WINDOW_SECONDS", "172800"),
        ]))
        .unwrap_err();
        assert_eq!(err.0.len(), 1, "{err}");
    }

    #[test]
    fn production_refuses_to_run_on_generated_secrets() {
        let err = Config::from_source(&src(&[("EGEC_ENV", "production")])).unwrap_err();
        assert_eq!(err.0.len(), 2);
    }
}
