//! The analysts' role on PostgreSQL: `egec_analytics` reads schema `analytics` (tables made
//! after the migration included, through default privileges) and is refused schema `crm`
//! (the read models, with personal data) and schema `egec` (the log and the subject keys).
//! The checks run under `SET LOCAL ROLE egec_analytics` in a session of the test database,
//! which applies exactly the privileges a login as that role would have.

mod common;

use common::{Env, WAIT, agent, sample_customer};
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

/// Every relation of the analytics projection in schema `analytics`.
const ANALYTICS_RELATIONS: [&str; 7] = [
    "customers_by_status_daily",
    "conversion_by_source",
    "time_in_status",
    "agent_open_customers",
    "agent_open_followups",
    "logins_daily",
    "agent_workload",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_analytics_role_reads_every_analytics_table_and_the_view_but_not_the_working_state() {
    let env = Env::postgres().await;
    let runner = env.start().await;
    let mut c = sample_customer(1);
    c.agents = vec![agent(1)];
    let (_, pos) = env.create(&c).await;
    assert!(runner.wait_for(pos, WAIT).await);
    let pool = env.pool.clone().expect("postgres pool");

    for rel in ANALYTICS_RELATIONS {
        as_analyst(&pool, &format!("SELECT * FROM analytics.{rel}"))
            .await
            .unwrap_or_else(|e| panic!("egec_analytics cannot read analytics.{rel}: {e}"));
    }
    let rows = as_analyst(&pool, "SELECT open_customers FROM analytics.agent_workload")
        .await
        .expect("workload");
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].get::<_, i64>(0), 1);
    // The fold's working state is keyed by customer id: analysts must not read it.
    assert_denied(
        as_analyst(&pool, "SELECT count(*) FROM crm.analytics_state").await,
        "a read of crm.analytics_state",
    );
    assert_denied(
        as_analyst(&pool, "SELECT count(*) FROM crm.projection_checkpoints").await,
        "a read of crm.projection_checkpoints",
    );
    // A rebuild swaps new tables and a new view in: the role still reads them (default
    // privileges cover what the owner creates).
    runner
        .rebuild("analytics", |_, _| {})
        .await
        .expect("rebuild");
    for rel in ANALYTICS_RELATIONS {
        as_analyst(&pool, &format!("SELECT count(*) FROM analytics.{rel}"))
            .await
            .unwrap_or_else(|e| panic!("after a rebuild, analytics.{rel}: {e}"));
    }
    runner.shutdown().await;
}

/// The example queries of `docs/analytics.md`, taken from the document itself so that they
/// cannot drift from what runs: every ```sql block under "## Example queries".
fn example_queries() -> Vec<String> {
    let doc = include_str!("../../docs/analytics.md");
    let section = doc
        .split("## Example queries")
        .nth(1)
        .expect("docs/analytics.md has an \"Example queries\" section");
    let section = section.split("\n## ").next().unwrap_or(section);
    section
        .split("```sql")
        .skip(1)
        .map(|b| b.split("```").next().unwrap().trim().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_documented_example_queries_run_as_the_analytics_role_on_a_populated_database() {
    let env = Env::postgres().await;
    let runner = env.start().await;
    let mut pos = 0;
    for n in 0..12 {
        let mut c = sample_customer(n);
        c.agents = vec![agent(u128::from(n % 2))];
        let (id, _) = env.create(&c).await;
        // Status changes, so that time in status has stays to show.
        let to = if c.status == egec_domain::customer::CustomerStatus::Lost {
            egec_domain::customer::CustomerStatus::New
        } else {
            egec_domain::customer::CustomerStatus::Lost
        };
        pos = env.set_status(id, to).await;
    }
    let (user, _) = env
        .create_user(
            "analyst.test@staff.example",
            "Staff Person",
            egec_domain::Role::Agent,
        )
        .await;
    let at = env.now();
    let login = egec_domain::event::DomainEvent::Login(egec_domain::user::LoginEvent::Succeeded {
        user_id: user,
        session_id: uuid::Uuid::now_v7(),
        at,
    });
    let stored = env.encode(&user.subject(), &login, at).await;
    env.append(egec_domain::user::login_stream_id(user, at), vec![stored])
        .await;
    pos = pos.max(env.head().await);
    assert!(runner.wait_for(pos, WAIT).await);
    let pool = env.pool.clone().expect("postgres pool");

    let queries = example_queries();
    assert_eq!(queries.len(), 5, "five example queries");
    for q in &queries {
        let rows = as_analyst(&pool, q)
            .await
            .unwrap_or_else(|e| panic!("example query failed: {e}\n{q}"));
        assert!(!rows.is_empty(), "example query answered nothing:\n{q}");
    }
    runner.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_analytics_tables_are_granted_to_the_role_even_without_default_privileges() {
    let env = Env::postgres().await;
    let pool = env.pool.clone().expect("postgres pool");
    // A database where the application's role is not the one whose default privileges
    // migration V3 set: here, the same role with those privileges taken back.
    pool.get()
        .await
        .expect("connection")
        .batch_execute(
            "ALTER DEFAULT PRIVILEGES IN SCHEMA analytics REVOKE SELECT ON TABLES \
             FROM egec_analytics",
        )
        .await
        .expect("revoke default privileges");
    let runner = env.start().await;
    for rel in ANALYTICS_RELATIONS {
        as_analyst(&pool, &format!("SELECT count(*) FROM analytics.{rel}"))
            .await
            .unwrap_or_else(|e| panic!("analytics.{rel} not granted at start-up: {e}"));
    }
    runner
        .rebuild("analytics", |_, _| {})
        .await
        .expect("rebuild");
    for rel in ANALYTICS_RELATIONS {
        as_analyst(&pool, &format!("SELECT count(*) FROM analytics.{rel}"))
            .await
            .unwrap_or_else(|e| panic!("analytics.{rel} not granted after a swap: {e}"));
    }
    runner.shutdown().await;
}
