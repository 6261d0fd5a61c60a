//! Logins through the real HTTP server, and what a login storm does to everyone else.
//!
//! argon2id is deliberately expensive, so a burst of logins could take the CPU from ordinary
//! requests. The server hashes on a bounded blocking pool to prevent that; this measures it:
//! logins/s at the configured parameters, then the p99 of `GET /api/customers` on an idle
//! server and again while clients log in as fast as they can. The storm must not push that
//! p99 past twice its idle value.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use egec_api::config::Config;
use egec_domain::Role;
use egec_domain::event::Metadata;
use hdrhistogram::Histogram;
use secrecy::SecretString;
use serde_json::{Value, json};

/// A password the NIST policy accepts (long, not guessable, no context words).
const PASSWORD: &str = "quartz meadow lantern 4711 otter";
/// Concurrent clients that log in during the storm.
const STORM_CLIENTS: usize = 32;
/// Concurrent clients that list customers, idle and during the storm.
const READERS: usize = 4;
/// Customers in the store, so the list has a realistic page to render.
const CUSTOMERS: usize = 200;

/// What one run measured.
#[derive(Debug, Clone)]
pub struct LoginReport {
    pub logins_per_s: f64,
    pub login_p50_ms: f64,
    pub login_p99_ms: f64,
    pub login_failures: u64,
    pub list_idle_p99_ms: f64,
    pub list_idle_per_s: f64,
    pub list_storm_p99_ms: f64,
    pub list_storm_per_s: f64,
    pub storm_logins_per_s: f64,
    pub argon2: String,
}

impl LoginReport {
    /// The storm's p99 of the list over the idle p99.
    pub fn slowdown(&self) -> f64 {
        self.list_storm_p99_ms / self.list_idle_p99_ms.max(0.001)
    }

    pub fn passes(&self) -> bool {
        self.slowdown() <= 2.0
    }

    pub fn json(&self) -> Value {
        json!({
            "argon2": self.argon2,
            "logins_per_s": round(self.logins_per_s),
            "login_p50_ms": round(self.login_p50_ms),
            "login_p99_ms": round(self.login_p99_ms),
            "login_failures": self.login_failures,
            "list_idle_p99_ms": round(self.list_idle_p99_ms),
            "list_idle_per_s": round(self.list_idle_per_s),
            "list_storm_p99_ms": round(self.list_storm_p99_ms),
            "list_storm_per_s": round(self.list_storm_per_s),
            "storm_logins_per_s": round(self.storm_logins_per_s),
            "storm_slowdown": round(self.slowdown()),
            "pass_storm": self.passes(),
        })
    }

    pub fn print(&self) {
        println!();
        println!(
            "== Logins over HTTP (SQLite store, {}; {STORM_CLIENTS} login clients, {READERS} list clients) ==",
            self.argon2
        );
        println!(
            "logins/s {:.0}  login p50 {:.1} ms  p99 {:.1} ms  failures {}",
            self.logins_per_s, self.login_p50_ms, self.login_p99_ms, self.login_failures
        );
        println!(
            "GET /api/customers p99: idle {:.2} ms ({:.0}/s), during the login storm {:.2} ms ({:.0}/s, {:.0} logins/s) = {:.2}x  {}",
            self.list_idle_p99_ms,
            self.list_idle_per_s,
            self.list_storm_p99_ms,
            self.list_storm_per_s,
            self.storm_logins_per_s,
            self.slowdown(),
            if self.passes() {
                "PASS (<= 2x)"
            } else {
                "FAIL (> 2x)"
            }
        );
    }
}

