//! Helpers for tests (feature `testing`): throwaway databases for both backends.
//!
//! Tests never skip: when PostgreSQL is not reachable, [`fresh_postgres`] panics with a message
//! that says how to fix it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio_postgres::NoTls;

/// The maintenance database the test databases are created from, unless `EGEC_TEST_PG_URL`
/// names another.
pub const DEFAULT_ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// The admin URL in effect.
pub fn admin_url() -> String {
    std::env::var("EGEC_TEST_PG_URL").unwrap_or_else(|_| DEFAULT_ADMIN_URL.to_owned())
}

/// Drops its test database when dropped (`DROP DATABASE … WITH (FORCE)`, which also ends the
/// connections pools still hold). If the drop fails (the server went away), the database is
/// left behind; every test database is named `egec_test_*`, so they are easy to clean up.
#[derive(Debug)]
pub struct PgDropGuard {
    admin_url: String,
    database: String,
}

impl PgDropGuard {
    /// The name of the test database.
    pub fn database(&self) -> &str {
        &self.database
    }
}

impl Drop for PgDropGuard {
    fn drop(&mut self) {
        let admin_url = self.admin_url.clone();
        let database = self.database.clone();
        // Drop cannot await, and may run inside a runtime that must not be blocked on; a
        // short-lived thread with its own runtime does the drop and is waited for, so the
        // database is gone when the guard is.
        let worker = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            runtime.block_on(async move {
                let Ok(Ok((client, connection))) = tokio::time::timeout(
                    Duration::from_secs(10),
                    tokio_postgres::connect(&admin_url, NoTls),
                )
                .await
                else {
                    return;
                };
                let conn_task = tokio::spawn(connection);
                let sql = format!("DROP DATABASE IF EXISTS \"{database}\" WITH (FORCE)");
                if let Err(e) = client.batch_execute(&sql).await {
                    eprintln!("test database {database} was left behind: {e}");
                }
                drop(client);
                let _ = conn_task.await;
            });
        });
        let _ = worker.join();
    }
}

/// A unique database name: process id, clock and a counter, so parallel tests and parallel
/// test binaries never collide.
fn unique_name() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!(
        "egec_test_{}_{}_{}",
        std::process::id(),
        nanos % 1_000_000_000_000,
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// Replaces the database of a connection URL (URL or `key=value` form).
pub fn with_database(url: &str, database: &str) -> String {
    if let Some(scheme_end) = url.find("://") {
        let after = scheme_end + 3;
        let (without_query, query) = match url.find('?') {
            Some(q) => (&url[..q], &url[q..]),
            None => (url, ""),
        };
        let base = match without_query[after..].find('/') {
            Some(slash) => &without_query[..after + slash],
            None => without_query,
        };
        format!("{base}/{database}{query}")
    } else {
        let mut parts: Vec<String> = url
            .split_whitespace()
            .filter(|p| !p.starts_with("dbname="))
            .map(str::to_owned)
            .collect();
        parts.push(format!("dbname={database}"));
        parts.join(" ")
    }
}

/// The same connection string logging in as `user` with no password (the test server
/// trusts local connections): for tests of what a less privileged login role may do.
pub fn with_user(url: &str, user: &str) -> String {
    if let Some(scheme_end) = url.find("://") {
        let after = scheme_end + 3;
        let host_start = url[after..]
            .find('/')
            .map_or(url.len(), |slash| after + slash);
        let authority = &url[after..host_start];
        let host = authority
            .rsplit_once('@')
            .map_or(authority, |(_, host)| host);
        format!("{}{user}@{host}{}", &url[..after], &url[host_start..])
    } else {
        let mut parts: Vec<String> = url
            .split_whitespace()
            .filter(|p| !p.starts_with("user=") && !p.starts_with("password="))
            .map(str::to_owned)
            .collect();
        parts.push(format!("user={user}"));
        parts.join(" ")
    }
}

/// Creates an empty database with a unique name and answers its URL and the guard that drops
/// it. Panics when PostgreSQL cannot be reached.
pub async fn fresh_postgres() -> (String, PgDropGuard) {
    let admin = admin_url();
    let connected = tokio::time::timeout(
        Duration::from_secs(10),
        tokio_postgres::connect(&admin, NoTls),
    )
    .await;
    let (client, connection) = match connected {
        Ok(Ok(pair)) => pair,
        Ok(Err(e)) => panic!(
            "PostgreSQL is not reachable at {admin}: {e}. The storage tests need it: start \
             PostgreSQL (trust auth for user postgres) or point EGEC_TEST_PG_URL at one."
        ),
        Err(_) => panic!(
            "PostgreSQL at {admin} did not answer within 10 s. The storage tests need it: start \
             PostgreSQL or point EGEC_TEST_PG_URL at one."
        ),
    };
    let conn_task = tokio::spawn(connection);
    let database = unique_name();
    client
        .batch_execute(&format!("CREATE DATABASE \"{database}\""))
        .await
        .unwrap_or_else(|e| panic!("cannot create test database {database}: {e}"));
    drop(client);
    let _ = conn_task.await;
    let url = with_database(&admin, &database);
    (
        url,
        PgDropGuard {
            admin_url: admin,
            database,
        },
    )
}

/// A fresh, empty directory for a SQLite data directory, removed when the guard drops.
#[cfg(feature = "testing")]
pub fn fresh_sqlite_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("egec-test-")
        .tempdir()
        .unwrap_or_else(|e| panic!("cannot create a temporary directory: {e}"))
}

#[cfg(test)]
mod tests {
    use super::with_database;

    #[test]
    fn the_database_of_a_url_is_replaced() {
        assert_eq!(
            with_database("postgres://postgres@127.0.0.1:5432/postgres", "x"),
            "postgres://postgres@127.0.0.1:5432/x"
        );
        assert_eq!(
            with_database("postgres://u:p@h/db?sslmode=disable", "x"),
            "postgres://u:p@h/x?sslmode=disable"
        );
        assert_eq!(with_database("postgres://h", "x"), "postgres://h/x");
        assert_eq!(
            with_database("host=h user=u dbname=postgres", "x"),
            "host=h user=u dbname=x"
        );
    }
}
