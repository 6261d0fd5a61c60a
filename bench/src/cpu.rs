//! Where a measured window's CPU time went, from `/proc`: the whole machine, the servers the
//! benchmark started, the benchmark itself, PostgreSQL (the backends of the benchmark's
//! database apart from the rest), NATS, and everything else.
//!
//! The benchmark machine is shared, so a figure is only worth reading beside how much of the
//! machine it had: "everything else" is other people's builds and tests.

use std::collections::HashMap;

use serde_json::{Value, json};

/// Clock ticks per second of the CPU times in `/proc` (`USER_HZ`): 100 on every Linux
/// architecture this runs on, whatever the kernel's own tick rate.
const TICKS_PER_SECOND: f64 = 100.0;

/// Busy and total ticks of all cores (`/proc/stat`).
fn machine() -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(line) = stat.lines().find(|l| l.starts_with("cpu ")) else {
        return (0, 0);
    };
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal; guest time is already inside user.
    let total: u64 = v.iter().take(8).sum();
    let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
    (total - idle, total)
}

/// User plus system ticks of one process (`/proc/<pid>/stat`), 0 when it is gone.
fn process_ticks(pid: &str) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The command name may hold spaces, so fields are counted from its closing parenthesis.
    let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
        return 0;
    };
    let f: Vec<&str> = rest.split_whitespace().collect();
    // The first field after the name is field 3 (state); utime is 14 and stime 15.
    let get = |i: usize| f.get(i).and_then(|x| x.parse::<u64>().ok()).unwrap_or(0);
    get(11) + get(12)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Class {
    /// A PostgreSQL backend connected to the benchmark's database.
    PgOurs,
    /// Any other PostgreSQL process: other databases' backends, WAL writer, checkpointer.
    PgOther,
    Nats,
}

/// Ticks of every PostgreSQL and NATS process, by pid.
fn services(database: &str) -> HashMap<String, (Class, u64)> {
    let mut out = HashMap::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for entry in dir.flatten() {
        let pid = entry.file_name().to_string_lossy().into_owned();
        if !pid.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        let class = match comm.trim() {
            "postgres" => {
                // A backend names its database in its title: "postgres: 15/main: user db …".
                let cmdline =
                    std::fs::read_to_string(format!("/proc/{pid}/cmdline")).unwrap_or_default();
                if cmdline.split_whitespace().any(|w| w == database) {
                    Class::PgOurs
                } else {
                    Class::PgOther
                }
            }
            "nats-server" => Class::Nats,
            _ => continue,
        };
        out.insert(pid.clone(), (class, process_ticks(&pid)));
    }
    out
}

/// The counters at the start of a window.
pub struct Snapshot {
    database: String,
    nodes: Vec<String>,
    machine: (u64, u64),
    node_ticks: Vec<u64>,
    own: u64,
    services: HashMap<String, (Class, u64)>,
    at: std::time::Instant,
}

impl Snapshot {
    /// Starts counting for the servers `nodes` (pids) on PostgreSQL database `database`.
    pub fn take(database: &str, nodes: &[String]) -> Self {
        Self {
            database: database.to_owned(),
            nodes: nodes.to_vec(),
            machine: machine(),
            node_ticks: nodes.iter().map(|p| process_ticks(p)).collect(),
            own: process_ticks("self"),
            services: services(database),
            at: std::time::Instant::now(),
        }
    }

