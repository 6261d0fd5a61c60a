//! `egec-bench`: measures the write path and the rebuild speed on PostgreSQL and SQLite, next
//! to the database's own limits with the same row shape, measured in the same run.
//!
//! Run with `cargo run --release -p egec-bench -- [--quick]`. The last line printed is one
//! line of JSON with every figure, for scripts; everything above it is for people.

// The same allocator as the `egec` binary, so measured figures are the server's.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod batch_sizes;
mod cpu;
mod dblimits;
mod logins;
mod nodes;
mod profile;
mod projections;
mod publisher;
mod rate_limits;
mod rebuild;
mod report;
mod rng;
mod rounds;
mod setup;
mod transfer;
mod workload;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicI64;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use egec_commands::codec::Codec;
use egec_commands::crypto::Key;
use egec_commands::master_key::MasterKey;
use egec_commands::store::NewEvent;
use egec_commands::vault::Vault;
use egec_domain::CustomerId;
use egec_domain::event::DomainEvent;
use uuid::Uuid;

use crate::batch_sizes::BatchSizes;
use crate::cpu::CpuUse;
use crate::dblimits::Shape;
use crate::rebuild::MemKeys;
use crate::report::{BackendReport, CommandRow, RebuildRow};
use crate::setup::{PgDatabase, write_side};
use crate::workload::{RunConfig, RunResult, Samples};

/// The maintenance database the benchmark databases are created from.
const DEFAULT_ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// Client counts of the command runs (and connection counts of the single-row INSERTs).
const CLIENTS: [usize; 2] = [16, 64];

/// Aggregate and key cache size of the command runs: big enough that every customer a
/// client may update is still cached, as on a server that has been running a while.
const COMMAND_CACHE: usize = 100_000;

#[derive(Debug, Parser)]
#[command(about = "Egec write-path and rebuild benchmark (PostgreSQL and SQLite)")]
struct Args {
    /// Short run: 2 s measured windows and 100,000 events for the rebuild.
    #[arg(long)]
    quick: bool,
    /// Local PostgreSQL maintenance database; benchmark databases are created beside it and
    /// dropped afterwards.
    #[arg(long, env = "EGEC_BENCH_PG_URL", default_value = DEFAULT_ADMIN_URL)]
    pg_admin_url: String,
    /// Leave PostgreSQL out.
    #[arg(long)]
    skip_postgres: bool,
    /// Leave SQLite out.
    #[arg(long)]
    skip_sqlite: bool,
    /// Leave the seeding and rebuild measurements out (they take the longest).
    #[arg(long)]
    skip_rebuild: bool,
    /// Leave the command runs, the stage profile and the database's limits out (to time the
    /// rebuild alone; the throughput targets are then reported as not measured).
    #[arg(long)]
    skip_commands: bool,
    /// Leave out the HTTP login measurements (logins/s, list latency under a login storm).
    #[arg(long)]
    skip_logins: bool,
    /// Connection pool size of the write side (the server's default is 16).
    #[arg(long, default_value_t = 16)]
    pool_size: usize,
    /// Most requests the appender writes in one transaction.
    #[arg(long, default_value_t = 1024)]
    max_batch: usize,
    /// Blue/green rebuilds of the projections crate to time, one after another; the report
    /// gives each and their median.
    #[arg(long, default_value_t = 1)]
    rebuild_runs: usize,
    /// Paired rounds of the command runs, each followed at once by the database's single-row
    /// limit; the report shows the round with the median ratio and lists them all (see
    /// `rounds.rs`).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Events to seed for the rebuild (default 1,000,000; 100,000 with --quick).
    #[arg(long)]
    events: Option<u64>,
    /// Events per customer in the seeded log (one create, the rest updates).
    #[arg(long, default_value_t = 10)]
    events_per_customer: u64,
    /// Only measure the codec's CPU cost (encode and decode of one create, keys in memory,
    /// no database) for this many seconds each, then exit: a short target for a profiler.
    #[arg(long)]
    codec_only: Option<f64>,
    /// Only run the stage profile on PostgreSQL (each stage of a command alone, at 64 clients)
    /// with windows of this many seconds, then exit: a long enough target for a profiler.
    /// Each stage's window is announced on stderr with the wall clock, so that a system-wide
    /// profile can be cut to it.
    #[arg(long)]
    profile_only: Option<f64>,
    /// Concurrent clients of `--profile-only`.
    #[arg(long, default_value_t = 64)]
    profile_clients: usize,
    /// Only measure the customer CSV import and export and the search over HTTP (see
    /// `transfer.rs`), on both backends unless one is skipped, then exit.
    #[arg(long)]
    transfer: bool,
    /// Rows of the big import with --transfer (default 50,000; 5,000 with --quick). The
    /// small import is a fifth of it, the search runs over twice as many customers.
    #[arg(long)]
    transfer_rows: Option<u64>,
    /// Only measure rate-limit checks (in memory, through Redis, and bare Redis commands
    /// beside them; see `rate_limits.rs`), then exit.
    #[arg(long)]
    rate_limits: bool,
    /// Only measure the log publisher, reading a SQLite and a PostgreSQL log, against a bare
    /// JetStream publish loop (see `publisher.rs`), then exit.
    #[arg(long)]
    publisher: bool,
    /// Events the `--publisher` runs publish (default 50,000; 10,000 with --quick).
    #[arg(long)]
    publisher_events: Option<usize>,
    /// The NATS server of `--publisher` and `--nodes` (each run uses a stream of its own,
    /// deleted after).
    #[arg(long, env = "NATS_URL", default_value = "nats://127.0.0.1:4222")]
    nats_url: String,
    /// Only measure customer creates over HTTP through one `egec serve` and through two on
    /// one PostgreSQL database, beside the database's own limits (see `nodes.rs`), then exit.
    #[arg(long)]
    nodes: bool,
    /// Concurrent clients of `--nodes` (split evenly between the nodes).
    #[arg(long, default_value_t = 32)]
    node_clients: usize,
    /// The `egec` binary `--nodes` starts (default: the one beside this benchmark's binary).
    #[arg(long, env = "EGEC_BENCH_EGEC_BIN")]
    egec_bin: Option<std::path::PathBuf>,
    /// The Redis of `--rate-limits`.
    #[arg(long, env = "REDIS_URL", default_value = "redis://127.0.0.1:6379")]
    redis_url: String,
}

