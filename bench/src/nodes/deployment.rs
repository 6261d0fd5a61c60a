//! The `egec serve` processes of one configuration: started on free ports with a fresh
//! superadmin, watched through their stderr and `/metrics`, killed when dropped.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use parking_lot::Mutex;

use super::{EMAIL, KEPT_LINES, PASSWORD};

/// What a node wrote to stderr: counts, and the last lines for a failure report.
#[derive(Default)]
pub(super) struct NodeLog {
    pub(super) warnings: u64,
    pub(super) ryw_timeouts: u64,
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
pub(super) struct Node {
    child: Child,
    pub(super) base: String,
    pub(super) log: Arc<Mutex<NodeLog>>,
    _dir: tempfile::TempDir,
}

impl Node {
    pub(super) fn pid(&self) -> String {
        self.child.id().to_string()
    }

    /// The last lines the node logged, for an error message.
    pub(super) fn tail(&self) -> String {
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
pub(super) static LIVE_STREAMS: Mutex<Vec<String>> = Mutex::new(Vec::new());

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
pub(super) struct Deployment {
    pub(super) binary: PathBuf,
    pub(super) database: String,
    pub(super) database_url: String,
    pub(super) nats_url: String,
    pub(super) tag: String,
}

impl Deployment {
    /// The JetStream stream the deployment publishes its log to.
    pub(super) fn stream(&self) -> String {
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
    pub(super) fn create_user(&self) -> anyhow::Result<()> {
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
    pub(super) async fn serve(&self, client: &reqwest::Client) -> anyhow::Result<Node> {
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

/// Sum and count of `egec_append_batch_size` of each node (zeros where unreadable).
pub(super) async fn batches(client: &reqwest::Client, bases: &[String]) -> Vec<(f64, f64)> {
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

#[cfg(test)]
mod tests {
    use super::NodeLog;

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
