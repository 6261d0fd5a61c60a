//! Security events that are not about one login: requests refused by network rules.
//!
//! They are [`LoginEvent::AccessDenied`](crate::user::LoginEvent::AccessDenied) events (the
//! log's `Login` family, so every reader that decodes the log already knows them), recorded
//! in one stream per calendar month, [`security_stream_id`], so a busy month of refusals
//! does not grow any user's login stream.

use chrono::{DateTime, Datelike, Utc};

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DenialReason {
    /// A superadmin or admin called from outside `EGEC_ADMIN_IP_ALLOWLIST`.
    IpNotAllowed,
}

impl DenialReason {
    pub fn as_str(self) -> &'static str {
        match self {
            DenialReason::IpNotAllowed => "ip_not_allowed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "ip_not_allowed" => Some(DenialReason::IpNotAllowed),
            _ => None,
        }
    }
}

/// The stream of security events of the month of `at`: `security-YYYYMM`.
pub fn security_stream_id(at: DateTime<Utc>) -> String {
    format!("security-{:04}{:02}", at.year(), at.month())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::UserId;
    use crate::encoding::EventCodec;
    use crate::event::DomainEvent;
    use crate::user::LoginEvent;
    use chrono::TimeZone;

    #[test]
    fn an_access_denial_is_stored_as_facts_only_and_reads_back_as_access_denied() {
        let at = Utc.with_ymd_and_hms(2026, 5, 28, 20, 26, 40).unwrap();
        let e = LoginEvent::AccessDenied {
            user_id: UserId::from_uuid(uuid::Uuid::from_u128(9)),
            path: "/api/users".into(),
            reason: DenialReason::IpNotAllowed,
            at,
        };
        let enc = e.encode();
        assert_eq!(enc.event_type, "LoginAccessDenied");
        assert_eq!(enc.schema_version, 1);
        assert!(enc.personal.is_empty());
        let json = crate::encoding::payload_json(&enc.facts, &enc.personal);
        insta::assert_json_snapshot!("LoginAccessDenied_v1", json);
        let back = DomainEvent::decode(enc.into_decrypted()).unwrap();
        assert_eq!(back, DomainEvent::Login(e));
        assert_eq!(back.action(), "ACCESS_DENIED");
        assert_eq!(security_stream_id(at), "security-202605");
    }

    #[test]
    fn an_unknown_denial_reason_does_not_decode() {
        assert_eq!(
            DenialReason::parse("ip_not_allowed"),
            Some(DenialReason::IpNotAllowed)
        );
        assert_eq!(DenialReason::parse("because"), None);
    }
}