/// Durations and sizes of one invocation.
#[derive(Debug, Clone, Copy)]
struct Plan {
    warmup: Duration,
    measure: Duration,
    events: u64,
    customers: u64,
    pool_size: usize,
    max_batch: usize,
    rebuild: bool,
    rebuild_runs: usize,
    rounds: usize,
    commands: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // As the server does, so that measured figures are the server's.
    egec_api::huge_pages::disable_transparent_huge_pages();
    let args = Args::parse();
    // Off unless RUST_LOG asks: e.g. `RUST_LOG=egec_projections=debug` shows how long each
    // phase of the blue/green rebuild takes. Written to stderr, beside the progress lines.
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .init();
    }
    if let Some(seconds) = args.codec_only {
        return codec_only(seconds).await;
    }
    if args.rate_limits {
        let window = Duration::from_secs(if args.quick { 2 } else { 5 });
        let rows = rate_limits::run(&args.redis_url, window).await?;
        rate_limits::print(&rows);
        println!(
            "{}",
            serde_json::json!({ "rate_limits": rate_limits::json(&rows) })
        );
        return Ok(());
    }
    if args.publisher {
        let events = args
            .publisher_events
            .unwrap_or(if args.quick { 10_000 } else { 50_000 });
        let backends = publisher::Backends {
            sqlite: !args.skip_sqlite,
            pg_admin_url: (!args.skip_postgres).then_some(args.pg_admin_url.as_str()),
        };
        let rows = publisher::run(&args.nats_url, events, backends).await?;
        publisher::print(&rows);
        println!(
            "{}",
            serde_json::json!({ "publisher": rows.iter().map(publisher::Row::json).collect::<Vec<_>>() })
        );
        return Ok(());
    }
    setup::ensure_local(&args.pg_admin_url)?;
    if args.nodes {
        return nodes_only(&args).await;
    }
    if let Some(seconds) = args.profile_only {
        let clients = args.profile_clients.max(1);
        return profile_only(&args, seconds, clients).await;
    }
    if args.transfer {
        return transfer_only(&args).await;
    }
    let events = args
        .events
        .unwrap_or(if args.quick { 100_000 } else { 1_000_000 });
    let plan = Plan {
        warmup: Duration::from_secs(1),
        measure: Duration::from_secs(if args.quick { 2 } else { 5 }),
        events,
        customers: events.div_ceil(args.events_per_customer.max(1)),
        pool_size: args.pool_size.max(1),
        max_batch: args.max_batch.max(1),
        rebuild: !args.skip_rebuild,
        rebuild_runs: args.rebuild_runs.max(1),
        rounds: args.rounds.max(1),
        commands: !args.skip_commands,
    };
    let batch_sizes = BatchSizes::install()?;
    let samples = Arc::new(Samples::new()?);
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!(
        "egec-bench: {cores} cores, warm-up {:?}, window {:?}, {} clients, {} events to rebuild",
        plan.warmup,
        plan.measure,
        CLIENTS.map(|c| c.to_string()).join("/"),
        plan.events
    );

    // Every backend's command runs come before any rebuild. Seeding a million events leaves
    // PostgreSQL writing back and vacuuming them for a while, and the SQLite command run that
    // used to follow it measured a p99 of 20 ms at 64 clients, against 7 to 10 ms in runs of
    // its own (2026-11-30).
    let phases = [
        Plan {
            rebuild: false,
            ..plan
        },
        Plan {
            commands: false,
            ..plan
        },
    ];
    let mut pg_report = (!args.skip_postgres).then(|| BackendReport::new("postgres"));
    let mut sqlite_report = (!args.skip_sqlite).then(|| BackendReport::new("sqlite"));
    for phase in phases.into_iter().filter(|p| p.commands || p.rebuild) {
        if let Some(report) = &mut pg_report {
            report.merge(postgres(&args.pg_admin_url, phase, &samples, &batch_sizes).await);
        }
        if let Some(report) = &mut sqlite_report {
            report.merge(sqlite(phase, &samples, &batch_sizes).await);
        }
    }
    let reports: Vec<BackendReport> = pg_report.into_iter().chain(sqlite_report).collect();

    let mut login_errors = Vec::new();
    let logins = if args.skip_logins {
        None
    } else {
        eprintln!("logins over HTTP ...");
        let dir = tempfile::tempdir()?;
        match logins::run(dir.path(), plan.measure).await {
            Ok(report) => Some(report),
            Err(e) => {
                login_errors.push(format!("logins: {e:#}"));
                None
            }
        }
    };

    report::print_table(&reports, plan.measure, plan.warmup);
    if let Some(l) = &logins {
        l.print();
    }
    for e in &login_errors {
        println!("ERROR {e}");
    }
    let mut line = report::json_value(&reports, cores, args.quick, plan.measure, plan.warmup);
    if let Some(obj) = line.as_object_mut() {
        obj.insert(
            "logins".into(),
            logins
                .as_ref()
                .map_or(serde_json::Value::Null, |l| l.json()),
        );
        if let Some(serde_json::Value::Array(errors)) = obj.get_mut("errors") {
            errors.extend(
                login_errors
                    .iter()
                    .map(|e| serde_json::json!({ "backend": "http", "error": e })),
            );
        }
    }
    println!("{line}");
    if reports.iter().any(|r| !r.errors.is_empty()) || !login_errors.is_empty() {
        std::process::exit(1);
    }
    Ok(())
}

