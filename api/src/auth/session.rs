//! Session timeouts: absolute (from login) and idle (since the last request).
//!
//! The absolute timeout is read from the token's `iat`. Idle time needs the time of each
//! session's last request, which is kept here, in process memory: with several nodes each
//! node knows only the requests it served (see ARCHITECTURE.md; shared state comes with
//! Redis). A session this process has not seen is taken to have been active at login, so a
//! forgotten entry (an evicted one, or after a restart) can only make a session end sooner,
//! never let an idle one live on.

use crate::config::SessionTimeouts;
use chrono::{DateTime, Utc};
use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use uuid::Uuid;

/// Most sessions tracked at once. Entries idle for longer than the idle timeout are swept
/// (they are expired anyway), so this is only reached with that many sessions active within
/// one idle period; beyond it new sessions are not tracked and fall back to their login time.
const MAX_TRACKED: usize = 500_000;

/// Why a session no longer works by itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expired {
    Absolute,
    Idle,
}

/// Whether a session issued at `issued_at` and last active at `last_activity` (`None`: not
/// seen since login) has timed out at `now`. Pure, so the rule is tested without a clock.
pub fn check(
    timeouts: SessionTimeouts,
    issued_at: DateTime<Utc>,
    last_activity: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Result<(), Expired> {
    if now - issued_at > timeouts.absolute {
        return Err(Expired::Absolute);
    }
    let last = last_activity.map_or(issued_at, |l| l.max(issued_at));
    if now - last > timeouts.idle {
        return Err(Expired::Idle);
    }
    Ok(())
}

/// The last request time of each session this process served, bounded.
pub struct SessionActivity {
    timeouts: SessionTimeouts,
    inner: Mutex<Inner>,
}

struct Inner {
    last_seen: HashMap<Uuid, DateTime<Utc>>,
    last_sweep: DateTime<Utc>,
}

impl SessionActivity {
    pub fn new(timeouts: SessionTimeouts) -> Self {
        Self {
            timeouts,
            inner: Mutex::new(Inner {
                last_seen: HashMap::new(),
                last_sweep: DateTime::<Utc>::MIN_UTC,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // The map holds no invariant a panicking holder could break half-way.
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Checks the session's timeouts at `now` without recording anything.
    pub fn check(
        &self,
        session: Uuid,
        issued_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<(), Expired> {
        let last = self.lock().last_seen.get(&session).copied();
        check(self.timeouts, issued_at, last, now)
    }

    /// Records a request of a session that passed every check.
    pub fn touch(&self, session: Uuid, now: DateTime<Utc>) {
        let mut inner = self.lock();
        // Sweep at most once per idle period (and at least when full): entries older than
        // the idle timeout are expired and dropping them changes no answer.
        if now - inner.last_sweep > self.timeouts.idle || inner.last_seen.len() >= MAX_TRACKED {
            let idle = self.timeouts.idle;
            inner.last_seen.retain(|_, seen| now - *seen <= idle);
            inner.last_sweep = now;
        }
        if inner.last_seen.len() < MAX_TRACKED || inner.last_seen.contains_key(&session) {
            inner.last_seen.insert(session, now);
        }
    }

    /// Forgets a session that ended.
    pub fn forget(&self, session: Uuid) {
        self.lock().last_seen.remove(&session);
    }

    /// Sessions currently tracked.
    pub fn len(&self) -> usize {
        self.lock().last_seen.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{Duration, TimeZone};

    fn t(s: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_780_000_000 + s, 0).single().unwrap()
    }

    const TIMEOUTS: SessionTimeouts = SessionTimeouts {
        idle: Duration::seconds(30),
        absolute: Duration::seconds(100),
    };

    #[test]
    fn a_session_lives_while_it_is_used_and_no_longer_than_the_absolute_timeout() {
        assert_eq!(check(TIMEOUTS, t(0), None, t(30)), Ok(()));
        assert_eq!(check(TIMEOUTS, t(0), None, t(31)), Err(Expired::Idle));
        assert_eq!(check(TIMEOUTS, t(0), Some(t(90)), t(100)), Ok(()));
        assert_eq!(
            check(TIMEOUTS, t(0), Some(t(100)), t(101)),
            Err(Expired::Absolute)
        );
    }

    #[test]
    fn a_forgotten_session_counts_from_its_login_so_eviction_never_revives_an_idle_one() {
        let a = SessionActivity::new(TIMEOUTS);
        let s = Uuid::from_u128(1);
        a.touch(s, t(20));
        assert_eq!(a.check(s, t(0), t(45)), Ok(()));
        assert_eq!(a.check(s, t(0), t(51)), Err(Expired::Idle));
        // Another session's request sweeps the expired entry away; the answer stays the same.
        a.touch(Uuid::from_u128(2), t(60));
        assert_eq!(a.len(), 1);
        assert_eq!(a.check(s, t(0), t(61)), Err(Expired::Idle));
    }

    #[test]
    fn the_map_keeps_only_sessions_active_within_the_idle_timeout() {
        let a = SessionActivity::new(TIMEOUTS);
        for i in 0..100 {
            a.touch(Uuid::from_u128(i), t(0));
        }
        assert_eq!(a.len(), 100);
        a.touch(Uuid::from_u128(1000), t(31));
        assert_eq!(a.len(), 1);
        a.forget(Uuid::from_u128(1000));
        assert!(a.is_empty());
    }
}
