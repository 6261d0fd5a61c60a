//! `--nodes`: customer commands per second through real `egec serve` processes, with one
//! node and with two nodes on the same PostgreSQL database.
//!
//! Each configuration gets a fresh database (created through the admin URL, dropped
//! afterwards), a superadmin made by `egec user create`, and `egec serve` processes (the
//! release binary of this workspace) on free ports, signalling each other over NATS as a
//! deployment would. A closed loop of `--node-clients` clients then sends `POST
//! /api/customers` with valid, unique fields for a warm-up and a measured window: all clients
//! through the one node, or split evenly between the two. Only answers that arrive inside
//! the window count; every non-2xx answer (warm-up included) is counted and fails the run.
//!
//! Beside those figures, in the same run and on the same database once the nodes are gone,
//! the database's own limits for the log's row shape (`dblimits`: single-row autocommit
//! INSERTs from as many connections as there were clients, and 500-row transactions), with
//! a row copied from a customer the nodes created.
//!
//! Everything shares one machine: the load generator, PostgreSQL, NATS and the nodes. The
//! report says how many cores there are and how busy they were during each window, so a
//! two-node figure is never read as what two machines would do.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicI64;
use std::time::Duration;

use anyhow::{Context, ensure};
use hdrhistogram::Histogram;
use tokio_postgres::NoTls;
use uuid::Uuid;

use crate::cpu::Snapshot;
use crate::dblimits::{self, Shape};
use crate::setup::PgDatabase;

mod clients;
mod deployment;
mod report;

use clients::login;
pub use deployment::delete_own_streams;
use deployment::{Deployment, LIVE_STREAMS, Node, batches};
use report::ms;
pub use report::{Appends, NodesReport, NodesRun};

/// The superadmin's password: the NIST policy accepts it (long, not guessable).
const PASSWORD: &str = "harbour violet 2718 kettle otter";
const EMAIL: &str = "bench.nodes@example.com";
/// Node stderr lines kept for the report when something fails.
const KEPT_LINES: usize = 20;
/// An answer slower than this counts as a failure rather than a slow success.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// What `--nodes` needs from the command line.
pub struct Options {
    pub pg_admin_url: String,
    pub nats_url: String,
    pub egec_bin: PathBuf,
    pub clients: usize,
    pub warmup: Duration,
    pub measure: Duration,
}

/// The `egec` binary: `--egec-bin` if given, else the one beside this benchmark's binary
/// (`cargo build --release -p egec-api -p egec-bench` puts both in `target/release`).
pub fn find_binary(given: Option<&Path>) -> anyhow::Result<PathBuf> {
    let path = match given {
        Some(p) => p.to_path_buf(),
        None => std::env::current_exe()
            .context("cannot locate the benchmark's own binary")?
            .with_file_name("egec"),
    };
    ensure!(
        path.is_file(),
        "no egec binary at {}: build it with `cargo build --release -p egec-api -p egec-bench` \
         or pass --egec-bin",
        path.display()
    );
    Ok(path)
}

/// One configuration on a fresh database: `nodes` servers, the load, the figures. The
/// database is handed back (still there, the nodes gone) for the limit measurements.
async fn configuration(
    opts: &Options,
    nodes: usize,
    client: &reqwest::Client,
    js: &async_nats::jetstream::Context,
) -> anyhow::Result<(NodesRun, PgDatabase)> {
    let db = PgDatabase::create(&opts.pg_admin_url, &format!("nodes{nodes}")).await?;
    let deployment = Deployment {
        binary: opts.egec_bin.clone(),
        database: db.name.clone(),
        database_url: db.url.clone(),
        nats_url: opts.nats_url.clone(),
        tag: Uuid::now_v7().simple().to_string(),
    };
    LIVE_STREAMS.lock().push(deployment.stream());
    let outcome = measure_configuration(opts, nodes, client, &deployment).await;
    // The nodes are gone by now (dropped inside); their stream goes too, whatever happened.
    let _ = js.delete_stream(deployment.stream()).await;
    LIVE_STREAMS.lock().retain(|s| *s != deployment.stream());
    match outcome {
        Ok(run) => Ok((run, db)),
        Err(e) => {
            let _ = db.drop_now().await;
            Err(e)
        }
    }
}

