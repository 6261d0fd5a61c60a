//! The printed table and the closing JSON line.

use std::time::Duration;

use serde_json::{Value, json};

use crate::batch_sizes::BatchStats;
use crate::dblimits::BATCH_ROWS;
use crate::profile::Profile;
use crate::projections::ProjectionsOutcome;
use crate::rebuild::{PAGE, PassReport, SeedReport};
use crate::rounds::Round;
use crate::workload::RunResult;

/// Commands per second at 64 clients must reach this multiple of the single-row INSERT rate.
pub const TARGET_RATIO: f64 = 2.0;
/// Most acceptable p99 command latency.
pub const TARGET_P99_MS: f64 = 15.0;
/// Least acceptable rebuild speed.
pub const TARGET_REBUILD_PER_S: f64 = 100_000.0;
/// The client count the throughput target applies to.
pub const TARGET_CLIENTS: usize = 64;

/// One command run beside the database's single-row rate at the same concurrency.
pub struct CommandRow {
    pub run: RunResult,
    pub db_single_insert_per_s: f64,
    pub row_json_bytes: usize,
    /// Every paired round at this client count; `run` and `db_single_insert_per_s` are the
    /// round with the median ratio.
    pub rounds: Vec<Round>,
}

impl CommandRow {
    pub fn new(
        run: RunResult,
        db_single_insert_per_s: f64,
        row_json_bytes: usize,
        rounds: Vec<Round>,
    ) -> Self {
        Self {
            run,
            db_single_insert_per_s,
            row_json_bytes,
            rounds,
        }
    }
}

pub struct RebuildRow {
    pub seeded: SeedReport,
    /// The benchmark's own fold with a cold key cache (keys preloaded one query per page, as
    /// the projections do); the target applies to the blue/green rebuild in `projections`.
    pub full: PassReport,
    /// The same pass again with every key cached: the cost without key loads.
    pub warm: PassReport,
    pub read: PassReport,
    pub projections: ProjectionsOutcome,
}

pub struct BackendReport {
    pub backend: &'static str,
    pub commands: Vec<CommandRow>,
    pub db_batch500_rows_per_s: Option<f64>,
    pub rebuild: Option<RebuildRow>,
    pub profile: Option<Profile>,
    pub errors: Vec<String>,
}

impl BackendReport {
    pub fn new(backend: &'static str) -> Self {
        Self {
            backend,
            commands: Vec::new(),
            db_batch500_rows_per_s: None,
            rebuild: None,
            profile: None,
            errors: Vec::new(),
        }
    }

    /// Takes in what another phase of the same backend measured.
    pub fn merge(&mut self, phase: BackendReport) {
        self.commands.extend(phase.commands);
        self.db_batch500_rows_per_s = self.db_batch500_rows_per_s.or(phase.db_batch500_rows_per_s);
        self.rebuild = self.rebuild.take().or(phase.rebuild);
        self.profile = self.profile.take().or(phase.profile);
        self.errors.extend(phase.errors);
    }
}

fn verdict(pass: bool) -> &'static str {
    if pass { "PASS" } else { "FAIL" }
}

/// `a / b`, or 0 when `b` is not positive (nothing was measured), never infinity.
pub(crate) fn ratio(a: f64, b: f64) -> f64 {
    if b > 0.0 { a / b } else { 0.0 }
}

fn round(x: f64, places: i32) -> f64 {
    let f = 10_f64.powi(places);
    (x * f).round() / f
}

