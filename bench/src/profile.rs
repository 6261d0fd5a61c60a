//! Where a command's time goes: each stage of the write path measured alone, at the same
//! concurrency and on the same store as the command runs.
//!
//! A create command is: load the (new) stream, fetch or create the subject's key, encrypt,
//! append through the appender. Timing each stage by itself shows which one sets the pace,
//! without instrumenting the command handler.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::Utc;
use egec_commands::codec::Codec;
use egec_commands::store::{AppendRequest, ExpectedVersion, NewEvent, ReadBound, RecordedEvent};
use egec_domain::CustomerId;
use egec_domain::aggregate::CustomerAggregate;
use egec_domain::customer::CustomerCommand;
use egec_domain::event::DomainEvent;
use uuid::Uuid;

use crate::batch_sizes::{BatchSizes, BatchStats};
use crate::dblimits::Window;
use crate::setup::WriteSide;
use crate::workload::Samples;

/// One stage's rate with `clients` concurrent callers.
pub struct StageRate {
    pub name: &'static str,
    pub per_s: f64,
    pub p99_ms: f64,
}

/// Every stage of one backend.
pub struct Profile {
    pub clients: usize,
    pub stages: Vec<StageRate>,
    /// Appender batch sizes during the appender-only stage.
    pub appender_batches: BatchStats,
    /// CPU cost of `Codec::encode` of a create (five fields plus IP and user agent), µs.
    pub encode_us: f64,
    /// CPU cost of `Codec::decode` of the same event with its key cached, µs.
    pub decode_us: f64,
}

/// Runs `op(n)` from `clients` tasks until the window closes; calls completing inside the
/// window count. Answers the stage's calls per second and p99 latency. The window is
/// announced on stderr in wall-clock time, so that a system-wide profile can be cut to one
/// stage.
async fn concurrent<F, Fut>(
    stage: &'static str,
    clients: usize,
    warmup: Duration,
    measure: Duration,
    op: F,
) -> anyhow::Result<StageRate>
where
    F: Fn(u64) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = anyhow::Result<()>> + Send,
{
    let window = Window::after(warmup, measure);
    let opens = Utc::now() + warmup;
    eprintln!(
        "  profiling {stage}: window {} to {} UTC",
        opens.format("%H:%M:%S%.3f"),
        (opens + measure).format("%H:%M:%S%.3f")
    );
    let mut tasks = Vec::with_capacity(clients);
    for c in 0..clients {
        let op = op.clone();
        tasks.push(tokio::spawn(async move {
            let mut hist = hdrhistogram::Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
            let mut n = (c as u64) << 32;
            while Instant::now() < window.end {
                let started = Instant::now();
                op(n).await?;
                let finished = Instant::now();
                n += 1;
                if finished >= window.start && finished < window.end {
                    let micros =
                        u64::try_from((finished - started).as_micros()).unwrap_or(u64::MAX);
                    hist.saturating_record(micros.max(1));
                }
            }
            anyhow::Ok(hist)
        }));
    }
    let mut all = hdrhistogram::Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    for t in tasks {
        all.add(t.await.context("a profile task panicked")??)?;
    }
    let secs = (window.end - window.start).as_secs_f64();
    Ok(StageRate {
        name: stage,
        per_s: all.len() as f64 / secs,
        p99_ms: all.value_at_quantile(0.99) as f64 / 1000.0,
    })
}

/// Average wall time of `op` over about `budget`, in µs (one task: CPU cost).
async fn cpu_cost<F, Fut>(budget: Duration, mut op: F) -> anyhow::Result<f64>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    let started = Instant::now();
    let mut n = 0_u64;
    while started.elapsed() < budget {
        op().await?;
        n += 1;
    }
    Ok(started.elapsed().as_secs_f64() * 1e6 / n.max(1) as f64)
}

fn fresh_event(sample: &NewEvent) -> NewEvent {
    let mut e = sample.clone();
    e.event_id = Uuid::now_v7();
    e
}

