//! Exports of customer data: the event that audits each one, and the neutraliser every CSV
//! cell passes through on its way out.
//!
//! An export is a fact to record, not a decision: nothing can refuse it once the permission
//! check passed, so it is appended as is (like login activity), on one stream per calendar
//! month, [`exports_stream_id`], so a busy month of exports grows no customer's stream.
//!
//! The event holds facts only. The search text `q` of the filter may be a person's name or
//! email, so only whether one was given is recorded (`searched`), never the text itself.

use crate::Role;
use crate::encoding::*;
use chrono::{DateTime, Datelike, Utc};
use serde_json::Value;
use std::borrow::Cow;
use uuid::Uuid;

pub const CUSTOMERS_EXPORTED: &str = "ExportCustomers";

/// Every event of the `Export` family.
#[derive(Debug, Clone, PartialEq)]
pub enum ExportEvent {
    CustomersExported(CustomersExported),
}

/// A customer export ran: who (metadata), under which filter, and how many rows left.
#[derive(Debug, Clone, PartialEq)]
pub struct CustomersExported {
    pub export_id: Uuid,
    /// The role the rows were masked for.
    pub role: Role,
    /// Whether a search text narrowed the export (the text itself may be personal).
    pub searched: bool,
    pub status: Option<String>,
    pub agent_filter: Option<Uuid>,
    pub rows: u64,
    /// False when the client went away before the last row: `rows` were sent, no more.
    pub complete: bool,
    pub at: DateTime<Utc>,
}

impl ExportEvent {
    pub fn export_id(&self) -> Uuid {
        match self {
            ExportEvent::CustomersExported(e) => e.export_id,
        }
    }

    /// The upper-case action name shown in the audit log.
    pub fn action(&self) -> &'static str {
        match self {
            ExportEvent::CustomersExported(_) => "CUSTOMERS_EXPORTED",
        }
    }
}

impl EventCodec for ExportEvent {
    fn encode(&self) -> EncodedEvent {
        match self {
            ExportEvent::CustomersExported(e) => EncodedEvent::new(CUSTOMERS_EXPORTED, 1)
                .fact("export_id", e.export_id.to_string())
                .fact("role", e.role.as_str())
                .fact("searched", e.searched)
                .fact("status", e.status.clone())
                .fact("agent_filter", e.agent_filter.map(|a| a.to_string()))
                .fact("rows", e.rows)
                .fact("complete", e.complete)
                .fact("at", time_fact(e.at)),
        }
    }

    fn decode(e: &DecryptedEvent) -> Result<Self, DecodeError> {
        match (e.event_type.as_str(), e.schema_version) {
            (CUSTOMERS_EXPORTED, 1) => {
                let flag = |key: &str| {
                    e.facts
                        .get(key)
                        .and_then(Value::as_bool)
                        .ok_or_else(|| DecodeError(format!("{CUSTOMERS_EXPORTED}: missing {key}")))
                };
                Ok(ExportEvent::CustomersExported(CustomersExported {
                    export_id: fact_uuid(e, "export_id")?,
                    role: fact_str(e, "role")?
                        .parse()
                        .map_err(|_| DecodeError::new("ExportCustomers: unknown role"))?,
                    searched: flag("searched")?,
                    status: fact_opt_str(e, "status").map(str::to_owned),
                    agent_filter: fact_opt_str(e, "agent_filter")
                        .map(|s| {
                            Uuid::parse_str(s).map_err(|_| {
                                DecodeError::new("ExportCustomers: bad uuid in agent_filter")
                            })
                        })
                        .transpose()?,
                    rows: e
                        .facts
                        .get("rows")
                        .and_then(Value::as_u64)
                        .ok_or_else(|| DecodeError::new("ExportCustomers: missing rows"))?,
                    complete: flag("complete")?,
                    at: fact_time(e, "at")?,
                }))
            }
            (t, v) => Err(DecodeError(format!("unknown export event {t} v{v}"))),
        }
    }
}

/// The stream of exports of the month of `at`: `exports-YYYYMM`.
pub fn exports_stream_id(at: DateTime<Utc>) -> String {
    format!("exports-{:04}{:02}", at.year(), at.month())
}

