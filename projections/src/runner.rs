//! The projection runner: one task per projection that follows the log from the projection's
//! checkpoint and applies it in batches, each batch committed together with the checkpoint.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::Duration;

use egec_commands::codec::Codec;
use egec_commands::store::EventLog;
use egec_commands::store::open::Stores;
use parking_lot::Mutex;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::decode::decode_for;
use crate::error::ProjectionError;
use crate::fold::Work;
use crate::kind::ProjectionKind;
use crate::read_models::ReadModels;
use crate::rows::{ProjectionStatus, RunState};
use crate::store::{Applied, Leadership, ReadStore};

/// Tuning of the runner and of rebuilds. The defaults suit production; tests shrink the
/// batches to drive many of them through small logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunnerOptions {
    /// Events per read when the live runner follows the log. Large, so that a runner that
    /// fell behind catches up in big transactions.
    pub live_batch: usize,
    /// Events per read during a rebuild: big batches spread each read's and each
    /// transaction's fixed cost thin.
    pub rebuild_batch: usize,
    /// Rows a rebuild folds in memory before writing them out and starting afresh (a
    /// customer row takes roughly half a kilobyte).
    pub rebuild_cache_rows: usize,
    /// A projection that starts empty on a log at least this long is built by a rebuild
    /// (bulk reads, in-memory fold, indexes built once) rather than batch by batch.
    pub fresh_rebuild_min: i64,
    /// How often the runner looks at the log without being told: appends of other
    /// processes do not move this process's head channel.
    pub poll: Duration,
}

impl Default for RunnerOptions {
    fn default() -> Self {
        Self {
            live_batch: 5_000,
            rebuild_batch: 10_000,
            rebuild_cache_rows: 250_000,
            fresh_rebuild_min: 20_000,
            poll: Duration::from_millis(200),
        }
    }
}

/// A batch with nothing for a projection moves only its checkpoint. Such checkpoint-only
/// commits are put off (the events in between change nothing in the projection's tables, so
/// re-reading them after a crash is harmless) until this many events have gone by, this much
/// time has passed, or the runner is idle for [`PERSIST_WHEN_IDLE`].
const PERSIST_EVERY_EVENTS: i64 = 50_000;
const PERSIST_EVERY: Duration = Duration::from_secs(10);
const PERSIST_WHEN_IDLE: Duration = Duration::from_secs(1);

const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// Starts the projection runner.
pub struct ProjectionRunner;

impl ProjectionRunner {
    /// Spawns one task per projection on the current tokio runtime. `head` is the log head
    /// the appender publishes; the runner also polls, so appends by other processes are seen
    /// within [`RunnerOptions::poll`]. A projection whose stored version differs from this
    /// build's is rebuilt blue/green in the background while the old tables keep serving.
    pub fn spawn(
        read_models: ReadModels,
        log: Arc<dyn EventLog>,
        codec: Arc<Codec>,
        head: watch::Receiver<i64>,
    ) -> RunnerHandle {
        Self::spawn_with(read_models, log, codec, head, RunnerOptions::default())
    }

    /// [`ProjectionRunner::spawn`] with other tuning than the default.
    pub fn spawn_with(
        read_models: ReadModels,
        log: Arc<dyn EventLog>,
        codec: Arc<Codec>,
        head: watch::Receiver<i64>,
        options: RunnerOptions,
    ) -> RunnerHandle {
        let options = RunnerOptions {
            live_batch: options.live_batch.max(1),
            rebuild_batch: options.rebuild_batch.max(1),
            ..options
        };
        let (shutdown, _) = watch::channel(false);
        let slots = ProjectionKind::ALL
            .into_iter()
            .map(|kind| Slot {
                kind,
                live: tokio::sync::Mutex::new(LivePosition::at(0)),
                applied: watch::channel(0).0,
                state: Mutex::new(RunState::Starting),
                rebuilding: AtomicBool::new(false),
                known_head: AtomicI64::new(0),
            })
            .collect();
        let shared = Arc::new(Shared {
            options,
            read_models,
            log,
            codec,
            head,
            slots,
            shutdown,
            wake: watch::channel(0).0,
            progress: watch::channel(0).0,
            tasks: Mutex::new(Vec::new()),
        });
        let handle = RunnerHandle {
            shared: Arc::clone(&shared),
            _guard: Arc::new(ShutdownOnDrop(Arc::clone(&shared))),
        };
        let mut tasks = Vec::new();
        for kind in ProjectionKind::ALL {
            tasks.push(tokio::spawn(run(
                Arc::clone(&shared),
                kind,
                handle.downgrade(),
            )));
        }
        shared.tasks.lock().extend(tasks);
        handle
    }

