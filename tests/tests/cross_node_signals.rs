//! Two nodes on one PostgreSQL, signalling each other over NATS (`NATS_URL`): a write on one
//! is read on the other at once, an erasure drops the key from the other's cache, a forced
//! logout is refused on the other's very next request; without NATS they poll and say so.
//!
//! The nodes poll only every 10 s here (`EGEC_PROJECTION_POLL_MS`), so a write answered
//! within a second on a node that does not lead the projections can only have been woken by a
//! signal. Each test uses its own signal subject, so tests running at once never hear each
//! other; the last one starts a NATS of its own to stop it.

mod support;

use egec_domain::Role;
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::time::{Duration, Instant};
use support::own_server::OwnServer;
use support::{Backend, TestApp, json_of};

const SHARED_NATS: &str = "nats://127.0.0.1:4222";

struct Node {
    base: String,
    client: reqwest::Client,
}

impl Node {
    async fn get(&self, path: &str, token: &str) -> reqwest::Response {
        self.client
            .get(format!("{}{path}", self.base))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
    }

    async fn post(&self, path: &str, token: &str, body: Value) -> reqwest::Response {
        self.client
            .post(format!("{}{path}", self.base))
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
            .unwrap()
    }

    async fn readyz(&self) -> Value {
        self.client
            .get(format!("{}/readyz", self.base))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }
}

/// Node A (the first, which takes the projections' leadership) and node B.
async fn two_nodes(nats_url: &str) -> (TestApp, Node, tempfile::TempDir) {
    let subject = format!("test.signals.{}", uuid::Uuid::now_v7().simple());
    let a = TestApp::spawn_with(
        Backend::Postgres,
        &[
            ("NATS_URL", nats_url),
            ("EGEC_SIGNALS_SUBJECT", &subject),
            ("EGEC_PROJECTION_POLL_MS", "10000"),
        ],
    )
    .await;
    let (b, dir) = a.second_node().await;
    let node = Node {
        base: b.base.clone(),
        client: reqwest::Client::new(),
    };
    // The second node serves for as long as the test runs.
    std::mem::forget(b);
    (a, node, dir)
}

async fn until(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{what} did not happen within 5 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_write_on_the_node_that_does_not_lead_is_answered_and_read_on_the_other_at_once() {
    let (a, b, _dir) = two_nodes(SHARED_NATS).await;
    let (_, admin) = a.as_role(Role::Admin).await;
    until("both nodes signal over NATS", async || {
        a.get("/readyz", None).await.status() == StatusCode::OK
            && json_of(a.get("/readyz", None).await).await["signals"] == "nats"
            && b.readyz().await["signals"] == "nats"
    })
    .await;
    for i in 0..5 {
        let started = Instant::now();
        let r = b
            .post(
                "/api/customers",
                &admin,
                json!({ "name": format!("Written On B {i}") }),
            )
            .await;
        assert_eq!(r.status(), StatusCode::CREATED);
        let id = json_of(r).await["id"].as_str().unwrap().to_owned();
        // B waited for A (the projections' leader) to apply its write: woken by A's signal,
        // not by its 10 s poll.
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "a write on B took {:?}",
            started.elapsed()
        );
        let on_a = a.get(&format!("/api/customers/{id}"), Some(&admin)).await;
        assert_eq!(
            on_a.status(),
            StatusCode::OK,
            "read-your-writes across nodes"
        );
        let on_b = b.get(&format!("/api/customers/{id}"), &admin).await;
        assert_eq!(on_b.status(), StatusCode::OK);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_erasure_on_one_node_drops_the_key_from_the_other_nodes_cache() {
    let (a, b, _dir) = two_nodes(SHARED_NATS).await;
    let (_, superadmin) = a.as_role(Role::Superadmin).await;
    until("node B signals over NATS", async || {
        b.readyz().await["signals"] == "nats"
    })
    .await;
    let r = a
        .post(
            "/api/customers",
            Some(&superadmin),
            json!({ "name": "Cached Elsewhere", "email": "cached.elsewhere@example.com" }),
        )
        .await;
    let id = json_of(r).await["id"].as_str().unwrap().to_owned();
    let then = chrono::Utc::now().to_rfc3339().replace('+', "%2B");
    // Time travel on B decrypts through B's key cache, which now holds the customer's key.
    let past = format!("/api/customers/{id}?as_of={then}");
    let before = json_of(b.get(&past, &superadmin).await).await;
    assert_eq!(before["name"], "Cached Elsewhere");

    let r = a
        .post(
            &format!("/api/gdpr/customers/{id}/erase"),
            Some(&superadmin),
            json!({ "reason": "erasure request" }),
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    until("node B drops the destroyed key", async || {
        json_of(b.get(&past, &superadmin).await).await["name"] == "[ERASED]"
    })
    .await;
    let after = json_of(b.get(&past, &superadmin).await).await;
    assert_eq!(after["email"], "[ERASED]");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_user_forced_out_on_one_node_is_refused_on_the_other_at_once() {
    let (a, b, _dir) = two_nodes(SHARED_NATS).await;
    let (_, admin) = a.as_role(Role::Admin).await;
    let (agent, agent_token) = a.as_role(Role::Agent).await;
    let r = b.get("/api/auth/me", &agent_token).await;
    assert_eq!(r.status(), StatusCode::OK);
    let r = a
        .post(
            &format!("/api/users/{agent}/force-logout"),
            Some(&admin),
            json!({}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let r = b.get("/api/auth/me", &agent_token).await;
    assert_eq!(
        r.status(),
        StatusCode::UNAUTHORIZED,
        "refused on the other node's very next request"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn while_nats_is_down_nodes_poll_and_say_so_and_signal_again_when_it_returns() {
    let mut nats = OwnServer::nats();
    let url = nats.url("nats");
    let subject = format!("test.signals.{}", uuid::Uuid::now_v7().simple());
    let a = TestApp::spawn_with(
        Backend::Postgres,
        &[
            ("NATS_URL", &url),
            ("EGEC_SIGNALS_SUBJECT", &subject),
            ("EGEC_PROJECTION_POLL_MS", "100"),
        ],
    )
    .await;
    let (_, admin) = a.as_role(Role::Admin).await;
    until("signals flow", async || {
        json_of(a.get("/readyz", None).await).await["signals"] == "nats"
    })
    .await;

    nats.stop();
    until("the node says it polls", async || {
        json_of(a.get("/readyz", None).await).await["signals"] == "polling (NATS unavailable)"
    })
    .await;
    // Still ready, and writes still work: polling covers what signals would have.
    until("the node is ready without the bus", async || {
        a.get("/readyz", None).await.status() == StatusCode::OK
    })
    .await;
    let r = a
        .post(
            "/api/customers",
            Some(&admin),
            json!({ "name": "During The Outage" }),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);

    nats.restart();
    until("signals flow again", async || {
        json_of(a.get("/readyz", None).await).await["signals"] == "nats"
    })
    .await;
    let metrics = a.get("/metrics", None).await.text().await.unwrap();
    assert!(metrics.contains("egec_signals_connected"), "{metrics}");
}
