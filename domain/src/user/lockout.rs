//! Account lockout, decided purely from a user's login activity.
//!
//! Consecutive failures are counted since the last success or unlock; reaching the threshold
//! locks the account for a fixed time, during which every attempt is refused, even with the
//! right password, and recorded. State is folded from the current and the previous month's
//! activity streams, so a lock never lapses early at a month boundary.

use super::events::{LoginEvent, LoginFailure};
use crate::UserId;
use chrono::{DateTime, Duration, Utc};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LockoutPolicy {
    pub threshold: u32,
    pub lock_for: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LockoutState {
    pub consecutive_failures: u32,
    pub locked_until: Option<DateTime<Utc>>,
}

impl LockoutState {
    pub fn locked_at(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.locked_until.filter(|until| *until > now)
    }
}

pub fn evolve(state: LockoutState, event: &LoginEvent) -> LockoutState {
    match event {
        LoginEvent::Succeeded { .. } | LoginEvent::Unlocked { .. } => LockoutState::default(),
        LoginEvent::Failed {
            reason: LoginFailure::WrongPassword | LoginFailure::WrongSecondFactor,
            ..
        } => LockoutState {
            consecutive_failures: state.consecutive_failures + 1,
            ..state
        },
        // Attempts while locked are recorded but do not extend the lock: an attacker must not
        // be able to keep a user locked out forever by guessing.
        LoginEvent::Failed {
            reason: LoginFailure::Locked,
            ..
        } => state,
        LoginEvent::Locked { until, .. } => LockoutState {
            consecutive_failures: 0,
            locked_until: Some(*until),
        },
        // Ending a session says nothing about guessing.
        LoginEvent::LoggedOut { .. } => state,
        // A network refusal is not a password guess (and lives in another stream anyway).
        LoginEvent::AccessDenied { .. } => state,
        // Attempts for unknown emails live on their own streams, never a user's.
        LoginEvent::UnknownAccountFailed { .. } => state,
        // Retention runs live on the security stream and concern no account.
        LoginEvent::RetentionApplied { .. } => state,
    }
}

/// The outcome of one attempt: events to record, and whether the caller gets in.
#[derive(Debug, Clone, PartialEq)]
pub enum Attempt {
    Allowed(Vec<LoginEvent>),
    WrongPassword(Vec<LoginEvent>),
    Locked {
        events: Vec<LoginEvent>,
        retry_after_seconds: i64,
    },
}

/// Decides an attempt whose password check gave `password_ok`. The success event itself
/// (with its session id) is the caller's to add when it issues a session.
pub fn attempt(
    state: &LockoutState,
    user_id: UserId,
    password_ok: bool,
    policy: LockoutPolicy,
    now: DateTime<Utc>,
) -> Attempt {
    if let Some(until) = state.locked_at(now) {
        return Attempt::Locked {
            events: vec![LoginEvent::Failed {
                user_id,
                reason: LoginFailure::Locked,
                at: now,
            }],
            retry_after_seconds: (until - now).num_seconds().max(1),
        };
    }
    if password_ok {
        return Attempt::Allowed(vec![]);
    }
    failure(state, user_id, LoginFailure::WrongPassword, policy, now)
}

/// Decides an attempt whose password was right (and allowed by [`attempt`]) but whose
/// second factor was wrong or already used: a failure that counts towards the lock.
pub fn second_factor_failed(
    state: &LockoutState,
    user_id: UserId,
    policy: LockoutPolicy,
    now: DateTime<Utc>,
) -> Attempt {
    failure(state, user_id, LoginFailure::WrongSecondFactor, policy, now)
}

fn failure(
    state: &LockoutState,
    user_id: UserId,
    reason: LoginFailure,
    policy: LockoutPolicy,
    now: DateTime<Utc>,
) -> Attempt {
    let mut events = vec![LoginEvent::Failed {
        user_id,
        reason,
        at: now,
    }];
    if state.consecutive_failures + 1 >= policy.threshold {
        let until = now + policy.lock_for;
        events.push(LoginEvent::Locked {
            user_id,
            until,
            at: now,
        });
        return Attempt::Locked {
            events,
            retry_after_seconds: policy.lock_for.num_seconds().max(1),
        };
    }
    Attempt::WrongPassword(events)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn t(s: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_780_000_000 + s, 0).single().unwrap()
    }
    const POLICY: LockoutPolicy = LockoutPolicy {
        threshold: 5,
        lock_for: Duration::seconds(900),
    };
    fn uid() -> UserId {
        UserId::from_uuid(uuid::Uuid::from_u128(3))
    }

    fn run(history: &mut Vec<LoginEvent>, ok: bool, now: DateTime<Utc>) -> Attempt {
        let state = history.iter().fold(LockoutState::default(), evolve);
        let a = attempt(&state, uid(), ok, POLICY, now);
        match &a {
            Attempt::Allowed(e) | Attempt::WrongPassword(e) | Attempt::Locked { events: e, .. } => {
                history.extend(e.clone())
            }
        }
        if let Attempt::Allowed(_) = a {
            history.push(LoginEvent::Succeeded {
                user_id: uid(),
                session_id: uuid::Uuid::nil(),
                at: now,
            });
        }
        a
    }

    #[test]
    fn the_fifth_failure_locks_and_even_the_right_password_is_then_refused() {
        let mut h = vec![];
        for i in 0..4 {
            assert!(matches!(
                run(&mut h, false, t(i)),
                Attempt::WrongPassword(_)
            ));
        }
        assert!(matches!(
            run(&mut h, false, t(4)),
            Attempt::Locked {
                retry_after_seconds: 900,
                ..
            }
        ));
        match run(&mut h, true, t(100)) {
            Attempt::Locked {
                retry_after_seconds,
                events,
            } => {
                assert_eq!(retry_after_seconds, 804);
                assert_eq!(
                    events,
                    vec![LoginEvent::Failed {
                        user_id: uid(),
                        reason: LoginFailure::Locked,
                        at: t(100)
                    }]
                );
            }
            other => panic!("{other:?}"),
        }
        assert!(
            matches!(run(&mut h, true, t(905)), Attempt::Allowed(_)),
            "the lock lapses"
        );
    }

    #[test]
    fn a_success_resets_the_count_and_attempts_while_locked_do_not_extend_the_lock() {
        let mut h = vec![];
        for i in 0..4 {
            run(&mut h, false, t(i));
        }
        assert!(matches!(run(&mut h, true, t(5)), Attempt::Allowed(_)));
        for i in 0..4 {
            assert!(
                matches!(run(&mut h, false, t(10 + i)), Attempt::WrongPassword(_)),
                "count restarted"
            );
        }
        run(&mut h, false, t(20));
        for i in 0..50 {
            run(&mut h, false, t(30 + i));
        }
        assert!(
            matches!(run(&mut h, true, t(921)), Attempt::Allowed(_)),
            "guessing while locked does not extend it"
        );
    }

    #[test]
    fn wrong_second_factors_count_towards_the_lock_like_wrong_passwords() {
        let mut h = vec![];
        for i in 0..4 {
            run(&mut h, false, t(i));
        }
        let state = h.iter().fold(LockoutState::default(), evolve);
        match second_factor_failed(&state, uid(), POLICY, t(5)) {
            Attempt::Locked { events, .. } => assert_eq!(
                events[0],
                LoginEvent::Failed {
                    user_id: uid(),
                    reason: LoginFailure::WrongSecondFactor,
                    at: t(5)
                }
            ),
            other => panic!("the fifth failure must lock: {other:?}"),
        }
    }

    #[test]
    fn an_unlock_lifts_the_lock_at_once() {
        let mut h = vec![];
        for i in 0..5 {
            run(&mut h, false, t(i));
        }
        h.push(LoginEvent::Unlocked {
            user_id: uid(),
            at: t(10),
        });
        assert!(matches!(run(&mut h, true, t(11)), Attempt::Allowed(_)));
    }
}
