//! The command handler: load an aggregate, decide, encode, append through the group-commit
//! appender, and on a conflict reload and decide again (safe, because deciding is pure).

use crate::appender::{AppendError, Appender};
use crate::codec::{Codec, CodecError};
use crate::store::{AppendRequest, EventLog, ExpectedVersion, ReadBound, StoreError};
use chrono::Utc;
use egec_domain::aggregate::Aggregate;
use egec_domain::event::{DomainEvent, Envelope, Metadata};
use lru::LruCache;
use parking_lot::Mutex;
use std::any::Any;
use std::num::NonZeroUsize;
use std::sync::Arc;
use uuid::Uuid;

/// Why a command did not go through.
#[derive(Debug, thiserror::Error)]
pub enum HandlerError<E> {
    /// The domain refused it.
    #[error(transparent)]
    Domain(E),
    /// The client's `If-Match` version is not the current one.
    #[error("version conflict: expected {expected}, current {actual}")]
    VersionConflict { expected: i64, actual: i64 },
    /// Concurrent writers kept winning for more than the retry budget.
    #[error("gave up after {0} conflicting attempts")]
    Contention(usize),
    #[error(transparent)]
    Codec(#[from] CodecError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("appender: {0}")]
    Append(String),
}

/// The current time at the precision both backends store (microseconds), so state folded in
/// memory equals state replayed from the log.
pub fn now_micros() -> chrono::DateTime<Utc> {
    let now = Utc::now();
    chrono::DateTime::from_timestamp_micros(now.timestamp_micros()).unwrap_or(now)
}

/// Waits a random time before retrying a conflicted command, growing with each attempt, so
/// that writers who collided on one stream do not collide again in the very next batch.
async fn backoff(attempt: usize) {
    let ceiling_us = 200u64 << attempt.min(6);
    let jitter = getrandom::u64().unwrap_or(ceiling_us / 2) % ceiling_us;
    tokio::time::sleep(std::time::Duration::from_micros(jitter)).await;
}

/// What an executed command did.
#[derive(Debug, Clone)]
pub struct Executed<S, E> {
    pub state: S,
    pub events: Vec<E>,
    /// Stream version after the command.
    pub version: i64,
    /// Log position of the command's last event; `None` when it appended nothing.
    pub position: Option<i64>,
}

#[derive(Clone)]
struct Cached {
    version: i64,
    state: Arc<dyn Any + Send + Sync>,
}

pub struct CommandBus {
    log: Arc<dyn EventLog>,
    appender: Appender,
    codec: Arc<Codec>,
    cache: Mutex<LruCache<String, Cached>>,
    max_attempts: usize,
}

impl CommandBus {
    pub fn new(
        log: Arc<dyn EventLog>,
        appender: Appender,
        codec: Arc<Codec>,
        cache_size: usize,
    ) -> Self {
        let cap = NonZeroUsize::new(cache_size.max(1)).unwrap_or(NonZeroUsize::MIN);
        Self {
            log,
            appender,
            codec,
            cache: Mutex::new(LruCache::new(cap)),
            max_attempts: 16,
        }
    }

    pub fn codec(&self) -> &Arc<Codec> {
        &self.codec
    }

    pub fn log(&self) -> &Arc<dyn EventLog> {
        &self.log
    }

    pub fn appender(&self) -> &Appender {
        &self.appender
    }

    /// Drops a cached aggregate (its subject was erased, or another node wrote to it).
    pub fn forget(&self, stream_id: &str) {
        self.cache.lock().pop(stream_id);
    }

    /// Current state and version of an aggregate. Starts from the cached state, if any, and
    /// reads only the events appended since, so another process's writes are always seen.
    pub async fn load<A: Aggregate>(
        &self,
        stream_id: &str,
    ) -> Result<(A::State, i64), HandlerError<A::Error>> {
        let cached = self.cache.lock().get(stream_id).cloned();
        let (mut state, mut version) = cached
            .and_then(|c| {
                c.state
                    .downcast_ref::<A::State>()
                    .map(|s| (s.clone(), c.version))
            })
            .unwrap_or_default();
        let newer = self
            .log
            .read_stream(stream_id, version + 1, ReadBound::None)
            .await?;
        for rec in &newer {
            let env = self.codec.decode(rec).await?;
            if let Some(e) = A::unwrap(env.event) {
                state = A::evolve(state, &e);
            }
            version = rec.stream_version;
        }
        if !newer.is_empty() {
            self.remember(stream_id, version, state.clone());
        }
        Ok((state, version))
    }

