//! The analysts' role on PostgreSQL: `egec_analytics` reads schema `analytics` (tables made
//! after the migration included, through default privileges) and is refused schema `crm`
//! (the read models, with personal data) and schema `egec` (the log and the subject keys).
//! The checks run under `SET LOCAL ROLE egec_analytics` in a session of the test database,
//! which applies exactly the privileges a login as that role would have.

mod common;

use common::Env;
use tokio_postgres::error::SqlState;

/// The migration's own text, to show it can run again where the role already exists (as it
/// does for every database but the first one migrated in a cluster).
const V3: &str = include_str!("../../migrations/postgres/V3__analytics_role.sql");

/// Runs one statement as `egec_analytics` in a transaction that is rolled back, so the pooled
/// connection goes back with its own role and nothing the statement did is kept.
async fn as_analyst(
    pool: &deadpool_postgres::Pool,
    sql: &str,
) -> Result<Vec<tokio_postgres::Row>, tokio_postgres::Error> {
    let mut conn = pool.get().await.expect("connection");
    let tx = conn.transaction().await.expect("begin");
    tx.batch_execute("SET LOCAL ROLE egec_analytics")
        .await
        .expect("the migration created egec_analytics");
    let answer = tx.query(sql, &[]).await;
    tx.rollback().await.expect("rollback");
    answer
}

fn assert_denied(answer: Result<Vec<tokio_postgres::Row>, tokio_postgres::Error>, what: &str) {
    match answer {
        Ok(_) => panic!("egec_analytics could run: {what}"),
        Err(e) => assert_eq!(
            e.code(),
            Some(&SqlState::INSUFFICIENT_PRIVILEGE),
            "{what} failed for another reason: {e}"
        ),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_analytics_role_reads_schema_analytics_and_is_refused_the_read_models_and_the_log() {
    let env = Env::postgres().await;
    // Opening the read models creates schema `crm` and its tables, as `egec serve` does.
    let _read_models = env.read_models().await;
    let pool = env.pool.clone().expect("postgres pool");
    let conn = pool.get().await.expect("connection");
    // A table the owner creates after the migration: covered by the default privileges.
    conn.batch_execute(
        "CREATE TABLE analytics.probe (day date NOT NULL, customers bigint NOT NULL); \
         INSERT INTO analytics.probe VALUES ('2026-01-01', 3);",
    )
    .await
    .expect("owner creates an analytics table");
    drop(conn);

    let rows = as_analyst(&pool, "SELECT customers FROM analytics.probe")
        .await
        .expect("egec_analytics reads schema analytics");
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].get::<_, i64>(0), 3);

    assert_denied(
        as_analyst(
            &pool,
            "INSERT INTO analytics.probe VALUES ('2026-01-02', 1)",
        )
        .await,
        "a write to schema analytics",
    );
    for table in [
        "crm.customers",
        "crm.users",
        "crm.followups",
        "crm.audit",
        "egec.events",
        "egec.subject_keys",
        "egec.attachment_blobs",
    ] {
        assert_denied(
            as_analyst(&pool, &format!("SELECT count(*) FROM {table}")).await,
            &format!("a read of {table}"),
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_analytics_role_migration_runs_again_where_the_role_already_exists() {
    let env = Env::postgres().await;
    let pool = env.pool.clone().expect("postgres pool");
    let conn = pool.get().await.expect("connection");
    // The role exists (this database's migration, or another one's, made it): running the
    // migration again must neither fail nor lose the grants.
    conn.batch_execute(V3).await.expect("second run");
    conn.batch_execute(V3).await.expect("third run");
    let roles = conn
        .query_one(
            "SELECT count(*) FROM pg_roles WHERE rolname = 'egec_analytics' AND NOT rolcanlogin",
            &[],
        )
        .await
        .expect("pg_roles");
    assert_eq!(roles.get::<_, i64>(0), 1, "one NOLOGIN egec_analytics role");
    drop(conn);
    as_analyst(
        &pool,
        "SELECT count(*) FROM pg_tables WHERE schemaname = 'analytics'",
    )
    .await
    .expect("egec_analytics still uses schema analytics");
    let usage = as_analyst(&pool, "SELECT has_schema_privilege('analytics', 'USAGE')")
        .await
        .expect("privilege check");
    assert!(usage[0].get::<_, bool>(0), "USAGE on analytics kept");
    let log = as_analyst(&pool, "SELECT has_schema_privilege('egec', 'USAGE')")
        .await
        .expect("privilege check");
    assert!(!log[0].get::<_, bool>(0), "no USAGE on the log's schema");
}
