//! `--publisher`: events per second from the log to JetStream acks, for the log publisher
//! (`egec_api::bus`: log reads, pipelined publish with `Nats-Msg-Id` and
//! `Nats-Expected-Last-Msg-Id`, checkpoint commits), and beside it in the same run a bare
//! async-nats JetStream publish loop sending the same message bodies (with `Nats-Msg-Id`)
//! in windows of the same size, with no log and no checkpoint.
//!
//! The publisher runs twice, once per backend: on a SQLite log in a temp dir, and on a
//! PostgreSQL log in a fresh database created through the admin URL and dropped afterwards
//! (unless `--skip-postgres`). Both logs are seeded with the same customer-sized events (a
//! kilobyte of JSON with ciphertext-like fields). Each run publishes into a stream of its own
//! on the NATS server at `--nats-url`, deleted afterwards.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use async_nats::jetstream;
use egec_api::bus::{Settings, lease::Leadership};
use egec_commands::store::postgres::PgLog;
use egec_commands::store::sqlite::SqliteLog;
use egec_commands::store::{AppendRequest, EventLog, ExpectedVersion, NewEvent, RecordedEvent};
use uuid::Uuid;

use crate::setup::PgDatabase;

/// Messages published before the acks are awaited (the publisher's batch size).
const WINDOW: usize = 512;

/// Connections of the PostgreSQL log's pool: the server's default (`EGEC_DB_POOL_SIZE`).
const PG_POOL: usize = 16;

/// Which measurement a row is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The real publisher reading a SQLite log.
    Sqlite,
    /// The real publisher reading a PostgreSQL log.
    Postgres,
    /// The bare async-nats loop, the reference both are compared with.
    Bare,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Sqlite => "publisher, SQLite log (log → ack → checkpoint)",
            Kind::Postgres => "publisher, PostgreSQL log (log → ack → checkpoint)",
            Kind::Bare => "bare async-nats JetStream publish loop",
        }
    }

    fn key(self) -> &'static str {
        match self {
            Kind::Sqlite => "sqlite",
            Kind::Postgres => "postgres",
            Kind::Bare => "bare",
        }
    }
}

pub struct Row {
    pub kind: Kind,
    pub events: usize,
    pub seconds: f64,
    /// This row's rate over the bare loop's in the same run (`None` for the bare loop).
    pub vs_bare: Option<f64>,
}

