//! Rate limits: GCRA, per IP for anonymous calls, per user for authenticated ones, with role
//! multipliers and per-endpoint presets.
//!
//! | preset | key | default | setting |
//! |---|---|---|---|
//! | `login-ip` | client IP, on `POST /api/auth/login` | 10/min | `EGEC_RATE_LIMIT_LOGIN_IP_PER_MINUTE` |
//! | `login-account` | the email tried (hashed), on `POST /api/auth/login` | 5/min | `EGEC_RATE_LIMIT_LOGIN_ACCOUNT_PER_MINUTE` |
//! | `api` | user id when authenticated, else client IP | 300/min | `EGEC_RATE_LIMIT_API_PER_MINUTE` |
//! | `api-privileged` | user id of a superadmin or admin | 300/min × 4 | `EGEC_RATE_LIMIT_PRIVILEGED_MULTIPLIER` |
//!
//! The state lives behind the [`RateLimiter`] trait: in memory ([`memory`], governor's GCRA)
//! by default, in Redis ([`redis`], the same GCRA as a Lua script, shared by every node) when
//! `REDIS_URL` is set, falling back to memory while Redis fails. Where the
//! check happens: [`middleware`] for anonymous calls and logins (before the handler), and
//! the `Actor` extractor for authenticated calls ([`charge_user`], once the role is known).

pub mod memory;
pub mod middleware;
pub mod redis;

use crate::config::Source;
use crate::error::ApiError;
use egec_domain::Role;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// One preset: `limit` requests per `window`, for each key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    pub name: &'static str,
    pub limit: u32,
    pub window: Duration,
}

/// The outcome of charging one request to a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Allowed {
        remaining: u32,
        /// Until the key's full quota is available again.
        reset: Duration,
    },
    Limited {
        retry_after: Duration,
    },
}

/// Where limiter state lives. Implementations count requests per (policy, key) with GCRA.
#[async_trait::async_trait]
pub trait RateLimiter: Send + Sync {
    /// Charges one request to `key` under `policy`.
    async fn check(&self, policy: &Policy, key: &str) -> Decision;
    /// Where the state lives now, as `GET /api/admin/rate-limits` shows it.
    fn backend(&self) -> &'static str;
    /// Forgets keys whose state is indistinguishable from a fresh one (memory stays bounded).
    fn evict_idle(&self);
    /// How many keys the policy currently tracks.
    fn tracked_keys(&self, policy: &Policy) -> usize;
}

/// The settings (`EGEC_RATE_LIMIT_*`). Defaults are production-safe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    pub enabled: bool,
    pub api_per_minute: u32,
    pub login_ip_per_minute: u32,
    pub login_account_per_minute: u32,
    /// Superadmins and admins get this many times the `api` quota.
    pub privileged_multiplier: u32,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            enabled: true,
            api_per_minute: 300,
            login_ip_per_minute: 10,
            login_account_per_minute: 5,
            privileged_multiplier: 4,
        }
    }
}

impl Settings {
    pub fn from_source(src: &dyn Source, errors: &mut Vec<String>) -> Self {
        let d = Settings::default();
        let mut number = |key: &str, default: u32, max: u32| -> u32 {
            match src.get(key) {
                None => default,
                Some(v) => match v.parse::<u32>() {
                    Ok(n) if (1..=max).contains(&n) => n,
                    _ => {
                        errors.push(format!("{key} must be a whole number from 1 to {max}"));
                        default
                    }
                },
            }
        };
        let api_per_minute = number(
            "EGEC_RATE_LIMIT_API_PER_MINUTE",
            d.api_per_minute,
            1_000_000,
        );
        let login_ip_per_minute = number(
            "EGEC_RATE_LIMIT_LOGIN_IP_PER_MINUTE",
            d.login_ip_per_minute,
            1_000_000,
        );
        let login_account_per_minute = number(
            "EGEC_RATE_LIMIT_LOGIN_ACCOUNT_PER_MINUTE",
            d.login_account_per_minute,
            1_000_000,
        );
        let privileged_multiplier = number(
            "EGEC_RATE_LIMIT_PRIVILEGED_MULTIPLIER",
            d.privileged_multiplier,
            100,
        );
        let enabled = match src.get("EGEC_RATE_LIMIT_ENABLED").as_deref() {
            None | Some("true") => true,
            Some("false") => false,
            Some(_) => {
                errors.push("EGEC_RATE_LIMIT_ENABLED must be `true` or `false`".to_owned());
                true
            }
        };
        Settings {
            enabled,
            api_per_minute,
            login_ip_per_minute,
            login_account_per_minute,
            privileged_multiplier,
        }
    }