/// The `--nodes` run: one node, then two, then the database's limits; exit 1 on any non-2xx.
async fn nodes_only(args: &Args) -> anyhow::Result<()> {
    anyhow::ensure!(
        !args.skip_postgres,
        "--nodes runs on PostgreSQL only (nodes share one database): drop --skip-postgres"
    );
    let opts = nodes::Options {
        pg_admin_url: args.pg_admin_url.clone(),
        nats_url: args.nats_url.clone(),
        egec_bin: nodes::find_binary(args.egec_bin.as_deref())?,
        clients: args.node_clients.max(1),
        // Longer windows than the in-process runs: HTTP through separate processes on two
        // shared cores is noisier, and two nodes need a moment to settle their signals.
        warmup: Duration::from_secs(if args.quick { 1 } else { 3 }),
        measure: Duration::from_secs(if args.quick { 3 } else { 10 }),
    };
    // On Ctrl-C the run's future is dropped, and with it every server it started (each is
    // killed when dropped), so an interrupted benchmark leaves no `egec serve` behind; the
    // databases it had not dropped yet are dropped here.
    let report = tokio::select! {
        report = nodes::run(&opts) => report?,
        _ = tokio::signal::ctrl_c() => {
            setup::drop_own_databases(&args.pg_admin_url, "nodes").await?;
            nodes::delete_own_streams(&args.nats_url).await?;
            anyhow::bail!(
                "interrupted; the servers were stopped, their databases and streams deleted"
            );
        }
    };
    report.print();
    println!("{}", serde_json::json!({ "nodes": report.json() }));
    if report.failed() {
        std::process::exit(1);
    }
    Ok(())
}

