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

use std::collections::VecDeque;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use hdrhistogram::Histogram;
use parking_lot::Mutex;
use serde_json::{Value, json};
use tokio_postgres::NoTls;
use uuid::Uuid;

use crate::cpu::{CpuUse, Snapshot};
use crate::dblimits::{self, Shape};
use crate::setup::PgDatabase;

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

/// One configuration's figures.
pub struct NodesRun {
    pub nodes: usize,
    pub clients: usize,
    pub seconds: f64,
    /// 2xx answers that arrived inside the window.
    pub ok: u64,
    /// Per node: answers inside the window and their latencies (µs).
    pub per_node: Vec<(u64, Histogram<u64>)>,
    pub hist: Histogram<u64>,
    /// Non-2xx answers over the whole run, warm-up included.
    pub non_2xx: u64,
    /// Requests that got no answer at all (connection errors, timeouts).
    pub transport_errors: u64,
    /// The first few failures, for the report.
    pub failures: Vec<String>,
    /// Lines at WARN or ERROR the nodes logged during the run.
    pub node_warnings: u64,
    /// Of those, read-your-writes waits that gave up (the write was still answered 2xx).
    pub ryw_timeouts: u64,
    pub cpu: CpuUse,
    /// Per node: its appender's transactions in the window.
    pub appends: Vec<Appends>,
}

/// One node's group-commit appender over the window, from its `/metrics`.
#[derive(Debug, Clone, Copy)]
pub struct Appends {
    pub transactions_per_s: f64,
    /// Commands per append transaction.
    pub mean_batch: f64,
}

/// Sum and count of `egec_append_batch_size` of each node (zeros where unreadable).
async fn batches(client: &reqwest::Client, bases: &[String]) -> Vec<(f64, f64)> {
    let mut out = Vec::with_capacity(bases.len());
    for base in bases {
        let text = match client.get(format!("{base}/metrics")).send().await {
            Ok(r) => r.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        };
        let value = |name: &str| {
            text.lines()
                .find(|l| l.split_whitespace().next() == Some(name))
                .and_then(|l| l.split_whitespace().last())
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or(0.0)
        };
        out.push((
            value("egec_append_batch_size_sum"),
            value("egec_append_batch_size_count"),
        ));
    }
    out
}

impl NodesRun {
    pub fn per_second(&self) -> f64 {
        self.ok as f64 / self.seconds
    }

    fn failed(&self) -> bool {
        self.non_2xx > 0 || self.transport_errors > 0
    }

    fn json(&self) -> Value {
        json!({
            "nodes": self.nodes,
            "clients": self.clients,
            "seconds": self.seconds,
            "commands": self.ok,
            "commands_per_s": self.per_second().round(),
            "p50_ms": round(ms(&self.hist, 0.5)),
            "p99_ms": round(ms(&self.hist, 0.99)),
            "per_node": self.per_node.iter().map(|(n, h)| json!({
                "commands_per_s": (*n as f64 / self.seconds).round(),
                "p50_ms": round(ms(h, 0.5)),
                "p99_ms": round(ms(h, 0.99)),
            })).collect::<Vec<_>>(),
            "non_2xx": self.non_2xx,
            "transport_errors": self.transport_errors,
            "node_warnings": self.node_warnings,
            "ryw_timeouts": self.ryw_timeouts,
            "cpu": self.cpu.json(),
            "appends": self.appends.iter().map(|a| json!({
                "transactions_per_s": a.transactions_per_s.round(),
                "mean_batch": round(a.mean_batch),
            })).collect::<Vec<_>>(),
        })
    }
}

/// Everything `--nodes` measured.
pub struct NodesReport {
    pub runs: Vec<NodesRun>,
    pub single_insert_per_s: f64,
    pub batch500_rows_per_s: f64,
    pub row_bytes: usize,
    pub binary: PathBuf,
    pub clients: usize,
    pub warmup: Duration,
    pub measure: Duration,
}

impl NodesReport {
    pub fn failed(&self) -> bool {
        self.runs.iter().any(NodesRun::failed)
    }

