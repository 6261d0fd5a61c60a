//! The publishing loop.
//!
//! A leader runs *sessions*; a session is one NATS connection:
//!
//! 1. create or update the stream with the configured limits;
//! 2. reconcile: if the stream's last message is an event of this log past the checkpoint
//!    (acked but not yet committed when the previous leader died, or stored although its ack
//!    was lost), the checkpoint moves up to it, so nothing already stored is sent again;
//! 3. read the log after the checkpoint in batches; publish a whole batch without waiting
//!    for acks, each message with `Nats-Msg-Id` = its event id and, from the second message
//!    of the session on, `Nats-Expected-Last-Msg-Id` = the previous event's id, so the server
//!    stores a message only right after its predecessor: a lost or refused message makes its
//!    successors fail too and nothing is ever stored out of order;
//! 4. await the acks in order; commit the checkpoint to the last message of the unbroken
//!    acked prefix (a duplicate ack counts: the message is stored);
//! 5. on any failure (NATS down, a timed-out ack, a refused message) the session ends, its
//!    connection is dropped with whatever it still buffered, and after a back-off a new
//!    session starts again from step 1.
//!
//! The first message of a session carries no expected-last header: reconciliation has just
//! checked that the stream ends at (or before) the checkpoint, only the lock holder publishes,
//! and a re-sent id within the duplicate window is acked as a duplicate without being stored
//! (the server checks `Nats-Msg-Id` before the expected-last header: see the test
//! `jetstream_publisher::server_dedupes_before_it_checks_the_expected_last_id`).
//!
//! A NATS outage never fails readiness; it shows in `egec_publisher_errors_total` and
//! `egec_publisher_lag_events`.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, message::PublishMessage, stream};
use egec_commands::store::EventLog;
use tokio::sync::watch;

use super::lease::{Checkpoint, Leadership, Lease, LeaseError};
use super::{BusMessage, Handle, Settings, Status};

/// Events per read, all published before the first ack is awaited.
const BATCH: usize = 512;
/// Batches published and not yet acked at most.
const IN_FLIGHT_BATCHES: usize = 2;
/// How often a standby node asks for the lock.
const STANDBY_RETRY: Duration = Duration::from_secs(1);
/// How often an idle leader looks at the log for appends made by other nodes.
const POLL: Duration = Duration::from_millis(100);
/// How long an ack (or a JetStream API request) may take before the session is restarted.
const ACK_TIMEOUT: Duration = Duration::from_secs(5);

/// Starts the publisher of this node.
pub fn spawn(
    url: String,
    settings: Settings,
    log: Arc<dyn EventLog>,
    leadership: Leadership,
    head: watch::Receiver<i64>,
) -> Handle {
    let status = Arc::new(Status::default());
    let publisher = Publisher {
        url,
        settings,
        log,
        leadership,
        head,
        status: status.clone(),
    };
    let task = tokio::spawn(publisher.run());
    Handle { task, status }
}

struct Publisher {
    url: String,
    settings: Settings,
    log: Arc<dyn EventLog>,
    leadership: Leadership,
    head: watch::Receiver<i64>,
    status: Arc<Status>,
}

/// A batch sent, its acks outstanding.
struct InFlight {
    /// Position and id of each message sent, in order.
    events: Vec<(i64, uuid::Uuid)>,
    acks: Vec<jetstream::context::PublishAckFuture>,
    /// Why the batch stopped short of its end.
    send_failure: Option<SessionError>,
}

impl InFlight {
    /// Awaits the acks in order: answers the end of the unbroken acked prefix (from `cp`),
    /// how many messages it holds, and the first failure.
    async fn settle(self, cp: Checkpoint) -> (Checkpoint, u64, Option<SessionError>) {
        let mut acked = cp;
        let mut failure = None;
        let mut published = 0u64;
        for (ack, (position, id)) in self.acks.into_iter().zip(self.events) {
            match ack.await {
                Ok(_) if failure.is_none() => {
                    acked = Checkpoint {
                        position,
                        event_id: Some(id),
                    };
                    published += 1;
                }
                Ok(_) => {}
                Err(e) => {
                    failure.get_or_insert_with(|| bus(format!("event {position}: {e}")));
                }
            }
        }
        (acked, published, failure.or(self.send_failure))
    }
}

