//! The closed loop of clients that sends `POST /api/customers` to the nodes and times the
//! answers that arrive inside the window.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use hdrhistogram::Histogram;
use serde_json::{Value, json};

use super::{EMAIL, PASSWORD};

pub(super) async fn login(client: &reqwest::Client, base: &str) -> anyhow::Result<String> {
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
pub(super) fn customer(tag: &str, n: u64) -> Value {
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
pub(super) struct ClientOutcome {
    pub(super) node: usize,
    pub(super) ok: u64,
    pub(super) hist: Histogram<u64>,
    pub(super) non_2xx: u64,
    pub(super) transport_errors: u64,
    pub(super) failures: Vec<String>,
}

/// The closed loop: `clients` tasks, client `i` on node `i % nodes`, each sending its next
/// create as soon as the previous one is answered, until the window ends.
pub(super) async fn run(
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

#[cfg(test)]
mod tests {
    use egec_domain::values::{PassportNumber, PhoneE164};

    use super::customer;

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
}
