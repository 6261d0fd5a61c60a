//! Passwords and the second factor: given events, when a command, then events.

use super::credentials::{BackupCodeHashes, CredentialCommand, TotpSecret, password_change_due};
use super::*;
use crate::Personal;
use crate::encoding::EventCodec;
use crate::values::{Email, PersonName};
use crate::{Role, UserId};
use chrono::{Duration, TimeZone, Utc};

fn t(s: i64) -> chrono::DateTime<Utc> {
    Utc.timestamp_opt(1_780_000_000 + s, 0).single().unwrap()
}

fn uid() -> UserId {
    UserId::from_uuid(uuid::Uuid::from_u128(9))
}

fn hash(tag: &str) -> PasswordHash {
    PasswordHash::parse(&format!(
        "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ${tag}aGFzaGhhc2g"
    ))
    .unwrap()
}

fn created() -> Vec<UserEvent> {
    let cmd = UserCommand::Create(Box::new(CreateUser {
        user_id: uid(),
        email: Email::parse("admin@egec.example").unwrap(),
        name: PersonName::parse("Ada Admin").unwrap(),
        role: Role::Admin,
        password_hash: PasswordHash::parse("$2b$12$abcdefghijklmnopqrstuvwxyz0123").unwrap(),
    }));
    decide(&UserState::Absent, cmd, t(0)).unwrap()
}

fn given(history: &[UserEvent]) -> UserState {
    history.iter().fold(UserState::Absent, evolve)
}

fn user(history: &[UserEvent]) -> User {
    match given(history) {
        UserState::Present(u) => *u,
        UserState::Absent => panic!("no user"),
    }
}

fn when(history: &[UserEvent], c: CredentialCommand, at: i64) -> Result<Vec<UserEvent>, UserError> {
    decide(&given(history), UserCommand::Credentials(c), t(at))
}

/// Applies a command that must succeed and answers the longer history.
fn then(mut history: Vec<UserEvent>, c: CredentialCommand, at: i64) -> Vec<UserEvent> {
    let events = when(&history, c, at).expect("command accepted");
    history.extend(events);
    history
}

fn secret() -> TotpSecret {
    TotpSecret::parse("JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP").unwrap()
}

fn codes(fill: char) -> BackupCodeHashes {
    BackupCodeHashes::new(
        (0..10)
            .map(|i| format!("{i:x}{}", fill.to_string().repeat(63)))
            .collect(),
    )
    .unwrap()
}

fn enabled_at_step(step: i64) -> Vec<UserEvent> {
    let h = then(created(), CredentialCommand::StartTotpSetup(secret()), 1);
    then(
        h,
        CredentialCommand::EnableTotp {
            step,
            backup_codes: codes('a'),
        },
        2,
    )
}

#[test]
fn a_rehash_replaces_the_hash_but_keeps_sessions_and_the_password_age() {
    let h = then(
        created(),
        CredentialCommand::RehashPassword(hash("new")),
        50,
    );
    assert_eq!(
        h.last(),
        Some(&UserEvent::PasswordRehashed {
            user_id: uid(),
            password_hash: Personal::Known(hash("new")),
            at: t(50),
        })
    );
    let u = user(&h);
    assert_eq!(u.password_hash, Personal::Known(hash("new")));
    assert_eq!(u.session_version, FIRST_SESSION_VERSION);
    assert_eq!(u.password_changed_at, t(0));
}

#[test]
fn a_password_change_ends_every_session_and_satisfies_a_forced_change() {
    let h = then(created(), CredentialCommand::RequirePasswordChange, 10);
    assert!(user(&h).must_change_password);
    let h = then(h, CredentialCommand::ChangePassword(hash("chosen")), 20);
    assert_eq!(
        h.last(),
        Some(&UserEvent::PasswordChanged {
            user_id: uid(),
            password_hash: Personal::Known(hash("chosen")),
            session_version: FIRST_SESSION_VERSION + 1,
            at: t(20),
        })
    );
    let u = user(&h);
    assert!(!u.must_change_password);
    assert_eq!(u.session_version, FIRST_SESSION_VERSION + 1);
    assert_eq!(u.password_changed_at, t(20));
    assert_eq!(u.password_hash, Personal::Known(hash("chosen")));
}

#[test]
fn requiring_a_change_that_is_already_required_records_nothing() {
    let h = then(created(), CredentialCommand::RequirePasswordChange, 10);
    assert_eq!(
        when(&h, CredentialCommand::RequirePasswordChange, 11),
        Ok(vec![])
    );
}