    fn policy(name: &'static str, per_minute: u32) -> Policy {
        Policy {
            name,
            limit: per_minute,
            window: Duration::from_secs(60),
        }
    }

    pub fn login_ip(&self) -> Policy {
        Self::policy("login-ip", self.login_ip_per_minute)
    }
    pub fn login_account(&self) -> Policy {
        Self::policy("login-account", self.login_account_per_minute)
    }
    pub fn api(&self) -> Policy {
        Self::policy("api", self.api_per_minute)
    }
    pub fn api_privileged(&self) -> Policy {
        Self::policy(
            "api-privileged",
            self.api_per_minute
                .saturating_mul(self.privileged_multiplier),
        )
    }

    /// Every preset, in the order statistics list them.
    pub fn policies(&self) -> [Policy; 4] {
        [
            self.login_ip(),
            self.login_account(),
            self.api(),
            self.api_privileged(),
        ]
    }

    /// The `api` preset of an authenticated caller: privileged roles get the multiplier.
    pub fn api_for(&self, role: Role) -> Policy {
        if matches!(role, Role::Superadmin | Role::Admin) {
            self.api_privileged()
        } else {
            self.api()
        }
    }
}

#[derive(Default)]
struct Counts {
    allowed: AtomicU64,
    limited: AtomicU64,
}

/// Per-preset statistics, as `GET /api/admin/rate-limits` shows them.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct PolicyStats {
    pub policy: String,
    pub limit: u32,
    pub window_seconds: u64,
    pub allowed: u64,
    pub limited: u64,
    pub keys_tracked: usize,
}

/// The limiter of one process: settings, state store and statistics.
pub struct RateLimits {
    pub settings: Settings,
    store: Arc<dyn RateLimiter>,
    counts: BTreeMap<&'static str, Counts>,
}

impl RateLimits {
    pub fn new(settings: Settings, store: Arc<dyn RateLimiter>) -> Self {
        let counts = settings
            .policies()
            .iter()
            .map(|p| (p.name, Counts::default()))
            .collect();
        Self {
            settings,
            store,
            counts,
        }
    }

    pub fn in_memory(settings: Settings) -> Self {
        Self::new(
            settings,
            Arc::new(memory::MemoryLimiter::new(&settings.policies())),
        )
    }

    pub fn enabled(&self) -> bool {
        self.settings.enabled
    }

    /// A limiter whose state is shared through Redis at `url` (see [`redis`]).
    pub fn shared(
        settings: Settings,
        url: &str,
        prefix: &str,
        pepper: &[u8],
    ) -> Result<Self, ::redis::RedisError> {
        let store = redis::RedisLimiter::new(url, prefix, pepper, &settings.policies())?;
        Ok(Self::new(settings, Arc::new(store)))
    }

    /// Where the state lives now (`memory`, `redis`, or memory while Redis fails).
    pub fn backend(&self) -> &'static str {
        self.store.backend()
    }

    /// Charges one request and counts the outcome.
    pub async fn check(&self, policy: &Policy, key: &str) -> Decision {
        let d = self.store.check(policy, key).await;
        if let Some(c) = self.counts.get(policy.name) {
            match d {
                Decision::Allowed { .. } => c.allowed.fetch_add(1, Ordering::Relaxed),
                Decision::Limited { .. } => c.limited.fetch_add(1, Ordering::Relaxed),
            };
        }
        if matches!(d, Decision::Limited { .. }) {
            metrics::counter!("egec_rate_limited_total", "policy" => policy.name).increment(1);
        }
        d
    }

    pub fn evict_idle(&self) {
        self.store.evict_idle();
    }

    pub fn stats(&self) -> Vec<PolicyStats> {
        self.settings
            .policies()
            .iter()
            .map(|p| {
                let c = self.counts.get(p.name);
                PolicyStats {
                    policy: p.name.to_owned(),
                    limit: p.limit,
                    window_seconds: p.window.as_secs(),
                    allowed: c.map_or(0, |c| c.allowed.load(Ordering::Relaxed)),
                    limited: c.map_or(0, |c| c.limited.load(Ordering::Relaxed)),
                    keys_tracked: self.store.tracked_keys(p),
                }
            })
            .collect()
    }
}

