use super::*;
use crate::Personal;
use crate::encoding::EventCodec;
use crate::values::{Email, PersonName};
use crate::{Role, UserId};
use chrono::{TimeZone, Utc};

fn cmd() -> UserCommand {
    UserCommand::Create(Box::new(CreateUser {
        user_id: UserId::from_uuid(uuid::Uuid::from_u128(9)),
        email: Email::parse("admin@egec.example").unwrap(),
        name: PersonName::parse("Ada Admin").unwrap(),
        role: Role::Superadmin,
        password_hash: PasswordHash::parse(
            "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNo",
        )
        .unwrap(),
    }))
}

#[test]
fn creating_a_user_twice_is_refused() {
    let now = Utc.timestamp_opt(1_780_000_000, 0).single().unwrap();
    let events = decide(&UserState::Absent, cmd(), now).unwrap();
    let state = events.iter().fold(UserState::Absent, evolve);
    assert_eq!(decide(&state, cmd(), now), Err(UserError::AlreadyExists));
}

#[test]
fn the_persisted_json_of_every_user_and_login_event_type_is_pinned() {
    let now = Utc.timestamp_opt(1_780_000_000, 0).single().unwrap();
    let created = decide(&UserState::Absent, cmd(), now).unwrap().remove(0);
    let login = LoginEvent::Succeeded {
        user_id: created.user_id(),
        session_id: uuid::Uuid::from_u128(5),
        at: now,
    };
    let uid = created.user_id();
    let failed = LoginEvent::Failed {
        user_id: uid,
        reason: LoginFailure::WrongPassword,
        at: now,
    };
    let locked = LoginEvent::Locked {
        user_id: uid,
        until: now + chrono::Duration::seconds(900),
        at: now,
    };
    let unlocked = LoginEvent::Unlocked {
        user_id: uid,
        at: now,
    };
    for e in [&failed, &locked, &unlocked] {
        assert_eq!(
            &LoginEvent::decode(&e.encode().into_decrypted()).unwrap(),
            e
        );
    }
    for enc in [
        created.encode(),
        login.encode(),
        failed.encode(),
        locked.encode(),
        unlocked.encode(),
    ] {
        let json = crate::encoding::payload_json(&enc.facts, &enc.personal);
        insta::assert_json_snapshot!(format!("{}_v{}", enc.event_type, enc.schema_version), json);
    }
    assert_eq!(
        UserEvent::decode(&created.encode().into_decrypted()).unwrap(),
        created
    );
    assert_eq!(
        LoginEvent::decode(&login.encode().into_decrypted()).unwrap(),
        login
    );
}

#[test]
fn a_password_hash_is_never_printed_in_debug_output() {
    let h = PasswordHash::parse("$2b$12$abcdefghijklmnopqrstuv").unwrap();
    assert!(!format!("{h:?}").contains("abcdef"));
}

// ---- update, deactivation and sessions: given events, when a command, then events --------

fn t0() -> chrono::DateTime<Utc> {
    Utc.timestamp_opt(1_780_000_000, 0).single().unwrap()
}

fn uid() -> UserId {
    UserId::from_uuid(uuid::Uuid::from_u128(9))
}

/// The history of a superadmin created at `t0`.
fn created() -> Vec<UserEvent> {
    decide(&UserState::Absent, cmd(), t0()).unwrap()
}

fn given(history: &[UserEvent]) -> UserState {
    history.iter().fold(UserState::Absent, evolve)
}

fn update(
    name: Option<&str>,
    role: Option<Role>,
    active: Option<bool>,
    active_superadmins: u32,
) -> UserCommand {
    UserCommand::Update(Box::new(UpdateUser {
        name: name.map(|n| PersonName::parse(n).unwrap()),
        role,
        active,
        active_superadmins,
    }))
}

fn present(state: &UserState) -> &User {
    match state {
        UserState::Present(u) => u,
        UserState::Absent => panic!("no user"),
    }
}

#[test]
fn a_new_user_starts_at_the_first_session_version() {
    assert_eq!(
        present(&given(&created())).session_version,
        FIRST_SESSION_VERSION
    );
}

