//! Retention of security metadata: which calendar months' keys have outlived the retention
//! period.
//!
//! IP addresses, user agents and the emails of unknown-account login attempts are encrypted
//! under one key per calendar month (subject `retention-YYYYMM`). Destroying a month's key
//! expires those fields for good while the events themselves, and the hash chain over their
//! ciphertext, stay. This module only decides; the key table is the caller's business.

use chrono::{DateTime, Datelike, Utc};
use std::fmt;

/// Prefix of every retention subject; no customer or user subject starts with it.
pub const SUBJECT_PREFIX: &str = "retention-";

/// The default period: two years, as the security review asks.
pub const DEFAULT_MONTHS: u32 = 24;

/// How many whole months security metadata is kept: at least one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetentionMonths(u32);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the retention period must be a whole number of months of at least 1")]
pub struct InvalidRetention;

impl RetentionMonths {
    pub fn new(months: i64) -> Result<Self, InvalidRetention> {
        u32::try_from(months)
            .ok()
            .filter(|m| *m >= 1)
            .map(Self)
            .ok_or(InvalidRetention)
    }

    pub fn get(self) -> u32 {
        self.0
    }
}

impl Default for RetentionMonths {
    fn default() -> Self {
        Self(DEFAULT_MONTHS)
    }
}

/// A calendar month, ordered by time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Month {
    year: i32,
    month: u32,
}

impl Month {
    pub fn new(year: i32, month: u32) -> Option<Self> {
        (1..=12).contains(&month).then_some(Self { year, month })
    }

    pub fn of(at: DateTime<Utc>) -> Self {
        Self {
            year: at.year(),
            month: at.month(),
        }
    }

    /// The month of a retention subject (`retention-YYYYMM`); `None` for any other subject,
    /// so a customer's or a user's key can never be mistaken for one.
    pub fn of_subject(subject: &str) -> Option<Self> {
        let digits = subject.strip_prefix(SUBJECT_PREFIX)?;
        if digits.len() != 6 || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        Self::new(digits[..4].parse().ok()?, digits[4..].parse().ok()?)
    }

    /// The key subject of this month's security metadata.
    pub fn subject(self) -> String {
        format!("{SUBJECT_PREFIX}{:04}{:02}", self.year, self.month)
    }

    fn index(self) -> i64 {
        i64::from(self.year) * 12 + i64::from(self.month) - 1
    }

    /// `YYYY-MM`.
    pub fn parse(s: &str) -> Option<Self> {
        let (y, m) = s.split_once('-')?;
        if y.len() != 4 || m.len() != 2 {
            return None;
        }
        Self::new(y.parse().ok()?, m.parse().ok()?)
    }
}

impl fmt::Display for Month {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}-{:02}", self.year, self.month)
    }
}

/// Whether a month's metadata is past the retention period at `now`: with a period of N
/// months, the current month and the N months before it are kept, anything older expires.
/// The current month and future months therefore never expire.
pub fn is_expired(month: Month, now: DateTime<Utc>, keep: RetentionMonths) -> bool {
    month.index() < Month::of(now).index() - i64::from(keep.get())
}

/// The months among `existing` (subjects of the key table, of any kind) whose keys are past
/// the retention period at `now`, oldest first and each once. Subjects that are not
/// retention subjects are ignored.
pub fn expired_months<'a>(
    existing: impl IntoIterator<Item = &'a str>,
    now: DateTime<Utc>,
    keep: RetentionMonths,
) -> Vec<Month> {
    let mut months: Vec<Month> = existing
        .into_iter()
        .filter_map(Month::of_subject)
        .filter(|m| is_expired(*m, now, keep))
        .collect();
    months.sort_unstable();
    months.dedup();
    months
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 29, 20, 0, 0).unwrap()
    }

    #[test]
    fn a_period_must_be_at_least_one_month() {
        assert!(RetentionMonths::new(0).is_err());
        assert!(RetentionMonths::new(-3).is_err());
        assert_eq!(RetentionMonths::new(24).unwrap().get(), 24);
        assert_eq!(RetentionMonths::default().get(), 24);
    }

    #[test]
    fn only_months_older_than_the_period_expire() {
        let keep = RetentionMonths::new(24).unwrap();
        assert!(!is_expired(Month::new(2024, 11).unwrap(), now(), keep));
        assert!(is_expired(Month::new(2024, 10).unwrap(), now(), keep));
        assert!(!is_expired(Month::of(now()), now(), keep));
        assert!(!is_expired(Month::new(2027, 1).unwrap(), now(), keep));
        let one = RetentionMonths::new(1).unwrap();
        assert!(!is_expired(Month::new(2026, 10).unwrap(), now(), one));
        assert!(is_expired(Month::new(2026, 9).unwrap(), now(), one));
    }

    #[test]
    fn only_retention_subjects_are_ever_chosen() {
        let subjects = [
            "customer-0191c3b0-0000-7000-8000-000000000001",
            "user-0191c3b0-0000-7000-8000-000000000002",
            "retention-202001",
            "retention-202001",
            "retention-202611",
            "retention-2020",
            "retention-202013",
            "retention-19x901",
        ];
        let months = expired_months(subjects, now(), RetentionMonths::default());
        assert_eq!(months, vec![Month::new(2020, 1).unwrap()]);
        assert_eq!(months[0].subject(), "retention-202001");
        assert_eq!(months[0].to_string(), "2020-01");
        assert_eq!(Month::parse("2020-01"), Some(months[0]));
    }

    #[test]
    fn a_retention_run_is_stored_with_its_months_and_reads_back_unchanged() {
        use crate::encoding::EventCodec;
        use crate::event::DomainEvent;
        use crate::user::LoginEvent;
        let e = LoginEvent::RetentionApplied {
            months: vec![Month::new(2024, 9).unwrap(), Month::new(2024, 10).unwrap()],
            retention_months: 24,
            destroyed: 2,
            at: now(),
        };
        let enc = e.encode();
        assert_eq!(enc.event_type, "LoginRetentionApplied");
        assert_eq!(enc.schema_version, 1);
        assert!(enc.personal.is_empty());
        let json = crate::encoding::payload_json(&enc.facts, &enc.personal);
        insta::assert_json_snapshot!("LoginRetentionApplied_v1", json);
        let back = DomainEvent::decode(enc.into_decrypted()).unwrap();
        assert_eq!(back.action(), "RETENTION_APPLIED");
        assert_eq!(
            crate::audit::describe(&back),
            "LoginRetentionApplied: destroyed=2, months=[2024-09, 2024-10], retention_months=24"
        );
        assert_eq!(back, DomainEvent::Login(e));
    }
}
