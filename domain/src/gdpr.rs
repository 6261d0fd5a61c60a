//! Reads of a customer's data under the GDPR: an export of everything held on a person, and
//! every time a passport number is shown in clear, are facts worth keeping, so "who looked at
//! or took this customer's data, and when" is answered by the log like every other question.
//!
//! The events are activity, not decisions (a permitted read is never refused by the domain),
//! so they are recorded directly: an export on the customer's GDPR stream `gdpr-<customer_id>`,
//! reveals on the month's stream `reveals-YYYYMM` (a list page reveals many customers at once,
//! and one append to one stream keeps that a single write). They hold no personal data: the
//! customer's id, how the data was read and the time; the actor is in the metadata.

use crate::CustomerId;
use crate::encoding::*;
use chrono::{DateTime, Datelike, Utc};

/// The stream of a customer's GDPR activity (exports).
pub fn gdpr_stream_id(customer_id: CustomerId) -> String {
    format!("gdpr-{}", customer_id.as_uuid())
}

/// The stream of the passport reveals of the month of `at`: `reveals-YYYYMM`.
pub fn reveals_stream_id(at: DateTime<Utc>) -> String {
    format!("reveals-{:04}{:02}", at.year(), at.month())
}

/// Which read showed a passport number in clear.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RevealVia {
    /// `GET /api/customers/{id}`: the current record.
    Record,
    /// `GET /api/customers/{id}?as_of=` or `?version=`: a past state of the record.
    PastRecord,
    /// `GET /api/customers`: a page of the list.
    List,
    /// `GET /api/customers/{id}/history`: the changes, old values included.
    History,
}

impl RevealVia {
    pub fn as_str(self) -> &'static str {
        match self {
            RevealVia::Record => "record",
            RevealVia::PastRecord => "past_record",
            RevealVia::List => "list",
            RevealVia::History => "history",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        [
            RevealVia::Record,
            RevealVia::PastRecord,
            RevealVia::List,
            RevealVia::History,
        ]
        .into_iter()
        .find(|v| v.as_str() == s)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum GdprEvent {
    /// Everything held on the customer was exported (by the actor of the metadata).
    Exported {
        customer_id: CustomerId,
        at: DateTime<Utc>,
    },
    /// The customer's passport number was shown in clear to the actor of the metadata.
    PassportRevealed {
        customer_id: CustomerId,
        via: RevealVia,
        at: DateTime<Utc>,
    },
}

pub const EXPORTED: &str = "GdprExported";
pub const PASSPORT_REVEALED: &str = "GdprPassportRevealed";

impl GdprEvent {
    pub fn customer_id(&self) -> CustomerId {
        match self {
            GdprEvent::Exported { customer_id, .. }
            | GdprEvent::PassportRevealed { customer_id, .. } => *customer_id,
        }
    }

    /// The upper-case action name shown in the audit log.
    pub fn action(&self) -> &'static str {
        match self {
            GdprEvent::Exported { .. } => "GDPR_EXPORTED",
            GdprEvent::PassportRevealed { .. } => "PASSPORT_REVEALED",
        }
    }
}

impl EventCodec for GdprEvent {
    fn encode(&self) -> EncodedEvent {
        match self {
            GdprEvent::Exported { customer_id, at } => EncodedEvent::new(EXPORTED, 1)
                .fact("customer_id", customer_id.to_string())
                .fact("at", time_fact(*at)),
            GdprEvent::PassportRevealed {
                customer_id,
                via,
                at,
            } => EncodedEvent::new(PASSPORT_REVEALED, 1)
                .fact("customer_id", customer_id.to_string())
                .fact("via", via.as_str())
                .fact("at", time_fact(*at)),
        }
    }

    fn decode(e: &DecryptedEvent) -> Result<Self, DecodeError> {
        match (e.event_type.as_str(), e.schema_version) {
            (EXPORTED, 1) => Ok(GdprEvent::Exported {
                customer_id: CustomerId::from_uuid(fact_uuid(e, "customer_id")?),
                at: fact_time(e, "at")?,
            }),
            (PASSPORT_REVEALED, 1) => Ok(GdprEvent::PassportRevealed {
                customer_id: CustomerId::from_uuid(fact_uuid(e, "customer_id")?),
                via: RevealVia::parse(fact_str(e, "via")?)
                    .ok_or_else(|| DecodeError::new("GdprPassportRevealed: unknown via"))?,
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

    fn revealed(via: RevealVia) -> GdprEvent {
        GdprEvent::PassportRevealed {
            customer_id: CustomerId::from_uuid(Uuid::from_u128(0xc1)),
            via,
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
    fn a_passport_reveal_by_every_kind_of_read_survives_encoding_and_holds_no_personal_data() {
        for via in [
            RevealVia::Record,
            RevealVia::PastRecord,
            RevealVia::List,
            RevealVia::History,
        ] {
            let enc = revealed(via).encode();
            assert!(
                enc.personal.is_empty(),
                "a reveal record holds no personal data"
            );
            assert_eq!(
                GdprEvent::decode(&enc.into_decrypted()).unwrap(),
                revealed(via)
            );
        }
    }

    #[test]
    fn a_passport_reveal_reads_as_passport_revealed_about_its_customer_on_the_months_stream() {
        let event = crate::event::DomainEvent::Gdpr(revealed(RevealVia::List));
        assert_eq!(event.action(), "PASSPORT_REVEALED");
        assert_eq!(
            crate::audit::entity_of(&event),
            ("customer", Uuid::from_u128(0xc1))
        );
        assert_eq!(
            crate::audit::describe(&event),
            "GdprPassportRevealed: via=list",
            "the description says how, never the number"
        );
        let at = Utc.with_ymd_and_hms(2026, 3, 31, 23, 59, 59).unwrap();
        assert_eq!(reveals_stream_id(at), "reveals-202603");
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
        for event in [exported(), revealed(RevealVia::Record)] {
            let enc = event.encode();
            let json = crate::encoding::payload_json(&enc.facts, &enc.personal);
            insta::assert_json_snapshot!(
                format!("{}_v{}", enc.event_type, enc.schema_version),
                json
            );
        }
    }
}
