//! The group-commit appender, against a scripted log (batching, error fan-out) and against the
//! real SQLite log (head notifications).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use egec_commands::appender::{AppendError, Appender};
use egec_commands::store::sqlite::SqliteLog;
use egec_commands::store::{
    AppendOutcome, AppendRequest, Backend, ChainHead, Conflict, EventLog, ExpectedVersion,
    NewEvent, ReadBound, RecordedEvent, StoreError,
};
use egec_commands::testing;
use parking_lot::Mutex;
use serde_json::json;
use tokio::sync::{Notify, oneshot};
use uuid::Uuid;

/// Which batches a [`ScriptedLog`] holds until the test releases them.
enum Hold {
    /// The first batch only, one at a time like SQLite's appends.
    First(Mutex<Option<oneshot::Receiver<()>>>),
    /// Every batch, two in flight like PostgreSQL's; the gates of the batches still held,
    /// oldest first.
    Every(Mutex<VecDeque<oneshot::Sender<()>>>),
}

/// A log that records the size of every batch, holds batches as [`Hold`] says, and either
/// appends everything (one event per request, any version) or fails.
struct ScriptedLog {
    sizes: Mutex<Vec<usize>>,
    position: Mutex<i64>,
    started: Notify,
    hold: Hold,
    fail: bool,
}

impl ScriptedLog {
    fn with(hold: Hold, fail: bool) -> Arc<Self> {
        Arc::new(Self {
            sizes: Mutex::new(Vec::new()),
            position: Mutex::new(0),
            started: Notify::new(),
            hold,
            fail,
        })
    }

    fn new(fail: bool) -> (Arc<Self>, oneshot::Sender<()>) {
        let (release, gate) = oneshot::channel();
        (
            Self::with(Hold::First(Mutex::new(Some(gate))), fail),
            release,
        )
    }

    fn pipelined() -> Arc<Self> {
        Self::with(Hold::Every(Mutex::new(VecDeque::new())), false)
    }

    fn held(&self) -> usize {
        match &self.hold {
            Hold::First(gate) => usize::from(gate.lock().is_some()),
            Hold::Every(gates) => gates.lock().len(),
        }
    }

    fn release_oldest(&self) {
        let Hold::Every(gates) = &self.hold else {
            panic!("only a pipelined log holds every batch");
        };
        let gate = gates.lock().pop_front().expect("a batch in flight");
        gate.send(()).expect("the batch still waits");
    }
}

#[async_trait]
impl EventLog for ScriptedLog {
    async fn append_batch(
        &self,
        batch: Vec<AppendRequest>,
    ) -> Result<Vec<Result<AppendOutcome, Conflict>>, StoreError> {
        self.sizes.lock().push(batch.len());
        self.started.notify_one();
        let gate = match &self.hold {
            Hold::First(gate) => gate.lock().take(),
            Hold::Every(gates) => {
                let (release, gate) = oneshot::channel();
                gates.lock().push_back(release);
                Some(gate)
            }
        };
        if let Some(gate) = gate {
            let _ = gate.await;
        }
        if self.fail {
            return Err(StoreError::Config("scripted failure".into()));
        }
        let mut position = self.position.lock();
        Ok(batch
            .iter()
            .map(|_| {
                *position += 1;
                Ok(AppendOutcome {
                    first_position: *position,
                    last_position: *position,
                    stream_version: 1,
                    duplicate: false,
                })
            })
            .collect())
    }

    async fn read_stream(
        &self,
        _stream_id: &str,
        _from_version: i64,
        _bound: ReadBound,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        Ok(Vec::new())
    }

    async fn read_all(&self, _after: i64, _limit: usize) -> Result<Vec<RecordedEvent>, StoreError> {
        Ok(Vec::new())
    }

    async fn head(&self) -> Result<ChainHead, StoreError> {
        Ok(ChainHead {
            position: 0,
            hash: vec![0; 32],
        })
    }

    async fn stream_version(&self, _stream_id: &str) -> Result<i64, StoreError> {
        Ok(0)
    }

    fn backend(&self) -> Backend {
        Backend::Sqlite
    }

    fn pipeline_depth(&self) -> usize {
        match self.hold {
            Hold::First(_) => 1,
            Hold::Every(_) => 2,
        }
    }
}

fn request(stream: &str, expected: ExpectedVersion) -> AppendRequest {
    AppendRequest {
        new_keys: vec![],
        stream_id: stream.into(),
        expected,
        command_id: Uuid::now_v7(),
        events: vec![NewEvent {
            event_id: Uuid::now_v7(),
            event_type: "Tested".into(),
            schema_version: 1,
            payload: json!({}),
            metadata: json!({}),
        }],
    }
}

