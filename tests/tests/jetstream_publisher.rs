//! The log published to NATS JetStream (api/src/bus), against real servers: every test runs
//! a nats-server of its own (`/usr/sbin/nats-server -js` on a free port, store in a temp
//! dir), never the shared one on 4222. Tests never skip: without the binary they fail.

mod support;

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use async_nats::jetstream;
use egec_api::bus::BusMessage;
use egec_commands::store::RecordedEvent;
use egec_domain::Role;
use reqwest::StatusCode;
use serde_json::json;
use support::own_server::OwnServer;
use support::{Backend, TestApp};

/// One message of the stream.
struct Stored {
    subject: String,
    msg_id: String,
    raw: Vec<u8>,
    body: BusMessage,
}

/// Every message in the stream, in stream order.
async fn stream_contents(url: &str, stream: &str) -> Vec<Stored> {
    let client = async_nats::connect(url).await.expect("connect to NATS");
    let js = jetstream::new(client);
    let s = js.get_stream(stream).await.expect("stream exists");
    let info = s.get_info().await.expect("stream info");
    let mut out = Vec::new();
    if info.state.messages == 0 {
        return out;
    }
    for seq in info.state.first_sequence..=info.state.last_sequence {
        let m = s.get_raw_message(seq).await.expect("message");
        let msg_id = m
            .headers
            .get("Nats-Msg-Id")
            .map(|v| v.as_str().to_owned())
            .unwrap_or_default();
        let mut raw = m.payload.to_vec();
        for (name, values) in m.headers.iter() {
            raw.extend_from_slice(name.to_string().as_bytes());
            for v in values {
                raw.extend_from_slice(v.as_str().as_bytes());
            }
        }
        out.push(Stored {
            subject: m.subject.to_string(),
            msg_id,
            body: serde_json::from_slice(&m.payload).expect("a log record"),
            raw,
        });
    }
    out
}

async fn whole_log(app: &TestApp) -> Vec<RecordedEvent> {
    app.running
        .state
        .log
        .read_all(0, 1_000_000)
        .await
        .expect("read log")
}