/// The `--transfer` run: import, export and search on each backend, one fresh store each.
async fn transfer_only(args: &Args) -> anyhow::Result<()> {
    let rows = args
        .transfer_rows
        .unwrap_or(if args.quick { 5_000 } else { 50_000 })
        .max(10);
    let scale = transfer::Scale::new(rows);
    let mut reports = Vec::new();
    let mut errors = Vec::new();
    if !args.skip_postgres {
        match PgDatabase::create(&args.pg_admin_url, "transfer").await {
            Ok(db) => {
                let dir = tempfile::Builder::new().prefix("egec-bench-").tempdir()?;
                match transfer::run("postgres", Some(&db.url), dir.path(), scale).await {
                    Ok(r) => reports.push(r),
                    Err(e) => errors.push(format!("postgres: {e:#}")),
                }
                if let Err(e) = db.drop_now().await {
                    errors.push(format!("{e:#}"));
                }
            }
            Err(e) => errors.push(format!("postgres: {e:#}")),
        }
    }
    if !args.skip_sqlite {
        let dir = tempfile::Builder::new().prefix("egec-bench-").tempdir()?;
        match transfer::run("sqlite", None, dir.path(), scale).await {
            Ok(r) => reports.push(r),
            Err(e) => errors.push(format!("sqlite: {e:#}")),
        }
    }
    println!();
    println!(
        "== Customer CSV transfer over HTTP (import {} then {} rows, export all, search over {}) ==",
        scale.small, scale.rows, scale.search_total
    );
    for r in &reports {
        r.print();
    }
    for e in &errors {
        println!("ERROR {e}");
    }
    println!(
        "{}",
        serde_json::json!({
            "transfer": reports.iter().map(transfer::TransferReport::json).collect::<Vec<_>>(),
            "errors": errors,
        })
    );
    if !errors.is_empty() {
        std::process::exit(1);
    }
    Ok(())
}

/// The `--profile-only` run: the stage profile alone on a fresh PostgreSQL database.
async fn profile_only(args: &Args, seconds: f64, clients: usize) -> anyhow::Result<()> {
    let db = PgDatabase::create(&args.pg_admin_url, "profile").await?;
    let outcome = async {
        let dir = tempfile::tempdir()?;
        let ws = write_side(
            Some(&db.url),
            dir.path(),
            args.pool_size.max(1),
            COMMAND_CACHE,
            args.max_batch.max(1),
        )
        .await?;
        let samples = Arc::new(Samples::new()?);
        let batch_sizes = BatchSizes::install()?;
        let sample = encoded_create(&ws, &samples).await?;
        let measure = Duration::from_secs_f64(seconds.clamp(1.0, 600.0));
        let profile = profile::run(
            &ws,
            &samples,
            &sample,
            &batch_sizes,
            clients,
            Duration::from_secs(1),
            measure,
        )
        .await?;
        for stage in &profile.stages {
            println!(
                "{:<55} {:>9.0}/s  p99 {:.2} ms",
                stage.name, stage.per_s, stage.p99_ms
            );
        }
        let b = &profile.appender_batches;
        println!(
            "appender-alone batches: mean {:.1}, p50 {}, max {}",
            b.mean, b.p50, b.max
        );
        anyhow::Ok(())
    }
    .await;
    db.drop_now().await?;
    outcome
}

