//! Blue/green rebuild: a projection is built from position 0 into fresh shadow tables beside
//! the live ones while the live runner keeps applying and the API keeps reading; once the
//! shadow has caught up, the live runner is held back for a moment while the last events are
//! applied and the shadow tables take the live ones' place together with the checkpoint.
//!
//! Speed comes from three things. Several tasks read and decode batches at once (positions
//! are dense, so batch `i` starts at `from + i * rebuild_batch` without waiting for batch
//! `i - 1`). The bulk of the log is folded in memory ([`FoldCache`]), so a customer touched
//! by many events is written once rather than once per batch. And the secondary indexes are
//! built once at the end instead of being maintained row by row.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::decode::decode_for;
use crate::error::{ProjectionError, StorageError};
use crate::fold::{FoldCache, Work};
use crate::kind::ProjectionKind;
use crate::rows::RebuildReport;
use crate::runner::{LivePosition, RunnerHandle};
use crate::store::Shadow;

/// Tasks reading and decoding batches at the same time.
const READERS: usize = 2;

/// Clears the "rebuilding" flag however the rebuild ends, exactly once.
struct Flag<'a>(Option<&'a AtomicBool>);

impl Flag<'_> {
    fn release(&mut self) {
        if let Some(flag) = self.0.take() {
            flag.store(false, Ordering::SeqCst);
        }
    }
}

impl Drop for Flag<'_> {
    fn drop(&mut self) {
        self.release();
    }
}

/// Aborts the reader tasks when a fill ends, early or not.
struct Readers(Vec<JoinHandle<()>>);

impl Drop for Readers {
    fn drop(&mut self) {
        for h in &self.0 {
            h.abort();
        }
    }
}

#[derive(Default)]
struct Counters {
    events: u64,
    applied: u64,
}

/// One decoded batch, with where it was read from and where it ends.
struct Batch {
    /// The position the batch was read after.
    after: i64,
    last: i64,
    len: usize,
    work: Work,
}

