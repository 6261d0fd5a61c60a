use super::*;
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