/// A CSV cell made safe to open in a spreadsheet (no formula injection).
///
/// A cell starting with `=`, `+`, `-`, `@`, a tab or a carriage return can be run as a
/// formula by Excel, LibreOffice or Google Sheets (`=HYPERLINK(…)`, `+cmd|…`); such a cell
/// gets a leading `'`, which spreadsheets read as "text" and do not display.
///
/// One exception keeps phone numbers usable: a cell that is nothing but an optionally signed
/// decimal number (`+447700900123`, `-3`, `1.5`) is left alone. A spreadsheet reads it as a
/// number whatever its sign, so it cannot call a function; E.164 phone numbers, which the
/// parser reduces to `+` and digits, are exactly such cells.
pub fn csv_cell(value: &str) -> Cow<'_, str> {
    let dangerous = value
        .chars()
        .next()
        .is_some_and(|c| matches!(c, '=' | '+' | '-' | '@' | '\t' | '\r'));
    if dangerous && !is_plain_number(value) {
        Cow::Owned(format!("'{value}"))
    } else {
        Cow::Borrowed(value)
    }
}

fn is_plain_number(s: &str) -> bool {
    let digits = s.strip_prefix(['+', '-']).unwrap_or(s);
    let (int, frac) = match digits.split_once('.') {
        Some((i, f)) => (i, Some(f)),
        None => (digits, None),
    };
    let all_digits = |p: &str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit());
    all_digits(int) && frac.is_none_or(all_digits)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::DomainEvent;
    use chrono::TimeZone;
    use proptest::prelude::*;

    fn exported() -> ExportEvent {
        ExportEvent::CustomersExported(CustomersExported {
            export_id: Uuid::from_u128(7),
            role: Role::Superagent,
            searched: true,
            status: Some("qualified".into()),
            agent_filter: Some(Uuid::from_u128(3)),
            rows: 1234,
            complete: true,
            at: Utc.with_ymd_and_hms(2026, 11, 29, 19, 30, 0).unwrap(),
        })
    }

    #[test]
    fn a_customer_export_is_stored_as_facts_only_and_reads_back_as_customers_exported() {
        let e = exported();
        let enc = e.encode();
        assert_eq!(enc.event_type, "ExportCustomers");
        assert_eq!(enc.schema_version, 1);
        assert!(enc.personal.is_empty());
        let json = payload_json(&enc.facts, &enc.personal);
        insta::assert_json_snapshot!("ExportCustomers_v1", json);
        let back = DomainEvent::decode(enc.into_decrypted()).unwrap();
        assert_eq!(back, DomainEvent::Export(e));
        assert_eq!(back.action(), "CUSTOMERS_EXPORTED");
        let at = Utc.with_ymd_and_hms(2026, 1, 31, 23, 59, 59).unwrap();
        assert_eq!(exports_stream_id(at), "exports-202601");
    }

    #[test]
    fn an_export_without_filters_round_trips_with_its_nones() {
        let ExportEvent::CustomersExported(mut inner) = exported();
        inner.searched = false;
        inner.status = None;
        inner.agent_filter = None;
        inner.complete = false;
        let e = ExportEvent::CustomersExported(inner);
        let back = ExportEvent::decode(&e.encode().into_decrypted()).unwrap();
        assert_eq!(back, e);
    }

    #[test]
    fn formula_cells_get_a_leading_quote() {
        for cell in [
            "=HYPERLINK(\"http://evil.example\",\"click\")",
            "+cmd|' /C calc'!A0",
            "-2+3",
            "@SUM(A1:A2)",
            "\t=1",
            "\r=1",
            "=1",
            "+",
            "-",
        ] {
            assert_eq!(csv_cell(cell), format!("'{cell}"), "{cell:?}");
        }
    }

    #[test]
    fn ordinary_text_and_plain_numbers_are_left_alone() {
        for cell in [
            "Ada Lovelace",
            "ada@example.com",
            "+447700900123",
            "-42",
            "3.14",
            "",
            " =not at the start",
            "'already quoted",
        ] {
            assert_eq!(csv_cell(cell), cell, "{cell:?}");
        }
    }

    proptest! {
        /// Whatever the text, the cell as written never starts with a formula character
        /// unless it is a plain number, and removing the added quote gives the text back.
        #[test]
        fn no_cell_leaves_starting_with_a_formula_character(s in "\\PC*|[=+@\\t\\r-].*") {
            let out = csv_cell(&s);
            let first = out.chars().next();
            prop_assert!(
                !matches!(first, Some('=' | '+' | '-' | '@' | '\t' | '\r')) || is_plain_number(&out)
            );
            let restored = if out.len() == s.len() + 1 { &out[1..] } else { &out[..] };
            prop_assert_eq!(restored, s.as_str());
        }
    }
}