#[test]
fn a_rename_changes_the_name_and_leaves_sessions_alone() {
    let then = decide(
        &given(&created()),
        update(Some("Ada Lovelace"), None, None, 2),
        t0(),
    )
    .unwrap();
    assert_eq!(
        then,
        vec![UserEvent::Renamed {
            user_id: uid(),
            name: Personal::Known(PersonName::parse("Ada Lovelace").unwrap()),
            at: t0(),
        }]
    );
    let mut h = created();
    h.extend(then);
    let u = given(&h);
    assert_eq!(present(&u).name.known().unwrap().as_str(), "Ada Lovelace");
    assert_eq!(present(&u).session_version, FIRST_SESSION_VERSION);
}

#[test]
fn a_role_change_bumps_the_session_version() {
    let then = decide(
        &given(&created()),
        update(None, Some(Role::Admin), None, 2),
        t0(),
    )
    .unwrap();
    assert_eq!(
        then,
        vec![UserEvent::RoleChanged {
            user_id: uid(),
            from: Role::Superadmin,
            to: Role::Admin,
            session_version: 2,
            at: t0(),
        }]
    );
    let mut h = created();
    h.extend(then);
    let u = given(&h);
    assert_eq!(present(&u).role, Role::Admin);
    assert_eq!(present(&u).session_version, 2);
}

#[test]
fn deactivation_bumps_the_session_version_and_reactivation_does_not_revive_old_tokens() {
    let then = decide(&given(&created()), update(None, None, Some(false), 2), t0()).unwrap();
    assert_eq!(
        then,
        vec![UserEvent::Deactivated {
            user_id: uid(),
            session_version: 2,
            at: t0(),
        }]
    );
    let mut h = created();
    h.extend(then);
    assert!(!present(&given(&h)).active);
    let again = decide(&given(&h), update(None, None, Some(true), 1), t0()).unwrap();
    assert_eq!(
        again,
        vec![UserEvent::Reactivated {
            user_id: uid(),
            at: t0()
        }]
    );
    h.extend(again);
    let u = given(&h);
    assert!(present(&u).active);
    assert_eq!(
        present(&u).session_version,
        2,
        "tokens issued before the deactivation stay dead"
    );
}

#[test]
fn demotion_and_deactivation_together_bump_the_version_once_each() {
    let then = decide(
        &given(&created()),
        update(None, Some(Role::Agent), Some(false), 3),
        t0(),
    )
    .unwrap();
    let versions: Vec<i64> = then
        .iter()
        .filter_map(|e| match e {
            UserEvent::RoleChanged {
                session_version, ..
            }
            | UserEvent::Deactivated {
                session_version, ..
            } => Some(*session_version),
            _ => None,
        })
        .collect();
    assert_eq!(versions, vec![2, 3]);
}

#[test]
fn an_update_that_changes_nothing_records_nothing() {
    let h = created();
    assert_eq!(
        decide(
            &given(&h),
            update(Some("Ada Admin"), Some(Role::Superadmin), Some(true), 1),
            t0()
        ),
        Ok(vec![])
    );
}

#[test]
fn the_last_active_superadmin_can_be_neither_demoted_nor_deactivated() {
    let s = given(&created());
    assert_eq!(
        decide(&s, update(None, Some(Role::Admin), None, 1), t0()),
        Err(UserError::LastSuperadmin)
    );
    assert_eq!(
        decide(&s, update(None, None, Some(false), 1), t0()),
        Err(UserError::LastSuperadmin)
    );
    // A stale count of zero is no licence either.
    assert_eq!(
        decide(&s, update(None, None, Some(false), 0), t0()),
        Err(UserError::LastSuperadmin)
    );
    // Renaming them is fine, and so is everything once another superadmin exists.
    assert!(decide(&s, update(Some("Ada B"), None, None, 1), t0()).is_ok());
    assert!(decide(&s, update(None, Some(Role::Admin), Some(false), 2), t0()).is_ok());
}

#[test]
fn an_inactive_superadmin_may_be_demoted_whatever_the_count() {
    let mut h = created();
    h.extend(decide(&given(&h), update(None, None, Some(false), 2), t0()).unwrap());
    assert!(decide(&given(&h), update(None, Some(Role::Agent), None, 1), t0()).is_ok());
}

