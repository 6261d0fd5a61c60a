//! The projections crate's own rebuild, timed when the crate is built in (feature
//! `projections`). It is optional because the crate is being written at the same time as
//! this benchmark; without the feature the report says so instead of showing a figure.

use std::path::Path;

use crate::setup::WriteSide;

/// What the projections' rebuild measured, or why it was not measured.
pub enum ProjectionsOutcome {
    // Only built with the feature; without it every outcome is `NotMeasured`.
    Measured {
        /// Events the blue/green rebuild read.
        events: u64,
        /// Wall time of the blue/green rebuild (shadow tables filled, indexed and swapped):
        /// the median of `runs`.
        seconds: f64,
        /// Wall time of each blue/green rebuild, in the order they ran.
        runs: Vec<f64>,
        /// Events the live runner folded when it started from an empty read model.
        catch_up_events: i64,
        /// Wall time of that first catch-up.
        catch_up_seconds: f64,
    },
    NotMeasured(String),
}

/// Starts the real projection runner on the seeded log, waits for its first catch-up (a
/// build from position 0 into empty read models), then times a blue/green rebuild of the
/// `customers` projection `runs` times, one after another. A failure is reported, not fatal:
/// the other figures stand.
pub async fn rebuild(ws: &WriteSide, data_dir: &Path, runs: usize) -> ProjectionsOutcome {
    match measure(ws, data_dir, runs.max(1)).await {
        Ok(outcome) => outcome,
        Err(e) => ProjectionsOutcome::NotMeasured(format!("failed: {e:#}")),
    }
}

async fn measure(
    ws: &WriteSide,
    data_dir: &Path,
    runs: usize,
) -> anyhow::Result<ProjectionsOutcome> {
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use egec_commands::codec::Codec;
    use egec_commands::vault::Vault;
    use egec_projections::ProjectionRunner;

    /// Longest wait for the first catch-up; far beyond any healthy run, so only a stuck
    /// runner hits it.
    const CATCH_UP_LIMIT: Duration = Duration::from_secs(900);

    // A fresh vault: keys come from the table with a cold cache, as after a restart.
    let vault = Arc::new(Vault::new(
        ws.stores.keys.clone(),
        ws.master.clone(),
        1 << 20,
    ));
    let codec = Arc::new(Codec::new(vault));
    let head = ws.stores.log.head().await?.position;
    // Nothing appends during the measurement, so the published head never moves.
    let (_head_tx, head_rx) = tokio::sync::watch::channel(head);

    let started = Instant::now();
    let runner = ProjectionRunner::start(&ws.stores, data_dir, codec, head_rx).await?;
    if !runner.wait_for(head, CATCH_UP_LIMIT).await {
        runner.shutdown().await;
        anyhow::bail!("the projection runner did not catch up with position {head}");
    }
    let catch_up_seconds = started.elapsed().as_secs_f64();

    let mut events = 0;
    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs {
        match runner.rebuild("customers", |_, _| {}).await {
            Ok(report) => {
                events = report.events;
                times.push(report.elapsed.as_secs_f64());
            }
            Err(e) => {
                runner.shutdown().await;
                return Err(e.into());
            }
        }
    }
    runner.shutdown().await;
    let mut sorted = times.clone();
    sorted.sort_by(f64::total_cmp);
    Ok(ProjectionsOutcome::Measured {
        events,
        seconds: sorted[sorted.len() / 2],
        runs: times,
        catch_up_events: head,
        catch_up_seconds,
    })
}
