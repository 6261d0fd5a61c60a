//! Limiter state in Redis, shared by every node: the same GCRA as [`super::memory`], run as
//! one Lua script per check (one round trip, atomic on the server), with Redis's own clock so
//! nodes whose clocks differ still agree.
//!
//! When Redis fails (refused, timed out, any error), the check falls back to this node's
//! in-memory limiter at once, so requests are still limited and never answered 500; the
//! switch is logged once and counted (`egec_rate_limit_redis_errors_total`, gauge
//! `egec_rate_limit_redis_up`). Redis is tried again at most once a second, and checks go
//! back to it as soon as it answers.
//!
//! Keys are `<prefix>:rl:<policy>:<digest>`, the digest a keyed SHA-256 of the limiter key,
//! so neither client addresses nor account hashes are stored in Redis in clear; each expires
//! when its state is indistinguishable from a fresh one.

use super::memory::MemoryLimiter;
use super::{Decision, Policy, RateLimiter};
use async_trait::async_trait;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use sha2::{Digest, Sha256};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// GCRA over a "theoretical arrival time" (TAT) in microseconds of Redis's clock.
/// ARGV: period (µs per request), limit (the burst). Returns
/// `{1, remaining, reset_us}` when allowed, `{0, retry_after_us}` when limited.
const GCRA: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local period = tonumber(ARGV[1])
local limit = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local new_tat = tat + period
local allow_at = new_tat - period * limit
if allow_at > now then
  return {0, allow_at - now}
end
redis.call('SET', KEYS[1], new_tat, 'PX', math.floor((new_tat - now) / 1000) + 1)
return {1, math.floor((now - allow_at) / period), new_tat - now}
";

/// How long a check may wait for Redis before it is decided in memory.
const TIMEOUT: Duration = Duration::from_millis(250);
/// How long after a failure checks stay in memory before Redis is tried again.
const RETRY_AFTER: Duration = Duration::from_secs(1);

pub struct RedisLimiter {
    client: redis::Client,
    conn: tokio::sync::Mutex<Option<ConnectionManager>>,
    script: redis::Script,
    prefix: String,
    /// Keys the digests, so a key cannot be recognised from its digest by someone who
    /// guesses addresses.
    pepper: Vec<u8>,
    fallback: MemoryLimiter,
    degraded: AtomicBool,
    retry_at: Mutex<Option<Instant>>,
}

impl RedisLimiter {
    /// A limiter on `url`. Does not connect yet: a Redis that is down at start-up only means
    /// the first checks are decided in memory.
    pub fn new(
        url: &str,
        prefix: &str,
        pepper: &[u8],
        policies: &[Policy],
    ) -> Result<Self, redis::RedisError> {
        Ok(Self {
            client: redis::Client::open(url)?,
            conn: tokio::sync::Mutex::new(None),
            script: redis::Script::new(GCRA),
            prefix: prefix.to_owned(),
            pepper: pepper.to_vec(),
            fallback: MemoryLimiter::new(policies),
            degraded: AtomicBool::new(false),
            retry_at: Mutex::new(None),
        })
    }

    fn redis_key(&self, policy: &Policy, key: &str) -> String {
        let mut h = Sha256::new();
        h.update(&self.pepper);
        h.update([0]);
        h.update(key.as_bytes());
        format!(
            "{}:rl:{}:{}",
            self.prefix,
            policy.name,
            hex::encode(&h.finalize()[..16])
        )
    }

    /// Whether checks are being decided in memory because Redis failed.
    pub fn degraded(&self) -> bool {
        self.degraded.load(Ordering::Relaxed)
    }

    fn waiting_to_retry(&self) -> bool {
        let Ok(guard) = self.retry_at.lock() else {
            return false;
        };
        guard.is_some_and(|at| Instant::now() < at)
    }

    async fn connection(&self) -> Result<ConnectionManager, redis::RedisError> {
        let mut guard = self.conn.lock().await;
        if let Some(c) = guard.as_ref() {
            return Ok(c.clone());
        }
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(TIMEOUT))
            .set_response_timeout(Some(TIMEOUT))
            .set_number_of_retries(0);
        let c = ConnectionManager::new_with_config(self.client.clone(), config).await?;
        *guard = Some(c.clone());
        Ok(c)
    }

    async fn check_redis(&self, policy: &Policy, key: &str) -> Result<Decision, String> {
        let period = (policy.window / policy.limit.max(1)).as_micros().max(1);
        let attempt = async {
            let mut conn = self.connection().await?;
            self.script
                .key(self.redis_key(policy, key))
                .arg(u64::try_from(period).unwrap_or(u64::MAX))
                .arg(policy.limit.max(1))
                .invoke_async::<Vec<i64>>(&mut conn)
                .await
        };
        let reply = match tokio::time::timeout(TIMEOUT, attempt).await {
            Ok(Ok(reply)) => reply,
            Ok(Err(e)) => return Err(e.to_string()),
            Err(_) => return Err(format!("no answer within {TIMEOUT:?}")),
        };
        let micros = |v: i64| Duration::from_micros(u64::try_from(v).unwrap_or(0));
        match reply.as_slice() {
            [1, remaining, reset] => Ok(Decision::Allowed {
                remaining: u32::try_from(*remaining).unwrap_or(0),
                reset: micros(*reset),
            }),
            [0, retry_after] => Ok(Decision::Limited {
                retry_after: micros(*retry_after),
            }),
            other => Err(format!(
                "unexpected reply from the limiter script: {other:?}"
            )),
        }
    }

    fn fell_back(&self, error: &str) {
        metrics::counter!("egec_rate_limit_redis_errors_total").increment(1);
        if let Ok(mut at) = self.retry_at.lock() {
            *at = Some(Instant::now() + RETRY_AFTER);
        }
        if !self.degraded.swap(true, Ordering::Relaxed) {
            metrics::gauge!("egec_rate_limit_redis_up").set(0.0);
            tracing::warn!(
                error,
                "Redis rate limiting failed; limits are enforced per node in memory until it answers again"
            );
        }
    }

    fn recovered(&self) {
        if self.degraded.swap(false, Ordering::Relaxed) {
            metrics::gauge!("egec_rate_limit_redis_up").set(1.0);
            tracing::info!("Redis rate limiting answers again; limits are shared across nodes");
        }
    }
}