fn round(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// Runs the server on a fresh SQLite store in `dir` and measures.
pub async fn run(dir: &std::path::Path, window: Duration) -> anyhow::Result<LoginReport> {
    let mut env: HashMap<String, String> = HashMap::new();
    env.insert("EGEC_LISTEN".into(), "127.0.0.1:0".into());
    env.insert("EGEC_DATA_DIR".into(), dir.display().to_string());
    env.insert(
        "EGEC_JWT_SECRET".into(),
        "bench-secret-bench-secret-bench-secret".into(),
    );
    env.insert("EGEC_MASTER_KEY".into(), "22".repeat(32));
    env.insert("EGEC_PHONE_DEFAULT_REGION".into(), "GB".into());
    // A storm of logins from one address is exactly what rate limits stop; here the point
    // is what the logins that do get through cost everyone else, so the limits are lifted.
    env.insert("EGEC_RATE_LIMIT_ENABLED".into(), "false".into());
    // The list client is not a role that must enrol in 2FA, so nothing else changes.
    let config = Config::from_source(&env).map_err(|e| anyhow::anyhow!("config: {e}"))?;
    let running = egec_api::app::start(config).await.context("server start")?;
    let base = format!("http://{}", running.addr);
    let state = &running.state;

    let email = "bench.reader@example.com";
    let meta = Metadata::system(uuid::Uuid::now_v7(), chrono::Utc::now());
    let (_, position) = egec_api::users::create_user(
        &state.bus,
        state.read(),
        &state.passwords,
        egec_api::users::NewUser {
            email,
            name: "Bench Reader",
            role: Role::Superagent,
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

    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(64)
        .build()?;
    let token = login(&client, &base, email).await?;
    for n in 0..CUSTOMERS {
        let r = client
            .post(format!("{base}/api/customers"))
            .bearer_auth(&token)
            .json(&json!({
                "name": format!("Layla Benchmark {n}"),
                "email": format!("layla.{n}@example.com"),
                "phone": "+44 20 7946 0123",
                "country": "United Kingdom",
                "source": "education fair",
                "notes": "Asked about the foundation year."
            }))
            .send()
            .await?;
        ensure!(
            r.status().is_success(),
            "creating a customer answered {}",
            r.status()
        );
    }

    // 1. Logins alone.
    let (logins, login_hist, failures) =
        storm(&client, &base, email, STORM_CLIENTS, window, None).await?;
    let logins_per_s = logins as f64 / window.as_secs_f64();

    // 2. The list on an idle server.
    let (idle_hist, idle_count) = list_load(&client, &base, &token, window).await?;

    // 3. The list during a login storm.
    let stop = Arc::new(AtomicBool::new(false));
    let storm_task = {
        let client = client.clone();
        let base = base.clone();
        let stop = Arc::clone(&stop);
        tokio::spawn(async move {
            storm(
                &client,
                &base,
                email,
                STORM_CLIENTS,
                window * 10,
                Some(stop),
            )
            .await
        })
    };
    // Let the storm fill the hashing pool before measuring.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let storm_started = Instant::now();
    let (storm_hist, storm_count) = list_load(&client, &base, &token, window).await?;
    let storm_elapsed = storm_started.elapsed();
    stop.store(true, Ordering::Relaxed);
    let (storm_logins, _, _) = storm_task.await.context("storm task")??;

    // The parameters as the server really stores them: `$argon2id$v=19$m=19456,t=2,p=1$…`.
    let sample = state
        .passwords
        .hash(&SecretString::from(PASSWORD.to_owned()))
        .await
        .map_err(|e| anyhow::anyhow!("hashing a sample: {e:?}"))?;
    let argon2 = sample
        .split('$')
        .filter(|part| !part.is_empty())
        .take(3)
        .collect::<Vec<_>>()
        .join(" ");
    running.task.abort();
    Ok(LoginReport {
        logins_per_s,
        login_p50_ms: ms(&login_hist, 0.5),
        login_p99_ms: ms(&login_hist, 0.99),
        login_failures: failures,
        list_idle_p99_ms: ms(&idle_hist, 0.99),
        list_idle_per_s: idle_count as f64 / window.as_secs_f64(),
        list_storm_p99_ms: ms(&storm_hist, 0.99),
        list_storm_per_s: storm_count as f64 / storm_elapsed.as_secs_f64(),
        // The storm ran from its start to the stop flag: half a second before the window,
        // the window itself, and the time to notice the flag.
        storm_logins_per_s: storm_logins as f64 / (storm_elapsed.as_secs_f64() + 0.5),
        argon2,
    })
}

fn ms(h: &Histogram<u64>, q: f64) -> f64 {
    h.value_at_quantile(q) as f64 / 1000.0
}

async fn login(client: &reqwest::Client, base: &str, email: &str) -> anyhow::Result<String> {
    let r = client
        .post(format!("{base}/api/auth/login"))
        .json(&json!({ "email": email, "password": PASSWORD }))
        .send()
        .await?;
    if !r.status().is_success() {
        bail!("login answered {}", r.status());
    }
    let body: Value = r.json().await?;
    body["token"]
        .as_str()
        .map(str::to_owned)
        .context("login answer without a token")
}

/// `clients` tasks logging in back to back for `window` (or until `stop`). Answers the
/// successful logins, their latency histogram (µs) and the failures.
async fn storm(
    client: &reqwest::Client,
    base: &str,
    email: &str,
    clients: usize,
    window: Duration,
    stop: Option<Arc<AtomicBool>>,
) -> anyhow::Result<(u64, Histogram<u64>, u64)> {
    let deadline = Instant::now() + window;
    let mut tasks = Vec::with_capacity(clients);
    for _ in 0..clients {
        let client = client.clone();
        let base = base.to_owned();
        let email = email.to_owned();
        let stop = stop.clone();
        tasks.push(tokio::spawn(async move {
            let mut hist = Histogram::<u64>::new(3)?;
            let mut ok = 0_u64;
            let mut failed = 0_u64;
            while Instant::now() < deadline
                && !stop.as_ref().is_some_and(|s| s.load(Ordering::Relaxed))
            {
                let started = Instant::now();
                match login(&client, &base, &email).await {
                    Ok(_) => {
                        ok += 1;
                        hist.record(started.elapsed().as_micros() as u64)?;
                    }
                    Err(_) => failed += 1,
                }
            }
            anyhow::Ok((ok, hist, failed))
        }));
    }
    let mut total = 0;
    let mut failures = 0;
    let mut hist = Histogram::<u64>::new(3)?;
    for t in tasks {
        let (ok, h, failed) = t.await??;
        total += ok;
        failures += failed;
        hist.add(h)?;
    }
    Ok((total, hist, failures))
}

/// `READERS` tasks listing customers back to back for `window`. Answers the latency
/// histogram (µs) and the number of lists; any non-200 answer fails the run.
async fn list_load(
    client: &reqwest::Client,
    base: &str,
    token: &str,
    window: Duration,
) -> anyhow::Result<(Histogram<u64>, u64)> {
    let deadline = Instant::now() + window;
    let mut tasks = Vec::with_capacity(READERS);
    for _ in 0..READERS {
        let client = client.clone();
        let url = format!("{base}/api/customers?per_page=20");
        let token = token.to_owned();
        tasks.push(tokio::spawn(async move {
            let mut hist = Histogram::<u64>::new(3)?;
            let mut n = 0_u64;
            while Instant::now() < deadline {
                let started = Instant::now();
                let r = client.get(&url).bearer_auth(&token).send().await?;
                ensure!(r.status().is_success(), "list answered {}", r.status());
                r.bytes().await?;
                hist.record(started.elapsed().as_micros() as u64)?;
                n += 1;
            }
            anyhow::Ok((hist, n))
        }));
    }
    let mut hist = Histogram::<u64>::new(3)?;
    let mut total = 0;
    for t in tasks {
        let (h, n) = t.await??;
        hist.add(h)?;
        total += n;
    }
    Ok((hist, total))
}
