//! How the PostgreSQL backend connects: pool sizes, time limits per query class, and the
//! role the sessions act as.
//!
//! There are three query classes, each with a pool of its own so that its limits are session
//! defaults set once, at connection time (a `SET` per checkout would cost a round trip per
//! append, and a `SET` left behind on a pooled connection would leak into the next user):
//!
//! - **interactive**: everything a request or the live projections do (reads, key
//!   look-ups, checkpoint moves, paged exports). A statement over
//!   [`PgSettings::statement_timeout`] is cancelled by the server, so a stuck lock or a
//!   runaway query costs a request a few seconds, not a pool connection forever;
//! - **append**: the appender's transactions, with the interactive time limits. Their
//!   statements are a closed set of index probes and inserts, each prepared once per
//!   connection and planned once (see [`PgSettings::session_options`]);
//! - **maintenance**: migrations (which wait on an advisory lock while another node
//!   migrates), the projections' schema set-up and blue/green rebuilds (bulk writes,
//!   index builds, `ANALYZE`, table swaps). They get [`PgSettings::maintenance_statement_timeout`],
//!   long by default, since a rebuild's index build grows with the data.

use std::time::Duration;

use deadpool_postgres::{Manager, Pool, Runtime};

use crate::store::StoreError;

/// Connection settings of the PostgreSQL backend. `Default` gives the production defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgSettings {
    /// Connections of the interactive pool.
    pub pool_size: usize,
    /// Connections of the maintenance pool.
    pub maintenance_pool_size: usize,
    /// `statement_timeout` of interactive sessions; zero means none.
    pub statement_timeout: Duration,
    /// `statement_timeout` of maintenance sessions; zero means none.
    pub maintenance_statement_timeout: Duration,
    /// `idle_in_transaction_session_timeout` of every session: a transaction left open by a
    /// stalled task must not hold the log's counter row (and so every append) for long.
    pub idle_in_transaction_timeout: Duration,
    /// How long a caller waits for a free pooled connection before the pool gives up.
    pub acquire_timeout: Duration,
    /// How long opening one connection (TCP, TLS, authentication) may take.
    pub connect_timeout: Duration,
    /// The role every session acts as (`SET ROLE` at connection time), e.g. `egec_app`: the
    /// login role then needs only membership in it, and every object the app creates is
    /// owned by it whichever node created it. `None` acts as the login role itself.
    pub role: Option<String>,
}

impl Default for PgSettings {
    fn default() -> Self {
        Self {
            pool_size: 16,
            maintenance_pool_size: 2,
            statement_timeout: Duration::from_secs(15),
            maintenance_statement_timeout: Duration::from_secs(3600),
            idle_in_transaction_timeout: Duration::from_secs(60),
            acquire_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(10),
            role: None,
        }
    }
}

/// Whether `role` can go into the start-up options as it is. The option string is split on
/// spaces and backslash is its escape: a role name is an identifier the operator chose, so
/// only plain ones (ASCII letters, digits, `_` and `-`) are accepted.
pub fn is_plain_role_name(role: &str) -> bool {
    !role.is_empty()
        && role
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// The query classes, each served by a pool of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueryClass {
    Interactive,
    Append,
    Maintenance,
}

/// Connections of the append pool. The appender keeps at most two batches in flight
/// (`EventLog::pipeline_depth`); the rest is headroom for tools that append directly.
pub const APPEND_POOL_SIZE: usize = 4;

impl PgSettings {
    /// Default settings with an interactive pool of `pool_size` connections.
    pub fn with_pool_size(pool_size: usize) -> Self {
        Self {
            pool_size,
            ..Self::default()
        }
    }

    fn statement_timeout_of(&self, class: QueryClass) -> Duration {
        match class {
            QueryClass::Interactive | QueryClass::Append => self.statement_timeout,
            QueryClass::Maintenance => self.maintenance_statement_timeout,
        }
    }

    fn pool_size_of(&self, class: QueryClass) -> usize {
        match class {
            QueryClass::Interactive => self.pool_size,
            QueryClass::Append => APPEND_POOL_SIZE,
            QueryClass::Maintenance => self.maintenance_pool_size,
        }
        .max(1)
    }

