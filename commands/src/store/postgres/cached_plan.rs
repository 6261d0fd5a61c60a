//! Test support: the plan an append session keeps for a statement prepared while the log was
//! empty or tiny, read after the tables have grown.
//!
//! An append session prepares its statements once and keeps one generic plan (see
//! `settings`), usually made while the log is still small. The tests of those statements use
//! this to check that the plan kept still probes the indexes once the tables are large.

use tokio_postgres::NoTls;

use super::{PgLog, PgSettings, QueryClass};

/// What the tables hold, and what the planner knows of them, when the statement is planned.
#[derive(Debug, Clone, Copy)]
pub(super) enum Start {
    /// Empty and never analysed: the planner guesses their size from their files.
    Empty,
    /// One row in each of the events, key and tombstone tables, analysed. A fresh database
    /// analysed by hand (or by a benchmark) right after its first append looks like this.
    /// With these statistics PostgreSQL planned the stream check of the guarded write as a
    /// full scan of the stream index, materialised and filtered, and kept that plan as the
    /// log grew: the command rate fell to a tenth within a minute (session 13).
    AnalysedWithOneRow,
}

/// Every start a plan test must pass from.
pub(super) const STARTS: [Start; 2] = [Start::Empty, Start::AnalysedWithOneRow];

const ONE_ROW_ANALYSED: &str = "\
    INSERT INTO egec.events VALUES (100000, 'customer-one', 1, gen_random_uuid(), \
      gen_random_uuid(), 'CustomerCreated', 1, '{}', '{}', now(), '\\x00', '\\x00'); \
    INSERT INTO egec.subject_keys (subject, key_version, kek_id, wrapped, fingerprint) \
      VALUES ('customer-one', 1, 'k', '\\x00', 'f'); \
    INSERT INTO egec.erased_subjects (subject) VALUES ('erased-one'); \
    ANALYZE egec.events, egec.subject_keys, egec.erased_subjects";

/// Plan nodes that read or hash a whole table or index, which no plan test accepts.
const WHOLE_TABLE_NODES: [&str; 4] = ["Bitmap", "hashed SubPlan", "Hash", "Materialize"];

/// Fails unless `plan` (the text of an `EXPLAIN`, made from `start`) contains none of
/// [`WHOLE_TABLE_NODES`] and none of `whole_table` (the statement's own forbidden scans), uses
/// every index in `probes`, and gives every index scan an index condition: a scan without one
/// reads the whole index, which is a scan of the whole table in another order, whatever its
/// node is called.
pub(super) fn assert_probes_only(start: Start, plan: &str, whole_table: &[&str], probes: &[&str]) {
    for node in WHOLE_TABLE_NODES.iter().chain(whole_table) {
        assert!(!plan.contains(node), "{start:?}: {node} in\n{plan}");
    }
    for probe in probes {
        assert!(
            plan.contains(&format!("using {probe}")),
            "{start:?}: no index scan using {probe} in\n{plan}"
        );
    }
    let lines: Vec<&str> = plan.lines().collect();
    for (i, line) in lines.iter().enumerate() {
        if !line.contains("Index Scan using") && !line.contains("Index Only Scan using") {
            continue;
        }
        let condition = lines
            .get(i + 1)
            .is_some_and(|next| next.trim_start().starts_with("Index Cond:"));
        assert!(
            condition,
            "{start:?}: an index scan without a condition:\n{line}\nin\n{plan}"
        );
    }
}

/// Prepares `statement` (parameter types `types`, PostgreSQL's names such as `_int8` for
/// `int8[]`) in a fresh append session and explains it once with `args`, so that its plan is
/// made on the tables as `start` leaves them; then grows the events, key and tombstone
/// tables to 20,000 rows each and answers the text of `EXPLAIN EXECUTE` with `args`: the plan
/// the session kept.
pub(super) async fn after_growth(start: Start, types: &str, statement: &str, args: &str) -> String {
    let explain = format!("EXPLAIN EXECUTE planned{args}");
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

    if let Start::AnalysedWithOneRow = start {
        client
            .batch_execute(ONE_ROW_ANALYSED)
            .await
            .expect("one analysed row in each table");
    }
    client
        .batch_execute(&format!(
            "PREPARE planned({types}) AS {statement}; {explain}"
        ))
        .await
        .expect("plan the statement on the starting tables");
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
        .query(&explain, &[])
        .await
        .expect("explain the cached plan")
        .iter()
        .map(|row| row.get::<_, String>(0))
        .collect::<Vec<_>>()
        .join("\n")
}