/// Each round's CPU per command and per single-row INSERT, with the budget a command has
/// for the target ratio on `cores` cores: "47/75 µs (70/95 %), budget 40 µs".
fn cpu_text(rounds: &[Round], cores: usize) -> String {
    rounds
        .iter()
        .map(|p| {
            format!(
                "{:.0}/{:.0} µs ({:.0}/{:.0} %), budget {:.0} µs",
                p.command_cpu.us,
                p.single_insert_cpu.us,
                p.command_cpu.busy * 100.0,
                p.single_insert_cpu.busy * 100.0,
                p.budget_us(TARGET_RATIO, cores)
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

fn batch_text(b: &BatchStats) -> String {
    format!("{:.1}/{}/{}", b.mean, b.p50, b.max)
}

/// The human-readable part of the report.
pub fn print_table(reports: &[BackendReport], measure: Duration, warmup: Duration) {
    println!();
    println!(
        "== Customer commands through CommandBus (load, decide, encrypt, group-commit append); \
         {:.0} s window after {:.0} s warm-up ==",
        measure.as_secs_f64(),
        warmup.as_secs_f64()
    );
    println!(
        "{:<9} {:>7} {:>11} {:>7} {:>7} {:>8} {:>8} {:>6} {:>15} {:>13} {:>7} {:>13} {:>7}",
        "backend",
        "clients",
        "commands/s",
        "p50 ms",
        "p99 ms",
        "creates",
        "updates",
        "errors",
        "batch mean/p50/max",
        "DB 1-row/s",
        "ratio",
        "DB 500-row/s",
        "ratio"
    );
    for r in reports {
        let batch500 = r.db_batch500_rows_per_s.unwrap_or(0.0);
        for row in &r.commands {
            let run = &row.run;
            println!(
                "{:<9} {:>7} {:>11.0} {:>7.2} {:>7.2} {:>8} {:>8} {:>6} {:>18} {:>13.0} {:>7.2} {:>13.0} {:>7.3}",
                r.backend,
                run.clients,
                run.per_second(),
                run.p50_ms(),
                run.p99_ms(),
                run.creates,
                run.updates,
                run.errors,
                batch_text(&run.batches),
                row.db_single_insert_per_s,
                ratio(run.per_second(), row.db_single_insert_per_s),
                batch500,
                ratio(run.per_second(), batch500),
            );
            if let Some(e) = &run.first_error {
                println!("          first error: {e}");
            }
            if row.rounds.len() > 1 {
                let pairs: Vec<String> = row
                    .rounds
                    .iter()
                    .map(|p| {
                        format!(
                            "{:.0}/{:.0} = {:.2}",
                            p.commands_per_s,
                            p.single_insert_per_s,
                            p.ratio()
                        )
                    })
                    .collect();
                println!(
                    "          {} rounds (commands/s / 1-row INSERT/s right after): {}; the row \
                     above is the median",
                    row.rounds.len(),
                    pairs.join(", ")
                );
            }
            println!(
                "          CPU of the machine per command / per 1-row INSERT (busy share of its \
                 cores), and the most a command may cost for {TARGET_RATIO} x with every core \
                 busy: {}",
                cpu_text(&row.rounds, run.cpu.cores)
            );
        }
    }
    if let Some(bytes) = reports
        .iter()
        .flat_map(|r| r.commands.first())
        .map(|c| c.row_json_bytes)
        .next()
    {
        println!(
            "(DB rows: the events table's exact shape, payload+metadata {bytes} bytes of JSON \
             with real ciphertext; PostgreSQL single-row INSERTs use as many connections as \
             there are clients, SQLite one writer; 500-row transactions use one connection)"
        );
    }

    println!();
    println!("== Where a command's time goes: each stage alone, same store, same concurrency ==");
    println!(
        "{:<9} {:>7} {:<52} {:>11} {:>8}",
        "backend", "clients", "stage", "per s", "p99 ms"
    );
    for r in reports {
        let Some(p) = &r.profile else { continue };
        for stage in &p.stages {
            println!(
                "{:<9} {:>7} {:<52} {:>11.0} {:>8.2}",
                r.backend, p.clients, stage.name, stage.per_s, stage.p99_ms
            );
        }
        println!(
            "{:<9} {:>7} {:<52} {:>20}",
            r.backend,
            p.clients,
            "appender-alone batch mean/p50/max",
            batch_text(&p.appender_batches)
        );
        println!(
            "{:<9} {:>7} {:<52} {:>11.1} µs",
            r.backend, 1, "Codec::encode of a create (CPU, one task)", p.encode_us
        );
        println!(
            "{:<9} {:>7} {:<52} {:>11.1} µs",
            r.backend, 1, "Codec::decode of a create, key cached (CPU)", p.decode_us
        );
    }

    println!();
    println!(
        "== Rebuild: read_all pages of {PAGE} + Codec::decode + fold with customer::evolve into a \
         HashMap =="
    );
    println!(
        "{:<9} {:>9} {:>9} {:>10} {:>9} {:>16} {:>15} {:>12} {:>15}",
        "backend",
        "events",
        "customers",
        "seed ev/s",
        "seconds",
        "rebuild ev/s",
        "keys cached/s",
        "read-only/s",
        "projections/s"
    );
    for r in reports {
        let Some(rb) = &r.rebuild else { continue };
        let seed_rate = ratio(rb.seeded.events as f64, rb.seeded.append_seconds);
        let projections = match &rb.projections {
            ProjectionsOutcome::Measured {
                events, seconds, ..
            } => format!("{:.0}", ratio(*events as f64, *seconds)),
            ProjectionsOutcome::NotMeasured(_) => "n/a".to_owned(),
        };
        println!(
            "{:<9} {:>9} {:>9} {:>10.0} {:>9.2} {:>16.0} {:>15.0} {:>12.0} {:>15}",
            r.backend,
            rb.full.events,
            rb.full.customers,
            seed_rate,
            rb.full.seconds,
            rb.full.per_second(),
            rb.warm.per_second(),
            rb.read.per_second(),
            projections
        );
        match &rb.projections {
            ProjectionsOutcome::NotMeasured(why) => {
                println!("          projections crate rebuild {why}")
            }
            ProjectionsOutcome::Measured {
                events,
                seconds,
                runs,
                catch_up_events,
                catch_up_seconds,
            } => println!(
                "          projections crate: blue/green rebuild of `customers` {events} events in \
                 {seconds:.2} s (median of {} runs: {}); first catch-up of the live runner from \
                 empty read models {catch_up_events} events in {catch_up_seconds:.2} s = {:.0} \
                 events/s",
                runs.len(),
                runs.iter()
                    .map(|s| format!("{s:.2} s"))
                    .collect::<Vec<_>>()
                    .join(", "),
                ratio(*catch_up_events as f64, *catch_up_seconds)
            ),
        }
    }
    println!(
        "(rebuild ev/s: fresh codec, so the subject keys are read from the key table, one query \
         per page, as after a restart; keys cached/s: the same pass again; read-only/s: the \
         paged read without decoding; projections/s: the real blue/green rebuild, which the \
         target applies to)"
    );

    println!();
    println!("== Targets ==");
    for r in reports {
        for row in &r.commands {
            let run = &row.run;
            if run.clients == TARGET_CLIENTS {
                let need = TARGET_RATIO * row.db_single_insert_per_s;
                println!(
                    "{:<9} commands/s at {} clients >= {TARGET_RATIO} x single-row INSERT/s: \
                     {:.0} vs {:.0}  {}",
                    r.backend,
                    run.clients,
                    run.per_second(),
                    need,
                    verdict(run.per_second() >= need)
                );
            }
            println!(
                "{:<9} p99 <= {TARGET_P99_MS} ms at {} clients: {:.2} ms  {}",
                r.backend,
                run.clients,
                run.p99_ms(),
                verdict(run.p99_ms() <= TARGET_P99_MS)
            );
        }
        if let Some(rb) = &r.rebuild {
            match real_rebuild_per_s(rb) {
                Some(per_s) => println!(
                    "{:<9} rebuild (blue/green of the projections crate) >= {TARGET_REBUILD_PER_S:.0} events/s: {per_s:.0}  {}",
                    r.backend,
                    verdict(per_s >= TARGET_REBUILD_PER_S)
                ),
                None => println!(
                    "{:<9} rebuild (blue/green of the projections crate): not measured",
                    r.backend
                ),
            }
            println!(
                "{:<9}   (for reference: the benchmark's own fold, cold keys: {:.0} events/s)",
                r.backend,
                rb.full.per_second(),
            );
        }
        for e in &r.errors {
            println!("{:<9} ERROR: {e}", r.backend);
        }
    }
    println!();
}

/// Every figure as one line of JSON.
pub fn json_value(
    reports: &[BackendReport],
    cores: usize,
    quick: bool,
    measure: Duration,
    warmup: Duration,
) -> Value {
    let mut results = Vec::new();
    let mut rebuilds = Vec::new();
    let mut profiles = Vec::new();
    let mut errors = Vec::new();
    for r in reports {
        let batch500 = r.db_batch500_rows_per_s;
        for row in &r.commands {
            let run = &row.run;
            let per_s = run.per_second();
            results.push(json!({
                "backend": r.backend,
                "clients": run.clients,
                "commands_per_s": round(per_s, 1),
                "p50_ms": round(run.p50_ms(), 3),
                "p99_ms": round(run.p99_ms(), 3),
                "creates": run.creates,
                "updates": run.updates,
                "errors": run.errors,
                "append_batches": run.batches.batches,
                "append_batch_mean": round(run.batches.mean, 2),
                "append_batch_p50": run.batches.p50,
                "append_batch_p99": run.batches.p99,
                "append_batch_max": run.batches.max,
                "db_single_insert_per_s": round(row.db_single_insert_per_s, 1),
                "db_batch500_rows_per_s": batch500.map(|b| round(b, 1)),
                "ratio_vs_single_insert": round(ratio(per_s, row.db_single_insert_per_s), 3),
                "ratio_vs_batch500": batch500.map(|b| round(ratio(per_s, b), 4)),
                "row_json_bytes": row.row_json_bytes,
                "rounds": row.rounds.iter().map(|p| json!({
                    "commands_per_s": round(p.commands_per_s, 1),
                    "p99_ms": round(p.p99_ms, 3),
                    "db_single_insert_per_s": round(p.single_insert_per_s, 1),
                    "ratio_vs_single_insert": round(p.ratio(), 3),
                    "cpu_us_per_command": round(p.command_cpu.us, 1),
                    "machine_busy_commands": round(p.command_cpu.busy, 3),
                    "cpu_us_per_single_insert": round(p.single_insert_cpu.us, 1),
                    "machine_busy_single_insert": round(p.single_insert_cpu.busy, 3),
                    "cpu_budget_us_per_command": round(p.budget_us(TARGET_RATIO, run.cpu.cores), 1),
                })).collect::<Vec<_>>(),
                "pass_throughput": (run.clients == TARGET_CLIENTS)
                    .then_some(per_s >= TARGET_RATIO * row.db_single_insert_per_s),
                "pass_p99": run.p99_ms() <= TARGET_P99_MS,
            }));
        }
        if let Some(rb) = &r.rebuild {
            let projections = match &rb.projections {
                ProjectionsOutcome::Measured {
                    events,
                    seconds,
                    runs,
                    catch_up_events,
                    catch_up_seconds,
                } => json!({
                    "events": events,
                    "seconds": round(*seconds, 3),
                    "runs_seconds": runs.iter().map(|s| round(*s, 3)).collect::<Vec<_>>(),
                    "events_per_s": round(ratio(*events as f64, *seconds), 1),
                    "catch_up_events": catch_up_events,
                    "catch_up_seconds": round(*catch_up_seconds, 3),
                    "catch_up_events_per_s":
                        round(ratio(*catch_up_events as f64, *catch_up_seconds), 1),
                }),
                ProjectionsOutcome::NotMeasured(why) => json!({ "not_measured": why }),
            };
            rebuilds.push(json!({
                "backend": r.backend,
                "events": rb.full.events,
                "customers": rb.full.customers,
                "seed_key_seconds": round(rb.seeded.key_seconds, 3),
                "seed_append_seconds": round(rb.seeded.append_seconds, 3),
                "rebuild_seconds": round(rb.full.seconds, 3),
                "rebuild_events_per_s": round(rb.full.per_second(), 1),
                "rebuild_keys_cached_events_per_s": round(rb.warm.per_second(), 1),
                "read_only_events_per_s": round(rb.read.per_second(), 1),
                "projections_rebuild": projections,
                "pass_rebuild": real_rebuild_per_s(rb).is_some_and(|p| p >= TARGET_REBUILD_PER_S),
            }));
        }
        if let Some(p) = &r.profile {
            let stages: Vec<Value> = p
                .stages
                .iter()
                .map(|st| {
                    json!({
                        "stage": st.name,
                        "per_s": round(st.per_s, 1),
                        "p99_ms": round(st.p99_ms, 3),
                    })
                })
                .collect();
            profiles.push(json!({
                "backend": r.backend,
                "clients": p.clients,
                "stages": stages,
                "appender_alone_batch_mean": round(p.appender_batches.mean, 2),
                "appender_alone_batch_max": p.appender_batches.max,
                "encode_us": round(p.encode_us, 2),
                "decode_us": round(p.decode_us, 2),
            }));
        }
        for e in &r.errors {
            errors.push(json!({ "backend": r.backend, "error": e }));
        }
    }
    let line: Value = json!({
        "bench": "egec",
        "quick": quick,
        "machine": { "cores": cores },
        "warmup_s": warmup.as_secs_f64(),
        "window_s": measure.as_secs_f64(),
        "batch_rows": BATCH_ROWS,
        "targets": {
            "commands_vs_single_insert_at_64": TARGET_RATIO,
            "p99_ms": TARGET_P99_MS,
            "rebuild_events_per_s": TARGET_REBUILD_PER_S,
        },
        "results": results,
        "rebuild": rebuilds,
        "profile": profiles,
        "errors": errors,
    });
    line
}

/// The rebuild the target is about: the projections crate's blue/green rebuild, which is what
/// `egec replay rebuild` and a new projection version run. The benchmark's own fold is a
/// component figure beside it.
fn real_rebuild_per_s(rb: &RebuildRow) -> Option<f64> {
    match &rb.projections {
        ProjectionsOutcome::Measured {
            events, seconds, ..
        } => Some(ratio(*events as f64, *seconds)),
        ProjectionsOutcome::NotMeasured(_) => None,
    }
}
