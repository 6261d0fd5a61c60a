//! Reads of a customer's data under the GDPR: an export of everything held on a person is
//! itself a fact worth keeping, so "who took this customer's data, and when" is answered by
//! the log like every other question.
//!
//! The event is activity, not a decision (an export is never refused by the domain), so it
//! is recorded directly on the customer's GDPR stream `gdpr-<customer_id>`. It holds no
//! personal data: only the customer's id and the time; the actor is in the metadata.

use crate::CustomerId;
use crate::encoding::*;
use chrono::{DateTime, Utc};

/// The stream of a customer's GDPR activity (exports).
pub fn gdpr_stream_id(customer_id: CustomerId) -> String {
    format!("gdpr-{}", customer_id.as_uuid())
}

#[derive(Debug, Clone, PartialEq)]
pub enum GdprEvent {
    /// Everything held on the customer was exported (by the actor of the metadata).
    Exported {
        customer_id: CustomerId,
        at: DateTime<Utc>,
    },
}

pub const EXPORTED: &str = "GdprExported";

impl GdprEvent {
    pub fn customer_id(&self) -> CustomerId {
        match self {
            GdprEvent::Exported { customer_id, .. } => *customer_id,
        }
    }

    /// The upper-case action name shown in the audit log.
    pub fn action(&self) -> &'static str {
        match self {
            GdprEvent::Exported { .. } => "GDPR_EXPORTED",
        }
    }
}

impl EventCodec for GdprEvent {
    fn encode(&self) -> EncodedEvent {
        match self {
            GdprEvent::Exported { customer_id, at } => EncodedEvent::new(EXPORTED, 1)
                .fact("customer_id", customer_id.to_string())
                .fact("at", time_fact(*at)),
        }
    }

    fn decode(e: &DecryptedEvent) -> Result<Self, DecodeError> {
        match (e.event_type.as_str(), e.schema_version) {
            (EXPORTED, 1) => Ok(GdprEvent::Exported {
                customer_id: CustomerId::from_uuid(fact_uuid(e, "customer_id")?),
                at: fact_time(e, "at")?,
            }),
            (t, v) => Err(DecodeError(format!("unknown GDPR event {t} v{v}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use uuid::Uuid;

    fn exported() -> GdprEvent {
        GdprEvent::Exported {
            customer_id: CustomerId::from_uuid(Uuid::from_u128(0xc1)),
            at: Utc
                .timestamp_opt(1_780_000_000, 0)
                .single()
                .expect("valid test time"),
        }
    }

    #[test]
    fn a_gdpr_export_survives_encoding_and_decoding_and_holds_no_personal_data() {
        let enc = exported().encode();
        assert!(
            enc.personal.is_empty(),
            "an export record holds no personal data"
        );
        assert_eq!(
            GdprEvent::decode(&enc.into_decrypted()).unwrap(),
            exported()
        );
    }

    #[test]
    fn a_gdpr_export_reads_as_gdpr_exported_about_its_customer_in_the_audit_log() {
        let event = crate::event::DomainEvent::Gdpr(exported());
        assert_eq!(event.action(), "GDPR_EXPORTED");
        assert_eq!(
            crate::audit::entity_of(&event),
            ("customer", Uuid::from_u128(0xc1))
        );
        assert_eq!(
            gdpr_stream_id(exported().customer_id()),
            format!("gdpr-{}", Uuid::from_u128(0xc1))
        );
    }

    #[test]
    fn the_persisted_json_of_every_gdpr_event_type_is_pinned() {
        let enc = exported().encode();
        let json = crate::encoding::payload_json(&enc.facts, &enc.personal);
        insta::assert_json_snapshot!(format!("{}_v{}", enc.event_type, enc.schema_version), json);
    }
}