    /// State of an aggregate as it was at a bound (time travel); bypasses the cache.
    pub async fn load_at<A: Aggregate>(
        &self,
        stream_id: &str,
        bound: ReadBound,
    ) -> Result<(A::State, i64), HandlerError<A::Error>> {
        let mut state = A::State::default();
        let mut version = 0;
        for rec in self.log.read_stream(stream_id, 1, bound).await? {
            let env = self.codec.decode(&rec).await?;
            if let Some(e) = A::unwrap(env.event) {
                state = A::evolve(state, &e);
            }
            version = rec.stream_version;
        }
        Ok((state, version))
    }

    /// Every decoded event of a stream up to a bound, for history and replay.
    pub async fn stream_events(
        &self,
        stream_id: &str,
        bound: ReadBound,
    ) -> Result<Vec<Envelope>, HandlerError<std::convert::Infallible>> {
        let mut out = Vec::new();
        for rec in self.log.read_stream(stream_id, 1, bound).await? {
            out.push(self.codec.decode(&rec).await?);
        }
        Ok(out)
    }

    fn remember<S: Send + Sync + 'static>(&self, stream_id: &str, version: i64, state: S) {
        self.cache.lock().put(
            stream_id.to_owned(),
            Cached {
                version,
                state: Arc::new(state),
            },
        );
    }

    /// Runs a command against an aggregate.
    ///
    /// `if_match` is the version the client last saw: when given, any other current version
    /// is a [`HandlerError::VersionConflict`]. Without it, conflicts with concurrent writers
    /// are retried (reload, decide again) up to a bound.
    pub async fn execute<A: Aggregate>(
        &self,
        stream_id: &str,
        subject: &str,
        if_match: Option<i64>,
        command_id: Uuid,
        meta: &Metadata,
        command: A::Command,
    ) -> Result<Executed<A::State, A::Event>, HandlerError<A::Error>> {
        for attempt in 0..self.max_attempts {
            if attempt > 0 {
                backoff(attempt).await;
            }
            let (state, version) = self.load::<A>(stream_id).await?;
            if let Some(expected) = if_match
                && expected != version
            {
                return Err(HandlerError::VersionConflict {
                    expected,
                    actual: version,
                });
            }
            let events =
                A::decide(&state, command.clone(), now_micros()).map_err(HandlerError::Domain)?;
            if events.is_empty() {
                return Ok(Executed {
                    state,
                    events,
                    version,
                    position: None,
                });
            }
            let mut stored = Vec::with_capacity(events.len());
            for e in &events {
                let domain_event = A::wrap(e.clone());
                stored.push(
                    self.codec
                        .encode(subject, Uuid::now_v7(), &domain_event, meta)
                        .await?,
                );
            }
            let req = AppendRequest {
                stream_id: stream_id.to_owned(),
                expected: ExpectedVersion::Exact(version),
                command_id,
                events: stored,
            };
            match self.appender.append(req).await {
                Ok(outcome) => {
                    if outcome.duplicate {
                        // The command had already been applied; what we decided now is not
                        // what was stored, so report the stored result and reload next time.
                        self.forget(stream_id);
                        let (state, version) = self.load::<A>(stream_id).await?;
                        return Ok(Executed {
                            state,
                            events: vec![],
                            version,
                            position: Some(outcome.last_position),
                        });
                    }
                    let new_state = events.iter().fold(state, A::evolve);
                    self.remember(stream_id, outcome.stream_version, new_state.clone());
                    return Ok(Executed {
                        state: new_state,
                        events,
                        version: outcome.stream_version,
                        position: Some(outcome.last_position),
                    });
                }
                Err(AppendError::Conflict(c)) => {
                    self.forget(stream_id);
                    if let Some(expected) = if_match {
                        return Err(HandlerError::VersionConflict {
                            expected,
                            actual: c.actual,
                        });
                    }
                }
                Err(other) => return Err(HandlerError::Append(other.to_string())),
            }
        }
        Err(HandlerError::Contention(self.max_attempts))
    }

    /// Appends events that need no decision and no concurrency check (login activity).
    pub async fn record(
        &self,
        stream_id: &str,
        subject: &str,
        meta: &Metadata,
        events: &[DomainEvent],
    ) -> Result<i64, HandlerError<std::convert::Infallible>> {
        let mut stored = Vec::with_capacity(events.len());
        for e in events {
            stored.push(self.codec.encode(subject, Uuid::now_v7(), e, meta).await?);
        }
        let req = AppendRequest {
            stream_id: stream_id.to_owned(),
            expected: ExpectedVersion::Any,
            command_id: Uuid::now_v7(),
            events: stored,
        };
        self.appender
            .append(req)
            .await
            .map(|o| o.last_position)
            .map_err(|e| HandlerError::Append(e.to_string()))
    }
}