    /// Where the CPU went since [`Snapshot::take`].
    pub fn since(&self) -> CpuUse {
        let seconds = self.at.elapsed().as_secs_f64().max(1e-3);
        let cores_of = |ticks: u64| ticks as f64 / TICKS_PER_SECOND / seconds;
        let (busy1, total1) = machine();
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let total = total1.saturating_sub(self.machine.1).max(1);
        let busy = busy1.saturating_sub(self.machine.0);
        let mut by_class: HashMap<Class, u64> = HashMap::new();
        // Processes that started inside the window count from zero; those that ended inside
        // it are lost, which only ever undercounts the services.
        for (pid, (class, ticks)) in services(&self.database) {
            let before = self.services.get(&pid).map_or(0, |(_, t)| *t);
            *by_class.entry(class).or_default() += ticks.saturating_sub(before);
        }
        let nodes: Vec<f64> = self
            .nodes
            .iter()
            .zip(&self.node_ticks)
            .map(|(p, before)| cores_of(process_ticks(p).saturating_sub(*before)))
            .collect();
        let mut used = CpuUse {
            cores,
            machine_busy: busy as f64 / total as f64,
            nodes,
            load_generator: cores_of(process_ticks("self").saturating_sub(self.own)),
            pg_ours: cores_of(by_class.get(&Class::PgOurs).copied().unwrap_or(0)),
            pg_other: cores_of(by_class.get(&Class::PgOther).copied().unwrap_or(0)),
            nats: cores_of(by_class.get(&Class::Nats).copied().unwrap_or(0)),
            others: 0.0,
        };
        used.others = (used.machine_busy * cores as f64
            - used.nodes.iter().sum::<f64>()
            - used.load_generator
            - used.pg_ours
            - used.pg_other
            - used.nats)
            .max(0.0);
        used
    }
}

/// A window's CPU, in cores (1.0 = one core busy for the whole window).
#[derive(Debug, Clone, Default)]
pub struct CpuUse {
    pub cores: usize,
    /// Busy share of the whole machine, 0–1.
    pub machine_busy: f64,
    pub nodes: Vec<f64>,
    pub load_generator: f64,
    /// PostgreSQL backends of the benchmark's database.
    pub pg_ours: f64,
    /// Every other PostgreSQL process (background writers, other databases).
    pub pg_other: f64,
    pub nats: f64,
    /// Everything else: other people's work and the kernel.
    pub others: f64,
}

fn round(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// The database name in a PostgreSQL URL (empty when it names none), to tell the backends of
/// the benchmark's database from the rest.
pub fn database_of(url: &str) -> String {
    url.parse::<tokio_postgres::Config>()
        .ok()
        .and_then(|config| config.get_dbname().map(str::to_owned))
        .unwrap_or_default()
}

impl CpuUse {
    /// The machine's CPU time per operation, in microseconds, at `per_s` operations a second:
    /// everything the machine was busy with in the window (this benchmark, PostgreSQL, the
    /// kernel, a neighbour's work) charged to the operations. Zero without operations.
    pub fn us_per_op(&self, per_s: f64) -> f64 {
        if per_s > 0.0 {
            self.machine_busy * self.cores as f64 * 1e6 / per_s
        } else {
            0.0
        }
    }

    /// Every PostgreSQL process, in cores: the benchmark's backends, the background processes
    /// (WAL writer, checkpointer) that work for them, and any other database's backends.
    pub fn postgres(&self) -> f64 {
        self.pg_ours + self.pg_other
    }

    /// One line for stderr: how busy the machine was and what one operation cost it.
    pub fn per_op_line(&self, per_s: f64, operation: &str) -> String {
        format!(
            "CPU {:.0} % of {} cores (benchmark process {:.2}, PostgreSQL {:.2} cores): {:.0} µs {operation}",
            self.machine_busy * 100.0,
            self.cores,
            self.load_generator,
            self.postgres(),
            self.us_per_op(per_s)
        )
    }

    pub fn json(&self) -> Value {
        json!({
            "cores": self.cores,
            "machine_busy": round(self.machine_busy),
            "nodes": self.nodes.iter().map(|c| round(*c)).collect::<Vec<_>>(),
            "load_generator": round(self.load_generator),
            "postgres_this_db": round(self.pg_ours),
            "postgres_other": round(self.pg_other),
            "nats": round(self.nats),
            "everything_else": round(self.others),
        })
    }

    pub fn line(&self) -> String {
        format!(
            "CPU in the window (cores of {}): machine {:.0} % busy; nodes {}, PostgreSQL \
             {:.2} (+{:.2} other PostgreSQL), NATS {:.2}, load generator {:.2}, everything else \
             (other people's work) {:.2}",
            self.cores,
            self.machine_busy * 100.0,
            self.nodes
                .iter()
                .map(|c| format!("{c:.2}"))
                .collect::<Vec<_>>()
                .join(" + "),
            self.pg_ours,
            self.pg_other,
            self.nats,
            self.load_generator,
            self.others
        )
    }
}
