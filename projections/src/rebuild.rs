//! Blue/green rebuild: a projection is built from position 0 into fresh shadow tables beside
//! the live ones while the live runner keeps applying and the API keeps reading; once the
//! shadow has caught up, the live runner is held back for a moment while the last events are
//! applied and the shadow tables take the live ones' place together with the checkpoint.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use tokio::sync::mpsc;

use crate::decode::decode_for;
use crate::error::{ProjectionError, StorageError};
use crate::fold::Work;
use crate::kind::ProjectionKind;
use crate::rows::RebuildReport;
use crate::runner::{LivePosition, RunnerHandle};
use crate::store::Shadow;

/// Events per log read during a rebuild: big batches, so that rows touched many times are
/// written once per batch and each transaction's fixed cost is spread thin.
pub(crate) const REBUILD_BATCH: usize = 10_000;

/// Batches read and decoded ahead of the one being written.
const READ_AHEAD: usize = 2;

/// Clears the "rebuilding" flag however the rebuild ends.
struct Flag<'a>(&'a AtomicBool);

impl Drop for Flag<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::SeqCst);
    }
}

#[derive(Default)]
struct Counters {
    events: u64,
    applied: u64,
}

impl RunnerHandle {
    /// Rebuilds `projection` blue/green and answers what it did. `progress(done, head)` is
    /// called after every batch with the position reached and the log head. Reads keep being
    /// answered from the live tables throughout; the live runner pauses only while the last
    /// events are applied and the tables are swapped (see `RebuildReport::swap_pause`). On
    /// any error the shadow tables are dropped and the live ones stay as they were.
    pub async fn rebuild(
        &self,
        projection: &str,
        progress: impl Fn(i64, i64),
    ) -> Result<RebuildReport, ProjectionError> {
        let kind = ProjectionKind::from_name(projection)
            .ok_or_else(|| ProjectionError::UnknownProjection(projection.to_owned()))?;
        let slot = self.shared.slot(kind);
        if slot.rebuilding.swap(true, Ordering::SeqCst) {
            return Err(ProjectionError::RebuildRunning(kind.name()));
        }
        let _flag = Flag(&slot.rebuilding);
        tracing::info!(projection = kind.name(), "rebuild started");
        let started = Instant::now();
        let store = Arc::clone(self.shared.store());
        let shadow = store.create_shadow(kind).await?;
        let result = self.fill_and_swap(kind, &shadow, &progress, started).await;
        match &result {
            Ok(r) => tracing::info!(
                projection = kind.name(),
                position = r.position,
                events = r.events,
                seconds = r.elapsed.as_secs_f64(),
                swap_pause_ms = r.swap_pause.as_millis() as u64,
                "rebuild swapped in"
            ),
            Err(e) => {
                tracing::error!(projection = kind.name(), error = %e, "rebuild failed; the live tables are unchanged");
                if let Err(e) = store.discard_shadow(&shadow).await {
                    tracing::warn!(projection = kind.name(), error = %e, "cannot drop the shadow tables of a failed rebuild");
                }
            }
        }
        result
    }

    async fn fill_and_swap(
        &self,
        kind: ProjectionKind,
        shadow: &Shadow,
        progress: &impl Fn(i64, i64),
        started: Instant,
    ) -> Result<RebuildReport, ProjectionError> {
        let shared = &self.shared;
        let store = shared.store();
        let mut head = shared.log.head().await?.position;
        let mut counters = Counters::default();
        progress(0, head);

        // The bulk of the log, then what arrived meanwhile (after the indexes were built),
        // both without holding the live runner back.
        let pos = self
            .fill(kind, shadow, 0, &mut head, &mut counters, progress)
            .await?;
        store.index_shadow(shadow).await?;
        let mut pos = self
            .fill(kind, shadow, pos, &mut head, &mut counters, progress)
            .await?;

        // The pause: with the live runner held at its checkpoint, nothing can be applied to
        // the live tables, so the shadow reaches the head and takes their place at once.
        let slot = shared.slot(kind);
        let paused = Instant::now();
        let mut live = slot.live.lock().await;
        let mut tail = Work::empty(kind);
        loop {
            let records = shared.log.read_all(pos, REBUILD_BATCH).await?;
            let Some(last) = records.last().map(|r| r.global_position) else {
                break;
            };
            counters.events += records.len() as u64;
            let envelopes = decode_for(&shared.codec, kind, records).await?;
            counters.applied += envelopes.len() as u64;
            let work = Work::plan(kind, envelopes);
            if tail.len() + work.len() > REBUILD_BATCH {
                store
                    .apply_shadow(shadow, std::mem::replace(&mut tail, work))
                    .await?;
            } else {
                tail.extend(work);
            }
            pos = last;
        }
        store.swap(shadow, tail, pos).await?;
        *live = LivePosition::at(pos);
        slot.publish(pos);
        drop(live);
        let swap_pause = paused.elapsed();
        head = head.max(pos);
        progress(pos, head);

        Ok(RebuildReport {
            projection: kind.name(),
            version: kind.version(),
            position: pos,
            events: counters.events,
            applied: counters.applied,
            elapsed: started.elapsed(),
            swap_pause,
        })
    }

    /// Applies the log after `from` to the shadow until a read comes back empty. A reader
    /// task reads and decodes ahead while this task writes, so the log, the decoding and the
    /// read-model database work at the same time.
    async fn fill(
        &self,
        kind: ProjectionKind,
        shadow: &Shadow,
        from: i64,
        head: &mut i64,
        counters: &mut Counters,
        progress: &impl Fn(i64, i64),
    ) -> Result<i64, ProjectionError> {
        let shared = &self.shared;
        let (tx, mut rx) = mpsc::channel::<Result<(i64, usize, Work), ProjectionError>>(READ_AHEAD);
        let log = Arc::clone(&shared.log);
        let codec = Arc::clone(&shared.codec);
        let reader = tokio::spawn(async move {
            let mut pos = from;
            loop {
                let batch = match log.read_all(pos, REBUILD_BATCH).await {
                    Ok(records) => match records.last().map(|r| r.global_position) {
                        None => return,
                        Some(last) => {
                            let n = records.len();
                            decode_for(&codec, kind, records)
                                .await
                                .map(|envelopes| (last, n, Work::plan(kind, envelopes)))
                        }
                    },
                    Err(e) => Err(e.into()),
                };
                let failed = batch.is_err();
                if let Ok((last, _, _)) = &batch {
                    pos = *last;
                }
                // A closed channel means the writer gave up; so does a failed batch.
                if tx.send(batch).await.is_err() || failed {
                    return;
                }
            }
        });

        let mut pos = from;
        let mut waited = std::time::Duration::ZERO;
        let mut applying = std::time::Duration::ZERO;
        let mut t = Instant::now();
        while let Some(batch) = rx.recv().await {
            waited += t.elapsed();
            t = Instant::now();
            let (last, n, work) = batch?;
            counters.events += n as u64;
            counters.applied += work.len() as u64;
            shared.store().apply_shadow(shadow, work).await?;
            applying += t.elapsed();
            t = Instant::now();
            pos = last;
            *head = (*head).max(pos).max(*shared.head.borrow());
            shared.slot(kind).observe_head(*head);
            progress(pos, *head);
        }
        reader
            .await
            .map_err(|e| StorageError::Join(e.to_string()))?;
        eprintln!("TIMING fill waited {waited:?} applying {applying:?}");
        Ok(pos)
    }
}
