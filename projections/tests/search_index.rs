//! Customer search through its index (PostgreSQL `pg_trgm`) answers exactly what a
//! brute-force substring filter over every row answers, on both backends, through live
//! writes, a rebuild and an erasure; and PostgreSQL without the extension falls back to the
//! scan with the same results.

#[macro_use]
mod common;

use std::sync::Arc;

use common::{Env, NewCustomer, WAIT, agent, sample_customer};
use egec_domain::CustomerId;
use egec_domain::customer::{CustomerChanges, CustomerStatus};
use egec_domain::permission::Visibility;
use egec_domain::personal::Personal;
use egec_domain::values::Email;
use egec_projections::fold::{search_needle, search_text};
use egec_projections::{CustomerQuery, CustomerRow, ProjectionRunner, ReadModels, RunnerHandle};
use uuid::Uuid;

on_both_backends!(
    indexed_search_equals_a_brute_force_substring_filter_through_updates_a_rebuild_and_an_erasure,
    a_store_from_before_the_index_gains_it_on_open_and_finds_the_same_customers,
);

/// Needles of 1, 2 and 3+ characters, with the LIKE and FTS metacharacters, quotes,
/// non-ASCII letters in both cases, and fragments of emails, phones and passports.
const NEEDLES: &[&str] = &[
    "a",
    "z",
    "ah",
    "ë",
    "%",
    "_",
    "\\",
    "\"",
    "'",
    "100%",
    "0%",
    "a%b",
    "a_b",
    "e_n",
    "sure_n",
    "\"q\"",
    "o'b",
    "o''b",
    "zoë",
    "ZOË",
    "ünal",
    "ÜNAL",
    "back\\s",
    "k\\sl",
    "customer1",
    "Customer 1",
    "ample.com",
    "r1@exa",
    "layla@",
    "0101",
    "+2010",
    "1111",
    "p000",
    "lm123",
    "axb",
    "nobody-here",
    "erased",
];

/// The same filters the store applies, computed in Rust over every row.
fn brute_force(all: &[CustomerRow], query: &CustomerQuery) -> (Vec<Uuid>, u64) {
    let needle = query.q.as_deref().and_then(search_needle);
    let mut hits: Vec<&CustomerRow> = all
        .iter()
        .filter(|r| query.include_deleted || !r.deleted)
        .filter(|r| query.status.is_none_or(|s| r.status == s))
        .filter(|r| {
            let assigned = match query.visibility {
                Visibility::All => None,
                Visibility::AssignedTo(me) => Some(me),
            };
            [query.agent_id, assigned]
                .into_iter()
                .flatten()
                .all(|a| r.assigned_agent_ids.contains(&a.as_uuid()))
        })
        .filter(|r| needle.as_deref().is_none_or(|n| search_text(r).contains(n)))
        .collect();
    hits.sort_by(|a, b| b.created_at.cmp(&a.created_at).then(a.id.cmp(&b.id)));
    let total = hits.len() as u64;
    (hits.into_iter().map(|r| r.id).collect(), total)
}

/// Every needle under several combinations of the other filters, against the brute force.
async fn assert_search_matches_brute_force(rm: &ReadModels, stage: &str) {
    let all = rm.all_customers().await.unwrap();
    let mut some_hit = false;
    for needle in NEEDLES {
        let base = CustomerQuery {
            q: Some((*needle).to_owned()),
            ..CustomerQuery::new(Visibility::All)
        };
        let queries = [
            base.clone(),
            CustomerQuery {
                include_deleted: true,
                ..base.clone()
            },
            CustomerQuery {
                status: Some(CustomerStatus::Qualified),
                ..base.clone()
            },
            CustomerQuery {
                visibility: Visibility::AssignedTo(agent(1)),
                ..base.clone()
            },
            CustomerQuery {
                agent_id: Some(agent(2)),
                ..base.clone()
            },
        ];
        for query in &queries {
            let (expected, expected_total) = brute_force(&all, query);
            some_hit |= expected_total > 0;
            let (page, total) = rm.list_customers(query, 1, 500).await.unwrap();
            let got: Vec<Uuid> = page.iter().map(|r| r.id).collect();
            assert_eq!(got, expected, "{stage}: {query:?}");
            assert_eq!(total, expected_total, "{stage}: {query:?}");
            // A later page carries the same total and continues the same order.
            if expected_total > 2 {
                let (second, total) = rm.list_customers(query, 2, 2).await.unwrap();
                assert_eq!(total, expected_total, "{stage}: page 2 of {query:?}");
                let ids: Vec<Uuid> = second.iter().map(|r| r.id).collect();
                let end = expected.len().min(4);
                assert_eq!(ids, expected[2..end], "{stage}: page 2 of {query:?}");
            }
        }
    }
    assert!(some_hit, "{stage}: no needle found anything");
}