pub async fn run(
    ws: &WriteSide,
    samples: &Arc<Samples>,
    sample: &NewEvent,
    batch_sizes: &BatchSizes,
    clients: usize,
    warmup: Duration,
    measure: Duration,
) -> anyhow::Result<Profile> {
    let mut stages = Vec::new();

    // The appender alone: already-encoded events for new streams, no load, no key.
    let appender = ws.bus.appender().clone();
    let event = Arc::new(sample.clone());
    let window_opens = tokio::spawn({
        let batch_sizes = batch_sizes.clone();
        async move {
            tokio::time::sleep(warmup).await;
            batch_sizes.reset();
        }
    });
    let rate = concurrent(
        "appender alone (pre-encoded create, new stream)",
        clients,
        warmup,
        measure,
        move |_| {
            let appender = appender.clone();
            let event = Arc::clone(&event);
            async move {
                let id = CustomerId::from_uuid(Uuid::now_v7());
                appender
                    .append(AppendRequest {
                        new_keys: vec![],
                        stream_id: id.stream_id(),
                        expected: ExpectedVersion::Exact(0),
                        command_id: Uuid::now_v7(),
                        events: vec![fresh_event(&event)],
                    })
                    .await?;
                anyhow::Ok(())
            }
        },
    )
    .await?;
    window_opens.await.context("the window timer panicked")?;
    let appender_batches = batch_sizes.stats();
    stages.push(rate);

    // Whole update commands: the same path as a create minus the new subject key (the
    // aggregate and the key are cached), so the gap to the command runs is the key's cost.
    // Each client updates only its own customers, so no two clients conflict.
    const OWN: usize = 4;
    let mut own = Vec::with_capacity(clients * OWN);
    for n in 0..(clients * OWN) as u64 {
        let id = CustomerId::from_uuid(Uuid::now_v7());
        let create = CustomerCommand::Create(Box::new(samples.create(id, n)?));
        ws.bus
            .execute::<CustomerAggregate>(
                &id.stream_id(),
                &id.subject(),
                None,
                Uuid::now_v7(),
                &samples.metadata(n),
                create,
            )
            .await?;
        own.push(id);
    }
    let own = Arc::new(own);
    let bus = Arc::clone(&ws.bus);
    let samples_for_updates = Arc::clone(samples);
    let rate = concurrent(
        "update command alone (cached aggregate and key)",
        clients,
        warmup,
        measure,
        move |n| {
            let bus = Arc::clone(&bus);
            let own = Arc::clone(&own);
            let samples = Arc::clone(&samples_for_updates);
            async move {
                let client = (n >> 32) as usize;
                let id = own[client * OWN + (n as usize % OWN)];
                let update = CustomerCommand::Update(Samples::update(n)?);
                bus.execute::<CustomerAggregate>(
                    &id.stream_id(),
                    &id.subject(),
                    None,
                    Uuid::now_v7(),
                    &samples.metadata(n),
                    update,
                )
                .await?;
                anyhow::Ok(())
            }
        },
    )
    .await?;
    stages.push(rate);

    // Loading a stream that does not exist yet: what every create does first.
    let log = ws.stores.log.clone();
    let rate = concurrent(
        "load of a new stream (read_stream)",
        clients,
        warmup,
        measure,
        move |_| {
            let log = log.clone();
            async move {
                let id = CustomerId::from_uuid(Uuid::now_v7());
                log.read_stream(&id.stream_id(), 1, ReadBound::None).await?;
                anyhow::Ok(())
            }
        },
    )
    .await?;
    stages.push(rate);

    // A new subject's key: the vault looks it up, finds none and creates it.
    let vault = Arc::clone(ws.codec.vault());
    let rate = concurrent(
        "new subject key (Vault::for_write: load + create)",
        clients,
        warmup,
        measure,
        move |_| {
            let vault = Arc::clone(&vault);
            async move {
                let id = CustomerId::from_uuid(Uuid::now_v7());
                vault.for_write(&id.subject()).await?;
                anyhow::Ok(())
            }
        },
    )
    .await?;
    stages.push(rate);

    let (encode_us, decode_us) =
        codec_costs(&ws.codec, samples, Duration::from_millis(500)).await?;

    Ok(Profile {
        clients,
        stages,
        appender_batches,
        encode_us,
        decode_us,
    })
}

/// CPU cost of `Codec::encode` and of `Codec::decode` of one create event (five personal
/// fields, encrypted IP address and user agent), in µs, with the key cached: one task, so
/// this is the single-core ceiling of the write path's encryption and of a rebuild's decoding.
pub async fn codec_costs(
    codec: &Codec,
    samples: &Samples,
    budget: Duration,
) -> anyhow::Result<(f64, f64)> {
    let id = CustomerId::from_uuid(Uuid::now_v7());
    let event = DomainEvent::Customer(samples.created_event(id, 7)?);
    let meta = samples.metadata(7);
    let encode_us = cpu_cost(budget, || async {
        codec
            .encode(&id.subject(), Uuid::now_v7(), &event, &meta)
            .await?;
        anyhow::Ok(())
    })
    .await?;
    let stored = codec
        .encode(&id.subject(), Uuid::now_v7(), &event, &meta)
        .await?;
    let recorded = RecordedEvent {
        global_position: 1,
        stream_id: id.stream_id(),
        stream_version: 1,
        event_id: stored.event_id,
        command_id: Uuid::now_v7(),
        event_type: stored.event_type.clone(),
        schema_version: stored.schema_version,
        payload: stored.payload.clone(),
        metadata: stored.metadata.clone(),
        recorded_at: Utc::now(),
        prev_hash: vec![0; 32],
        hash: vec![0; 32],
    };
    let decode_us = cpu_cost(budget, || async {
        codec.decode(&recorded).await?;
        anyhow::Ok(())
    })
    .await?;
    Ok((encode_us, decode_us))
}
