//! Rate limits shared through Redis (`REDIS_URL`): two nodes on one PostgreSQL share every
//! budget; while Redis is down each node limits in memory (never a 500); once Redis answers
//! again the budgets are shared again.
//!
//! The first test uses the machine's Redis (127.0.0.1:6379, which `.ci/run` starts); the
//! second starts a Redis of its own on a free port, so stopping it disturbs no other test.
//! Each test gives its nodes a fresh `EGEC_REDIS_PREFIX`, so tests running at once never
//! share a budget.

mod support;

use reqwest::StatusCode;
use std::time::Duration;
use support::own_server::OwnServer;
use support::{Backend, TestApp};

const SHARED_REDIS: &str = "redis://127.0.0.1:6379";

/// Anonymous calls are charged to the client address under the `api` preset.
async fn anonymous_call(base: &str) -> StatusCode {
    reqwest::Client::new()
        .get(format!("{base}/api/customers"))
        .send()
        .await
        .expect("request")
        .status()
}

async fn two_nodes(redis_url: &str, per_minute: &str) -> (TestApp, String, tempfile::TempDir) {
    let prefix = format!("test-{}", uuid::Uuid::now_v7().simple());
    let a = TestApp::spawn_with(
        Backend::Postgres,
        &[
            ("REDIS_URL", redis_url),
            ("EGEC_REDIS_PREFIX", &prefix),
            ("EGEC_RATE_LIMIT_API_PER_MINUTE", per_minute),
        ],
    )
    .await;
    let (b, dir) = a.second_node().await;
    let b_base = b.base.clone();
    // The second node lives as long as the test holds its directory and `a`'s runtime.
    std::mem::forget(b);
    (a, b_base, dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_limit_exhausted_through_one_node_answers_429_on_the_other() {
    let (a, b, _dir) = two_nodes(SHARED_REDIS, "5").await;
    for i in 0..5 {
        assert_eq!(
            anonymous_call(&a.base).await,
            StatusCode::UNAUTHORIZED,
            "call {i} is within the budget"
        );
    }
    let r = reqwest::Client::new()
        .get(format!("{b}/api/customers"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        StatusCode::TOO_MANY_REQUESTS,
        "the budget spent on node A is spent on node B (is Redis running at {SHARED_REDIS}?)"
    );
    let retry: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=12).contains(&retry), "retry-after {retry}");
    assert_eq!(anonymous_call(&a.base).await, StatusCode::TOO_MANY_REQUESTS);

    // Nothing personal is stored in Redis: keys are digests under the deployment's prefix.
    let prefix = a.env["EGEC_REDIS_PREFIX"].clone();
    let client = redis::Client::open(SHARED_REDIS).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}:*"))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(!keys.is_empty());
    for k in &keys {
        assert!(k.starts_with(&format!("{prefix}:rl:api:")), "{k}");
        assert!(!k.contains("127.0.0.1") && !k.contains("ip:"), "{k}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_redis_down_requests_are_limited_in_memory_without_errors_and_shared_again_when_it_returns()
 {
    let mut redis = OwnServer::redis();
    let (a, b, _dir) = two_nodes(&redis.url("redis"), "4").await;
    let (_, superadmin) = a.as_role(egec_domain::Role::Superadmin).await;
    let backend = async || -> String {
        let r = a.get("/api/admin/rate-limits", Some(&superadmin)).await;
        assert_eq!(r.status(), StatusCode::OK);
        support::json_of(r).await["backend"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    assert_eq!(backend().await, "redis");

    redis.stop();
    // Node A now limits in memory: its own budget of 4, then 429; never a 500.
    let mut statuses = Vec::new();
    for _ in 0..6 {
        statuses.push(anonymous_call(&a.base).await);
    }
    assert_eq!(
        statuses,
        [
            StatusCode::UNAUTHORIZED,
            StatusCode::UNAUTHORIZED,
            StatusCode::UNAUTHORIZED,
            StatusCode::UNAUTHORIZED,
            StatusCode::TOO_MANY_REQUESTS,
            StatusCode::TOO_MANY_REQUESTS
        ]
    );
    assert_eq!(backend().await, "memory (Redis unavailable)");
    // Node B has its own memory budget meanwhile: limits are per node until Redis returns.
    assert_eq!(anonymous_call(&b).await, StatusCode::UNAUTHORIZED);

    redis.restart();
    // Redis is tried again a second after the last failure; then budgets are shared again
    // (the restarted Redis is empty, so the shared budget is whole).
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    let mut back = false;
    // Few polls: the superadmin's own calls are limited too (4 x 4 a minute).
    for _ in 0..8 {
        if backend().await == "redis" {
            back = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    assert!(back, "checks went back to Redis");
    for _ in 0..4 {
        assert_eq!(anonymous_call(&b).await, StatusCode::UNAUTHORIZED);
    }
    assert_eq!(
        anonymous_call(&a.base).await,
        StatusCode::TOO_MANY_REQUESTS,
        "the budget spent on B is spent on A again"
    );
}