/// Sends one request, waits until its batch is being written, then queues `more` requests and
/// releases the first batch. Answers the appender's results in send order.
async fn run_script(
    log: Arc<ScriptedLog>,
    release: oneshot::Sender<()>,
    max_batch: usize,
    more: usize,
) -> Vec<Result<AppendOutcome, AppendError>> {
    let appender = Appender::spawn(log.clone(), max_batch);
    let first = {
        let appender = appender.clone();
        tokio::spawn(async move { appender.append(request("s", ExpectedVersion::Any)).await })
    };
    log.started.notified().await;
    let queued: Vec<_> = (0..more)
        .map(|_| {
            let appender = appender.clone();
            tokio::spawn(async move { appender.append(request("s", ExpectedVersion::Any)).await })
        })
        .collect();
    // Give every queued task time to put its request on the queue before the first batch
    // finishes; nothing else runs in between.
    tokio::time::sleep(Duration::from_millis(200)).await;
    release.send(()).expect("release the first batch");
    let mut answers = vec![first.await.expect("join")];
    for q in queued {
        answers.push(q.await.expect("join"));
    }
    answers
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_queued_during_a_commit_go_into_the_next_batch_together() {
    let (log, release) = ScriptedLog::new(false);
    let answers = run_script(log.clone(), release, 64, 10).await;
    assert!(answers.iter().all(Result::is_ok), "{answers:?}");
    assert_eq!(*log.sizes.lock(), vec![1, 10]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_never_exceeds_the_maximum_size() {
    let (log, release) = ScriptedLog::new(false);
    let answers = run_script(log.clone(), release, 4, 10).await;
    assert!(answers.iter().all(Result::is_ok), "{answers:?}");
    assert_eq!(*log.sizes.lock(), vec![1, 4, 4, 2]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_storage_error_answers_every_request_of_its_batch() {
    let (log, release) = ScriptedLog::new(true);
    let answers = run_script(log.clone(), release, 64, 5).await;
    assert_eq!(answers.len(), 6);
    for answer in answers {
        assert!(
            matches!(answer, Err(AppendError::Storage(ref e)) if e.to_string().contains("scripted failure")),
            "{answer:?}"
        );
    }
    assert_eq!(*log.sizes.lock(), vec![1, 5]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_conflict_fails_only_its_own_request_and_the_head_follows_commits() {
    let dir = testing::fresh_sqlite_dir();
    let log: Arc<dyn EventLog> = Arc::new(SqliteLog::open_async(dir.path()).await.expect("open"));
    let appender = Appender::spawn(log.clone(), 64);
    let mut head = appender.subscribe_head();

    let first = appender
        .append(request("a", ExpectedVersion::Exact(0)))
        .await
        .expect("append");
    assert_eq!(first.last_position, 1);
    tokio::time::timeout(Duration::from_secs(5), head.wait_for(|p| *p == 1))
        .await
        .expect("head moves to 1")
        .expect("appender alive");

    let (stale, fresh) = tokio::join!(
        appender.append(request("a", ExpectedVersion::Exact(0))),
        appender.append(request("b", ExpectedVersion::Exact(0))),
    );
    assert!(matches!(
        stale,
        Err(AppendError::Conflict(Conflict {
            expected: 0,
            actual: 1
        }))
    ));
    assert_eq!(fresh.expect("fresh stream appends").last_position, 2);
    assert_eq!(*appender.subscribe_head().borrow(), 2);

    // A new appender on a log that already has events starts from the log's head.
    let later = Appender::spawn(log.clone(), 8);
    let mut later_head = later.subscribe_head();
    tokio::time::timeout(Duration::from_secs(5), later_head.wait_for(|p| *p == 2))
        .await
        .expect("a new appender publishes the existing head")
        .expect("appender alive");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_appender_closes_when_its_task_is_gone() {
    // A runtime that is shut down takes the appender task with it; a handle that outlives it
    // must answer Closed instead of hanging.
    let dir = testing::fresh_sqlite_dir();
    let log: Arc<dyn EventLog> = Arc::new(SqliteLog::open_async(dir.path()).await.expect("open"));
    let appender = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async move { Appender::spawn(log, 8) })
    })
    .join()
    .expect("thread");
    let answer = appender.append(request("a", ExpectedVersion::Any)).await;
    assert!(matches!(answer, Err(AppendError::Closed)), "{answer:?}");
}

/// Lets every task that can run on this single-threaded runtime run until it waits.
async fn settle() {
    for _ in 0..100 {
        tokio::task::yield_now().await;
    }
}

/// Starts `clients` callers that each append `rounds` requests one after another.
fn start_clients(appender: &Appender, clients: usize, rounds: usize) {
    for _ in 0..clients {
        let appender = appender.clone();
        tokio::spawn(async move {
            for _ in 0..rounds {
                appender
                    .append(request("s", ExpectedVersion::Any))
                    .await
                    .expect("append");
            }
        });
    }
}

/// On one thread the order of events is fixed, so this pins the batch sizes exactly. With
/// batch A (3 callers) and batch B (2 callers) in flight and one caller queued, A finishes:
/// the batch formed next must take A's callers' next requests as well as the queued one,
/// rather than leave them to wait for a batch of their own.
#[tokio::test(flavor = "current_thread")]
async fn the_batch_formed_behind_one_in_flight_takes_the_requests_of_the_callers_just_answered() {
    let log = ScriptedLog::pipelined();
    let appender = Appender::spawn(log.clone(), 64);
    settle().await;
    start_clients(&appender, 3, 2);
    settle().await;
    start_clients(&appender, 2, 1);
    settle().await;
    start_clients(&appender, 1, 1);
    settle().await;
    assert_eq!(*log.sizes.lock(), vec![3, 2], "A and B are in flight");

    log.release_oldest();
    settle().await;
    assert_eq!(
        *log.sizes.lock(),
        vec![3, 2, 4],
        "the queued request and the three just answered callers' next ones"
    );

    log.release_oldest();
    log.release_oldest();
    settle().await;
    assert_eq!(log.held(), 0, "nothing is left waiting");
}