    /// The one-call setup: opens the read models beside the opened log (schema `crm` on
    /// PostgreSQL, `<data_dir>/read.db` on SQLite) and spawns the runner.
    pub async fn start(
        stores: &Stores,
        data_dir: &Path,
        codec: Arc<Codec>,
        head: watch::Receiver<i64>,
    ) -> Result<RunnerHandle, ProjectionError> {
        Self::start_with(stores, data_dir, codec, head, RunnerOptions::default()).await
    }

    /// [`ProjectionRunner::start`] with other tuning than the default.
    pub async fn start_with(
        stores: &Stores,
        data_dir: &Path,
        codec: Arc<Codec>,
        head: watch::Receiver<i64>,
        options: RunnerOptions,
    ) -> Result<RunnerHandle, ProjectionError> {
        let read_models = ReadModels::open(stores, data_dir).await?;
        Ok(Self::spawn_with(
            read_models,
            Arc::clone(&stores.log),
            codec,
            head,
            options,
        ))
    }
}

/// Where the live tables of a projection stand.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LivePosition {
    /// Every event up to here has taken effect in the live tables.
    pub applied: i64,
    /// The checkpoint as stored. Behind `applied` only by events the projection ignores.
    pub stored: i64,
    pub stored_at: std::time::Instant,
}

impl LivePosition {
    pub fn at(position: i64) -> Self {
        Self {
            applied: position,
            stored: position,
            stored_at: std::time::Instant::now(),
        }
    }

    fn persist_due(&self, to: i64) -> bool {
        to - self.stored >= PERSIST_EVERY_EVENTS || self.stored_at.elapsed() >= PERSIST_EVERY
    }
}

/// One projection's shared state.
pub(crate) struct Slot {
    pub kind: ProjectionKind,
    /// The live checkpoint as this process knows it. Locked for the whole of an apply, and
    /// by a rebuild while it applies the tail and swaps its tables in: that is the pause of
    /// the live runner, and the reason a swap can never interleave with an apply.
    pub live: tokio::sync::Mutex<LivePosition>,
    /// The applied position, published to `wait_for` and to subscribers.
    pub applied: watch::Sender<i64>,
    pub state: Mutex<RunState>,
    pub rebuilding: AtomicBool,
    /// The highest log position seen, for the lag metric.
    pub known_head: AtomicI64,
}

impl Slot {
    pub fn publish(&self, position: i64) {
        self.applied.send_if_modified(|p| {
            let changed = *p != position;
            *p = position;
            changed
        });
        self.observe_head(position);
        metrics::gauge!("egec_projection_position", "projection" => self.kind.name())
            .set(position as f64);
        self.export_lag();
    }

    /// Raises the published position, never lowers it.
    pub fn publish_at_least(&self, position: i64) {
        if position > *self.applied.borrow() {
            self.publish(position);
        }
    }

    pub fn observe_head(&self, head: i64) {
        self.known_head.fetch_max(head, Ordering::Relaxed);
        self.export_lag();
    }

    fn lag(&self) -> i64 {
        (self.known_head.load(Ordering::Relaxed) - *self.applied.borrow()).max(0)
    }

    fn export_lag(&self) {
        metrics::gauge!("egec_projection_lag_events", "projection" => self.kind.name())
            .set(self.lag() as f64);
    }