#[test]
fn revoking_sessions_bumps_the_session_version_each_time() {
    let mut h = created();
    for expected in [2, 3] {
        let then = decide(&given(&h), UserCommand::RevokeSessions, t0()).unwrap();
        assert_eq!(
            then,
            vec![UserEvent::SessionsRevoked {
                user_id: uid(),
                session_version: expected,
                at: t0(),
            }]
        );
        h.extend(then);
    }
    assert_eq!(present(&given(&h)).session_version, 3);
}

#[test]
fn an_absent_user_can_be_neither_updated_nor_logged_out() {
    assert_eq!(
        decide(&UserState::Absent, update(None, None, Some(false), 5), t0()),
        Err(UserError::NotFound)
    );
    assert_eq!(
        decide(&UserState::Absent, UserCommand::RevokeSessions, t0()),
        Err(UserError::NotFound)
    );
}

#[test]
fn a_logout_does_not_touch_the_lockout_count() {
    let failed = LoginEvent::Failed {
        user_id: uid(),
        reason: LoginFailure::WrongPassword,
        at: t0(),
    };
    let out = LoginEvent::LoggedOut {
        user_id: uid(),
        session_id: uuid::Uuid::from_u128(5),
        at: t0(),
    };
    let s = [failed.clone(), out, failed]
        .iter()
        .fold(lockout::LockoutState::default(), lockout::evolve);
    assert_eq!(s.consecutive_failures, 2);
}

#[test]
fn the_persisted_json_of_every_user_change_and_logout_is_pinned_and_decodes_back() {
    let name = PersonName::parse("Ada Lovelace").unwrap();
    let user_events = [
        UserEvent::Renamed {
            user_id: uid(),
            name: Personal::Known(name),
            at: t0(),
        },
        UserEvent::RoleChanged {
            user_id: uid(),
            from: Role::Superadmin,
            to: Role::Agent,
            session_version: 2,
            at: t0(),
        },
        UserEvent::Deactivated {
            user_id: uid(),
            session_version: 3,
            at: t0(),
        },
        UserEvent::Reactivated {
            user_id: uid(),
            at: t0(),
        },
        UserEvent::SessionsRevoked {
            user_id: uid(),
            session_version: 4,
            at: t0(),
        },
    ];
    for e in &user_events {
        let enc = e.encode();
        assert_eq!(
            &UserEvent::decode(&enc.clone().into_decrypted()).unwrap(),
            e
        );
        let json = crate::encoding::payload_json(&enc.facts, &enc.personal);
        insta::assert_json_snapshot!(format!("{}_v{}", enc.event_type, enc.schema_version), json);
    }
    let out = LoginEvent::LoggedOut {
        user_id: uid(),
        session_id: uuid::Uuid::from_u128(5),
        at: t0(),
    };
    let enc = out.encode();
    assert_eq!(enc.event_type, SESSION_ENDED);
    assert_eq!(
        LoginEvent::decode(&enc.clone().into_decrypted()).unwrap(),
        out
    );
    assert_eq!(out.action(), "LOGOUT");
    let json = crate::encoding::payload_json(&enc.facts, &enc.personal);
    insta::assert_json_snapshot!(format!("{}_v{}", enc.event_type, enc.schema_version), json);
    // The name is personal (encrypted in the log); the rest are facts.
    assert!(user_events[0].encode().personal.contains_key("name"));
    assert!(
        user_events[1..]
            .iter()
            .all(|e| e.encode().personal.is_empty())
    );
}

#[test]
fn every_user_event_type_dispatches_back_through_the_domain_event() {
    // DomainEvent::decode dispatches on the type's prefix: user changes must start with
    // "User" and the logout with "Login", or they would decode as the wrong family.
    let e = crate::event::DomainEvent::Login(LoginEvent::LoggedOut {
        user_id: uid(),
        session_id: uuid::Uuid::from_u128(5),
        at: t0(),
    });
    assert_eq!(
        crate::event::DomainEvent::decode(e.encode().into_decrypted()).unwrap(),
        e
    );
    let e = crate::event::DomainEvent::User(UserEvent::SessionsRevoked {
        user_id: uid(),
        session_version: 7,
        at: t0(),
    });
    assert_eq!(
        crate::event::DomainEvent::decode(e.encode().into_decrypted()).unwrap(),
        e
    );
}