    fn ratio(&self) -> Option<f64> {
        let one = self.runs.iter().find(|r| r.nodes == 1)?;
        let two = self.runs.iter().find(|r| r.nodes == 2)?;
        Some(two.per_second() / one.per_second().max(1e-9))
    }

    pub fn print(&self) {
        let cores = self.runs.first().map_or(0, |r| r.cpu.cores);
        println!();
        println!(
            "== Customer creates over HTTP: one `egec serve` vs two on one PostgreSQL \
             ({} clients, closed loop, warm-up {:?}, window {:?}) ==",
            self.clients, self.warmup, self.measure
        );
        // `cargo run -p egec-bench` does not rebuild the server, so its build time is shown
        // to make a stale binary visible.
        let built = std::fs::metadata(&self.binary)
            .and_then(|m| m.modified())
            .map(|t| {
                chrono::DateTime::<chrono::Utc>::from(t)
                    .format("%Y-%m-%d %H:%M UTC")
                    .to_string()
            })
            .unwrap_or_else(|_| "unknown".into());
        println!(
            "binary {} (built {built}); each configuration on a fresh database; nodes signal \
             each other over NATS and publish the log to a JetStream stream of their own",
            self.binary.display()
        );
        println!(
            "CAVEAT: this machine has {cores} cores, shared by PostgreSQL, NATS, every node and \
             the load generator (and by anyone else's work): two nodes here compete for the \
             same cores, so this measures the cost of coordination, not what a second machine \
             would add."
        );
        println!(
            "{:<6} {:>12} {:>9} {:>9} {:>8} {:>10}",
            "nodes", "commands/s", "p50 ms", "p99 ms", "non-2xx", "no answer"
        );
        for r in &self.runs {
            println!(
                "{:<6} {:>12.0} {:>9.2} {:>9.2} {:>8} {:>10}",
                r.nodes,
                r.per_second(),
                ms(&r.hist, 0.5),
                ms(&r.hist, 0.99),
                r.non_2xx,
                r.transport_errors
            );
            if r.nodes > 1 {
                for (i, (n, h)) in r.per_node.iter().enumerate() {
                    println!(
                        "  node {} ({}): {:.0} commands/s, p50 {:.2} ms, p99 {:.2} ms",
                        i + 1,
                        if i == 0 {
                            "started first: leads the projections"
                        } else {
                            "stands by, woken over NATS"
                        },
                        *n as f64 / r.seconds,
                        ms(h, 0.5),
                        ms(h, 0.99)
                    );
                }
            }
            println!(
                "  append transactions/s (commands per transaction): {}",
                r.appends
                    .iter()
                    .map(|a| format!("{:.0} ({:.1})", a.transactions_per_s, a.mean_batch))
                    .collect::<Vec<_>>()
                    .join(" + ")
            );
            println!("  {}", r.cpu.line());
            if r.node_warnings > 0 {
                println!(
                    "  the nodes logged {} warnings or errors ({} read-your-writes waits timed out)",
                    r.node_warnings, r.ryw_timeouts
                );
            }
            for f in &r.failures {
                println!("  FAILURE {f}");
            }
        }
        if let Some(ratio) = self.ratio() {
            println!("two nodes / one node: {ratio:.2}x commands/s");
        }
        println!(
            "database's own limit, same run, same database after the nodes stopped, row of \
             {} bytes of JSON copied from a created customer: {:.0} single-row INSERT/s from \
             {} connections; {:.0} rows/s in 500-row transactions",
            self.row_bytes, self.single_insert_per_s, self.clients, self.batch500_rows_per_s
        );
        for r in &self.runs {
            println!(
                "  {} node(s): {:.2}x the single-row INSERT rate",
                r.nodes,
                r.per_second() / self.single_insert_per_s.max(1e-9)
            );
        }
        if self.failed() {
            println!("FAIL: some requests were not answered 2xx (see above)");
        }
    }