async fn measure_configuration(
    opts: &Options,
    nodes: usize,
    client: &reqwest::Client,
    deployment: &Deployment,
) -> anyhow::Result<NodesRun> {
    eprintln!("nodes: {nodes} node(s), fresh database, creating the superadmin ...");
    deployment.create_user()?;
    let mut servers = Vec::with_capacity(nodes);
    // One after the other, so the first takes every projection's lock and the figures say
    // which node leads.
    for _ in 0..nodes {
        servers.push(deployment.serve(client).await?);
    }
    let mut targets = Vec::with_capacity(nodes);
    for s in &servers {
        targets.push((s.base.clone(), login(client, &s.base).await?));
    }
    eprintln!(
        "nodes: {} serving; {} clients for {:?} + {:?} ...",
        servers
            .iter()
            .map(|s| s.base.as_str())
            .collect::<Vec<_>>()
            .join(", "),
        opts.clients,
        opts.warmup,
        opts.measure
    );

    // CPU and the appenders' batches are counted over the measured window only, by a task
    // that wakes at its edges.
    let window_task = {
        let pids: Vec<String> = servers.iter().map(Node::pid).collect();
        let bases: Vec<String> = servers.iter().map(|s| s.base.clone()).collect();
        let database = deployment.database.clone();
        let client = client.clone();
        let (warmup, measure) = (opts.warmup, opts.measure);
        tokio::spawn(async move {
            tokio::time::sleep(warmup).await;
            let before = batches(&client, &bases).await;
            let snapshot = Snapshot::take(&database, &pids);
            tokio::time::sleep(measure).await;
            let cpu = snapshot.since();
            let after = batches(&client, &bases).await;
            let appends = before
                .iter()
                .zip(&after)
                .map(|(b, a)| {
                    let transactions = a.1 - b.1;
                    Appends {
                        transactions_per_s: transactions / measure.as_secs_f64(),
                        mean_batch: (a.0 - b.0) / transactions.max(1.0),
                    }
                })
                .collect::<Vec<_>>();
            (cpu, appends)
        })
    };
    let (outcomes, seconds) = clients::run(
        client,
        &targets,
        opts.clients,
        &deployment.tag,
        opts.warmup,
        opts.measure,
    )
    .await?;
    let (cpu, appends) = window_task.await.context("the window's sampler panicked")?;

    let mut run = NodesRun {
        nodes,
        clients: opts.clients,
        seconds,
        ok: 0,
        per_node: (0..nodes)
            .map(|_| Histogram::<u64>::new(3).map(|h| (0, h)))
            .collect::<Result<_, _>>()?,
        hist: Histogram::<u64>::new(3)?,
        non_2xx: 0,
        transport_errors: 0,
        failures: Vec::new(),
        node_warnings: 0,
        ryw_timeouts: 0,
        cpu,
        appends,
    };
    for o in outcomes {
        run.ok += o.ok;
        run.non_2xx += o.non_2xx;
        run.transport_errors += o.transport_errors;
        run.hist.add(&o.hist)?;
        let (n, h) = &mut run.per_node[o.node];
        *n += o.ok;
        h.add(&o.hist)?;
        for f in o.failures {
            if run.failures.len() < 5 {
                run.failures.push(f);
            }
        }
    }
    for s in &servers {
        let log = s.log.lock();
        run.node_warnings += log.warnings;
        run.ryw_timeouts += log.ryw_timeouts;
    }
    if run.failed() {
        for (i, s) in servers.iter().enumerate() {
            run.failures
                .push(format!("node {} last lines:\n{}", i + 1, s.tail()));
        }
    }
    eprintln!(
        "  {nodes} node(s): {:.0} commands/s, p50 {:.2} ms, p99 {:.2} ms, non-2xx {}",
        run.per_second(),
        ms(&run.hist, 0.5),
        ms(&run.hist, 0.99),
        run.non_2xx
    );
    // Killed here, before the limits are measured on the same database.
    drop(servers);
    Ok(run)
}

/// A customer row as the nodes stored it, as the shape of the limit measurements.
async fn stored_shape(url: &str) -> anyhow::Result<Shape> {
    let (client, connection) = tokio_postgres::connect(url, NoTls).await?;
    tokio::spawn(connection);
    let row = client
        .query_one(
            "SELECT event_id, event_type, schema_version, payload, metadata FROM egec.events \
             WHERE event_type = 'CustomerCreated' ORDER BY global_position DESC LIMIT 1",
            &[],
        )
        .await
        .context("no customer was created")?;
    Ok(Shape::from_event(&egec_commands::store::NewEvent {
        event_id: row.try_get(0)?,
        event_type: row.try_get(1)?,
        schema_version: row.try_get(2)?,
        payload: row.try_get(3)?,
        metadata: row.try_get(4)?,
    }))
}

pub async fn run(opts: &Options) -> anyhow::Result<NodesReport> {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(opts.clients.max(1))
        .timeout(REQUEST_TIMEOUT)
        .build()?;
    let js = async_nats::jetstream::new(
        async_nats::connect(&opts.nats_url)
            .await
            .with_context(|| format!("connecting to {}", opts.nats_url))?,
    );
    let mut runs = Vec::new();
    let (one, db) = configuration(opts, 1, &client, &js).await?;
    runs.push(one);
    db.drop_now().await?;
    let (two, db) = configuration(opts, 2, &client, &js).await?;
    runs.push(two);

    // The database's own limits on the two-node run's database, the nodes stopped, with a
    // row they wrote; dropped afterwards whatever happened.
    let limits = async {
        eprintln!("nodes: the database's own limits ...");
        let shape = stored_shape(&db.url).await?;
        dblimits::pg_prepare(&db.url).await?;
        dblimits::pg_settle(&db.url).await?;
        let (single, _) = dblimits::pg_single_inserts(
            &db.url,
            opts.clients,
            &shape,
            &Arc::new(AtomicI64::new(1)),
            opts.warmup,
            opts.measure,
        )
        .await?;
        eprintln!(
            "  {} connections: {single:.0} single-row INSERT/s",
            opts.clients
        );
        let batch = dblimits::pg_batch_inserts(
            &db.url,
            &shape,
            &Arc::new(AtomicI64::new(1)),
            opts.warmup,
            opts.measure,
        )
        .await?;
        eprintln!("  500-row transactions: {batch:.0} rows/s");
        anyhow::Ok((single, batch, shape.json_bytes()))
    }
    .await;
    let dropped = db.drop_now().await;
    let (single, batch, row_bytes) = limits?;
    dropped?;
    Ok(NodesReport {
        runs,
        single_insert_per_s: single,
        batch500_rows_per_s: batch,
        row_bytes,
        binary: opts.egec_bin.clone(),
        clients: opts.clients,
        warmup: opts.warmup,
        measure: opts.measure,
    })
}