    fn set_state(&self, state: RunState) {
        let mut s = self.state.lock();
        if *s != state {
            tracing::info!(projection = self.kind.name(), from = ?*s, to = ?state, "projection state");
            *s = state;
        }
    }
}

pub(crate) struct Shared {
    pub options: RunnerOptions,
    pub read_models: ReadModels,
    pub log: Arc<dyn EventLog>,
    pub codec: Arc<Codec>,
    pub head: watch::Receiver<i64>,
    pub slots: Vec<Slot>,
    shutdown: watch::Sender<bool>,
    /// Raised by [`RunnerHandle::wake`]: another process appended or applied, so look now
    /// rather than at the next poll.
    wake: watch::Sender<u64>,
    /// Raised whenever this process, as a projection's leader, applied a batch: the signal
    /// other processes' waiters are woken by.
    progress: watch::Sender<u64>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl Shared {
    pub fn slot(&self, kind: ProjectionKind) -> &Slot {
        // Every kind has a slot: `spawn` creates one per `ProjectionKind::ALL`, in order.
        let i = ProjectionKind::ALL
            .iter()
            .position(|k| *k == kind)
            .unwrap_or(0);
        &self.slots[i]
    }

    pub fn store(&self) -> &Arc<dyn ReadStore> {
        self.read_models.store()
    }
}

/// Tells the tasks to stop when the last handle is dropped.
struct ShutdownOnDrop(Arc<Shared>);

impl Drop for ShutdownOnDrop {
    fn drop(&mut self) {
        self.0.shutdown.send_replace(true);
    }
}

/// A handle to the running projections. Cheap to clone; the tasks stop when the last handle
/// is dropped or on [`RunnerHandle::shutdown`].
#[derive(Clone)]
pub struct RunnerHandle {
    pub(crate) shared: Arc<Shared>,
    _guard: Arc<ShutdownOnDrop>,
}

/// A handle that does not keep the runner alive (held by the runner's own tasks, which use
/// it to start a rebuild).
#[derive(Clone)]
pub(crate) struct WeakHandle {
    shared: Arc<Shared>,
    guard: std::sync::Weak<ShutdownOnDrop>,
}

impl WeakHandle {
    pub fn upgrade(&self) -> Option<RunnerHandle> {
        self.guard.upgrade().map(|g| RunnerHandle {
            shared: Arc::clone(&self.shared),
            _guard: g,
        })
    }
}

impl std::fmt::Debug for RunnerHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunnerHandle")
            .field("status", &self.status())
            .finish()
    }
}

impl RunnerHandle {
    fn downgrade(&self) -> WeakHandle {
        WeakHandle {
            shared: Arc::clone(&self.shared),
            guard: Arc::downgrade(&self._guard),
        }
    }