    pub fn json(&self) -> Value {
        json!({
            "clients": self.clients,
            "warmup_s": self.warmup.as_secs_f64(),
            "window_s": self.measure.as_secs_f64(),
            "runs": self.runs.iter().map(NodesRun::json).collect::<Vec<_>>(),
            "two_over_one": self.ratio().map(round),
            "db_single_insert_per_s": self.single_insert_per_s.round(),
            "db_batch500_rows_per_s": self.batch500_rows_per_s.round(),
            "row_json_bytes": self.row_bytes,
            "pass": !self.failed(),
        })
    }
}

fn round(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

fn ms(h: &Histogram<u64>, q: f64) -> f64 {
    h.value_at_quantile(q) as f64 / 1000.0
}

/// What a node wrote to stderr: counts, and the last lines for a failure report.
#[derive(Default)]
struct NodeLog {
    warnings: u64,
    ryw_timeouts: u64,
    last: VecDeque<String>,
}

impl NodeLog {
    fn take(&mut self, line: String) {
        if line.contains("WARN") || line.contains("ERROR") {
            self.warnings += 1;
        }
        if line.contains("read-your-writes wait timed out") {
            self.ryw_timeouts += 1;
        }
        if self.last.len() == KEPT_LINES {
            self.last.pop_front();
        }
        self.last.push_back(line);
    }
}

/// A running `egec serve`. Dropping it kills the process (by its pid, SIGKILL) and reaps it.
struct Node {
    child: Child,
    base: String,
    log: Arc<Mutex<NodeLog>>,
    _dir: tempfile::TempDir,
}

impl Node {
    fn pid(&self) -> String {
        self.child.id().to_string()
    }

    /// The last lines the node logged, for an error message.
    fn tail(&self) -> String {
        self.log
            .lock()
            .last
            .iter()
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Streams of deployments started and not cleaned up yet: what an interrupted run must
/// still delete.
static LIVE_STREAMS: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// Deletes the streams of the deployments this process started, for a run cut short before
/// it could delete them itself.
pub async fn delete_own_streams(nats_url: &str) -> anyhow::Result<()> {
    let names = std::mem::take(&mut *LIVE_STREAMS.lock());
    if names.is_empty() {
        return Ok(());
    }
    let js = async_nats::jetstream::new(async_nats::connect(nats_url).await?);
    for name in names {
        // A stream the node never got to create is not there to delete.
        let _ = js.delete_stream(&name).await;
    }
    Ok(())
}

/// One deployment's settings, shared by its nodes and its `egec user create`.
struct Deployment {
    binary: PathBuf,
    database: String,
    database_url: String,
    nats_url: String,
    tag: String,
}

impl Deployment {
    /// The JetStream stream the deployment publishes its log to.
    fn stream(&self) -> String {
        format!("BENCH_NODES_{}", self.tag)
    }

    /// `egec` with this deployment's environment and nothing else (no `.env`, no stray
    /// variables of the shell the benchmark runs from), working in `dir`.
    fn command(&self, dir: &Path) -> Command {
        let mut c = Command::new(&self.binary);
        c.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("DATABASE_URL", &self.database_url)
            .env("EGEC_DATA_DIR", dir)
            .env("EGEC_MASTER_KEY", "33".repeat(32))
            .env("EGEC_JWT_SECRET", "bench-nodes-secret-bench-nodes-secret")
            .env("EGEC_PHONE_DEFAULT_REGION", "GB")
            // The load comes from one address and one account: the limits would measure
            // themselves, not the write path.
            .env("EGEC_RATE_LIMIT_ENABLED", "false")
            // The superadmin acts without enrolling in two-factor authentication.
            .env("EGEC_MFA_REQUIRED_ROLES", "")
            .env("NATS_URL", &self.nats_url)
            // Subjects and stream of this run only, so nothing else on the NATS server hears
            // these nodes or receives their log.
            .env(
                "EGEC_SIGNALS_SUBJECT",
                format!("bench.signals.{}", self.tag),
            )
            .env("EGEC_NATS_STREAM", self.stream())
            .env(
                "EGEC_NATS_SUBJECT_PREFIX",
                format!("bench.nodes.{}", self.tag),
            )
            .env("RUST_LOG", "warn")
            .current_dir(dir);
        c
    }

    /// The superadmin, created the way an operator creates the first one.
    fn create_user(&self) -> anyhow::Result<()> {
        let dir = tempfile::Builder::new()
            .prefix("egec-bench-node-")
            .tempdir()?;
        let mut child = self
            .command(dir.path())
            .args([
                "user",
                "create",
                "--email",
                EMAIL,
                "--name",
                "Bench Nodes",
                "--role",
                "superadmin",
                "--password-stdin",
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting egec user create")?;
        if let Some(mut stdin) = child.stdin.take() {
            use std::io::Write;
            stdin.write_all(PASSWORD.as_bytes())?;
        }
        let out = child.wait_with_output()?;
        ensure!(
            out.status.success(),
            "egec user create failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
        Ok(())
    }

    /// Starts `egec serve` on a free port; answers once it announced its address and
    /// `/readyz` answers 200.
    async fn serve(&self, client: &reqwest::Client) -> anyhow::Result<Node> {
        let dir = tempfile::Builder::new()
            .prefix("egec-bench-node-")
            .tempdir()?;
        let mut child = self
            .command(dir.path())
            .args(["serve", "--listen", "127.0.0.1:0"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting egec serve")?;
        let stderr = child.stderr.take().context("no stderr pipe")?;
        let log = Arc::new(Mutex::new(NodeLog::default()));
        let (tx, rx) = tokio::sync::oneshot::channel();
        {
            let log = Arc::clone(&log);
            // The thread keeps reading after the address, or the pipe would fill and the
            // node would block on its next log line.
            std::thread::spawn(move || {
                let mut tx = Some(tx);
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    if let Some(addr) = line.strip_prefix("egec listening on ")
                        && let Some(tx) = tx.take()
                    {
                        let _ = tx.send(addr.to_owned());
                    }
                    log.lock().take(line);
                }
            });
        }
        let mut node = Node {
            child,
            base: String::new(),
            log,
            _dir: dir,
        };
        match tokio::time::timeout(Duration::from_secs(60), rx).await {
            Ok(Ok(base)) => node.base = base,
            _ => bail!(
                "egec serve did not announce its address within 60 s; its last lines:\n{}",
                node.tail()
            ),
        }
        let started = Instant::now();
        loop {
            if let Ok(r) = client.get(format!("{}/readyz", node.base)).send().await
                && r.status().is_success()
            {
                return Ok(node);
            }
            if started.elapsed() > Duration::from_secs(60) {
                bail!(
                    "{} never became ready; its last lines:\n{}",
                    node.base,
                    node.tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

async fn login(client: &reqwest::Client, base: &str) -> anyhow::Result<String> {
    let r = client
        .post(format!("{base}/api/auth/login"))
        .json(&json!({ "email": EMAIL, "password": PASSWORD }))
        .send()
        .await?;
    ensure!(r.status().is_success(), "login answered {}", r.status());
    let body: Value = r.json().await?;
    body["token"]
        .as_str()
        .map(str::to_owned)
        .context("login answer without a token")
}

/// A valid create with unique email and passport number: the `n`th request of the run.
fn customer(tag: &str, n: u64) -> Value {
    let status = ["new", "contacted", "qualified"][(n % 3) as usize];
    json!({
        "name": format!("Amira Benchmark {n}"),
        "email": format!("amira.{tag}.{n}@example.com"),
        // 020 7946 0xxx is the UK's range reserved for drama, so no real person is named.
        "phone": format!("+44 20 7946 0{:03}", n % 1000),
        "passport_number": format!("B{n:09}"),
        "country": "United Kingdom",
        "source": "education fair",
        "status": status,
        "notes": "Asked about the foundation year and scholarships.",
    })
}

/// What one client saw.
struct ClientOutcome {
    node: usize,
    ok: u64,
    hist: Histogram<u64>,
    non_2xx: u64,
    transport_errors: u64,
    failures: Vec<String>,
}

/// The closed loop: `clients` tasks, client `i` on node `i % nodes`, each sending its next
/// create as soon as the previous one is answered, until the window ends.
async fn load(
    client: &reqwest::Client,
    targets: &[(String, String)],
    clients: usize,
    tag: &str,
    warmup: Duration,
    measure: Duration,
) -> anyhow::Result<(Vec<ClientOutcome>, f64)> {
    let start = Instant::now() + warmup;
    let end = start + measure;
    let counter = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::with_capacity(clients);
    for i in 0..clients {
        let node = i % targets.len();
        let (base, token) = targets[node].clone();
        let client = client.clone();
        let counter = Arc::clone(&counter);
        let tag = tag.to_owned();
        tasks.push(tokio::spawn(async move {
            let url = format!("{base}/api/customers");
            let mut out = ClientOutcome {
                node,
                ok: 0,
                hist: Histogram::<u64>::new(3)?,
                non_2xx: 0,
                transport_errors: 0,
                failures: Vec::new(),
            };
            while Instant::now() < end {
                let n = counter.fetch_add(1, Ordering::Relaxed);
                let sent = Instant::now();
                let answer = client
                    .post(&url)
                    .bearer_auth(&token)
                    .json(&customer(&tag, n))
                    .send()
                    .await;
                let r = match answer {
                    Ok(r) => r,
                    Err(e) => {
                        out.transport_errors += 1;
                        if out.failures.len() < 3 {
                            out.failures
                                .push(format!("node {}: no answer: {e}", node + 1));
                        }
                        // A node that is gone refuses at once; without a pause the client
                        // would spin and take the CPU from the nodes still answering.
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    }
                };
                let status = r.status();
                let body = r.bytes().await;
                let done = Instant::now();
                match body {
                    Ok(_) if status.is_success() => {
                        if done >= start && done < end {
                            out.ok += 1;
                            out.hist.record(((done - sent).as_micros() as u64).max(1))?;
                        }
                    }
                    Ok(body) => {
                        out.non_2xx += 1;
                        if out.failures.len() < 3 {
                            out.failures.push(format!(
                                "node {}: {status}: {}",
                                node + 1,
                                String::from_utf8_lossy(&body[..body.len().min(300)])
                            ));
                        }
                    }
                    Err(e) => {
                        out.transport_errors += 1;
                        if out.failures.len() < 3 {
                            out.failures
                                .push(format!("node {}: body cut off: {e}", node + 1));
                        }
                    }
                }
            }
            anyhow::Ok(out)
        }));
    }
    let mut outcomes = Vec::with_capacity(clients);
    for t in tasks {
        outcomes.push(t.await.context("a load client panicked")??);
    }
    Ok((outcomes, measure.as_secs_f64()))
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
    let (outcomes, seconds) = load(
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
        let single = dblimits::pg_single_inserts(
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

#[cfg(test)]
mod tests {
    use super::*;
    use egec_domain::values::{PassportNumber, PhoneE164};

    /// A generated create that the server refused would fail the run for the benchmark's
    /// sake, not the server's: every phone and passport it can send must validate.
    #[test]
    fn every_generated_customer_validates() {
        for n in (0..1000).chain([123_456_789, 9_999_999_999]) {
            let c = customer("t", n);
            PhoneE164::parse(c["phone"].as_str().unwrap(), Some("GB")).unwrap();
            PassportNumber::parse(c["passport_number"].as_str().unwrap()).unwrap();
        }
    }

    #[test]
    fn stderr_counts_warnings_and_read_your_writes_timeouts() {
        let samples = [
            "2026-11-30T02:00:00Z  WARN egec_api::state: read-your-writes wait timed out position=5",
            "2026-11-30T02:00:00Z ERROR egec_api::bus: publish failed",
            "egec listening on http://127.0.0.1:1",
        ];
        let mut log = NodeLog::default();
        for line in samples {
            log.take(line.to_owned());
        }
        assert_eq!((log.warnings, log.ryw_timeouts, log.last.len()), (2, 1, 3));
    }
}
