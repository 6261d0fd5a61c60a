//! How any event reads in the audit log: its action, the entity it is about, and a
//! description free of personal data.
//!
//! Generic by construction: the action is each event's own `action()`, and the description
//! is built from the event's persisted *facts*, which the encoding keeps apart from personal
//! fields (see `encoding.rs`), so it holds nothing personal however events evolve. The only
//! per-type knowledge is which entity an event is about ([`entity_of`]), an exhaustive match
//! that stops the build when a new kind of event arrives without an answer.

use crate::event::DomainEvent;
use crate::user::LoginEvent;
use serde_json::Value;
use uuid::Uuid;

/// The entity an event is about: its type (`customer`, `user`, `api_key`, `followup`) and
/// id. Login activity is about the user.
pub fn entity_of(event: &DomainEvent) -> (&'static str, Uuid) {
    match event {
        DomainEvent::Customer(e) => ("customer", e.customer_id().as_uuid()),
        DomainEvent::User(e) => ("user", e.user_id().as_uuid()),
        DomainEvent::Login(e) => login_entity(e),
        DomainEvent::ApiKey(e) => ("api_key", e.key_id().as_uuid()),
        DomainEvent::Followup(e) => ("followup", e.followup_id().as_uuid()),
        DomainEvent::Bulk(e) => ("bulk_edit", e.batch_id()),
        DomainEvent::Export(e) => ("export", e.export_id()),
        // A GDPR export is a read of the customer's data: it is about the customer.
        DomainEvent::Gdpr(e) => ("customer", e.customer_id().as_uuid()),
    }
}

fn login_entity(e: &LoginEvent) -> (&'static str, Uuid) {
    match e {
        LoginEvent::Succeeded { user_id, .. }
        | LoginEvent::Failed { user_id, .. }
        | LoginEvent::Locked { user_id, .. }
        | LoginEvent::Unlocked { user_id, .. }
        | LoginEvent::LoggedOut { user_id, .. }
        | LoginEvent::AccessDenied { user_id, .. } => ("user", user_id.as_uuid()),
        // No account: the entity is the keyed hash of the email tried, so attempts on one
        // address group together without the address itself appearing.
        LoginEvent::UnknownAccountFailed { account_key, .. } => (
            "unknown_account",
            Uuid::new_v5(&Uuid::NAMESPACE_OID, account_key.as_bytes()),
        ),
        // A retention run is about the system's keys, not one entity: the nil id.
        LoginEvent::RetentionApplied { .. } => ("retention", Uuid::nil()),
    }
}

/// Facts left out of descriptions: the time and the entity's id (they have their own
/// columns), hashes (not secrets, but of no use to a reader) and the customer list of a
/// bulk edit (up to a thousand ids; its `customers` fact gives the count).
fn hidden(key: &str) -> bool {
    key == "at"
        || key.ends_with("_id")
        || key.contains("hash")
        || key == "session_id"
        || key == "customer_ids"
}

fn short(v: &Value) -> String {
    match v {
        Value::String(s) => s.chars().take(80).collect(),
        Value::Array(items) => format!(
            "[{}]",
            items.iter().map(short).collect::<Vec<_>>().join(", ")
        ),
        Value::Null => "none".to_owned(),
        other => other.to_string(),
    }
}

/// A one-line description: the stored event type and its non-personal facts, e.g.
/// `CustomerUpdated: cleared=[email], status=qualified`.
pub fn describe(event: &DomainEvent) -> String {
    let enc = event.encode();
    let facts: Vec<String> = enc
        .facts
        .iter()
        .filter(|(k, _)| !hidden(k))
        .map(|(k, v)| format!("{k}={}", short(v)))
        .collect();
    if facts.is_empty() {
        enc.event_type
    } else {
        format!("{}: {}", enc.event_type, facts.join(", "))
    }
}

/// Whether an action name is UPPER_SNAKE case (`LOGIN_FAILED`).
pub fn is_upper_snake(s: &str) -> bool {
    !s.is_empty()
        && !s.starts_with('_')
        && !s.ends_with('_')
        && s.bytes().all(|b| b.is_ascii_uppercase() || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encoding::{Encoded, split_payload};
    use crate::personal::Personal;

    /// Every stored event type has a pinned snapshot (`<Type>_v<N>.snap`). Each must decode
    /// back into a domain event with an UPPER_SNAKE audit action, a describable entity and a
    /// description without any of its personal values: a new event type that the audit
    /// cannot show fails here.
    #[test]
    fn every_event_type_that_exists_has_an_audit_action_an_entity_and_a_clean_description() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut snaps = Vec::new();
        let mut dirs = vec![root];
        while let Some(d) = dirs.pop() {
            for entry in std::fs::read_dir(&d).unwrap() {
                let p = entry.unwrap().path();
                if p.is_dir() {
                    dirs.push(p);
                } else if p.extension().is_some_and(|e| e == "snap") {
                    snaps.push(p);
                }
            }
        }
        let mut types = std::collections::BTreeSet::new();
        for path in &snaps {
            let file = path.file_stem().unwrap().to_string_lossy().into_owned();
            let name = file.rsplit("__").next().unwrap();
            let Some((event_type, version)) = name.rsplit_once("_v") else {
                continue;
            };
            let Ok(version) = version.parse::<i32>() else {
                continue;
            };
            let text = std::fs::read_to_string(path).unwrap();
            let json = text.splitn(3, "---\n").nth(2).unwrap();
            let payload: Value = serde_json::from_str(json).unwrap();
            let (facts, personal) = split_payload(&payload).unwrap();
            let decrypted = Encoded {
                event_type: event_type.to_owned(),
                schema_version: version,
                facts,
                personal: personal
                    .iter()
                    .map(|(k, v)| (k.clone(), Personal::Known(v.clone())))
                    .collect(),
            };
            let event = DomainEvent::decode(decrypted)
                .unwrap_or_else(|e| panic!("{event_type} v{version} does not decode: {e}"));
            assert!(
                is_upper_snake(event.action()),
                "{event_type}: action {:?}",
                event.action()
            );
            let (entity, _) = entity_of(&event);
            assert!(!entity.is_empty());
            let description = describe(&event);
            for value in personal.values() {
                assert!(
                    !description.contains(value.as_str()),
                    "{event_type}: the description shows a personal value"
                );
            }
            types.insert(event_type.to_owned());
        }
        // The event types known today, so that losing the snapshots cannot make this vacuous.
        for t in [
            "CustomerCreated",
            "CustomerUpdated",
            "UserCreated",
            "LoginSucceeded",
            "LoginFailed",
            "LoginSessionEnded",
            "ApiKeyIssued",
            "ApiKeyRevoked",
            "ApiKeyRotated",
            "ApiKeyUsed",
            "FollowupScheduled",
            "FollowupCompleted",
            "ExportCustomers",
        ] {
            assert!(types.contains(t), "no snapshot of {t}");
        }
    }

    #[test]
    fn upper_snake_means_capitals_and_inner_underscores_only() {
        assert!(is_upper_snake("LOGIN_FAILED"));
        assert!(!is_upper_snake("Login"));
        assert!(!is_upper_snake("LOGIN-FAILED"));
        assert!(!is_upper_snake("_LOGIN"));
        assert!(!is_upper_snake(""));
    }
}