/// The codec's CPU cost alone, with an in-memory key table.
async fn codec_only(seconds: f64) -> anyhow::Result<()> {
    let samples = Samples::new()?;
    let master = MasterKey::from_key(Key::generate()?);
    let vault = Vault::new(Arc::new(MemKeys::default()), master, 1024);
    let codec = Codec::new(Arc::new(vault));
    let budget = Duration::from_secs_f64(seconds.clamp(0.1, 600.0));
    let (encode_us, decode_us) = profile::codec_costs(&codec, &samples, budget).await?;
    println!("Codec::encode of a create: {encode_us:.2} µs");
    println!("Codec::decode of a create (key cached): {decode_us:.2} µs");
    // Decoding re-validates the stored phone number through libphonenumber; time that alone
    // to show its share of the decode.
    let started = std::time::Instant::now();
    let mut n = 0_u64;
    while started.elapsed() < budget {
        egec_domain::values::PhoneE164::from_stored("+442079460001")?;
        n += 1;
    }
    println!(
        "PhoneE164::from_stored (part of every decode with a phone): {:.2} µs",
        started.elapsed().as_secs_f64() * 1e6 / n.max(1) as f64
    );
    Ok(())
}

/// Every PostgreSQL measurement, each phase in a fresh database that is dropped afterwards
/// whatever happened.
async fn postgres(
    admin_url: &str,
    plan: Plan,
    samples: &Arc<Samples>,
    batch_sizes: &BatchSizes,
) -> BackendReport {
    let mut report = BackendReport::new("postgres");
    let scratch_dir = match tempfile::Builder::new().prefix("egec-bench-").tempdir() {
        Ok(d) => d,
        Err(e) => {
            report.errors.push(format!("temp dir: {e}"));
            return report;
        }
    };
    if plan.commands {
        eprintln!("postgres: commands and database limits ...");
        match PgDatabase::create(admin_url, "cmd").await {
            Ok(db) => {
                let url = db.url.clone();
                let outcome =
                    commands_and_limits(Some(&url), scratch_dir.path(), plan, samples, batch_sizes)
                        .await;
                absorb(&mut report, outcome);
                if let Err(e) = db.drop_now().await {
                    report.errors.push(format!("{e:#}"));
                }
            }
            Err(e) => report.errors.push(format!("{e:#}")),
        }
    }
    if plan.rebuild {
        eprintln!(
            "postgres: seeding {} events and rebuilding ...",
            plan.events
        );
        match PgDatabase::create(admin_url, "rebuild").await {
            Ok(db) => {
                let url = db.url.clone();
                match seed_and_rebuild(Some(&url), scratch_dir.path(), plan, samples).await {
                    Ok(row) => report.rebuild = Some(row),
                    Err(e) => report.errors.push(format!("rebuild: {e:#}")),
                }
                if let Err(e) = db.drop_now().await {
                    report.errors.push(format!("{e:#}"));
                }
            }
            Err(e) => report.errors.push(format!("{e:#}")),
        }
    }
    report
}

/// Every SQLite measurement, each phase in a fresh temporary directory.
async fn sqlite(plan: Plan, samples: &Arc<Samples>, batch_sizes: &BatchSizes) -> BackendReport {
    let mut report = BackendReport::new("sqlite");
    let dirs = (
        tempfile::Builder::new().prefix("egec-bench-").tempdir(),
        tempfile::Builder::new().prefix("egec-bench-").tempdir(),
    );
    let (Ok(cmd_dir), Ok(rebuild_dir)) = dirs else {
        report
            .errors
            .push("cannot create temporary directories".into());
        return report;
    };
    if plan.commands {
        eprintln!("sqlite: commands and database limits ...");
        let outcome = commands_and_limits(None, cmd_dir.path(), plan, samples, batch_sizes).await;
        absorb(&mut report, outcome);
    }
    if plan.rebuild {
        eprintln!("sqlite: seeding {} events and rebuilding ...", plan.events);
        match seed_and_rebuild(None, rebuild_dir.path(), plan, samples).await {
            Ok(row) => report.rebuild = Some(row),
            Err(e) => report.errors.push(format!("rebuild: {e:#}")),
        }
    }
    report
}

fn absorb(report: &mut BackendReport, outcome: anyhow::Result<CommandsOutcome>) {
    match outcome {
        Ok(o) => {
            report.commands = o.rows;
            report.db_batch500_rows_per_s = Some(o.batch500);
            report.profile = Some(o.profile);
        }
        Err(e) => report.errors.push(format!("{e:#}")),
    }
}

/// What the command phase of one backend measured.
struct CommandsOutcome {
    rows: Vec<CommandRow>,
    batch500: f64,
    profile: profile::Profile,
}