    /// Makes every projection look at the log and its checkpoint now instead of at the next
    /// poll: another process appended, or applied what this one waits for.
    pub fn wake(&self) {
        self.shared.wake.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Changes whenever this process, leading a projection, applied a batch.
    pub fn subscribe_progress(&self) -> watch::Receiver<u64> {
        self.shared.progress.subscribe()
    }

    /// The positions of the projections this process leads: every event up to each has
    /// taken effect in the shared read models (rows are committed before a position is
    /// published; a checkpoint left behind covers only events the projection ignores).
    pub fn led_positions(&self) -> Vec<(&'static str, i64)> {
        self.shared
            .slots
            .iter()
            .filter(|s| matches!(*s.state.lock(), RunState::Running))
            .map(|s| (s.kind.name(), *s.applied.borrow()))
            .collect()
    }

    /// Another process, leading projection `name`, says it has applied `position`: where this
    /// process stands by for it, its waiters need not wait for the stored checkpoint (which
    /// the leader writes late for batches the projection ignores).
    pub fn observe_remote(&self, name: &str, position: i64) {
        let Some(kind) = ProjectionKind::from_name(name) else {
            return;
        };
        let slot = self.shared.slot(kind);
        if matches!(*slot.state.lock(), RunState::Standby) {
            slot.publish_at_least(position);
        }
    }

    /// The read models the runner writes; the queries live there.
    pub fn read_models(&self) -> &ReadModels {
        &self.shared.read_models
    }

    /// Waits until every operational projection has applied at least `position` (the
    /// position a write returned), for at most `timeout`. True when they all have: a read
    /// issued afterwards sees the write. False on timeout, or at once when a projection has
    /// stopped on an event it cannot decode or the runner was shut down.
    pub async fn wait_for(&self, position: i64, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        for slot in &self.shared.slots {
            let mut rx = slot.applied.subscribe();
            if *rx.borrow_and_update() >= position {
                continue;
            }
            if matches!(*slot.state.lock(), RunState::Failed | RunState::Stopped) {
                return false;
            }
            match tokio::time::timeout_at(deadline, rx.wait_for(|p| *p >= position)).await {
                Ok(Ok(_)) => {}
                Ok(Err(_)) | Err(_) => return false,
            }
        }
        true
    }

    /// Each projection's position, lag and state, for `/readyz` and operators.
    pub fn status(&self) -> Vec<ProjectionStatus> {
        let appended = *self.shared.head.borrow();
        self.shared
            .slots
            .iter()
            .map(|s| {
                s.observe_head(appended);
                let position = *s.applied.borrow();
                let head = s.known_head.load(Ordering::Relaxed).max(position);
                ProjectionStatus {
                    name: s.kind.name(),
                    version: s.kind.version(),
                    state: *s.state.lock(),
                    position,
                    head,
                    lag: head - position,
                    rebuilding: s.rebuilding.load(Ordering::Relaxed),
                }
            })
            .collect()
    }

    /// Whether every projection is applying (here or in another process) and at most
    /// `max_lag` events behind the head this process knows of: the projections' part of
    /// `/readyz`. A rebuild alone does not make the read models unready, since the live
    /// tables keep serving while it runs.
    pub fn ready(&self, max_lag: i64) -> bool {
        self.status()
            .iter()
            .all(|s| matches!(s.state, RunState::Running | RunState::Standby) && s.lag <= max_lag)
    }

    /// The applied position of one projection, as a channel that changes with every batch.
    pub fn subscribe(&self, projection: &str) -> Option<watch::Receiver<i64>> {
        let kind = ProjectionKind::from_name(projection)?;
        Some(self.shared.slot(kind).applied.subscribe())
    }

    /// Stops the tasks and waits for them (a batch being applied is finished or rolled back,
    /// never half-written).
    pub async fn shutdown(&self) {
        self.shared.shutdown.send_replace(true);
        let tasks: Vec<JoinHandle<()>> = std::mem::take(&mut *self.shared.tasks.lock());
        for t in tasks {
            let _ = t.await;
        }
    }
}

/// Exponential backoff for storage errors.
struct Backoff(Duration);

impl Backoff {
    fn new() -> Self {
        Self(BACKOFF_MIN)
    }

    fn next(&mut self) -> Duration {
        let d = self.0;
        self.0 = (self.0 * 2).min(BACKOFF_MAX);
        d
    }

