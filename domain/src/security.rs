//! Security events that are not about one login: requests refused by network rules.
//!
//! They are [`LoginEvent::AccessDenied`](crate::user::LoginEvent::AccessDenied) events (the
//! log's `Login` family, so every reader that decodes the log already knows them), recorded
//! in one stream per calendar month, [`security_stream_id`], so a busy month of refusals
//! does not grow any user's login stream.

use crate::encoding::{DecodeError, DecryptedEvent, Upcaster};
use chrono::{DateTime, Datelike, Utc};
use serde_json::Value;

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DenialReason {
    /// A superadmin or admin called from outside `EGEC_ADMIN_IP_ALLOWLIST`.
    IpNotAllowed,
    /// The permission matrix does not grant the caller the action (HTTP 403).
    Forbidden,
    /// The customer exists but row-level visibility hides it from the caller (HTTP 404).
    NotVisible,
}

impl DenialReason {
    pub fn as_str(self) -> &'static str {
        match self {
            DenialReason::IpNotAllowed => "ip_not_allowed",
            DenialReason::Forbidden => "forbidden",
            DenialReason::NotVisible => "not_visible",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "ip_not_allowed" => Some(DenialReason::IpNotAllowed),
            "forbidden" => Some(DenialReason::Forbidden),
            "not_visible" => Some(DenialReason::NotVisible),
            _ => None,
        }
    }
}

/// `LoginAccessDenied` v1 had no `action` and no `customer_id`: it was only ever written
/// for the IP allowlist, which concerns neither.
pub(crate) static UPCASTERS: &[Upcaster] = &[Upcaster {
    event_type: crate::user::ACCESS_DENIED,
    from_version: 1,
    apply: access_denied_v1_to_v2,
}];

fn access_denied_v1_to_v2(mut e: DecryptedEvent) -> Result<DecryptedEvent, DecodeError> {
    e.facts.entry("action").or_insert(Value::Null);
    e.facts.entry("customer_id").or_insert(Value::Null);
    e.schema_version = 2;
    Ok(e)
}

/// The stream of security events of the month of `at`: `security-YYYYMM`.
pub fn security_stream_id(at: DateTime<Utc>) -> String {
    format!("security-{:04}{:02}", at.year(), at.month())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encoding::{EncodedEvent, EventCodec};
    use crate::event::DomainEvent;
    use crate::permission::Action;
    use crate::user::LoginEvent;
    use crate::{CustomerId, UserId};
    use chrono::TimeZone;

    fn at() -> chrono::DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 5, 28, 20, 26, 40).unwrap()
    }

    fn user() -> UserId {
        UserId::from_uuid(uuid::Uuid::from_u128(9))
    }

    #[test]
    fn an_access_denial_is_stored_as_facts_only_and_reads_back_as_access_denied() {
        let e = LoginEvent::AccessDenied {
            user_id: user(),
            path: "/api/customers/00000000-0000-0000-0000-000000000042".into(),
            reason: DenialReason::NotVisible,
            action: Some(Action::CustomersView),
            customer_id: Some(CustomerId::from_uuid(uuid::Uuid::from_u128(0x42))),
            at: at(),
        };
        let enc = e.encode();
        assert_eq!(enc.event_type, "LoginAccessDenied");
        assert_eq!(enc.schema_version, 2);
        assert!(enc.personal.is_empty());
        let json = crate::encoding::payload_json(&enc.facts, &enc.personal);
        insta::assert_json_snapshot!("LoginAccessDenied_v2", json);
        let back = DomainEvent::decode(enc.into_decrypted()).unwrap();
        assert_eq!(back, DomainEvent::Login(e));
        assert_eq!(back.action(), "ACCESS_DENIED");
        assert_eq!(security_stream_id(at()), "security-202605");
    }

    #[test]
    fn a_version_1_access_denial_is_upcast_with_no_action_and_no_customer() {
        let v1 = EncodedEvent::new("LoginAccessDenied", 1)
            .fact("user_id", user().to_string())
            .fact("path", "/api/users")
            .fact("reason", "ip_not_allowed")
            .fact("at", crate::encoding::time_fact(at()));
        let json = crate::encoding::payload_json(&v1.facts, &v1.personal);
        insta::assert_json_snapshot!("LoginAccessDenied_v1", json);
        let back = DomainEvent::decode(v1.into_decrypted()).unwrap();
        assert_eq!(
            back,
            DomainEvent::Login(LoginEvent::AccessDenied {
                user_id: user(),
                path: "/api/users".into(),
                reason: DenialReason::IpNotAllowed,
                action: None,
                customer_id: None,
                at: at(),
            })
        );
    }

    #[test]
    fn an_unknown_denial_reason_does_not_decode() {
        assert_eq!(
            DenialReason::parse("ip_not_allowed"),
            Some(DenialReason::IpNotAllowed)
        );
        for r in [
            DenialReason::IpNotAllowed,
            DenialReason::Forbidden,
            DenialReason::NotVisible,
        ] {
            assert_eq!(DenialReason::parse(r.as_str()), Some(r));
        }
        assert_eq!(DenialReason::parse("because"), None);
    }
}