fn special(name: &str, email: Option<&str>, phone: Option<&str>, n: u128) -> NewCustomer {
    NewCustomer {
        name: name.into(),
        email: email.map(str::to_owned),
        phone: phone.map(str::to_owned),
        passport: None,
        status: CustomerStatus::Qualified,
        agents: vec![agent(n % 3)],
    }
}

/// Customers whose values exercise the escaping and the case folding.
async fn create_specials(env: &Env) -> Vec<(CustomerId, i64)> {
    let mut out = Vec::new();
    for (i, c) in [
        special("100% Sure_Name", Some("sure_name@example.com"), None, 1),
        special("Quote \"Q\" O'Brien", None, Some("+201011112222"), 2),
        special("Zoë Ünal", Some("zoe@example.com"), None, 1),
        special("Back\\slash Person", None, None, 0),
        special("axb ayb", None, None, 1),
        NewCustomer {
            passport: Some("LM1234567".into()),
            ..special("Layla Mansour", Some("layla@example.com"), None, 2)
        },
    ]
    .iter()
    .enumerate()
    {
        let mut c = c.clone();
        if i % 2 == 0 {
            c.agents.push(agent(2));
        }
        out.push(env.create(&c).await);
    }
    out
}

/// On SQLite, the live customers table has its FTS5 trigram index beside it (and no table
/// of a rebuild is left over), and a search of 3+ characters is planned through it.
fn assert_fts_index_used(env: &Env) {
    let conn = rusqlite::Connection::open(env.data_dir.join("read.db")).unwrap();
    let fts5: bool = conn
        .query_row("SELECT sqlite_compileoption_used('ENABLE_FTS5')", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert!(fts5, "the bundled SQLite lacks FTS5");
    let sql: String = conn
        .query_row(
            "SELECT sql FROM sqlite_master WHERE name = 'customers_fts'",
            [],
            |r| r.get(0),
        )
        .expect("the search index exists beside the live table");
    assert!(sql.contains("trigram"), "{sql}");
    let leftovers: i64 = conn
        .query_row(
            "SELECT count(*) FROM sqlite_master WHERE type = 'table' \
             AND (name GLOB 'customers_rebuild_*' OR name GLOB 'customers_retired_*')",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(leftovers, 0);
    let mut stmt = conn
        .prepare(
            "EXPLAIN QUERY PLAN SELECT count(*) FROM customers WHERE deleted = 0 AND \
             rowid IN (SELECT rowid FROM customers_fts WHERE customers_fts MATCH ?1)",
        )
        .unwrap();
    let plan: Vec<String> = stmt
        .query_map(["\"ample.com\""], |r| r.get::<_, String>(3))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let plan = plan.join("\n");
    assert!(plan.contains("VIRTUAL TABLE INDEX"), "{plan}");
    assert!(plan.contains("customers_fts"), "{plan}");
}

/// On PostgreSQL, the live customers table carries the trigram index, and the planner
/// answers a substring search of 3+ characters through it (a bitmap index scan on it).
async fn assert_trigram_index_used(env: &Env) {
    let Some(pool) = &env.pool else {
        assert_fts_index_used(env);
        return;
    };
    let conn = pool.get().await.unwrap();
    let def: String = conn
        .query_one(
            "SELECT indexdef FROM pg_indexes \
             WHERE schemaname = 'crm' AND indexname = 'customers_search_idx'",
            &[],
        )
        .await
        .expect("the trigram index exists on the live table")
        .get(0);
    assert!(def.contains("gin_trgm_ops"), "{def}");
    assert!(def.contains("(search_text"), "{def}");
    conn.batch_execute("SET enable_seqscan = off")
        .await
        .unwrap();
    let plan: serde_json::Value = conn
        .query_one(
            "EXPLAIN (FORMAT JSON) SELECT count(*) FROM crm.customers \
             WHERE NOT deleted AND search_text LIKE $1 ESCAPE '\\'",
            &[&"%ample.com%"],
        )
        .await
        .unwrap()
        .get(0);
    let plan = plan.to_string();
    assert!(plan.contains("Bitmap Index Scan"), "{plan}");
    assert!(plan.contains("customers_search_idx"), "{plan}");
    conn.batch_execute("RESET enable_seqscan").await.unwrap();
}

async fn indexed_search_equals_a_brute_force_substring_filter_through_updates_a_rebuild_and_an_erasure(
    env: Env,
) {
    let env = Arc::new(env);
    let runner = env.start().await;
    env.create_many(0..40).await;
    let specials = create_specials(&env).await;
    let head = env.head().await;
    assert!(runner.wait_for(head, WAIT).await);
    let rm = runner.read_models();
    assert_search_matches_brute_force(rm, "created").await;
    assert_trigram_index_used(&env).await;

    // Updates move values in and out of the searchable text.
    let (zoe, _) = specials[2];
    env.rename(zoe, "Zoë Ünal-Sure_Name").await;
    let (layla, _) = specials[5];
    env.update(
        layla,
        CustomerChanges {
            email: Some(Some(Personal::Known(
                Email::parse("layla.new@example.org").unwrap(),
            ))),
            phone: Some(None),
            ..CustomerChanges::default()
        },
    )
    .await;
    env.set_status(specials[0].0, CustomerStatus::Contacted)
        .await;
    env.delete(specials[1].0).await;
    let head = env.head().await;
    assert!(runner.wait_for(head, WAIT).await);
    assert_search_matches_brute_force(rm, "updated").await;

    runner.rebuild("customers", |_, _| {}).await.unwrap();
    assert_search_matches_brute_force(rm, "rebuilt").await;
    assert_trigram_index_used(&env).await;

    let pos = env.erase(layla).await;
    assert!(runner.wait_for(pos, WAIT).await);
    assert_search_matches_brute_force(rm, "erased").await;
    for old in ["layla", "mansour", "layla.new", "lm1234"] {
        let query = CustomerQuery {
            q: Some(old.into()),
            include_deleted: true,
            ..CustomerQuery::new(Visibility::All)
        };
        let (items, _) = rm.list_customers(&query, 1, 50).await.unwrap();
        assert!(items.iter().all(|r| r.id != layla.as_uuid()), "{old}");
    }
    runner.rebuild("customers", |_, _| {}).await.unwrap();
    assert_search_matches_brute_force(rm, "erased and rebuilt").await;
    assert_trigram_index_used(&env).await;
}

/// Starts a runner on read models opened without `pg_trgm`, as on a server lacking it.
fn spawn_on(env: &Env, rm: ReadModels) -> RunnerHandle {
    ProjectionRunner::spawn(
        rm,
        Arc::clone(&env.stores.log),
        Arc::clone(&env.codec),
        env.appender.subscribe_head(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_without_pg_trgm_searches_by_scan_with_the_same_results() {
    let env = Arc::new(Env::postgres().await);
    let pool = env.pool.clone().unwrap();
    let rm = ReadModels::open_postgres_without_trigram(pool.clone())
        .await
        .unwrap();
    let runner = spawn_on(&env, rm);
    env.create_many(0..30).await;
    create_specials(&env).await;
    env.create(&sample_customer(99)).await;
    let head = env.head().await;
    assert!(runner.wait_for(head, WAIT).await);
    let rm = runner.read_models();
    assert_search_matches_brute_force(rm, "scan").await;
    runner.rebuild("customers", |_, _| {}).await.unwrap();
    assert_search_matches_brute_force(rm, "scan, rebuilt").await;
    // No trigram index was made on either the first table or the rebuilt one.
    let conn = pool.get().await.unwrap();
    let n: i64 = conn
        .query_one(
            "SELECT count(*) FROM pg_indexes \
             WHERE schemaname = 'crm' AND indexdef LIKE '%gin_trgm_ops%'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 0);
}

/// A read store built before the index (SQLite: no `customers_fts`; PostgreSQL: no trigram
/// index) gains it when opened, filled from the rows already there, so search works before
/// the version bump's rebuild has run.
async fn a_store_from_before_the_index_gains_it_on_open_and_finds_the_same_customers(env: Env) {
    let env = Arc::new(env);
    let runner = env.start().await;
    env.create_many(0..20).await;
    create_specials(&env).await;
    let head = env.head().await;
    assert!(runner.wait_for(head, WAIT).await);
    runner.shutdown().await;
    drop(runner);
    match &env.pool {
        Some(pool) => {
            let conn = pool.get().await.unwrap();
            conn.batch_execute("DROP INDEX crm.customers_search_idx")
                .await
                .unwrap();
        }
        None => {
            let conn = rusqlite::Connection::open(env.data_dir.join("read.db")).unwrap();
            conn.execute_batch("DROP TABLE customers_fts").unwrap();
        }
    }
    let rm = env.read_models().await;
    assert_trigram_index_used(&env).await;
    assert_search_matches_brute_force(&rm, "reopened").await;
}
