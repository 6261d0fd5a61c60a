//! The figures of `--nodes`: one row per configuration, the database's limits beside them,
//! the table and the JSON line.

use std::path::PathBuf;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde_json::{Value, json};

use crate::cpu::CpuUse;

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

impl NodesRun {
    pub fn per_second(&self) -> f64 {
        self.ok as f64 / self.seconds
    }

    pub(super) fn failed(&self) -> bool {
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

pub(super) fn ms(h: &Histogram<u64>, q: f64) -> f64 {
    h.value_at_quantile(q) as f64 / 1000.0
}