#[async_trait]
impl RateLimiter for RedisLimiter {
    async fn check(&self, policy: &Policy, key: &str) -> Decision {
        if self.degraded() && self.waiting_to_retry() {
            return self.fallback.check(policy, key).await;
        }
        match self.check_redis(policy, key).await {
            Ok(d) => {
                self.recovered();
                d
            }
            Err(e) => {
                self.fell_back(&e);
                self.fallback.check(policy, key).await
            }
        }
    }

    fn evict_idle(&self) {
        // Redis expires its keys itself; only the fallback's memory needs trimming.
        self.fallback.evict_idle();
    }

    fn tracked_keys(&self, policy: &Policy) -> usize {
        // Counting Redis keys would scan the keyspace; the figure is this node's fallback.
        self.fallback.tracked_keys(policy)
    }

    fn backend(&self) -> &'static str {
        if self.degraded() {
            "memory (Redis unavailable)"
        } else {
            "redis"
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The machine's Redis (`.ci/run` starts it); these tests fail, never skip, without it.
    const URL: &str = "redis://127.0.0.1:6379";

    fn limiter(policies: &[Policy]) -> RedisLimiter {
        let prefix = format!("unit-{}", uuid::Uuid::now_v7().simple());
        RedisLimiter::new(URL, &prefix, b"pepper", policies).unwrap()
    }

    #[tokio::test]
    async fn redis_gives_a_key_the_same_budget_and_retry_after_as_the_memory_limiter() {
        let p = Policy {
            name: "test",
            limit: 3,
            window: Duration::from_secs(60),
        };
        let l = limiter(&[p]);
        let mut remaining = Vec::new();
        for _ in 0..3 {
            match l.check(&p, "k").await {
                Decision::Allowed {
                    remaining: r,
                    reset,
                } => {
                    assert!(reset <= Duration::from_secs(60));
                    remaining.push(r)
                }
                d => panic!("{d:?}"),
            }
        }
        assert_eq!(remaining, [2, 1, 0]);
        assert!(!l.degraded(), "is Redis running at {URL}?");
        match l.check(&p, "k").await {
            Decision::Limited { retry_after } => assert!(
                retry_after > Duration::from_secs(15) && retry_after <= Duration::from_secs(20),
                "{retry_after:?}"
            ),
            d => panic!("{d:?}"),
        }
        assert!(matches!(
            l.check(&p, "other").await,
            Decision::Allowed { remaining: 2, .. }
        ));
        assert_eq!(l.backend(), "redis");
    }

    #[tokio::test]
    async fn an_unreachable_redis_is_a_fallback_to_memory_not_an_error() {
        let p = Policy {
            name: "test",
            limit: 2,
            window: Duration::from_secs(60),
        };
        // Port 1 refuses connections.
        let l = RedisLimiter::new("redis://127.0.0.1:1", "unit", b"pepper", &[p]).unwrap();
        assert!(matches!(
            l.check(&p, "k").await,
            Decision::Allowed { remaining: 1, .. }
        ));
        assert!(l.degraded());
        assert_eq!(l.backend(), "memory (Redis unavailable)");
        l.check(&p, "k").await;
        assert!(matches!(l.check(&p, "k").await, Decision::Limited { .. }));
    }

    #[test]
    fn redis_keys_are_keyed_digests_under_the_prefix() {
        let p = Policy {
            name: "login-ip",
            limit: 1,
            window: Duration::from_secs(60),
        };
        let a = RedisLimiter::new(URL, "egec", b"one", &[p]).unwrap();
        let b = RedisLimiter::new(URL, "egec", b"two", &[p]).unwrap();
        let k = a.redis_key(&p, "ip:198.51.100.7");
        assert!(k.starts_with("egec:rl:login-ip:"), "{k}");
        assert!(!k.contains("198.51"));
        assert_ne!(
            k,
            b.redis_key(&p, "ip:198.51.100.7"),
            "the pepper keys the digest"
        );
    }
}
