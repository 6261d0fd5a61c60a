//! `--publisher`: events per second from the log to JetStream acks, for the log publisher
//! (`egec_api::bus`: log reads, pipelined publish with `Nats-Msg-Id` and
//! `Nats-Expected-Last-Msg-Id`, checkpoint commits), and beside it in the same run a bare
//! async-nats JetStream publish loop sending the same message bodies (with `Nats-Msg-Id`)
//! in windows of the same size, with no log and no checkpoint.
//!
//! The log is a SQLite log in a temp dir seeded with customer-sized events (a kilobyte of
//! JSON with ciphertext-like fields). Each run publishes into a stream of its own on the
//! NATS server at `--nats-url`, deleted afterwards.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use async_nats::jetstream;
use egec_api::bus::{Settings, lease::Leadership};
use egec_commands::store::{AppendRequest, EventLog, ExpectedVersion, NewEvent, sqlite::SqliteLog};
use uuid::Uuid;

/// Messages published before the acks are awaited (the publisher's batch size).
const WINDOW: usize = 512;

pub struct Row {
    pub name: &'static str,
    pub events: usize,
    pub seconds: f64,
}

impl Row {
    pub fn per_second(&self) -> f64 {
        self.events as f64 / self.seconds
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "name": self.name,
            "events": self.events,
            "seconds": self.seconds,
            "per_second": self.per_second().round(),
        })
    }
}

fn payload(i: usize) -> serde_json::Value {
    let fake = |n: usize| "A".repeat(n);
    serde_json::json!({
        "facts": {
            "customer_id": Uuid::now_v7(),
            "status": "new",
            "country": "DE",
            "source": "website",
            "assigned_agent_ids": [],
            "index": i,
        },
        "personal": {
            "name": { "v": 1, "n": fake(16), "c": fake(40) },
            "email": { "v": 1, "n": fake(16), "c": fake(64) },
            "phone": { "v": 1, "n": fake(16), "c": fake(40) },
            "passport_number": { "v": 1, "n": fake(16), "c": fake(40) },
            "notes": { "v": 1, "n": fake(16), "c": fake(200) },
        }
    })
}

async fn seed(log: &SqliteLog, events: usize) -> anyhow::Result<()> {
    let mut done = 0;
    while done < events {
        let n = (events - done).min(1000);
        let batch = (0..n)
            .map(|k| {
                let id = Uuid::now_v7();
                AppendRequest::new(
                    format!("customer-{id}"),
                    ExpectedVersion::Exact(0),
                    Uuid::now_v7(),
                    vec![NewEvent {
                        event_id: Uuid::now_v7(),
                        event_type: "CustomerCreated".into(),
                        schema_version: 2,
                        payload: payload(done + k),
                        metadata: serde_json::json!({
                            "actor": Uuid::now_v7(),
                            "correlation_id": Uuid::now_v7(),
                            "ip": { "v": 1, "n": "A".repeat(16), "c": "A".repeat(32) },
                        }),
                    }],
                )
            })
            .collect();
        for r in log.append_batch(batch).await? {
            r.map_err(|c| anyhow::anyhow!("seed conflict: {c:?}"))?;
        }
        done += n;
    }
    Ok(())
}

fn settings(tag: &str) -> Settings {
    Settings {
        stream: format!("BENCH_{tag}"),
        subject_prefix: format!("bench.{tag}"),
        ..Settings::default()
    }
}

pub async fn run(nats_url: &str, events: usize) -> anyhow::Result<Vec<Row>> {
    let dir = tempfile::tempdir()?;
    let log = SqliteLog::open_async(dir.path()).await?;
    seed(&log, events).await.context("seeding the log")?;
    let path = log.path().to_path_buf();
    let log: Arc<dyn EventLog> = Arc::new(log);
    let js = jetstream::new(
        async_nats::connect(nats_url)
            .await
            .with_context(|| format!("connecting to {nats_url}"))?,
    );
    let mut rows = Vec::new();

    // The publisher, from an empty checkpoint to the last event acked and committed.
    let tag = Uuid::now_v7().simple().to_string();
    let s = settings(&tag);
    let (_head_tx, head) = tokio::sync::watch::channel(events as i64);
    let start = Instant::now();
    let handle = egec_api::bus::spawn(
        nats_url.to_owned(),
        s.clone(),
        log.clone(),
        Leadership::Sqlite(path),
        head,
    );
    let deadline = start + Duration::from_secs(600);
    while handle.status().position() < events as i64 {
        anyhow::ensure!(Instant::now() < deadline, "the publisher did not finish");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    rows.push(Row {
        name: "publisher (log → JetStream ack → checkpoint)",
        events,
        seconds: start.elapsed().as_secs_f64(),
    });
    drop(handle);
    let _ = js.delete_stream(&s.stream).await;

    // The bare loop: the same bodies, prepared beforehand, in windows of the same size.
    let tag = Uuid::now_v7().simple().to_string();
    let s = settings(&tag);
    egec_api::bus::publisher::ensure_stream(&js, &s).await?;
    let records = log.read_all(0, events).await?;
    let prepared: Vec<(String, String, Vec<u8>)> = records
        .iter()
        .map(|e| {
            (
                egec_api::bus::subject(&s.subject_prefix, e),
                e.event_id.to_string(),
                egec_api::bus::body(e),
            )
        })
        .collect();
    let start = Instant::now();
    let mut acks = Vec::with_capacity(WINDOW);
    for (subject, id, body) in prepared {
        let m = jetstream::message::PublishMessage::build()
            .payload(body.into())
            .message_id(id);
        acks.push(js.send_publish(subject, m).await?);
        if acks.len() == WINDOW {
            for ack in acks.drain(..) {
                ack.await?;
            }
        }
    }
    for ack in acks {
        ack.await?;
    }
    rows.push(Row {
        name: "bare async-nats JetStream publish loop",
        events,
        seconds: start.elapsed().as_secs_f64(),
    });
    let _ = js.delete_stream(&s.stream).await;
    Ok(rows)
}

pub fn print(rows: &[Row]) {
    for r in rows {
        println!(
            "{:<48} {:>8} events in {:>7.3} s = {:>9.0} events/s",
            r.name,
            r.events,
            r.seconds,
            r.per_second()
        );
    }
}
