use super::*;
use crate::encoding::EventCodec;
use crate::event::DomainEvent;
use crate::ids::ApiKeyId;
use crate::permission::Action;
use chrono::{DateTime, Duration, TimeZone, Utc};

fn now() -> DateTime<Utc> {
    Utc.timestamp_opt(1_780_000_000, 0).single().unwrap()
}

fn hash(n: u8) -> SecretHash {
    SecretHash::parse(&format!("{n:02x}").repeat(32)).unwrap()
}

fn kid() -> ApiKeyId {
    ApiKeyId::from_uuid(uuid::Uuid::from_u128(42))
}

fn issue(permissions: Vec<Action>, expires_at: Option<DateTime<Utc>>) -> ApiKeyCommand {
    ApiKeyCommand::Issue(Box::new(IssueApiKey {
        key_id: kid(),
        name: ApiKeyName::parse("Website form import").unwrap(),
        permissions,
        expires_at,
        secret_hash: hash(1),
        prefix: "egec_AbCdEf".into(),
    }))
}

fn rotate(grace_seconds: i64) -> ApiKeyCommand {
    ApiKeyCommand::Rotate(Box::new(RotateApiKey {
        secret_hash: hash(2),
        prefix: "egec_XyZ123".into(),
        grace_seconds,
    }))
}

/// Given events, when a command is decided, then these events (or this error).
fn given(events: &[ApiKeyEvent]) -> ApiKeyState {
    events.iter().fold(ApiKeyState::Absent, evolve)
}

fn issued() -> Vec<ApiKeyEvent> {
    decide(
        &ApiKeyState::Absent,
        issue(vec![Action::CustomersView], None),
        now(),
    )
    .unwrap()
}

#[test]
fn issuing_records_sorted_unique_permissions_and_the_hash_only() {
    let events = decide(
        &ApiKeyState::Absent,
        issue(
            vec![
                Action::FollowupsView,
                Action::CustomersView,
                Action::FollowupsView,
            ],
            None,
        ),
        now(),
    )
    .unwrap();
    let ApiKeyEvent::Issued {
        permissions,
        secret_hash,
        ..
    } = &events[0]
    else {
        panic!("not issued: {events:?}");
    };
    assert_eq!(
        permissions,
        &vec![Action::CustomersView, Action::FollowupsView]
    );
    assert_eq!(secret_hash, &hash(1));
}

#[test]
fn issuing_is_refused_without_permissions_with_key_management_or_with_a_past_expiry() {
    let s = ApiKeyState::Absent;
    assert_eq!(
        decide(&s, issue(vec![], None), now()),
        Err(ApiKeyError::NoPermissions)
    );
    assert_eq!(
        decide(&s, issue(vec![Action::ApiKeysManage], None), now()),
        Err(ApiKeyError::NotGrantable("api_keys:manage"))
    );
    assert_eq!(
        decide(&s, issue(vec![Action::CustomersView], Some(now())), now()),
        Err(ApiKeyError::ExpiryInPast)
    );
    assert_eq!(
        decide(
            &given(&issued()),
            issue(vec![Action::CustomersView], None),
            now()
        ),
        Err(ApiKeyError::AlreadyExists)
    );
}

#[test]
fn revoking_twice_records_one_revocation_and_a_revoked_key_cannot_be_rotated() {
    let mut history = issued();
    let revoked = decide(&given(&history), ApiKeyCommand::Revoke, now()).unwrap();
    assert_eq!(revoked.len(), 1);
    history.extend(revoked);
    assert_eq!(
        decide(&given(&history), ApiKeyCommand::Revoke, now()),
        Ok(vec![])
    );
    assert_eq!(
        decide(&given(&history), rotate(60), now()),
        Err(ApiKeyError::Revoked)
    );
    assert_eq!(
        decide(&given(&history), ApiKeyCommand::RecordUse, now()),
        Ok(vec![])
    );
    assert_eq!(
        decide(&ApiKeyState::Absent, ApiKeyCommand::Revoke, now()),
        Err(ApiKeyError::NotFound)
    );
}

#[test]
fn rotating_keeps_the_old_secret_valid_until_the_end_of_the_grace_period() {
    let history = issued();
    let events = decide(&given(&history), rotate(300), now()).unwrap();
    assert_eq!(
        events,
        vec![ApiKeyEvent::Rotated {
            key_id: kid(),
            secret_hash: hash(2),
            prefix: "egec_XyZ123".into(),
            previous_hash: hash(1),
            grace_until: now() + Duration::seconds(300),
            at: now(),
        }]
    );
    let ApiKeyState::Present(k) = given(&[history, events].concat()) else {
        panic!("absent");
    };
    assert_eq!(k.secret_hash, hash(2));
    assert_eq!(k.previous, Some((hash(1), now() + Duration::seconds(300))));
    assert_eq!(
        decide(&given(&issued()), rotate(-1), now()),
        Err(ApiKeyError::BadGrace)
    );
    assert_eq!(
        decide(&given(&issued()), rotate(MAX_GRACE_SECONDS + 1), now()),
        Err(ApiKeyError::BadGrace)
    );
}

#[test]
fn a_key_is_refused_when_revoked_expired_or_past_its_rotation_grace() {
    let t = now();
    let later = t + Duration::seconds(10);
    assert!(accepts(false, None, SecretMatch::Current, t));
    assert!(!accepts(true, None, SecretMatch::Current, t));
    assert!(accepts(false, Some(later), SecretMatch::Current, t));
    assert!(!accepts(false, Some(t), SecretMatch::Current, t));
    assert!(accepts(
        false,
        None,
        SecretMatch::Previous { grace_until: later },
        t
    ));
    assert!(!accepts(
        false,
        None,
        SecretMatch::Previous { grace_until: later },
        later
    ));
}

#[test]
fn names_and_hashes_are_checked() {
    assert!(ApiKeyName::parse("  ").is_err());
    assert!(ApiKeyName::parse(&"x".repeat(101)).is_err());
    assert!(ApiKeyName::parse("a\nb").is_err());
    assert!(SecretHash::parse("ABCD").is_err());
    assert!(SecretHash::parse(&"G".repeat(64)).is_err());
    assert!(!format!("{:?}", hash(1)).contains(&"01".repeat(32)));
}

#[test]
fn the_persisted_json_of_every_api_key_event_type_is_pinned_and_decodes_back() {
    let issued = decide(
        &ApiKeyState::Absent,
        issue(
            vec![Action::CustomersView, Action::AuditView],
            Some(now() + Duration::days(30)),
        ),
        now(),
    )
    .unwrap()
    .remove(0);
    let state = given(std::slice::from_ref(&issued));
    let rotated = decide(&state, rotate(3600), now()).unwrap().remove(0);
    let used = decide(&state, ApiKeyCommand::RecordUse, now())
        .unwrap()
        .remove(0);
    let revoked = decide(&state, ApiKeyCommand::Revoke, now())
        .unwrap()
        .remove(0);
    for e in [issued, rotated, used, revoked] {
        let enc = e.encode();
        assert!(
            enc.personal.is_empty(),
            "api key events hold no personal data"
        );
        let back = DomainEvent::decode(enc.clone().into_decrypted()).unwrap();
        assert_eq!(back, DomainEvent::ApiKey(e.clone()));
        assert!(back.action().starts_with("API_KEY_"));
        let json = crate::encoding::payload_json(&enc.facts, &enc.personal);
        insta::assert_json_snapshot!(format!("{}_v{}", enc.event_type, enc.schema_version), json);
    }
}