#[derive(Debug, thiserror::Error)]
enum SessionError {
    /// The lock or its connection failed: leadership is given up.
    #[error(transparent)]
    Lease(#[from] LeaseError),
    /// NATS or the log failed: retried after a back-off while the lock is held.
    #[error("{0}")]
    Bus(String),
}

fn bus(e: impl std::fmt::Display) -> SessionError {
    SessionError::Bus(e.to_string())
}

impl Publisher {
    async fn run(mut self) {
        loop {
            let lease = match self.leadership.try_lead().await {
                Ok(Some(lease)) => lease,
                Ok(None) => {
                    tokio::time::sleep(STANDBY_RETRY).await;
                    continue;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "publisher cannot ask for the lock; retrying");
                    self.status.count_error();
                    tokio::time::sleep(STANDBY_RETRY).await;
                    continue;
                }
            };
            tracing::info!(stream = %self.settings.stream, "this node publishes the log");
            self.status.set_leading(true);
            self.lead(&lease).await;
            self.status.set_leading(false);
            drop(lease);
            tracing::warn!("this node no longer publishes the log");
            tokio::time::sleep(STANDBY_RETRY).await;
        }
    }

    /// Runs sessions while the lease is held.
    async fn lead(&mut self, lease: &Lease) {
        let mut backoff = Duration::from_millis(100);
        while lease.is_held() {
            let started = Instant::now();
            match self.session(lease).await {
                Ok(()) => return,
                Err(SessionError::Lease(e)) => {
                    self.status.count_error();
                    tracing::warn!(error = %e, "publisher lost its lock connection");
                    return;
                }
                Err(SessionError::Bus(e)) => {
                    self.status.count_error();
                    tracing::warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "publishing to JetStream failed; retrying");
                    if started.elapsed() > Duration::from_secs(30) {
                        backoff = Duration::from_millis(100);
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    async fn session(&mut self, lease: &Lease) -> Result<(), SessionError> {
        let client = async_nats::ConnectOptions::new()
            .connection_timeout(ACK_TIMEOUT)
            .request_timeout(Some(ACK_TIMEOUT))
            .name("egec-publisher")
            .connect(self.url.as_str())
            .await
            .map_err(bus)?;
        let js = jetstream::ContextBuilder::new()
            .timeout(ACK_TIMEOUT)
            .ack_timeout(ACK_TIMEOUT)
            .build(client.clone());
        let stream = ensure_stream(&js, &self.settings).await.map_err(bus)?;
        let name = self.settings.stream.clone();
        let mut cp = lease.load(&name).await?;
        cp = self.reconcile(&stream, lease, cp).await?;
        self.status.set_position(cp.position);
        let mut previous: Option<uuid::Uuid> = None;
        let mut last_check = Instant::now();
        // Batches sent and not yet acked, oldest first; the next one is read and sent while
        // the acks of the one before are on their way.
        let mut inflight: VecDeque<InFlight> = VecDeque::new();
        let mut sent = cp.position;
        let mut broken = false;
        loop {
            if !lease.is_held() {
                return Ok(());
            }
            let seen = *self.head.borrow_and_update();
            if !broken && inflight.len() < IN_FLIGHT_BATCHES {
                let batch = self.log.read_all(sent, BATCH).await.map_err(bus)?;
                if !batch.is_empty() {
                    let full = batch.len() == BATCH;
                    let f = self.send(&js, batch, &mut previous).await;
                    broken = f.send_failure.is_some();
                    sent = f.events.last().map_or(sent, |e| e.0);
                    inflight.push_back(f);
                    if !broken && full && inflight.len() < IN_FLIGHT_BATCHES {
                        continue;
                    }
                }
            }
            let Some(f) = inflight.pop_front() else {
                if broken {
                    return Err(bus("sending failed"));
                }
                metrics::gauge!("egec_publisher_lag_events").set(0.0);
                if last_check.elapsed() >= STANDBY_RETRY {
                    lease.check().await?;
                    last_check = Instant::now();
                }
                if seen <= cp.position {
                    let _ = tokio::time::timeout(POLL, self.head.changed()).await;
                }
                continue;
            };
            let (acked, published, failure) = f.settle(cp).await;
            if acked.position > cp.position {
                lease.save(&name, acked).await?;
                last_check = Instant::now();
                cp = acked;
                self.status.set_position(cp.position);
                metrics::counter!("egec_publisher_published_total").increment(published);
                if inflight.is_empty() && !broken {
                    metrics::gauge!("egec_publisher_lag_events").set(0.0);
                } else if let Ok(head) = self.log.head().await {
                    metrics::gauge!("egec_publisher_lag_events")
                        .set((head.position - cp.position).max(0) as f64);
                }
            }
            if let Some(e) = failure {
                return Err(e);
            }
        }
    }

    /// Publishes a batch without awaiting the acks; stops at the first message that cannot
    /// be sent.
    async fn send(
        &self,
        js: &jetstream::Context,
        batch: Vec<egec_commands::store::RecordedEvent>,
        previous: &mut Option<uuid::Uuid>,
    ) -> InFlight {
        let mut f = InFlight {
            events: Vec::with_capacity(batch.len()),
            acks: Vec::with_capacity(batch.len()),
            send_failure: None,
        };
        for event in &batch {
            let mut message = PublishMessage::build()
                .payload(super::body(event).into())
                .message_id(event.event_id.to_string());
            if let Some(prev) = *previous {
                message = message.expected_last_message_id(prev.to_string());
            }
            match js
                .send_publish(
                    super::subject(&self.settings.subject_prefix, event),
                    message,
                )
                .await
            {
                Ok(ack) => {
                    f.acks.push(ack);
                    f.events.push((event.global_position, event.event_id));
                }
                Err(e) => {
                    f.send_failure = Some(bus(e));
                    break;
                }
            }
            *previous = Some(event.event_id);
        }
        f
    }

    /// Moves the checkpoint up to the stream's last message when that is an event of this
    /// log past it.
    async fn reconcile(
        &self,
        stream: &stream::Stream,
        lease: &Lease,
        cp: Checkpoint,
    ) -> Result<Checkpoint, SessionError> {
        let info = stream.get_info().await.map_err(bus)?;
        if info.state.messages == 0 {
            return Ok(cp);
        }
        let last = match stream.get_raw_message(info.state.last_sequence).await {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the stream's last message");
                return Ok(cp);
            }
        };
        let Ok(message) = serde_json::from_slice::<BusMessage>(&last.payload) else {
            tracing::warn!(
                sequence = info.state.last_sequence,
                "the stream's last message is not a log record"
            );
            return Ok(cp);
        };
        if message.position <= cp.position {
            return Ok(cp);
        }
        let at = self
            .log
            .read_all(message.position - 1, 1)
            .await
            .map_err(bus)?;
        match at.first() {
            Some(e) if e.global_position == message.position && e.event_id == message.event_id => {
                let moved = Checkpoint {
                    position: message.position,
                    event_id: Some(message.event_id),
                };
                lease.save(&self.settings.stream, moved).await?;
                tracing::info!(
                    from = cp.position,
                    to = moved.position,
                    "checkpoint moved up to the stream's last message"
                );
                Ok(moved)
            }
            _ => {
                tracing::warn!(
                    position = message.position,
                    "the stream's last message is not an event of this log; publishing from the checkpoint"
                );
                Ok(cp)
            }
        }
    }
}

/// The stream's configuration from the settings.
pub fn stream_config(settings: &Settings) -> stream::Config {
    stream::Config {
        name: settings.stream.clone(),
        description: Some("Egec CRM event log (api/src/bus)".to_owned()),
        subjects: vec![format!("{}.>", settings.subject_prefix)],
        storage: stream::StorageType::File,
        retention: stream::RetentionPolicy::Limits,
        discard: stream::DiscardPolicy::Old,
        max_age: settings.max_age,
        max_bytes: if settings.max_bytes == 0 {
            -1
        } else {
            i64::try_from(settings.max_bytes).unwrap_or(i64::MAX)
        },
        max_messages: -1,
        max_messages_per_subject: -1,
        max_consumers: -1,
        duplicate_window: settings.duplicate_window,
        num_replicas: settings.replicas,
        allow_direct: true,
        ..Default::default()
    }
}

/// Creates the stream, or brings an existing one to the configured settings.
pub async fn ensure_stream(
    js: &jetstream::Context,
    settings: &Settings,
) -> anyhow::Result<stream::Stream> {
    js.create_or_update_stream(stream_config(settings))
        .await
        .map_err(|e| anyhow::anyhow!("stream {}: {e}", settings.stream))?;
    js.get_stream(&settings.stream)
        .await
        .map_err(|e| anyhow::anyhow!("stream {}: {e}", settings.stream))
}