    /// The session defaults sent in the start-up packet (`options`), so that they hold
    /// from a connection's first statement and a `RESET` returns to them.
    ///
    /// Interactive sessions run with JIT compilation off. Their statements are index probes
    /// and short scans, which JIT cannot speed up; but on a table the planner has no
    /// statistics for yet (a fresh database until autovacuum analyses it), its estimates
    /// exceed `jit_above_cost` and every append's look-up of its command ids spent about
    /// 8 ms compiling before it ran (2026-11-30).
    ///
    /// Append sessions also plan each prepared statement once (`force_generic_plan`) and
    /// never as a scan of a whole table. Left to choose, PostgreSQL planned the stream-version
    /// look-up afresh on four executions in five (a third of the append's own planning
    /// time), and a plan it does cache is kept until the table is next analysed: one made
    /// while the log was tiny would scan the whole log on every batch from then on (seen on a
    /// fresh database on 2026-11-29: 1,600 appends/s instead of 5,000). With sequential and
    /// bitmap scans off, every look-up is planned as the index probe it is meant to be,
    /// whatever the statistics say; a table with no usable index would still be scanned, so
    /// nothing becomes impossible to plan.
    pub fn session_options(&self, class: QueryClass) -> Result<String, StoreError> {
        let mut options = format!(
            "-c statement_timeout={} -c idle_in_transaction_session_timeout={}",
            self.statement_timeout_of(class).as_millis(),
            self.idle_in_transaction_timeout.as_millis()
        );
        if class != QueryClass::Maintenance {
            options.push_str(" -c jit=off");
        }
        if class == QueryClass::Append {
            options.push_str(
                " -c plan_cache_mode=force_generic_plan -c enable_seqscan=off \
                 -c enable_bitmapscan=off",
            );
        }
        if let Some(role) = &self.role {
            if !is_plain_role_name(role) {
                return Err(StoreError::Config(format!(
                    "EGEC_DB_ROLE `{role}` is not a plain role name (letters, digits, _ and -)"
                )));
            }
            options.push_str(&format!(" -c role={role}"));
        }
        Ok(options)
    }

    /// Applies the connection-level settings of `class` to a parsed connection string.
    /// Options already in the URL come first, so ours win where both set the same one.
    pub(super) fn configure(
        &self,
        config: &mut tokio_postgres::Config,
        class: QueryClass,
    ) -> Result<(), StoreError> {
        let ours = self.session_options(class)?;
        let options = match config.get_options() {
            Some(theirs) if !theirs.is_empty() => format!("{theirs} {ours}"),
            _ => ours,
        };
        config.options(&options);
        if !self.connect_timeout.is_zero() {
            config.connect_timeout(self.connect_timeout);
        }
        // Keepalives find a peer that vanished (a partitioned node, a failed-over server)
        // within about a minute instead of the kernel's two hours: a node that held a
        // leadership lock on such a connection loses it, and another takes over.
        config.keepalives(true);
        config.keepalives_idle(Duration::from_secs(30));
        config.keepalives_interval(Duration::from_secs(10));
        config.keepalives_retries(3);
        Ok(())
    }

    /// Builds the pool of `class` over a manager already configured for it.
    pub(super) fn build_pool(
        &self,
        manager: Manager,
        class: QueryClass,
    ) -> Result<Pool, StoreError> {
        let timeout = |d: Duration| (!d.is_zero()).then_some(d);
        // Maintenance work queues behind other maintenance work (a second rebuild behind
        // one building its indexes), so it may wait for a connection as long as one of
        // its statements may run; a request may not.
        let wait = match class {
            QueryClass::Interactive | QueryClass::Append => self.acquire_timeout,
            QueryClass::Maintenance => self.maintenance_statement_timeout,
        };
        Pool::builder(manager)
            .max_size(self.pool_size_of(class))
            .wait_timeout(timeout(wait))
            .create_timeout(timeout(self.connect_timeout))
            .recycle_timeout(timeout(self.connect_timeout))
            .runtime(Runtime::Tokio1)
            .build()
            .map_err(|e| StoreError::Config(format!("cannot build the connection pool: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_options_carry_the_class_timeout_and_the_role() {
        let s = PgSettings {
            statement_timeout: Duration::from_millis(1500),
            maintenance_statement_timeout: Duration::ZERO,
            idle_in_transaction_timeout: Duration::from_secs(7),
            role: Some("egec_app".into()),
            ..PgSettings::default()
        };
        assert_eq!(
            s.session_options(QueryClass::Interactive).unwrap(),
            "-c statement_timeout=1500 -c idle_in_transaction_session_timeout=7000 -c jit=off \
             -c role=egec_app"
        );
        assert_eq!(
            s.session_options(QueryClass::Append).unwrap(),
            "-c statement_timeout=1500 -c idle_in_transaction_session_timeout=7000 -c jit=off \
             -c plan_cache_mode=force_generic_plan -c enable_seqscan=off \
             -c enable_bitmapscan=off -c role=egec_app"
        );
        assert_eq!(
            s.session_options(QueryClass::Maintenance).unwrap(),
            "-c statement_timeout=0 -c idle_in_transaction_session_timeout=7000 -c role=egec_app"
        );
    }

    #[test]
    fn a_role_name_that_could_smuggle_options_is_refused() {
        for bad in ["", "egec_app -c statement_timeout=0", "a\\b", "r\u{e9}le"] {
            let s = PgSettings {
                role: Some(bad.into()),
                ..PgSettings::default()
            };
            assert!(
                matches!(
                    s.session_options(QueryClass::Interactive),
                    Err(StoreError::Config(_))
                ),
                "{bad:?} was accepted"
            );
        }
    }

    #[test]
    fn options_in_the_url_are_kept_before_ours() {
        let mut config: tokio_postgres::Config = "postgres://u@h/db?options=-c%20search_path%3Dx"
            .parse()
            .unwrap();
        PgSettings::default()
            .configure(&mut config, QueryClass::Interactive)
            .unwrap();
        let options = config.get_options().unwrap();
        assert!(
            options.starts_with("-c search_path=x -c statement_timeout=15000"),
            "{options}"
        );
    }
}