/// A real encoded create (five encrypted fields, encrypted IP and user agent): the event the
/// appender-alone stage appends and the row shape of the scratch-table measurements.
async fn encoded_create(ws: &setup::WriteSide, samples: &Samples) -> anyhow::Result<NewEvent> {
    let id = CustomerId::from_uuid(Uuid::now_v7());
    Ok(ws
        .codec
        .encode(
            &id.subject(),
            Uuid::now_v7(),
            &DomainEvent::Customer(samples.created_event(id, 1)?),
            &samples.metadata(1),
        )
        .await?)
}

/// The paired rounds (see [`rounds`]): in each, the command runs at every client count, then
/// the database's single-row limit at the same concurrencies. Then the stage profile, and the
/// 500-row transactions once the write side has closed its connections.
///
/// The write side stays open through the rounds, idle while the database's limits are
/// measured: its appender waits on its queue and its pool's connections on their sockets.
async fn commands_and_limits(
    url: Option<&str>,
    dir: &Path,
    plan: Plan,
    samples: &Arc<Samples>,
    batch_sizes: &BatchSizes,
) -> anyhow::Result<CommandsOutcome> {
    let ws = write_side(url, dir, plan.pool_size, COMMAND_CACHE, plan.max_batch).await?;

    let sample = encoded_create(&ws, samples).await?;
    let shape = Shape::from_event(&sample);
    if let Some(url) = url {
        dblimits::pg_prepare(url).await?;
    }
    let single_counter = Arc::new(AtomicI64::new(1));

    // Per client count, each round's run and the single-row rate measured after it, with
    // that measurement's CPU.
    let mut measured: Vec<Vec<(RunResult, f64, CpuUse)>> =
        CLIENTS.iter().map(|_| Vec::new()).collect();
    let database = url.map(cpu::database_of).unwrap_or_default();
    let mut sqlite_batch = None;
    for round in 1..=plan.rounds {
        let mut runs = Vec::new();
        for clients in CLIENTS {
            runs.push(
                command_run(&ws, samples, batch_sizes, plan, clients, round, &database).await?,
            );
        }
        let (singles, batch) =
            single_row_limits(url, dir, &shape, &single_counter, plan, round).await?;
        sqlite_batch = batch.or(sqlite_batch);
        for ((slot, run), (single, cpu)) in measured.iter_mut().zip(runs).zip(singles) {
            slot.push((run, single, cpu));
        }
    }

    let profile = profile::run(
        &ws,
        samples,
        &sample,
        batch_sizes,
        CLIENTS[CLIENTS.len() - 1],
        plan.warmup,
        plan.measure,
    )
    .await
    .context("profiling the stages")?;
    for stage in &profile.stages {
        eprintln!("  stage {}: {:.0}/s", stage.name, stage.per_s);
    }
    drop(ws);
    // The appender task and the pool close once their last handle is gone; give them a
    // moment so the measurement below starts on an idle database.
    tokio::time::sleep(Duration::from_millis(300)).await;

    let batch = match (url, sqlite_batch) {
        (Some(url), _) => {
            let batch_counter = Arc::new(AtomicI64::new(1));
            dblimits::pg_batch_inserts(url, &shape, &batch_counter, plan.warmup, plan.measure)
                .await?
        }
        (None, Some(batch)) => batch,
        (None, None) => anyhow::bail!("no round measured the database's limits"),
    };
    eprintln!("  500-row transactions: {batch:.0} rows/s");

    let rows = measured
        .into_iter()
        .filter_map(rounds::median_of)
        .map(|(run, single, pairs)| CommandRow::new(run, single, shape.json_bytes(), pairs))
        .collect();
    Ok(CommandsOutcome {
        rows,
        batch500: batch,
        profile,
    })
}