impl Row {
    pub fn per_second(&self) -> f64 {
        self.events as f64 / self.seconds
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "name": self.kind.name(),
            "log": self.kind.key(),
            "events": self.events,
            "seconds": self.seconds,
            "per_second": self.per_second().round(),
            "vs_bare": self.vs_bare.map(|r| (r * 1000.0).round() / 1000.0),
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

async fn seed(log: &dyn EventLog, events: usize) -> anyhow::Result<()> {
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

/// The real publisher from an empty checkpoint to the last event acked and committed; the
/// stream it published into is deleted afterwards.
async fn publisher(
    nats_url: &str,
    js: &jetstream::Context,
    log: Arc<dyn EventLog>,
    leadership: Leadership,
    events: usize,
) -> anyhow::Result<f64> {
    let tag = Uuid::now_v7().simple().to_string();
    let s = settings(&tag);
    let (_head_tx, head) = tokio::sync::watch::channel(events as i64);
    let start = Instant::now();
    let handle = egec_api::bus::spawn(nats_url.to_owned(), s.clone(), log, leadership, head);
    let deadline = start + Duration::from_secs(600);
    let outcome = loop {
        if handle.status().position() >= events as i64 {
            break Ok(start.elapsed().as_secs_f64());
        }
        if Instant::now() >= deadline {
            break Err(anyhow::anyhow!(
                "the publisher did not finish within 600 s ({} errors)",
                handle.status().errors()
            ));
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    };
    drop(handle);
    let _ = js.delete_stream(&s.stream).await;
    outcome
}

/// The bare loop: the same bodies, prepared beforehand, in windows of the same size.
async fn bare_loop(js: &jetstream::Context, records: &[RecordedEvent]) -> anyhow::Result<f64> {
    let tag = Uuid::now_v7().simple().to_string();
    let s = settings(&tag);
    egec_api::bus::publisher::ensure_stream(js, &s).await?;
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
    let sent = async {
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
        anyhow::Ok(())
    }
    .await;
    let seconds = start.elapsed().as_secs_f64();
    let _ = js.delete_stream(&s.stream).await;
    sent.map(|()| seconds)
}

/// What the PostgreSQL leg needs: the admin URL to create its database from.
pub struct Backends<'a> {
    pub sqlite: bool,
    pub pg_admin_url: Option<&'a str>,
}

pub async fn run(
    nats_url: &str,
    events: usize,
    backends: Backends<'_>,
) -> anyhow::Result<Vec<Row>> {
    anyhow::ensure!(
        backends.sqlite || backends.pg_admin_url.is_some(),
        "--publisher needs at least one of the two logs (both are skipped)"
    );
    let js = jetstream::new(
        async_nats::connect(nats_url)
            .await
            .with_context(|| format!("connecting to {nats_url}"))?,
    );
    let mut rows = Vec::new();
    // The bare loop sends the bodies of whichever log was seeded first; both logs hold the
    // same payloads, so their bodies differ only in ids and positions.
    let mut records: Option<Vec<RecordedEvent>> = None;

    if backends.sqlite {
        eprintln!("publisher: seeding a SQLite log with {events} events ...");
        let dir = tempfile::tempdir()?;
        let log = SqliteLog::open_async(dir.path()).await?;
        seed(&log, events).await.context("seeding the SQLite log")?;
        let path = log.path().to_path_buf();
        let log: Arc<dyn EventLog> = Arc::new(log);
        eprintln!("publisher: publishing from the SQLite log ...");
        let seconds = publisher(nats_url, &js, log.clone(), Leadership::Sqlite(path), events)
            .await
            .context("publisher on SQLite")?;
        rows.push(Row {
            kind: Kind::Sqlite,
            events,
            seconds,
            vs_bare: None,
        });
        records = Some(log.read_all(0, events).await?);
    }

    if let Some(admin_url) = backends.pg_admin_url {
        let db = PgDatabase::create(admin_url, "publisher").await?;
        // The database is dropped whatever the measurement answered.
        let measured = async {
            eprintln!("publisher: seeding a PostgreSQL log with {events} events ...");
            let pg = PgLog::connect(&db.url, PG_POOL)
                .await
                .context("opening the PostgreSQL log")?;
            let pool = pg.pool();
            let log: Arc<dyn EventLog> = Arc::new(pg);
            seed(log.as_ref(), events)
                .await
                .context("seeding the PostgreSQL log")?;
            // Fresh statistics, as autovacuum would have them on a log that has been
            // growing for a while, so the publisher's reads are planned on real row counts.
            pool.get()
                .await?
                .batch_execute("ANALYZE egec.events")
                .await?;
            eprintln!("publisher: publishing from the PostgreSQL log ...");
            let seconds = publisher(
                nats_url,
                &js,
                log.clone(),
                Leadership::Postgres(pool),
                events,
            )
            .await
            .context("publisher on PostgreSQL")?;
            let read = if records.is_none() {
                Some(log.read_all(0, events).await?)
            } else {
                None
            };
            anyhow::Ok((seconds, read))
        }
        .await;
        let dropped = db.drop_now().await;
        let (seconds, read) = measured?;
        dropped?;
        rows.push(Row {
            kind: Kind::Postgres,
            events,
            seconds,
            vs_bare: None,
        });
        if records.is_none() {
            records = read;
        }
    }

    let records = records.context("no log was read")?;
    eprintln!("publisher: bare loop ...");
    let seconds = bare_loop(&js, &records).await.context("bare loop")?;
    let bare = events as f64 / seconds;
    for r in &mut rows {
        r.vs_bare = Some(r.per_second() / bare);
    }
    rows.push(Row {
        kind: Kind::Bare,
        events,
        seconds,
        vs_bare: None,
    });
    Ok(rows)
}

pub fn print(rows: &[Row]) {
    println!();
    println!("== Log publisher to NATS JetStream, same server, same run ==");
    for r in rows {
        println!(
            "{:<52} {:>8} events in {:>7.3} s = {:>9.0} events/s{}",
            r.kind.name(),
            r.events,
            r.seconds,
            r.per_second(),
            r.vs_bare
                .map_or(String::new(), |x| format!("  = {x:.2}x the bare loop"))
        );
    }
}
