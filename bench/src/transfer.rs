//! Customer CSV import and export, and search, through the real HTTP server (`--transfer`).
//!
//! On each backend: the server starts on a fresh store; a CSV of `small` rows and then one of
//! `rows` rows are imported (`POST /api/customers/import`), each generated on the fly and
//! sent chunked over a plain TCP connection, so the client never holds a file in memory and
//! the process's peak memory is the server's; every customer is exported
//! (`GET /api/customers/export.csv`, read chunk by chunk and thrown away); more rows are
//! imported until the read model holds `search_total` customers; then `GET
//! /api/customers?q=` is timed one request at a time.
//!
//! Memory: before each import and the export the kernel's peak-RSS mark is reset
//! (`/proc/self/clear_refs`, 5) and `VmHWM` read afterwards, so each phase has its own peak.
//! Bounded memory shows as the peak of the big import staying near that of the small one.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use egec_api::config::Config;
use egec_domain::Role;
use egec_domain::event::Metadata;
use hdrhistogram::Histogram;
use secrecy::SecretString;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const PASSWORD: &str = "quartz meadow lantern 4711 otter";
const HEADER: &str = "name,email,phone,passport_number,country,source,status,notes\n";
/// Bytes per chunk of the generated CSV.
const CHUNK: usize = 64 * 1024;

/// Sizes of one run.
#[derive(Debug, Clone, Copy)]
pub struct Scale {
    pub rows: u64,
    pub small: u64,
    pub search_total: u64,
    pub searches: u64,
}

impl Scale {
    pub fn new(rows: u64) -> Self {
        Self {
            rows,
            small: (rows / 5).max(1),
            search_total: rows * 2,
            searches: 500,
        }
    }
}

/// One phase's throughput and memory.
#[derive(Debug, Clone)]
pub struct Phase {
    pub rows: u64,
    pub seconds: f64,
    /// Resident memory when the phase started, MiB.
    pub rss_before_mib: f64,
    /// Peak resident memory during the phase, MiB (`VmHWM` after a reset).
    pub peak_mib: f64,
}

impl Phase {
    fn rows_per_s(&self) -> f64 {
        self.rows as f64 / self.seconds.max(1e-9)
    }

    fn json(&self) -> Value {
        json!({
            "rows": self.rows,
            "seconds": round(self.seconds),
            "rows_per_s": round(self.rows_per_s()),
            "rss_before_mib": round(self.rss_before_mib),
            "peak_mib": round(self.peak_mib),
        })
    }
}

#[derive(Debug, Clone)]
pub struct TransferReport {
    pub backend: &'static str,
    pub import_small: Phase,
    pub import: Phase,
    pub export: Phase,
    pub search_customers: u64,
    pub search_p50_ms: f64,
    pub search_p99_ms: f64,
    /// Whether the peak-RSS mark could be reset (otherwise peaks are since process start).
    pub peak_reset: bool,
}

impl TransferReport {
    pub fn json(&self) -> Value {
        json!({
            "backend": self.backend,
            "import_small": self.import_small.json(),
            "import": self.import.json(),
            "export": self.export.json(),
            "search_customers": self.search_customers,
            "search_p50_ms": round(self.search_p50_ms),
            "search_p99_ms": round(self.search_p99_ms),
            "peak_reset": self.peak_reset,
        })
    }

    pub fn print(&self) {
        let line = |what: &str, p: &Phase| {
            println!(
                "{:<10} {what:<22} {:>8} rows {:>9.0} rows/s  RSS before {:>7.1} MiB  peak {:>7.1} MiB",
                self.backend,
                p.rows,
                p.rows_per_s(),
                p.rss_before_mib,
                p.peak_mib
            );
        };
        line("import (small)", &self.import_small);
        line("import", &self.import);
        line("export", &self.export);
        println!(
            "{:<10} GET /api/customers?q=  {:>8} customers  p50 {:.2} ms  p99 {:.2} ms{}",
            self.backend,
            self.search_customers,
            self.search_p50_ms,
            self.search_p99_ms,
            if self.peak_reset {
                ""
            } else {
                "  (peak RSS could not be reset: peaks are since start)"
            }
        );
    }
}