/// Waits until the stream holds the log's last event.
async fn wait_published(app: &TestApp, url: &str, stream: &str, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let head = app.running.state.log.head().await.expect("head").position;
        let client = async_nats::connect(url).await.expect("connect");
        let js = jetstream::new(client);
        if let Ok(s) = js.get_stream(stream).await
            && let Ok(info) = s.get_info().await
            && info.state.messages > 0
            && let Ok(m) = s.get_raw_message(info.state.last_sequence).await
            && serde_json::from_slice::<BusMessage>(&m.payload)
                .map(|b| b.position >= head)
                .unwrap_or(false)
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the stream did not reach position {head} in time"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The stream holds every event of the log exactly once by id, in position order, under
/// its subject, with `Nats-Msg-Id` = the event id.
fn assert_exactly_once_in_order(log: &[RecordedEvent], stored: &[Stored]) {
    let mut seen = HashSet::new();
    for s in stored {
        assert!(seen.insert(s.msg_id.clone()), "{} stored twice", s.msg_id);
        assert_eq!(s.msg_id, s.body.event_id.to_string());
    }
    let ids: Vec<_> = stored.iter().map(|s| s.body.event_id).collect();
    let expected: Vec<_> = log.iter().map(|e| e.event_id).collect();
    assert_eq!(ids.len(), expected.len(), "stream and log differ in length");
    assert_eq!(ids, expected, "stream order differs from log order");
    for (s, e) in stored.iter().zip(log) {
        assert_eq!(s.body.position, e.global_position);
        assert_eq!(s.body.payload, e.payload, "payload published as stored");
        assert_eq!(
            s.subject,
            format!(
                "egec.events.{}.{}",
                e.stream_id.split('-').next().unwrap(),
                e.event_type
            )
        );
    }
}

fn customer(i: usize, tag: &str) -> serde_json::Value {
    json!({
        "name": format!("Probe Person {i}"),
        "email": format!("probe-{tag}-{i}@plaintext-probe.example"),
        "phone": format!("020 7946 0{:03}", i % 1000),
        "passport_number": format!("PZ{:07}", 1_000_000 + i),
        "country": "Germany",
        "source": "website",
    })
}

async fn create_customer(
    client: &reqwest::Client,
    base: &str,
    token: &str,
    body: &serde_json::Value,
) -> Result<(), String> {
    let r = client
        .post(format!("{base}/api/customers"))
        .bearer_auth(token)
        .json(body)
        .send()
        .await
        .map_err(|e| e.to_string())?;
    if r.status() == StatusCode::CREATED || r.status() == StatusCode::OK {
        Ok(())
    } else {
        Err(format!(
            "{}: {}",
            r.status(),
            r.text().await.unwrap_or_default()
        ))
    }
}

fn publisher(app: &support::TestApp2) -> &egec_api::bus::Handle {
    app.running.publisher.as_ref().expect("publisher running")
}

async fn until(what: &str, within: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn server_dedupes_before_it_checks_the_expected_last_id() {
    let nats = OwnServer::nats_jetstream();
    let js = jetstream::new(async_nats::connect(nats.url("nats")).await.unwrap());
    let settings = egec_api::bus::Settings::default();
    egec_api::bus::publisher::ensure_stream(&js, &settings)
        .await
        .unwrap();
    let publish = |id: &str, expect: Option<&str>| {
        let mut m = jetstream::message::PublishMessage::build()
            .payload("x".into())
            .message_id(id);
        if let Some(e) = expect {
            m = m.expected_last_message_id(e);
        }
        let js = js.clone();
        async move { js.send_publish("egec.events.t.T", m).await?.await }
    };
    assert!(!publish("a", None).await.unwrap().duplicate);
    assert!(!publish("b", Some("a")).await.unwrap().duplicate);
    // A re-publish of a stored id is a duplicate ack, with or without a (stale) expected-last
    // header: the id check comes first, so resending from an old checkpoint is harmless.
    assert!(publish("a", None).await.unwrap().duplicate);
    assert!(publish("b", Some("a")).await.unwrap().duplicate);
    assert!(publish("a", Some("zzz")).await.unwrap().duplicate);
    // A new id whose predecessor is not the stream's last message is refused.
    let err = publish("c", Some("a")).await.unwrap_err();
    assert_eq!(
        err.kind(),
        async_nats::jetstream::context::PublishErrorKind::WrongLastMessageId
    );
    assert!(!publish("c", Some("b")).await.unwrap().duplicate);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_leader_node_dies_mid_load_and_the_other_takes_over_without_loss_or_reordering() {
    let nats = OwnServer::nats_jetstream();
    let url = nats.url("nats");
    let a = TestApp::spawn_with(Backend::Postgres, &[("NATS_URL", url.as_str())]).await;
    let (b, _b_dir) = a.second_node().await;
    let a_pub = a.running.publisher.as_ref().expect("publisher");
    until("a leader", Duration::from_secs(10), || {
        a_pub.status().is_leading() || publisher(&b).status().is_leading()
    })
    .await;
    let a_leads = a_pub.status().is_leading();
    assert!(
        !(a_leads && publisher(&b).status().is_leading()),
        "two leaders"
    );
    let (_, token) = a.as_role(Role::Admin).await;

    let killed = Arc::new(AtomicBool::new(false));
    let created = Arc::new(AtomicUsize::new(0));
    let (leader_base, survivor_base) = if a_leads {
        (a.base.clone(), b.base.clone())
    } else {
        (b.base.clone(), a.base.clone())
    };
    let total = 240;
    let mut load = Vec::new();
    for w in 0..6 {
        let (killed, created, token) = (killed.clone(), created.clone(), token.clone());
        let (leader_base, survivor_base) = (leader_base.clone(), survivor_base.clone());
        load.push(tokio::spawn(async move {
            let client = reqwest::Client::new();
            for i in (w..total).step_by(6) {
                let body = customer(i, "failover");
                let on_leader = i % 2 == 0 && !killed.load(Ordering::Acquire);
                let base = if on_leader {
                    &leader_base
                } else {
                    &survivor_base
                };
                if create_customer(&client, base, &token, &body).await.is_err() {
                    // The leader died under this request: send it to the survivor.
                    create_customer(&client, &survivor_base, &token, &body)
                        .await
                        .expect("the survivor accepts writes");
                }
                created.fetch_add(1, Ordering::AcqRel);
            }
        }));
    }
    // Kill the leader once it has published part of the load, while the load goes on.
    let (leader_pub, leader_task, survivor_pub) = if a_leads {
        (a_pub, &a.running.task, publisher(&b))
    } else {
        (publisher(&b), &b.running.task, a_pub)
    };
    until(
        "the leader to publish part of the load",
        Duration::from_secs(60),
        || created.load(Ordering::Acquire) >= total / 3 && leader_pub.status().position() > 0,
    )
    .await;
    killed.store(true, Ordering::Release);
    leader_pub.abort();
    leader_task.abort();
    until("the survivor to take over", Duration::from_secs(10), || {
        survivor_pub.status().is_leading()
    })
    .await;
    for l in load {
        l.await.expect("load");
    }
    assert_eq!(created.load(Ordering::Acquire), total);

    wait_published(&a, &url, "EGEC_EVENTS", Duration::from_secs(60)).await;
    let log = whole_log(&a).await;
    let stored = stream_contents(&url, "EGEC_EVENTS").await;
    assert_exactly_once_in_order(&log, &stored);
    assert!(log.len() > total, "the load is in the log");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nats_stopped_and_started_again_mid_load_loses_nothing_and_keeps_order() {
    let mut nats = OwnServer::nats_jetstream();
    let url = nats.url("nats");
    let app = TestApp::spawn_with(Backend::Sqlite, &[("NATS_URL", url.as_str())]).await;
    let (_, token) = app.as_role(Role::Admin).await;
    let created = Arc::new(AtomicUsize::new(0));
    let total = 150;
    let mut load = Vec::new();
    for w in 0..4 {
        let (created, token, base) = (created.clone(), token.clone(), app.base.clone());
        load.push(tokio::spawn(async move {
            let client = reqwest::Client::new();
            for i in (w..total).step_by(4) {
                create_customer(&client, &base, &token, &customer(i, "outage"))
                    .await
                    .expect("writes go on while NATS is down");
                created.fetch_add(1, Ordering::AcqRel);
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }));
    }
    let pub_status = app.running.publisher.as_ref().unwrap().status();
    until(
        "part of the load published",
        Duration::from_secs(60),
        || created.load(Ordering::Acquire) >= total / 4 && pub_status.position() > 0,
    )
    .await;
    let errors_before = pub_status.errors();
    nats.stop();
    let at_stop = pub_status.position();
    // Writes go on while NATS is down.
    for l in load {
        l.await.expect("load");
    }
    assert_eq!(created.load(Ordering::Acquire), total);
    // Readiness does not depend on NATS: ready once the projections caught up.
    let deadline = Instant::now() + Duration::from_secs(30);
    while app.get("/readyz", None).await.status() != StatusCode::OK {
        assert!(Instant::now() < deadline, "not ready while NATS is down");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The outage is counted (an ack times out after 5 s, then reconnects fail).
    until("the outage to be counted", Duration::from_secs(30), || {
        pub_status.errors() > errors_before
    })
    .await;
    let metrics = app.get("/metrics", None).await.text().await.unwrap();
    for name in [
        "egec_publisher_errors_total",
        "egec_publisher_position",
        "egec_publisher_lag_events",
    ] {
        assert!(metrics.contains(name), "{name} missing: {metrics}");
    }
    assert!(
        whole_log(&app).await.last().unwrap().global_position > pub_status.position(),
        "events wait for NATS"
    );
    nats.restart();
    wait_published(&app, &url, "EGEC_EVENTS", Duration::from_secs(60)).await;
    let log = whole_log(&app).await;
    let head = log.last().unwrap().global_position;
    assert!(head > at_stop);
    until(
        "the checkpoint to catch up",
        Duration::from_secs(10),
        || pub_status.position() == head,
    )
    .await;
    let stored = stream_contents(&url, "EGEC_EVENTS").await;
    assert_exactly_once_in_order(&log, &stored);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_message_on_the_bus_carries_a_customers_plaintext_email_phone_or_passport() {
    let nats = OwnServer::nats_jetstream();
    let url = nats.url("nats");
    let app = TestApp::spawn_with(Backend::Postgres, &[("NATS_URL", url.as_str())]).await;
    let (_, token) = app.as_role(Role::Admin).await;
    let client = reqwest::Client::new();
    let mut secrets = Vec::new();
    for i in 0..5 {
        let body = customer(700 + i, "secret");
        create_customer(&client, &app.base, &token, &body)
            .await
            .unwrap();
        let email = body["email"].as_str().unwrap().to_owned();
        let passport = body["passport_number"].as_str().unwrap().to_owned();
        let local = format!("2079460{:03}", 700 + i);
        secrets.push(email.clone());
        secrets.push(email.to_lowercase());
        secrets.push(email.split('@').next().unwrap().to_owned());
        secrets.push(passport.clone());
        secrets.push(passport[2..].to_owned());
        secrets.push(local);
    }
    wait_published(&app, &url, "EGEC_EVENTS", Duration::from_secs(30)).await;
    let stored = stream_contents(&url, "EGEC_EVENTS").await;
    assert!(
        stored
            .iter()
            .filter(|s| s.body.event_type == "CustomerCreated")
            .count()
            >= 5,
        "the customers' events are on the bus"
    );
    for s in &stored {
        let text = String::from_utf8_lossy(&s.raw);
        for secret in &secrets {
            assert!(
                !text.contains(secret.as_str()),
                "plaintext {secret:?} on the bus in {}",
                s.subject
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_new_leader_resumes_from_the_checkpoint_and_never_republishes_what_is_stored() {
    let nats = OwnServer::nats_jetstream();
    let url = nats.url("nats");
    // A one-second duplicate window: a re-publish of old events after it would be stored
    // twice (or refused), so only resuming from the checkpoint passes.
    let env = [
        ("NATS_URL", url.as_str()),
        ("EGEC_NATS_DUPLICATE_WINDOW_SECONDS", "1"),
    ];
    let a = TestApp::spawn_with(Backend::Postgres, &env).await;
    let (_, token) = a.as_role(Role::Admin).await;
    let client = reqwest::Client::new();
    for i in 0..20 {
        create_customer(&client, &a.base, &token, &customer(i, "resume"))
            .await
            .unwrap();
    }
    wait_published(&a, &url, "EGEC_EVENTS", Duration::from_secs(30)).await;
    let a_pub = a.running.publisher.as_ref().unwrap();
    until(
        "the checkpoint to be committed",
        Duration::from_secs(10),
        || a_pub.status().position() > 0,
    )
    .await;
    a_pub.abort();
    // As if the publisher died between the acks and the checkpoint commit.
    let (pg, conn) =
        tokio_postgres::connect(a.database_url.as_deref().unwrap(), tokio_postgres::NoTls)
            .await
            .unwrap();
    tokio::spawn(conn);
    let moved = pg
        .execute(
            "UPDATE egec.bus_checkpoints SET position = position - 7",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(moved, 1);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    for i in 20..30 {
        create_customer(&client, &a.base, &token, &customer(i, "resume"))
            .await
            .unwrap();
    }
    let (b, _dir) = a.second_node().await;
    until("the new node to lead", Duration::from_secs(10), || {
        publisher(&b).status().is_leading()
    })
    .await;
    wait_published(&a, &url, "EGEC_EVENTS", Duration::from_secs(30)).await;
    let log = whole_log(&a).await;
    let stored = stream_contents(&url, "EGEC_EVENTS").await;
    assert_exactly_once_in_order(&log, &stored);
    let client = async_nats::connect(&url).await.unwrap();
    let info = jetstream::new(client)
        .get_stream("EGEC_EVENTS")
        .await
        .unwrap()
        .get_info()
        .await
        .unwrap();
    assert_eq!(info.state.last_sequence, log.len() as u64);
    let head = log.last().unwrap().global_position;
    until("the new node's checkpoint", Duration::from_secs(10), || {
        publisher(&b).status().position() == head
    })
    .await;
    let cp: i64 = pg
        .query_one("SELECT position FROM egec.bus_checkpoints", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(cp, head);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_whose_lock_connection_dies_stops_publishing_until_it_leads_again() {
    let nats = OwnServer::nats_jetstream();
    let url = nats.url("nats");
    let a = TestApp::spawn_with(Backend::Postgres, &[("NATS_URL", url.as_str())]).await;
    let status = a.running.publisher.as_ref().unwrap().status();
    until("the node to lead", Duration::from_secs(10), || {
        status.is_leading()
    })
    .await;
    let (pg, conn) =
        tokio_postgres::connect(a.database_url.as_deref().unwrap(), tokio_postgres::NoTls)
            .await
            .unwrap();
    tokio::spawn(conn);
    let killed: bool = pg
        .query_one(
            "SELECT pg_terminate_backend(pid) FROM pg_locks \
             WHERE locktype = 'advisory' AND classid = 1162298691 AND objid = 1112866817 \
             AND granted AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(killed, "the lock holder's connection was found");
    until(
        "the node to give up the lead",
        Duration::from_secs(10),
        || !status.is_leading(),
    )
    .await;
    // It takes the free lock again and goes on publishing.
    until("the node to lead again", Duration::from_secs(10), || {
        status.is_leading()
    })
    .await;
    let (_, token) = a.as_role(Role::Admin).await;
    create_customer(
        &reqwest::Client::new(),
        &a.base,
        &token,
        &customer(1, "lock"),
    )
    .await
    .unwrap();
    wait_published(&a, &url, "EGEC_EVENTS", Duration::from_secs(30)).await;
    assert_exactly_once_in_order(
        &whole_log(&a).await,
        &stream_contents(&url, "EGEC_EVENTS").await,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_durable_consumer_reads_the_stream_in_log_order() {
    use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, PullConsumer, pull};
    use futures::StreamExt;
    let nats = OwnServer::nats_jetstream();
    let url = nats.url("nats");
    let app = TestApp::spawn_with(Backend::Sqlite, &[("NATS_URL", url.as_str())]).await;
    let (_, token) = app.as_role(Role::Admin).await;
    let client = reqwest::Client::new();
    for i in 0..10 {
        create_customer(&client, &app.base, &token, &customer(i, "consumer"))
            .await
            .unwrap();
    }
    wait_published(&app, &url, "EGEC_EVENTS", Duration::from_secs(30)).await;
    // The consumer of docs/integration.md.
    let js = jetstream::new(async_nats::connect(&url).await.unwrap());
    let stream = js.get_stream("EGEC_EVENTS").await.unwrap();
    let consumer: PullConsumer = stream
        .get_or_create_consumer(
            "crm-to-warehouse",
            pull::Config {
                durable_name: Some("crm-to-warehouse".into()),
                filter_subject: "egec.events.customer.>".into(),
                deliver_policy: DeliverPolicy::All,
                ack_policy: AckPolicy::Explicit,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let expected: Vec<i64> = whole_log(&app)
        .await
        .iter()
        .filter(|e| e.stream_id.starts_with("customer-"))
        .map(|e| e.global_position)
        .collect();
    assert!(expected.len() >= 10);
    let mut messages = consumer.messages().await.unwrap();
    let mut got = Vec::new();
    while got.len() < expected.len() {
        let message = tokio::time::timeout(Duration::from_secs(10), messages.next())
            .await
            .expect("a message in time")
            .expect("stream open")
            .expect("message");
        let record: BusMessage = serde_json::from_slice(&message.payload).unwrap();
        got.push(record.position);
        message.ack().await.unwrap();
    }
    assert_eq!(got, expected);
}