#[test]
fn a_password_expires_only_when_a_maximum_age_is_set() {
    let set = t(0);
    assert!(!password_change_due(false, set, None, t(10 * 365 * 86_400)));
    let ninety = Some(Duration::days(90));
    assert!(!password_change_due(false, set, ninety, t(89 * 86_400)));
    assert!(password_change_due(false, set, ninety, t(90 * 86_400)));
    assert!(password_change_due(true, set, None, t(1)));
}

#[test]
fn enabling_needs_a_pending_setup_and_moves_the_pending_secret_into_use() {
    assert_eq!(
        when(
            &created(),
            CredentialCommand::EnableTotp {
                step: 5,
                backup_codes: codes('a')
            },
            2
        ),
        Err(UserError::TotpNotPending)
    );
    let h = then(created(), CredentialCommand::StartTotpSetup(secret()), 1);
    let u = user(&h);
    assert!(
        !u.totp.enabled(),
        "a pending secret is not yet required at login"
    );
    assert_eq!(u.totp.pending, Some(Personal::Known(secret())));
    let h = enabled_at_step(5);
    let u = user(&h);
    assert!(u.totp.enabled());
    assert_eq!(u.totp.secret, Some(Personal::Known(secret())));
    assert_eq!(u.totp.pending, None);
    assert_eq!(
        u.totp.last_step,
        Some(5),
        "the enabling code counts as used"
    );
    assert_eq!(
        when(&h, CredentialCommand::StartTotpSetup(secret()), 3),
        Err(UserError::TotpAlreadyEnabled)
    );
}

#[test]
fn a_time_step_is_accepted_once_and_earlier_steps_never_again() {
    let h = enabled_at_step(5);
    assert_eq!(
        when(&h, CredentialCommand::UseTotp { step: 5 }, 3),
        Err(UserError::TotpCodeReused),
        "the step of the enabling code"
    );
    let h = then(h, CredentialCommand::UseTotp { step: 7 }, 4);
    assert_eq!(
        h.last(),
        Some(&UserEvent::TotpUsed {
            user_id: uid(),
            step: 7,
            at: t(4)
        })
    );
    for step in [7, 6] {
        assert_eq!(
            when(&h, CredentialCommand::UseTotp { step }, 5),
            Err(UserError::TotpCodeReused),
            "step {step}"
        );
    }
    assert!(when(&h, CredentialCommand::UseTotp { step: 8 }, 5).is_ok());
}

#[test]
fn a_backup_code_works_once() {
    let h = enabled_at_step(5);
    let h = then(h, CredentialCommand::UseBackupCode { index: 3 }, 4);
    assert_eq!(
        when(&h, CredentialCommand::UseBackupCode { index: 3 }, 5),
        Err(UserError::BackupCodeUsed)
    );
    assert!(when(&h, CredentialCommand::UseBackupCode { index: 4 }, 5).is_ok());
    assert_eq!(
        when(&h, CredentialCommand::UseBackupCode { index: 10 }, 5),
        Err(UserError::BackupCodeUsed),
        "there are only ten"
    );
}

#[test]
fn without_two_factor_enabled_no_code_can_be_used_or_disabled() {
    for c in [
        CredentialCommand::UseTotp { step: 9 },
        CredentialCommand::UseBackupCode { index: 0 },
        CredentialCommand::DisableTotp { step: 9 },
    ] {
        assert_eq!(when(&created(), c, 1), Err(UserError::TotpNotEnabled));
    }
}

#[test]
fn disabling_needs_a_fresh_code_and_a_new_enrolment_issues_new_backup_codes() {
    let h = then(
        enabled_at_step(5),
        CredentialCommand::UseBackupCode { index: 0 },
        3,
    );
    assert_eq!(
        when(&h, CredentialCommand::DisableTotp { step: 5 }, 4),
        Err(UserError::TotpCodeReused)
    );
    let h = then(h, CredentialCommand::DisableTotp { step: 6 }, 4);
    let u = user(&h);
    assert!(!u.totp.enabled());
    assert_eq!(u.totp.backup_codes, None);
    assert_eq!(
        u.totp.last_step,
        Some(5),
        "disabling does not forget used steps"
    );
    let h = then(h, CredentialCommand::StartTotpSetup(secret()), 5);
    let h = then(
        h,
        CredentialCommand::EnableTotp {
            step: 9,
            backup_codes: codes('b'),
        },
        6,
    );
    let u = user(&h);
    assert!(u.totp.used_backup_codes.is_empty());
    assert_eq!(u.totp.backup_codes, Some(Personal::Known(codes('b'))));
}

