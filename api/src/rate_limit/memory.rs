//! In-memory limiter state: one governor keyed GCRA limiter per preset.

use super::{Decision, Policy, RateLimiter};
use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter as Gcra};
use std::collections::HashMap;
use std::num::NonZeroU32;
use std::time::Duration;

type Keyed = Gcra<String, DefaultKeyedStateStore<String>, DefaultClock, StateInformationMiddleware>;

pub struct MemoryLimiter {
    clock: DefaultClock,
    limiters: HashMap<&'static str, (Policy, Keyed)>,
}

fn quota(p: &Policy) -> Quota {
    let limit = NonZeroU32::new(p.limit.max(1)).unwrap_or(NonZeroU32::MIN);
    // One cell every window/limit, with a burst of the whole limit: `limit` per `window`.
    let period = (p.window / limit.get()).max(Duration::from_nanos(1));
    Quota::with_period(period)
        .unwrap_or_else(|| Quota::per_second(limit))
        .allow_burst(limit)
}

impl MemoryLimiter {
    /// A limiter for exactly these presets (a check under another preset is allowed).
    pub fn new(policies: &[Policy]) -> Self {
        let clock = DefaultClock::default();
        let limiters = policies
            .iter()
            .map(|p| {
                let l: Keyed = Gcra::<String, DefaultKeyedStateStore<String>, DefaultClock>::new(
                    quota(p),
                    DefaultKeyedStateStore::<String>::default(),
                    clock.clone(),
                )
                .with_middleware::<StateInformationMiddleware>();
                (p.name, (*p, l))
            })
            .collect();
        Self { clock, limiters }
    }
}

#[async_trait::async_trait]
impl RateLimiter for MemoryLimiter {
    async fn check(&self, policy: &Policy, key: &str) -> Decision {
        let Some((p, l)) = self.limiters.get(policy.name) else {
            return Decision::Allowed {
                remaining: policy.limit,
                reset: Duration::ZERO,
            };
        };
        match l.check_key(&key.to_owned()) {
            Ok(snapshot) => {
                let remaining = snapshot.remaining_burst_capacity();
                let used = p.limit.saturating_sub(remaining);
                Decision::Allowed {
                    remaining,
                    reset: p.window / p.limit.max(1) * used,
                }
            }
            Err(not_until) => Decision::Limited {
                retry_after: not_until.wait_time_from(self.clock.now()),
            },
        }
    }

    fn evict_idle(&self) {
        for (_, l) in self.limiters.values() {
            l.retain_recent();
            l.shrink_to_fit();
        }
    }

    fn tracked_keys(&self, policy: &Policy) -> usize {
        self.limiters.get(policy.name).map_or(0, |(_, l)| l.len())
    }

    fn backend(&self) -> &'static str {
        "memory"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(limit: u32, window: Duration) -> Policy {
        Policy {
            name: "test",
            limit,
            window,
        }
    }

    #[tokio::test]
    async fn a_key_gets_its_limit_then_is_refused_with_a_retry_after() {
        let p = policy(3, Duration::from_secs(60));
        let l = MemoryLimiter::new(&[p]);
        let mut remaining = Vec::new();
        for _ in 0..3 {
            match l.check(&p, "k").await {
                Decision::Allowed { remaining: r, .. } => remaining.push(r),
                d => panic!("{d:?}"),
            }
        }
        assert_eq!(remaining, [2, 1, 0]);
        match l.check(&p, "k").await {
            Decision::Limited { retry_after } => {
                assert!(
                    retry_after > Duration::from_secs(15) && retry_after <= Duration::from_secs(20)
                )
            }
            d => panic!("{d:?}"),
        }
        assert!(matches!(
            l.check(&p, "other").await,
            Decision::Allowed { remaining: 2, .. }
        ));
    }

    #[tokio::test]
    async fn idle_keys_are_evicted_and_busy_ones_kept() {
        let idle = policy(10, Duration::from_millis(100));
        let l = MemoryLimiter::new(&[idle]);
        for i in 0..50 {
            l.check(&idle, &format!("ip:{i}")).await;
        }
        assert_eq!(l.tracked_keys(&idle), 50);
        l.evict_idle();
        assert_eq!(l.tracked_keys(&idle), 50, "state still recent: kept");
        std::thread::sleep(Duration::from_millis(150));
        l.check(&idle, "ip:busy").await;
        l.evict_idle();
        assert_eq!(l.tracked_keys(&idle), 1, "only the key used since survives");
    }
}