    fn reset(&mut self) {
        self.0 = BACKOFF_MIN;
    }
}

/// Sleeps for the poll interval, or less when woken (another process appended or applied);
/// true when the runner is shutting down.
async fn poll_or_wake(
    d: Duration,
    stop: &mut watch::Receiver<bool>,
    wake: &mut watch::Receiver<u64>,
) -> bool {
    if *stop.borrow() {
        return true;
    }
    tokio::select! {
        _ = tokio::time::sleep(d) => *stop.borrow(),
        _ = wake.changed() => *stop.borrow(),
        _ = stop.changed() => true,
    }
}

/// Sleeps, or returns early (true) when the runner is shutting down.
async fn sleep_or_stop(d: Duration, stop: &mut watch::Receiver<bool>) -> bool {
    if *stop.borrow() {
        return true;
    }
    tokio::select! {
        _ = tokio::time::sleep(d) => *stop.borrow(),
        _ = stop.changed() => true,
    }
}

/// Rebuilds at start-up when that is the better way to get going: in the background while
/// the old tables serve, when their version is not this build's; in place of catching up
/// batch by batch, when the projection is empty and the log is long.
async fn start_with_rebuild(
    shared: &Arc<Shared>,
    kind: ProjectionKind,
    checkpoint: crate::store::Checkpoint,
    handle: &WeakHandle,
) {
    let Some(h) = handle.upgrade() else {
        return;
    };
    if checkpoint.version != kind.version() {
        tracing::info!(
            projection = kind.name(),
            stored_version = checkpoint.version,
            version = kind.version(),
            "projection version changed; rebuilding in the background"
        );
        tokio::spawn(async move {
            if let Err(e) = h.rebuild(kind.name(), |_, _| {}).await {
                tracing::error!(projection = kind.name(), error = %e, "background rebuild failed");
            }
        });
        return;
    }
    if checkpoint.position != 0 {
        return;
    }
    match shared.log.head().await {
        Ok(head) if head.position >= shared.options.fresh_rebuild_min => {
            tracing::info!(
                projection = kind.name(),
                head = head.position,
                "empty projection on a long log; building it by a rebuild"
            );
            if let Err(e) = h.rebuild(kind.name(), |_, _| {}).await {
                // Not fatal: the runner catches up batch by batch instead.
                tracing::warn!(projection = kind.name(), error = %e, "initial rebuild failed; catching up batch by batch");
            }
        }
        Ok(_) => {}
        Err(e) => tracing::warn!(projection = kind.name(), error = %e, "cannot read the log head"),
    }
}

async fn run(shared: Arc<Shared>, kind: ProjectionKind, handle: WeakHandle) {
    let slot = shared.slot(kind);
    let store = Arc::clone(shared.store());
    let mut stop = shared.shutdown.subscribe();
    let mut wake = shared.wake.subscribe();
    let mut head_rx = shared.head.clone();
    let mut head_open = true;
    let mut backoff = Backoff::new();
    let mut leader: Option<Leadership> = None;

    // The starting point: the stored checkpoint.
    let checkpoint = loop {
        match store.checkpoint(kind).await {
            Ok(cp) => break cp,
            Err(e) => {
                tracing::warn!(projection = kind.name(), error = %e, "cannot read the checkpoint; retrying");
                if sleep_or_stop(backoff.next(), &mut stop).await {
                    slot.set_state(RunState::Stopped);
                    return;
                }
            }
        }
    };
    *slot.live.lock().await = LivePosition::at(checkpoint.position);
    slot.publish(checkpoint.position);
    backoff.reset();

    // Only the process that will apply the projection decides to rebuild it.
    match store.try_lead(kind).await {
        Ok(Some(l)) => {
            leader = Some(l);
            slot.set_state(RunState::Running);
            start_with_rebuild(&shared, kind, checkpoint, &handle).await;
        }
        Ok(None) => {}
        Err(e) => {
            tracing::warn!(projection = kind.name(), error = %e, "cannot take the projection lock; retrying");
        }
    }
    drop(handle);

    while !*stop.borrow() {
        // Only the process holding the projection's lock applies; the others follow the
        // stored checkpoint so that their `wait_for` still answers.
        if !leader.as_ref().is_some_and(Leadership::is_held) {
            leader = None;
            match store.try_lead(kind).await {
                Ok(Some(l)) => {
                    leader = Some(l);
                    slot.set_state(RunState::Running);
                }
                Ok(None) => {
                    slot.set_state(RunState::Standby);
                    if let Ok(cp) = store.checkpoint(kind).await {
                        *slot.live.lock().await = LivePosition::at(cp.position);
                        // The leader may have told this process of a later position already
                        // (its checkpoint lags by batches the projection ignores).
                        slot.publish_at_least(cp.position);
                    }
                    slot.observe_head(*head_rx.borrow());
                    if poll_or_wake(shared.options.poll, &mut stop, &mut wake).await {
                        break;
                    }
                    continue;
                }
                Err(e) => {
                    tracing::warn!(projection = kind.name(), error = %e, "cannot take the projection lock; retrying");
                    if sleep_or_stop(backoff.next(), &mut stop).await {
                        break;
                    }
                    continue;
                }
            }
        }

        // Mark the head seen before reading, so an append that lands after the read wakes
        // the wait below.
        let appended = *head_rx.borrow_and_update();
        slot.observe_head(appended);
        let from = slot.live.lock().await.applied;
        let records = match shared
            .log
            .read_all_raw(from, shared.options.live_batch, kind.reads_metadata())
            .await
        {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(projection = kind.name(), error = %e, "cannot read the log; retrying");
                if sleep_or_stop(backoff.next(), &mut stop).await {
                    break;
                }
                continue;
            }
        };
        let Some(last) = records.last().map(|r| r.global_position) else {
            // Caught up. Store a checkpoint that was put off, then wait for an append here,
            // the poll interval, or shutdown.
            let mut live = slot.live.lock().await;
            if live.applied == from
                && live.stored < from
                && live.stored_at.elapsed() >= PERSIST_WHEN_IDLE
            {
                match store
                    .apply_live(kind, Work::empty(kind), live.stored, from)
                    .await
                {
                    Ok(Applied::Done) => *live = LivePosition::at(from),
                    Ok(Applied::Moved(stored)) => {
                        *live = LivePosition::at(stored);
                        slot.publish(stored);
                    }
                    Err(e) => {
                        tracing::warn!(projection = kind.name(), error = %e, "cannot store the checkpoint; will retry");
                    }
                }
            }
            drop(live);
            tokio::select! {
                _ = tokio::time::sleep(shared.options.poll) => {}
                changed = head_rx.changed(), if head_open => {
                    if changed.is_err() {
                        head_open = false;
                    }
                }
                _ = wake.changed() => {}
                _ = stop.changed() => {}
            }
            continue;
        };
        slot.observe_head(last);

        let envelopes = match decode_for(&shared.codec, kind, records).await {
            Ok(e) => e,
            Err(e @ ProjectionError::Decode { .. }) => {
                // Skipping would leave the read model silently wrong; stopping makes
                // `/readyz` fail and tells an operator. The error names the position and
                // the event type, never a personal value.
                tracing::error!(projection = kind.name(), error = %e, "projection stopped on an event it cannot decode");
                slot.set_state(RunState::Failed);
                return;
            }
            Err(e) => {
                tracing::warn!(projection = kind.name(), error = %e, "decoding failed; retrying");
                if sleep_or_stop(backoff.next(), &mut stop).await {
                    break;
                }
                continue;
            }
        };
        let work = Work::plan(kind, envelopes);

        let mut live = slot.live.lock().await;
        if live.applied != from {
            // A rebuild swapped its tables in while this batch was read; it already holds
            // these events.
            continue;
        }
        if work.is_empty() && !live.persist_due(last) {
            live.applied = last;
            slot.publish(last);
            shared.progress.send_modify(|n| *n = n.wrapping_add(1));
            continue;
        }
        match store.apply_live(kind, work, live.stored, last).await {
            Ok(Applied::Done) => {
                *live = LivePosition::at(last);
                slot.publish(last);
                shared.progress.send_modify(|n| *n = n.wrapping_add(1));
                backoff.reset();
            }
            Ok(Applied::Moved(stored)) => {
                tracing::info!(
                    projection = kind.name(),
                    expected = live.stored,
                    stored,
                    "checkpoint moved elsewhere; following it"
                );
                *live = LivePosition::at(stored);
                slot.publish(stored);
            }
            Err(e) => {
                drop(live);
                tracing::warn!(projection = kind.name(), error = %e, "cannot apply a batch; retrying");
                if sleep_or_stop(backoff.next(), &mut stop).await {
                    break;
                }
            }
        }
    }
    slot.set_state(RunState::Stopped);
}