fn round(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// `VmRSS` and `VmHWM` of this process, MiB.
fn memory() -> (f64, f64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<f64>().ok())
            .map_or(0.0, |kb| kb / 1024.0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// Resets the peak-RSS mark to the current RSS; false where the kernel does not allow it.
fn reset_peak() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// Runs `f`, measuring its duration and peak memory.
async fn phase<F, Fut>(reset: bool, f: F) -> anyhow::Result<Phase>
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<u64>>,
{
    if reset {
        reset_peak();
    }
    let (rss_before_mib, _) = memory();
    let started = Instant::now();
    let rows = f().await?;
    let seconds = started.elapsed().as_secs_f64();
    let (_, peak_mib) = memory();
    Ok(Phase {
        rows,
        seconds,
        rss_before_mib,
        peak_mib,
    })
}

/// One generated CSV row; `i` makes the email and passport unique.
fn row(i: u64, out: &mut String) {
    use std::fmt::Write;
    let status = ["new", "contacted", "qualified"][(i % 3) as usize];
    let _ = writeln!(
        out,
        "Person {i},person{i}@bench.example,,P{i:09},Germany,education fair,{status},\
         Asked about the foundation year and scholarships ({i})"
    );
}

/// Imports rows `from..to` as one CSV sent chunked over a raw connection (no client-side
/// copy of the file). Answers the number of rows the server created.
async fn import(addr: SocketAddr, token: &str, from: u64, to: u64) -> anyhow::Result<u64> {
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    let head = format!(
        "POST /api/customers/import HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: text/csv\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    );
    s.write_all(head.as_bytes()).await?;
    let mut buf = String::with_capacity(CHUNK + 512);
    buf.push_str(HEADER);
    for i in from..to {
        row(i, &mut buf);
        if buf.len() >= CHUNK {
            send_chunk(&mut s, &buf).await?;
            buf.clear();
        }
    }
    if !buf.is_empty() {
        send_chunk(&mut s, &buf).await?;
    }
    s.write_all(b"0\r\n\r\n").await?;
    let mut resp = Vec::new();
    s.read_to_end(&mut resp).await?;
    let text = String::from_utf8_lossy(&resp);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .context("import: no HTTP response")?;
    ensure!(
        head.starts_with("HTTP/1.1 200"),
        "import answered {}",
        head.lines().next().unwrap_or("")
    );
    let report: Value = serde_json::from_str(body).context("import: response is not JSON")?;
    let created = report["created"].as_u64().unwrap_or(0);
    ensure!(
        report["failed"].as_u64() == Some(0) && created == to - from,
        "import: {} created, {} failed of {} rows",
        created,
        report["failed"],
        to - from
    );
    Ok(created)
}

async fn send_chunk(s: &mut tokio::net::TcpStream, data: &str) -> anyhow::Result<()> {
    s.write_all(format!("{:x}\r\n", data.len()).as_bytes())
        .await?;
    s.write_all(data.as_bytes()).await?;
    s.write_all(b"\r\n").await?;
    Ok(())
}

/// Reads the whole export chunk by chunk; answers the number of data rows.
async fn export(client: &reqwest::Client, base: &str, token: &str) -> anyhow::Result<u64> {
    let mut r = client
        .get(format!("{base}/api/customers/export.csv"))
        .bearer_auth(token)
        .send()
        .await?;
    ensure!(r.status().is_success(), "export answered {}", r.status());
    let mut lines = 0u64;
    while let Some(chunk) = r.chunk().await? {
        lines += chunk.iter().filter(|b| **b == b'\n').count() as u64;
    }
    // Notes hold no newline here, so lines are records; the first is the header.
    Ok(lines.saturating_sub(1))
}

/// Runs every transfer measurement against a server on `database_url` (PostgreSQL) or a
/// fresh SQLite store in `dir`.
pub async fn run(
    backend: &'static str,
    database_url: Option<&str>,
    dir: &std::path::Path,
    scale: Scale,
) -> anyhow::Result<TransferReport> {
    let mut env: HashMap<String, String> = HashMap::new();
    env.insert("EGEC_LISTEN".into(), "127.0.0.1:0".into());
    env.insert("EGEC_DATA_DIR".into(), dir.display().to_string());
    env.insert(
        "EGEC_JWT_SECRET".into(),
        "bench-secret-bench-secret-bench-secret".into(),
    );
    env.insert("EGEC_MASTER_KEY".into(), "22".repeat(32));
    env.insert("EGEC_PHONE_DEFAULT_REGION".into(), "GB".into());
    env.insert("EGEC_RATE_LIMIT_ENABLED".into(), "false".into());
    env.insert("EGEC_MFA_REQUIRED_ROLES".into(), String::new());
    env.insert("EGEC_IMPORT_MAX_BYTES".into(), (1u64 << 32).to_string());
    if let Some(url) = database_url {
        env.insert("DATABASE_URL".into(), url.to_owned());
    }
    let config = Config::from_source(&env).map_err(|e| anyhow::anyhow!("config: {e}"))?;
    let running = egec_api::app::start(config).await.context("server start")?;
    let addr = running.addr;
    let base = format!("http://{addr}");
    let state = &running.state;

    let email = "bench.admin@example.com";
    let meta = Metadata::system(uuid::Uuid::now_v7(), chrono::Utc::now());
    let (_, position) = egec_api::users::create_user(
        &state.bus,
        state.read(),
        &state.passwords,
        egec_api::users::NewUser {
            email,
            name: "Bench Admin",
            role: Role::Admin,
            password: &SecretString::from(PASSWORD.to_owned()),
            policy: egec_domain::password_policy::PasswordPolicy::Nist,
        },
        &meta,
    )
    .await
    .map_err(|e| anyhow::anyhow!("cannot create the bench user: {e:?}"))?;
    ensure!(
        state
            .runner
            .wait_for(position, Duration::from_secs(30))
            .await,
        "the users projection did not catch up"
    );
    let client = reqwest::Client::new();
    let r = client
        .post(format!("{base}/api/auth/login"))
        .json(&json!({ "email": email, "password": PASSWORD }))
        .send()
        .await?;
    if !r.status().is_success() {
        bail!("login answered {}", r.status());
    }
    let token = r.json::<Value>().await?["token"]
        .as_str()
        .context("no token")?
        .to_owned();

    let peak_reset = reset_peak();
    eprintln!("{backend}: importing {} rows ...", scale.small);
    let import_small = phase(peak_reset, || import(addr, &token, 0, scale.small)).await?;
    eprintln!("{backend}: importing {} rows ...", scale.rows);
    let import_big = phase(peak_reset, || {
        import(addr, &token, scale.small, scale.small + scale.rows)
    })
    .await?;
    let total = scale.small + scale.rows;
    eprintln!("{backend}: exporting {total} customers ...");
    let export_phase = phase(peak_reset, || export(&client, &base, &token)).await?;
    ensure!(
        export_phase.rows == total,
        "export gave {} rows of {total}",
        export_phase.rows
    );
    if scale.search_total > total {
        eprintln!(
            "{backend}: importing up to {} customers for the search ...",
            scale.search_total
        );
        import(addr, &token, total, scale.search_total).await?;
    }
    let customers = scale.search_total.max(total);
    eprintln!(
        "{backend}: {} searches over {customers} customers ...",
        scale.searches
    );
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let mut rng = crate::rng::SplitMix::new(7);
    for _ in 0..scale.searches {
        let q = format!("person{}", rng.below(customers as usize));
        let started = Instant::now();
        let r = client
            .get(format!("{base}/api/customers"))
            .query(&[("q", q.as_str())])
            .bearer_auth(&token)
            .send()
            .await?;
        ensure!(r.status().is_success(), "search answered {}", r.status());
        r.bytes().await?;
        hist.record(started.elapsed().as_micros().max(1) as u64)?;
    }
    running.task.abort();
    Ok(TransferReport {
        backend,
        import_small,
        import: import_big,
        export: export_phase,
        search_customers: customers,
        search_p50_ms: hist.value_at_quantile(0.50) as f64 / 1000.0,
        search_p99_ms: hist.value_at_quantile(0.99) as f64 / 1000.0,
        peak_reset,
    })
}
