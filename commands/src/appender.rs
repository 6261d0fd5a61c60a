//! Group commit: one appender per process turns concurrent appends into batched transactions.
//!
//! Command handlers send their request and wait for its answer. A single background task
//! takes the first waiting request, drains whatever else is already queued (up to
//! `max_batch`), and writes them all with one `append_batch` call. There is no artificial
//! delay: the next batch is simply what arrived while the last transaction was committing, so
//! a lone request is written at once and batches grow with load. Where the backend allows it
//! (`EventLog::pipeline_depth`: PostgreSQL), the next batch is started while the last one
//! commits, and the backend orders the two.

use std::sync::Arc;

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use tokio::sync::{mpsc, oneshot, watch};

use crate::store::{AppendOutcome, AppendRequest, Conflict, EventLog, StoreError};

/// How many requests may wait for the appender before senders have to wait too. Large enough
/// never to be the bottleneck, bounded so a stalled database applies back-pressure instead of
/// growing memory without limit.
const QUEUE_DEPTH: usize = 16 * 1024;

/// Why an append did not happen.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AppendError {
    /// The stream was not at the expected version; nothing was appended for this request.
    #[error(transparent)]
    Conflict(#[from] Conflict),
    /// The batch this request was part of failed in the database; nothing of it was appended.
    #[error("storage: {0}")]
    Storage(Arc<StoreError>),
    /// The appender task is gone (shutdown, or it panicked); nothing was appended.
    #[error("the appender is closed")]
    Closed,
}

impl AppendError {
    /// Whether the batch failed on a database time limit (see [`StoreError::is_timeout`]).
    pub fn is_timeout(&self) -> bool {
        matches!(self, AppendError::Storage(e) if e.is_timeout())
    }
}

struct Job {
    request: AppendRequest,
    reply: Reply,
}

/// A handle to the process's appender. Cheap to clone; the background task ends when the last
/// handle is dropped and the queue is empty.
#[derive(Clone)]
pub struct Appender {
    queue: mpsc::Sender<Job>,
    head: watch::Receiver<i64>,
}

impl std::fmt::Debug for Appender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Appender")
            .field("head", &*self.head.borrow())
            .finish()
    }
}

impl Appender {
    /// Starts the background task on the current tokio runtime. `max_batch` caps the number
    /// of requests per transaction (at least 1).
    pub fn spawn(log: Arc<dyn EventLog>, max_batch: usize) -> Appender {
        let (queue, rx) = mpsc::channel(QUEUE_DEPTH);
        let (head_tx, head) = watch::channel(0);
        tokio::spawn(run(log, rx, head_tx, max_batch.max(1)));
        Appender { queue, head }
    }

    /// Appends one command's events and waits until they are committed (or refused).
    pub async fn append(&self, request: AppendRequest) -> Result<AppendOutcome, AppendError> {
        let (reply, answer) = oneshot::channel();
        self.queue
            .send(Job { request, reply })
            .await
            .map_err(|_| AppendError::Closed)?;
        answer.await.map_err(|_| AppendError::Closed)?
    }

    /// The highest position this appender has committed (starting from the log's head when
    /// the appender started). Projections wait on it instead of polling. Appends by other
    /// processes do not move it.
    pub fn subscribe_head(&self) -> watch::Receiver<i64> {
        self.head.clone()
    }
}

async fn run(
    log: Arc<dyn EventLog>,
    mut rx: mpsc::Receiver<Job>,
    head_tx: watch::Sender<i64>,
    max_batch: usize,
) {
    match log.head().await {
        Ok(head) => raise(&head_tx, head.position),
        Err(e) => tracing::warn!(error = %e, "appender could not read the log head at start"),
    }

    // Batches in flight, each with the replies it owes. Usually one; two where the backend
    // can plan a batch while the one before it commits (see `EventLog::pipeline_depth`).
    let depth = log.pipeline_depth().max(1);
    let mut inflight = FuturesUnordered::new();
    let mut open = true;
    while open || !inflight.is_empty() {
        tokio::select! {
            // Answer finished batches first: their callers are waiting.
            biased;
            Some((result, replies)) = inflight.next(), if !inflight.is_empty() => {
                answer(&head_tx, result, replies);
            }
            job = rx.recv(), if open && inflight.len() < depth => {
                let Some(first) = job else {
                    open = false;
                    continue;
                };
                let mut requests = vec![first.request];
                let mut replies = vec![first.reply];
                // A batch formed behind one in flight is formed right after an earlier batch
                // was answered, before its callers could send their next requests: without a
                // pause they would all miss this batch and wait for the next one, and the
                // callers would settle into three cohorts of a third each (committing,
                // waiting for the lock, queued). Letting the woken callers run once first
                // keeps them to two cohorts and the batches half as large again. The
                // benchmark measured batches of 28 instead of 21 at 64 clients, and about
                // 10 % more commands per second at both 16 and 64 clients.
                if !inflight.is_empty() {
                    tokio::task::yield_now().await;
                }
                while requests.len() < max_batch {
                    match rx.try_recv() {
                        Ok(job) => {
                            requests.push(job.request);
                            replies.push(job.reply);
                        }
                        Err(_) => break,
                    }
                }
                metrics::histogram!("egec_append_batch_size").record(requests.len() as f64);
                let log = Arc::clone(&log);
                inflight.push(async move { (log.append_batch(requests).await, replies) });
            }
        }
    }
}

type Reply = oneshot::Sender<Result<AppendOutcome, AppendError>>;

/// Hands each caller of a finished batch its answer.
fn answer(
    head_tx: &watch::Sender<i64>,
    result: Result<Vec<Result<AppendOutcome, Conflict>>, StoreError>,
    replies: Vec<Reply>,
) {
    match result {
        Ok(answers) => {
            if answers.len() != replies.len() {
                // A backend bug; refuse to guess which answer belongs to whom.
                let error = Arc::new(StoreError::Corrupt(format!(
                    "append_batch answered {} requests out of {}",
                    answers.len(),
                    replies.len()
                )));
                tracing::error!(error = %error, "append batch answered wrongly");
                for reply in replies {
                    let _ = reply.send(Err(AppendError::Storage(Arc::clone(&error))));
                }
                return;
            }
            let mut appended = 0_u64;
            let mut highest = None;
            for outcome in answers.iter().flatten() {
                if !outcome.duplicate {
                    appended += u64::try_from(outcome.last_position - outcome.first_position + 1)
                        .unwrap_or(0);
                    highest = highest.max(Some(outcome.last_position));
                }
            }
            metrics::counter!("egec_appended_events_total").increment(appended);
            // Publish before answering, so a caller that got its answer and then waits
            // for a projection to reach its position never finds the head behind it.
            if let Some(position) = highest {
                raise(head_tx, position);
            }
            for (answer, reply) in answers.into_iter().zip(replies) {
                // A caller that gave up waiting does not change what was committed.
                let _ = reply.send(answer.map_err(AppendError::Conflict));
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "append batch failed");
            let error = Arc::new(e);
            for reply in replies {
                let _ = reply.send(Err(AppendError::Storage(Arc::clone(&error))));
            }
        }
    }
}

/// Moves the published head forward, never back (the start-up read may finish after a batch).
fn raise(head: &watch::Sender<i64>, position: i64) {
    head.send_if_modified(|current| {
        if position > *current {
            *current = position;
            true
        } else {
            false
        }
    });
}