/// Evicts idle limiter state every minute, for as long as the limiter is alive.
pub fn spawn_eviction(limits: &Arc<RateLimits>) {
    let weak = Arc::downgrade(limits);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(60));
        tick.tick().await;
        loop {
            tick.tick().await;
            match weak.upgrade() {
                Some(l) => l.evict_idle(),
                None => break,
            }
        }
    });
}

/// The outcome of one request's check, for the response headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    pub policy: Policy,
    pub decision: Decision,
}

/// Shared between the middleware (which adds the headers) and the `Actor` extractor (which
/// charges the authenticated user): the extractor writes the outcome here.
#[derive(Debug, Clone, Default)]
pub struct Slot(pub Arc<Mutex<Option<Outcome>>>);

impl Slot {
    pub fn get(&self) -> Option<Outcome> {
        self.0.lock().ok().and_then(|g| *g)
    }
    fn set(&self, o: Outcome) {
        if let Ok(mut g) = self.0.lock() {
            *g = Some(o);
        }
    }
}

/// Charges an authenticated request to its user (called by the `Actor` extractor): 429
/// `rate_limited` over the quota. Charged once per request even if the extractor runs twice.
pub async fn charge_user(
    parts: &axum::http::request::Parts,
    limits: &RateLimits,
    user: egec_domain::UserId,
    role: Role,
) -> Result<(), ApiError> {
    let Some(slot) = parts.extensions.get::<Slot>() else {
        return Ok(());
    };
    if let Some(o) = slot.get() {
        return result_of(o.decision);
    }
    let policy = limits.settings.api_for(role);
    let decision = limits.check(&policy, &format!("user:{user}")).await;
    slot.set(Outcome { policy, decision });
    result_of(decision)
}

/// [`charge_user`] for a request authenticated with an API key: the ordinary `api` quota,
/// keyed by the key's id (never shared with a user's budget).
pub async fn charge_key(
    parts: &axum::http::request::Parts,
    limits: &RateLimits,
    key_id: uuid::Uuid,
) -> Result<(), ApiError> {
    let Some(slot) = parts.extensions.get::<Slot>() else {
        return Ok(());
    };
    if let Some(o) = slot.get() {
        return result_of(o.decision);
    }
    let policy = limits.settings.api();
    let decision = limits.check(&policy, &format!("key:{key_id}")).await;
    slot.set(Outcome { policy, decision });
    result_of(decision)
}

fn result_of(d: Decision) -> Result<(), ApiError> {
    match d {
        Decision::Allowed { .. } => Ok(()),
        Decision::Limited { retry_after } => Err(ApiError::RateLimited {
            retry_after_seconds: ceil_secs(retry_after),
        }),
    }
}

/// Whole seconds, rounded up (a client waiting `Retry-After` seconds must get through).
pub fn ceil_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn defaults_are_strict_on_login_and_settings_change_them() {
        let mut errors = Vec::new();
        let s = Settings::from_source(&HashMap::<String, String>::new(), &mut errors);
        assert!(errors.is_empty());
        assert_eq!(s, Settings::default());
        assert_eq!(s.login_account().limit, 5);
        assert_eq!(s.api_for(Role::Admin).limit, 1200);
        assert_eq!(s.api_for(Role::Agent).limit, 300);
        let src: HashMap<String, String> = [
            ("EGEC_RATE_LIMIT_ENABLED", "false"),
            ("EGEC_RATE_LIMIT_API_PER_MINUTE", "7"),
            ("EGEC_RATE_LIMIT_LOGIN_IP_PER_MINUTE", "zero"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let s = Settings::from_source(&src, &mut errors);
        assert!(!s.enabled);
        assert_eq!(s.api_per_minute, 7);
        assert_eq!(errors.len(), 1, "{errors:?}");
    }

    #[tokio::test]
    async fn statistics_count_allowed_and_limited_requests_per_preset() {
        let settings = Settings {
            api_per_minute: 2,
            ..Settings::default()
        };
        let limits = RateLimits::in_memory(settings);
        let api = settings.api();
        for _ in 0..3 {
            limits.check(&api, "ip:1").await;
        }
        limits.check(&api, "ip:2").await;
        let stats = limits.stats();
        let s = stats.iter().find(|s| s.policy == "api").unwrap();
        assert_eq!((s.allowed, s.limited, s.keys_tracked), (3, 1, 2));
    }
}