#[test]
fn credentials_of_an_absent_user_are_refused() {
    assert_eq!(
        decide(
            &UserState::Absent,
            UserCommand::Credentials(CredentialCommand::RequirePasswordChange),
            t(0)
        ),
        Err(UserError::NotFound)
    );
}

#[test]
fn secrets_and_backup_code_hashes_are_never_printed_in_debug_output() {
    assert!(!format!("{:?}", secret()).contains("JBSW"));
    assert!(!format!("{:?}", codes('a')).contains("aaaa"));
    assert!(TotpSecret::parse("not base32!").is_err());
    assert!(BackupCodeHashes::parse("abc").is_err());
}

#[test]
fn the_persisted_json_of_every_credential_event_type_is_pinned_with_secrets_personal() {
    let events = vec![
        UserEvent::PasswordRehashed {
            user_id: uid(),
            password_hash: Personal::Known(hash("re")),
            at: t(0),
        },
        UserEvent::PasswordChanged {
            user_id: uid(),
            password_hash: Personal::Known(hash("ch")),
            session_version: 2,
            at: t(0),
        },
        UserEvent::PasswordChangeRequired {
            user_id: uid(),
            at: t(0),
        },
        UserEvent::TotpSetupStarted {
            user_id: uid(),
            secret: Personal::Known(secret()),
            at: t(0),
        },
        UserEvent::TotpEnabled {
            user_id: uid(),
            backup_codes: Personal::Known(codes('c')),
            step: 59_333_333,
            at: t(0),
        },
        UserEvent::TotpDisabled {
            user_id: uid(),
            at: t(0),
        },
        UserEvent::TotpUsed {
            user_id: uid(),
            step: 59_333_334,
            at: t(0),
        },
        UserEvent::BackupCodeUsed {
            user_id: uid(),
            index: 3,
            at: t(0),
        },
    ];
    for e in &events {
        let enc = e.encode();
        assert!(enc.event_type.starts_with("User"), "{}", enc.event_type);
        let wrapped = crate::event::DomainEvent::User(e.clone());
        assert_eq!(
            crate::event::DomainEvent::decode(wrapped.encode().into_decrypted()).unwrap(),
            wrapped
        );
        let json = crate::encoding::payload_json(&enc.facts, &enc.personal);
        insta::assert_json_snapshot!(format!("{}_v{}", enc.event_type, enc.schema_version), json);
    }
    let personal = |i: usize| {
        events[i]
            .encode()
            .personal
            .keys()
            .cloned()
            .collect::<Vec<_>>()
    };
    assert_eq!(personal(0), ["password_hash"]);
    assert_eq!(personal(1), ["password_hash"]);
    assert_eq!(personal(3), ["secret"]);
    assert_eq!(personal(4), ["backup_code_hashes"]);
    for i in [2, 5, 6, 7] {
        assert!(personal(i).is_empty());
    }
}

#[test]
fn a_failure_for_an_unknown_email_keeps_the_email_personal_and_is_a_login_failure() {
    let e = LoginEvent::UnknownAccountFailed {
        account_key: "0f".repeat(16),
        email: Personal::Known("nobody@egec.example".into()),
        at: t(0),
    };
    assert_eq!(e.action(), "LOGIN_FAILED");
    let enc = e.encode();
    assert_eq!(enc.event_type, LOGIN_FAILED_UNKNOWN_ACCOUNT);
    assert!(!enc.facts.values().any(|v| v.to_string().contains("nobody")));
    let wrapped = crate::event::DomainEvent::Login(e.clone());
    assert_eq!(
        crate::event::DomainEvent::decode(wrapped.encode().into_decrypted()).unwrap(),
        wrapped
    );
    let json = crate::encoding::payload_json(&enc.facts, &enc.personal);
    insta::assert_json_snapshot!(format!("{}_v{}", enc.event_type, enc.schema_version), json);
    assert_eq!(
        unknown_login_stream_id("ab12", t(0)),
        "login-unknown-ab12-202605"
    );
    let second = LoginEvent::Failed {
        user_id: uid(),
        reason: LoginFailure::WrongSecondFactor,
        at: t(0),
    };
    assert_eq!(
        LoginEvent::decode(&second.encode().into_decrypted()).unwrap(),
        second
    );
}
