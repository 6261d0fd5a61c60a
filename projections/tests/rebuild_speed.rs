//! Rebuild throughput, for tuning: ignored by default. Run in release:
//!
//! ```text
//! EGEC_BENCH_EVENTS=1000000 cargo test --release -p egec-projections --test rebuild_speed \
//!     -- --ignored --nocapture --test-threads 1
//! ```
//!
//! It appends a history of creations and updates (one customer per ten events) straight
//! through the log in large batches, lets a fresh runner catch up from position 0, and then
//! rebuilds the customers projection blue/green, printing events per second for both.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Env, sample_customer};
use egec_commands::store::{AppendRequest, ExpectedVersion};
use egec_domain::CustomerId;
use egec_domain::customer::{CustomerChanges, CustomerEvent, CustomerStatus, CustomerUpdated};
use egec_domain::event::DomainEvent;
use egec_domain::personal::Personal;
use egec_domain::values::PersonName;
use uuid::Uuid;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark; run in release with --ignored"]
async fn rebuild_speed_on_sqlite() {
    bench(Env::sqlite().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark; run in release with --ignored"]
async fn rebuild_speed_on_postgres() {
    bench(Env::postgres().await).await;
}

async fn bench(env: Env) {
    let events: usize = std::env::var("EGEC_BENCH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000);
    let customers = (events / 10).max(1);
    let env = Arc::new(env);

    let started = Instant::now();
    let ids: Vec<CustomerId> = (0..customers)
        .map(|_| CustomerId::from_uuid(Uuid::now_v7()))
        .collect();
    let mut requests = Vec::with_capacity(events);
    for i in 0..events {
        let at = env.now();
        let (id, event) = if i < customers {
            let id = ids[i];
            (id, env.created_event(id, &sample_customer(i as u32), at))
        } else {
            let id = ids[(i * 7919) % customers];
            let mut changes = CustomerChanges::default();
            if i % 2 == 0 {
                changes.status = Some(CustomerStatus::ALL[i % 6]);
            } else {
                changes.name = Some(Personal::Known(
                    PersonName::parse(&format!("Renamed {i}")).expect("name"),
                ));
            }
            (
                id,
                DomainEvent::Customer(CustomerEvent::Updated(CustomerUpdated {
                    customer_id: id,
                    changes,
                    at,
                })),
            )
        };
        let stored = env.encode(&id.subject(), &event, at).await;
        requests.push(AppendRequest {
            stream_id: id.stream_id(),
            expected: ExpectedVersion::Any,
            command_id: Uuid::now_v7(),
            events: vec![stored],
        });
    }
    eprintln!("encoded {events} events in {:?}", started.elapsed());
    let appending = Instant::now();
    while !requests.is_empty() {
        let rest = requests.split_off(requests.len().min(2_000));
        let batch = std::mem::replace(&mut requests, rest);
        env.stores.log.append_batch(batch).await.expect("append");
    }
    let head = env.head().await;
    eprintln!("appended in {:?}; head {head}", appending.elapsed());

    // Where the time goes: reading the log alone, then reading and decoding.
    let reading = Instant::now();
    let mut pos = 0;
    let mut raw = Vec::new();
    loop {
        let batch = env.stores.log.read_all(pos, 10_000).await.expect("read");
        let Some(last) = batch.last().map(|r| r.global_position) else {
            break;
        };
        pos = last;
        raw.extend(batch);
    }
    eprintln!("[{}] read_all alone: {:?}", env.backend, reading.elapsed());
    let decoding = Instant::now();
    for rec in &raw {
        env.codec.decode(rec).await.expect("decode");
    }
    eprintln!(
        "[{}] decode alone (one task): {:?}",
        env.backend,
        decoding.elapsed()
    );
    let parsing = Instant::now();
    for rec in &raw {
        let (facts, personal) = egec_domain::encoding::split_payload(&rec.payload).expect("split");
        let e = egec_domain::encoding::Encoded {
            event_type: rec.event_type.clone(),
            schema_version: rec.schema_version,
            facts,
            personal: personal
                .into_iter()
                .map(|(k, _)| {
                    let v = match k.as_str() {
                        "phone" => "+442079460958",
                        "email" => "a@example.com",
                        "passport_number" => "AB1234567",
                        _ => "Some Name",
                    };
                    (k, Personal::Known(v.to_owned()))
                })
                .collect(),
        };
        DomainEvent::decode(e).expect("domain decode");
    }
    eprintln!(
        "[{}] domain decode without crypto: {:?}",
        env.backend,
        parsing.elapsed()
    );
    drop(raw);

    let catching_up = Instant::now();
    let runner = env.start().await;
    assert!(runner.wait_for(head, Duration::from_secs(3_600)).await);
    let secs = catching_up.elapsed().as_secs_f64();
    eprintln!(
        "[{}] live runner caught up from 0 in {secs:.2} s: {:.0} events/s",
        env.backend,
        head as f64 / secs
    );

    let report = runner
        .rebuild("customers", |_, _| {})
        .await
        .expect("rebuild");
    eprintln!(
        "[{}] rebuild: {} events in {:.2} s: {:.0} events/s; swap pause {:?}",
        env.backend,
        report.events,
        report.elapsed.as_secs_f64(),
        report.events_per_second(),
        report.swap_pause
    );
    assert_eq!(report.position, head);
    assert_eq!(
        runner
            .read_models()
            .all_customers()
            .await
            .expect("rows")
            .len(),
        customers
    );
}