/// Where a bulk fill writes: into the in-memory fold (flushed when it grows too big), or
/// straight into the shadow tables batch by batch.
enum Sink<'a> {
    Memory(&'a mut FoldCache),
    Tables,
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
        let mut flag = Flag(Some(&slot.rebuilding));
        tracing::info!(projection = kind.name(), "rebuild started");
        let started = Instant::now();
        let store = Arc::clone(self.shared.store());
        let shadow = store.create_shadow(kind).await?;
        let result = self
            .fill_and_swap(kind, &shadow, &progress, started, &mut flag)
            .await;
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
        flag: &mut Flag<'_>,
    ) -> Result<RebuildReport, ProjectionError> {
        let shared = &self.shared;
        let store = shared.store();
        let mut head = shared.log.head().await?.position;
        let mut counters = Counters::default();
        progress(0, head);

        // The bulk of the log, folded in memory; then the indexes; then what arrived in the
        // meantime, written batch by batch. None of it holds the live runner back.
        let mut cache = FoldCache::new(kind);
        let pos = self
            .fill(
                kind,
                shadow,
                0,
                Sink::Memory(&mut cache),
                &mut head,
                &mut counters,
                progress,
            )
            .await?;
        tracing::debug!(
            projection = kind.name(),
            position = pos,
            seconds = started.elapsed().as_secs_f64(),
            "rebuild: bulk folded"
        );
        flush(shared.store(), shadow, &mut cache).await?;
        drop(cache);
        tracing::debug!(
            projection = kind.name(),
            seconds = started.elapsed().as_secs_f64(),
            "rebuild: rows written"
        );
        store.index_shadow(shadow).await?;
        tracing::debug!(
            projection = kind.name(),
            seconds = started.elapsed().as_secs_f64(),
            "rebuild: indexes built"
        );
        let mut pos = self
            .fill(
                kind,
                shadow,
                pos,
                Sink::Tables,
                &mut head,
                &mut counters,
                progress,
            )
            .await?;

        tracing::debug!(
            projection = kind.name(),
            position = pos,
            seconds = started.elapsed().as_secs_f64(),
            "rebuild: caught up"
        );

        // The pause: with the live runner held at its checkpoint, nothing can be applied to
        // the live tables, so the shadow reaches the head and takes their place at once.
        let slot = shared.slot(kind);
        let paused = Instant::now();
        let mut live = slot.live.lock().await;
        let mut tail = Work::empty(kind);
        let batch_size = shared.options.rebuild_batch;
        loop {
            let records = shared
                .log
                .read_all_raw(pos, batch_size, kind.reads_metadata())
                .await?;
            let Some(last) = records.last().map(|r| r.global_position) else {
                break;
            };
            counters.events += records.len() as u64;
            let envelopes = decode_for(&shared.codec, kind, records).await?;
            counters.applied += envelopes.len() as u64;
            let work = Work::plan(kind, envelopes);
            if tail.len() + work.len() > batch_size {
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
        // Done before publishing, so that whoever waits for this position finds the rebuild
        // over (a second rebuild asked for right then must not be refused as concurrent).
        flag.release();
        slot.publish(pos);
        drop(live);
        let swap_pause = paused.elapsed();
        if let Err(e) = store.drop_retired(shadow).await {
            // The swap stands; the next start-up drops the leftovers.
            tracing::warn!(projection = kind.name(), error = %e, "cannot drop the retired tables");
        }
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

    /// Applies the log after `from` until a read comes back short of a full batch (the log
    /// was exhausted at that moment). Answers the position reached.
    #[allow(clippy::too_many_arguments)]
    async fn fill(
        &self,
        kind: ProjectionKind,
        shadow: &Shadow,
        from: i64,
        mut sink: Sink<'_>,
        head: &mut i64,
        counters: &mut Counters,
        progress: &impl Fn(i64, i64),
    ) -> Result<i64, ProjectionError> {
        let shared = &self.shared;
        let store = shared.store();
        let mut pos = from;
        'restart: loop {
            let mut channels = self.spawn_readers(kind, pos);
            for i in 0.. {
                let Some(batch) = channels.0[i % READERS].recv().await else {
                    // A reader stops on its own only after sending the end of the log or an
                    // error, which this loop sees first; anything else is a crashed task.
                    return Err(StorageError::Join("a rebuild reader task ended".into()).into());
                };
                let batch = batch?;
                if batch.after != pos {
                    // Reading ahead assumes dense positions (which the log guarantees); if a
                    // batch spanned a gap, the next one was read from the wrong place. Read
                    // on from where this fill really is.
                    continue 'restart;
                }
                if batch.len == 0 {
                    return Ok(pos);
                }
                counters.events += batch.len as u64;
                counters.applied += batch.work.len() as u64;
                match &mut sink {
                    Sink::Memory(cache) => {
                        let missing = cache.missing(&batch.work);
                        if !missing.is_empty() {
                            let rows = store.load_shadow(shadow, missing.clone()).await?;
                            cache.add_loaded(&missing, rows);
                        }
                        cache.fold(&batch.work);
                        if cache.len() > shared.options.rebuild_cache_rows {
                            flush(store, shadow, cache).await?;
                        }
                    }
                    Sink::Tables => store.apply_shadow(shadow, batch.work).await?,
                }
                pos = batch.last;
                *head = (*head).max(pos).max(*shared.head.borrow());
                shared.slot(kind).observe_head(*head);
                progress(pos, *head);
                if batch.len < shared.options.rebuild_batch {
                    return Ok(pos);
                }
            }
        }
    }

    /// Starts the reader tasks for the batches after `from`: reader `j` reads batches `j`,
    /// `j + READERS`, … and hands them over in order through its own channel.
    fn spawn_readers(
        &self,
        kind: ProjectionKind,
        from: i64,
    ) -> (Vec<mpsc::Receiver<Result<Batch, ProjectionError>>>, Readers) {
        let batch_size = self.shared.options.rebuild_batch;
        let mut receivers = Vec::with_capacity(READERS);
        let mut handles = Vec::with_capacity(READERS);
        for j in 0..READERS {
            let (tx, rx) = mpsc::channel(1);
            let log = Arc::clone(&self.shared.log);
            let codec = Arc::clone(&self.shared.codec);
            handles.push(tokio::spawn(async move {
                let mut i = j;
                loop {
                    let after = from + (i * batch_size) as i64;
                    let batch = match log
                        .read_all_raw(after, batch_size, kind.reads_metadata())
                        .await
                    {
                        Ok(records) => {
                            let last = records.last().map_or(after, |r| r.global_position);
                            let len = records.len();
                            decode_for(&codec, kind, records)
                                .await
                                .map(|envelopes| Batch {
                                    after,
                                    last,
                                    len,
                                    work: Work::plan(kind, envelopes),
                                })
                        }
                        Err(e) => Err(e.into()),
                    };
                    let end = !matches!(&batch, Ok(b) if b.len == batch_size);
                    // A closed channel means the fill is over; so does the end of the log
                    // or an error, which the fill sees in order.
                    if tx.send(batch).await.is_err() || end {
                        return;
                    }
                    i += READERS;
                }
            }));
            receivers.push(rx);
        }
        (receivers, Readers(handles))
    }
}

/// Writes what the in-memory fold holds and empties it.
async fn flush(
    store: &Arc<dyn crate::store::ReadStore>,
    shadow: &Shadow,
    cache: &mut FoldCache,
) -> Result<(), ProjectionError> {
    let changes = cache.take_changes();
    if changes.len() > 0 {
        store.write_shadow(shadow, changes).await?;
    }
    Ok(())
}
