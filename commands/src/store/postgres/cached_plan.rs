//! Test support: the plan an append session keeps for a statement prepared while the log was
//! empty, read after the tables have grown.
//!
//! An append session prepares its statements once and keeps one generic plan (see
//! `settings`), usually made while the log is still small. The tests of those statements use
//! this to check that the plan kept still probes the indexes once the tables are large.

use tokio_postgres::NoTls;

use super::{PgLog, PgSettings, QueryClass};

/// Runs `prepare` (which must `PREPARE` the statement and execute or explain it once, so that
/// its plan is made on empty tables) in a fresh append session, grows the events, key and
/// tombstone tables to 20,000 rows each, and answers the text of `explain` (an `EXPLAIN
/// EXECUTE` of the prepared statement).
pub(super) async fn after_growth(prepare: &str, explain: &str) -> String {
    let (url, _guard) = crate::testing::fresh_postgres().await;
    PgLog::connect(&url, 1)
        .await
        .expect("migrate the fresh database");
    let mut config: tokio_postgres::Config = url.parse().expect("test URL");
    PgSettings::default()
        .configure(&mut config, QueryClass::Append)
        .expect("append session options");
    let (client, connection) = config.connect(NoTls).await.expect("connect");
    tokio::spawn(connection);

    client
        .batch_execute(prepare)
        .await
        .expect("plan the statement on empty tables");
    client
        .batch_execute(
            "INSERT INTO egec.events SELECT g, 'customer-' || g, 1, gen_random_uuid(), \
               gen_random_uuid(), 'CustomerCreated', 1, '{}', '{}', now(), '\\x00', '\\x00' \
             FROM generate_series(1, 20000) g; \
             INSERT INTO egec.subject_keys (subject, key_version, kek_id, wrapped, fingerprint) \
             SELECT 'customer-' || g, 1, 'k', '\\x00', 'f' FROM generate_series(1, 20000) g; \
             INSERT INTO egec.erased_subjects (subject) \
             SELECT 'erased-' || g FROM generate_series(1, 20000) g",
        )
        .await
        .expect("grow the tables");
    client
        .query(explain, &[])
        .await
        .expect("explain the cached plan")
        .iter()
        .map(|row| row.get::<_, String>(0))
        .collect::<Vec<_>>()
        .join("\n")
}
