//! The audit CSV export streams 100,000 events in bounded memory.
//!
//! The server runs in this test process, whose global allocator counts the bytes live on the
//! heap and their peak. The two tests run one after the other (a mutex), so the peak reached
//! while the export is downloaded, above the live bytes just before, is what the server (and
//! this client, which counts bytes and never keeps the body) needed to stream it. An export
//! that gathered its rows before sending would need at least the size of the CSV, which the
//! test checks is more than twice the bound. Counting the allocator's live bytes rather than
//! resident memory keeps the measure exact: freed memory the allocator keeps for reuse would
//! hide growth from a resident-size reading.

mod support;

use chrono::Utc;
use egec_domain::event::{DomainEvent, Metadata};
use egec_domain::gdpr::{GdprEvent, RevealVia, reveals_stream_id};
use egec_domain::personal::Personal;
use egec_domain::{CustomerId, Role, UserId};
use reqwest::StatusCode;
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use support::{Backend, TestApp};
use uuid::Uuid;

const EVENTS: usize = 100_000;
const BATCH: usize = 1_000;
const MIB: f64 = 1024.0 * 1024.0;
/// How much more heap the process may hold at its peak while the whole export is streamed.
const BOUND: usize = 8 * 1024 * 1024;

/// The system allocator, counting live bytes and their peak.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

fn grew(by: usize) {
    let now = LIVE.fetch_add(by, Ordering::Relaxed) + by;
    PEAK.fetch_max(now, Ordering::Relaxed);
}

// SAFETY: every call is passed to the system allocator unchanged; the counters are only
// bookkeeping beside it.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
            grew(new_size);
        }
        p
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// The two backends' tests share the process: one at a time, so each measures only itself.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Appends `EVENTS` passport reveals (each with an IP address under the month's retention
/// key) in batches, as a busy year of reads would leave them.
async fn seed(app: &TestApp, actor: UserId) {
    let bus = &app.running.state.bus;
    for batch in 0..EVENTS / BATCH {
        let at = Utc::now();
        let events: Vec<DomainEvent> = (0..BATCH)
            .map(|i| {
                DomainEvent::Gdpr(GdprEvent::PassportRevealed {
                    customer_id: CustomerId::from_uuid(Uuid::from_u128(
                        (batch * BATCH + i) as u128 + 1,
                    )),
                    via: RevealVia::List,
                    at,
                })
            })
            .collect();
        let meta = Metadata {
            actor_id: Some(actor),
            actor_role: Some(Role::Admin),
            ip: Some(Personal::Known(format!(
                "10.0.{}.{}",
                batch % 250,
                batch % 200
            ))),
            user_agent: Some(Personal::Known("load-test".into())),
            ..Metadata::system(Uuid::now_v7(), at)
        };
        bus.record(&reveals_stream_id(at), &actor.subject(), &meta, &events)
            .await
            .expect("append");
    }
}

async fn the_audit_csv_export_streams_100000_events_in_bounded_memory(backend: Backend) {
    let _alone = ONE_AT_A_TIME.lock().await;
    let app = TestApp::spawn(backend).await;
    let (actor, _) = app.as_role(Role::Admin).await;
    let (_, auditor) = app.as_role(Role::Auditor).await;
    let started = std::time::Instant::now();
    seed(&app, UserId::from_uuid(actor)).await;
    let seeded = started.elapsed();
    let head = app.running.state.log.head().await.unwrap().position;
    assert!(
        app.running
            .state
            .runner
            .wait_for(head, Duration::from_secs(300))
            .await,
        "the audit index caught up"
    );
    eprintln!(
        "{backend:?}: {EVENTS} events appended in {seeded:.1?}, projections caught up after {:.1?}",
        started.elapsed()
    );
    // A small export first, so that lazily built state (connections, caches, statement
    // plans) is not counted as the big export's.
    let warm = app
        .get("/api/audit/export.csv?action=USER_CREATED", Some(&auditor))
        .await;
    assert_eq!(warm.status(), StatusCode::OK);
    warm.text().await.unwrap();

    let baseline = LIVE.load(Ordering::Relaxed);
    PEAK.store(baseline, Ordering::Relaxed);
    let mut r = app
        .get(
            "/api/audit/export.csv?action=PASSPORT_REVEALED",
            Some(&auditor),
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let (mut bytes, mut lines, mut first) = (0u64, 0u64, Vec::new());
    while let Some(chunk) = r.chunk().await.unwrap() {
        bytes += chunk.len() as u64;
        lines += chunk.iter().filter(|b| **b == b'\n').count() as u64;
        if first.len() < 400 {
            first.extend_from_slice(&chunk[..chunk.len().min(400)]);
        }
    }
    let peak = PEAK.load(Ordering::Relaxed);
    let grown = peak.saturating_sub(baseline);
    eprintln!(
        "{backend:?}: {lines} lines, {:.1} MiB of CSV; heap {:.1} MiB live before, peak {:.1} MiB (+{:.2} MiB)",
        bytes as f64 / MIB,
        baseline as f64 / MIB,
        peak as f64 / MIB,
        grown as f64 / MIB
    );
    assert_eq!(lines, EVENTS as u64 + 1, "a header and one row per event");
    let text = String::from_utf8_lossy(&first);
    assert!(
        text.contains("PASSPORT_REVEALED") && text.contains("10.0."),
        "{text}"
    );
    assert!(
        bytes > 2 * BOUND as u64,
        "the export ({bytes} bytes) must dwarf the bound for the bound to mean anything"
    );
    assert!(
        grown < BOUND,
        "the process grew by {grown} bytes while streaming {bytes} bytes of CSV"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_audit_csv_export_streams_100000_events_in_bounded_memory_on_sqlite() {
    the_audit_csv_export_streams_100000_events_in_bounded_memory(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_audit_csv_export_streams_100000_events_in_bounded_memory_on_postgres() {
    the_audit_csv_export_streams_100000_events_in_bounded_memory(Backend::Postgres).await;
}
