//! The projections this crate maintains, with their names and versions.

/// A named, versioned fold of the log into tables.
///
/// Raising a version makes the runner rebuild that projection blue/green at start-up (the
/// stored checkpoint remembers the version its tables were built with).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProjectionKind {
    Customers,
    Users,
    /// Sessions ended by a logout.
    Sessions,
    /// API keys, looked up by the hash of their secret.
    ApiKeys,
    /// Every event, as the audit log shows it.
    Audit,
    /// Follow-ups, visible with their customer.
    Followups,
    /// Aggregates for analysts, without personal data (schema `analytics` on PostgreSQL).
    Analytics,
}

impl ProjectionKind {
    /// Every projection the runner keeps; read-your-writes waits for all of them (analytics
    /// included: it is cheap to fold, and a tool that writes and then counts sees its write).
    pub const ALL: [ProjectionKind; 7] = [
        ProjectionKind::Customers,
        ProjectionKind::Users,
        ProjectionKind::Sessions,
        ProjectionKind::ApiKeys,
        ProjectionKind::Audit,
        ProjectionKind::Followups,
        ProjectionKind::Analytics,
    ];

    /// The name used in checkpoints, metrics and the rebuild command.
    pub fn name(self) -> &'static str {
        match self {
            ProjectionKind::Customers => "customers",
            ProjectionKind::Users => "users",
            ProjectionKind::Sessions => "sessions",
            ProjectionKind::ApiKeys => "api_keys",
            ProjectionKind::Audit => "audit",
            ProjectionKind::Followups => "followups",
            ProjectionKind::Analytics => "analytics",
        }
    }

    /// The version of the fold and of the table shape.
    pub fn version(self) -> i32 {
        match self {
            // 2: indexes on email, phone and passport number for the import's lookups
            // (SQLite creates indexes only with a table, so existing files need the rebuild).
            // 3: a trigram index on `search_text` (PostgreSQL `pg_trgm`), so that stores
            // built before it rebuild blue/green with the index on the new table.
            ProjectionKind::Customers => 3,
            // The users table gained `session_version` without a version change: no event
            // before it could move a session version, so the column's default (the first
            // version) is exactly what a rebuild would produce for older tables.
            // 2: `mfa_enabled`, `must_change_password`, `password_changed_at` (a rebuild
            // fills them; the columns are added with defaults first so reads work meanwhile).
            ProjectionKind::Users => 2,
            ProjectionKind::Sessions => 1,
            ProjectionKind::ApiKeys => 1,
            ProjectionKind::Audit => 1,
            ProjectionKind::Followups => 1,
            ProjectionKind::Analytics => 1,
        }
    }

    pub fn from_name(name: &str) -> Option<ProjectionKind> {
        Self::ALL.into_iter().find(|k| k.name() == name)
    }

    /// Whether the projection folds events of this stored type. Checked before decoding, so
    /// events a projection ignores are never decrypted for it. The prefixes are the ones
    /// `DomainEvent::decode` dispatches on.
    pub fn wants(self, event_type: &str) -> bool {
        match self {
            ProjectionKind::Customers => event_type.starts_with("Customer"),
            ProjectionKind::Users => event_type.starts_with("User"),
            ProjectionKind::Sessions => event_type == egec_domain::user::SESSION_ENDED,
            ProjectionKind::ApiKeys => event_type.starts_with("ApiKey"),
            ProjectionKind::Audit => true,
            // The erasure of a customer erases the notes of their follow-ups.
            ProjectionKind::Followups => {
                event_type.starts_with("Followup") || event_type == crate::fold::CUSTOMER_ERASED
            }
            ProjectionKind::Analytics => crate::fold::analytics::wants(event_type),
        }
    }
}

impl ProjectionKind {
    /// Whether the fold reads the events' metadata (who acted, when, in which request). Only
    /// the audit log does; the others read the log without it, which spares a third of the
    /// bytes of every row and its parsing. Their envelopes carry the metadata of an event
    /// stored without any: no actor, a nil correlation id, the time of recording as the time
    /// of the action. A fold that starts reading metadata must be named here (a test of the
    /// fold sources holds the others to it).
    pub fn reads_metadata(self) -> bool {
        matches!(self, ProjectionKind::Audit)
    }
}

impl std::fmt::Display for ProjectionKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}