/// One command run of a round at `clients` concurrent clients, reported on stderr as it ends.
async fn command_run(
    ws: &setup::WriteSide,
    samples: &Arc<Samples>,
    batch_sizes: &BatchSizes,
    plan: Plan,
    clients: usize,
    round: usize,
    database: &str,
) -> anyhow::Result<RunResult> {
    let cfg = RunConfig {
        clients,
        warmup: plan.warmup,
        measure: plan.measure,
    };
    let before = ws.stores.postgres.as_ref().map(|pg| pg.pipeline_stats());
    let result = workload::run(&ws.bus, samples, batch_sizes, cfg, database).await?;
    eprintln!(
        "  round {round}, {clients} clients: {:.0} commands/s, p99 {:.2} ms, mean batch {:.1}",
        result.per_second(),
        result.p99_ms(),
        result.batches.mean
    );
    eprintln!(
        "  round {round}, {clients} clients: {}",
        result.cpu.per_op_line(result.per_second(), "a command")
    );
    if let (Some(pg), Some(before)) = (&ws.stores.postgres, before) {
        // Warm-up included: how many batches were written by the guarded statement without
        // the ordinary locked look-up, and how many had to go round again.
        let after = pg.pipeline_stats();
        eprintln!(
            "  round {round}, {clients} clients: {} batches planned without the locked look-up, \
             {} of them sent round again",
            after.committed + after.retried - before.committed - before.retried,
            after.retried - before.retried
        );
    }
    Ok(result)
}

/// The database's single-row limit of one round, at each client count: PostgreSQL from as
/// many connections as clients (after a vacuum and checkpoint), SQLite from its one writer,
/// each with where the CPU went; SQLite's measurement also gives the 500-row rate (the
/// second value).
async fn single_row_limits(
    url: Option<&str>,
    dir: &Path,
    shape: &Shape,
    counter: &Arc<AtomicI64>,
    plan: Plan,
    round: usize,
) -> anyhow::Result<(Vec<(f64, CpuUse)>, Option<f64>)> {
    let Some(url) = url else {
        let (single, cpu, batch) = dblimits::sqlite_limits(
            &dir.join(format!("scratch-{round}.db")),
            shape,
            plan.warmup,
            plan.measure,
        )
        .await?;
        eprintln!("  round {round}, one writer: {single:.0} single-row INSERT/s");
        eprintln!(
            "  round {round}, one writer: {}",
            cpu.per_op_line(single, "an INSERT")
        );
        return Ok((CLIENTS.map(|_| (single, cpu.clone())).to_vec(), Some(batch)));
    };
    dblimits::pg_settle(url).await?;
    let mut singles = Vec::new();
    for clients in CLIENTS {
        let (single, cpu) =
            dblimits::pg_single_inserts(url, clients, shape, counter, plan.warmup, plan.measure)
                .await?;
        eprintln!("  round {round}, {clients} connections: {single:.0} single-row INSERT/s");
        eprintln!(
            "  round {round}, {clients} connections: {}",
            cpu.per_op_line(single, "an INSERT")
        );
        singles.push((single, cpu));
    }
    Ok((singles, None))
}

/// Seeds a fresh log and times the rebuild passes over it.
async fn seed_and_rebuild(
    url: Option<&str>,
    dir: &Path,
    plan: Plan,
    samples: &Arc<Samples>,
) -> anyhow::Result<RebuildRow> {
    let ws = write_side(url, dir, plan.pool_size, COMMAND_CACHE, plan.max_batch).await?;
    let seeded = rebuild::seed(&ws, samples, plan.events, plan.customers)
        .await
        .context("seeding the log")?;
    eprintln!(
        "  seeded {} events ({} customers) in {:.1} s, keys copied in {:.1} s",
        seeded.events, seeded.customers, seeded.append_seconds, seeded.key_seconds
    );
    // The key cache holds every customer, as a rebuilding process would size it; evictions
    // would measure re-reading keys, not rebuilding.
    let cache = usize::try_from(plan.customers)?.saturating_add(1024);
    let codec = rebuild::cold_codec(&ws.stores, &ws.master, cache);
    let full = rebuild::rebuild(&ws.stores, &codec).await?;
    eprintln!(
        "  read+decrypt+decode+fold (cold keys): {} events in {:.2} s = {:.0} events/s",
        full.events,
        full.seconds,
        full.per_second()
    );
    let warm = rebuild::rebuild(&ws.stores, &codec).await?;
    eprintln!(
        "  read+decrypt+decode+fold (keys cached): {:.0} events/s",
        warm.per_second()
    );
    let read = rebuild::read_only(&ws.stores).await?;
    eprintln!("  read only: {:.0} events/s", read.per_second());
    let projections = projections::rebuild(&ws, dir, plan.rebuild_runs).await;
    Ok(RebuildRow {
        seeded,
        full,
        warm,
        read,
        projections,
    })
}
