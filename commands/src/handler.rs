//! The command handler: load an aggregate, decide, encode, append through the group-commit
//! appender, and on a conflict reload and decide again (safe, because deciding is pure).

use crate::appender::{AppendError, Appender};
use crate::codec::{Codec, CodecError, SecurityFields};
use crate::store::{AppendRequest, EventLog, ExpectedVersion, ReadBound, StoreError};
use crate::vault::SubjectKey;
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
    Append(#[source] AppendError),
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
        let read_any = !newer.is_empty();
        for rec in newer {
            version = rec.stream_version;
            // An aggregate folds events, never their security metadata.
            let env = self.codec.decode_owned(rec, SecurityFields::Omit).await?;
            if let Some(e) = A::unwrap(env.event) {
                state = A::evolve(state, &e);
            }
        }
        if read_any {
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
            version = rec.stream_version;
            let env = self.codec.decode_owned(rec, SecurityFields::Omit).await?;
            if let Some(e) = A::unwrap(env.event) {
                state = A::evolve(state, &e);
            }
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

    /// The cached state and version of an aggregate, without asking the log.
    fn cached<A: Aggregate>(&self, stream_id: &str) -> Option<(A::State, i64)> {
        let cached = self.cache.lock().get(stream_id).cloned()?;
        cached
            .state
            .downcast_ref::<A::State>()
            .map(|s| (s.clone(), cached.version))
    }

    /// Runs a command against an aggregate.
    ///
    /// `if_match` is the version the client last saw: when given, any other current version
    /// is a [`HandlerError::VersionConflict`]. Without it, conflicts with concurrent writers
    /// are retried (reload, decide again) up to a bound.
    ///
    /// A cached aggregate is decided on without reading the log: the append expects the
    /// cached version, so if another process wrote meanwhile the store answers a conflict,
    /// the cache entry is dropped and the next attempt loads afresh.
    pub async fn execute<A: Aggregate>(
        &self,
        stream_id: &str,
        subject: &str,
        if_match: Option<i64>,
        command_id: Uuid,
        meta: &Metadata,
        command: A::Command,
    ) -> Result<Executed<A::State, A::Event>, HandlerError<A::Error>> {
        self.run::<A>(
            stream_id, subject, if_match, false, command_id, meta, command,
        )
        .await
    }

    /// Runs a command that creates a new aggregate under an id the caller just made up (a
    /// fresh UUIDv7), so the stream cannot exist yet: decides on the default state at
    /// version 0 without reading the log. Should the stream exist after all, the append
    /// conflicts and the command is retried like any other, on the loaded state.
    pub async fn execute_new<A: Aggregate>(
        &self,
        stream_id: &str,
        subject: &str,
        command_id: Uuid,
        meta: &Metadata,
        command: A::Command,
    ) -> Result<Executed<A::State, A::Event>, HandlerError<A::Error>> {
        self.run::<A>(stream_id, subject, None, true, command_id, meta, command)
            .await
    }

    #[allow(clippy::too_many_arguments)]
    async fn run<A: Aggregate>(
        &self,
        stream_id: &str,
        subject: &str,
        if_match: Option<i64>,
        assume_new: bool,
        command_id: Uuid,
        meta: &Metadata,
        command: A::Command,
    ) -> Result<Executed<A::State, A::Event>, HandlerError<A::Error>> {
        // Set once the store refused to create the subject's first key because it already
        // had one (or was erased): from then on the key comes from the vault.
        let mut key_taken = false;
        // Set when a decision on the cached state must be checked against the log.
        let mut verify_cache = false;
        for attempt in 0..self.max_attempts {
            if attempt > 0 && !verify_cache {
                backoff(attempt).await;
            }
            let cached = if verify_cache {
                None
            } else {
                self.cached::<A>(stream_id)
            };
            verify_cache = false;
            let from_cache = cached.is_some() && !(attempt == 0 && assume_new);
            let (state, version) = match (attempt == 0 && assume_new, cached) {
                (true, _) => (A::State::default(), 0),
                // A client that saw another version than the cached one may have seen a
                // newer write by another process: only a fresh load can tell.
                (false, Some((_, cached))) if if_match.is_some_and(|m| m != cached) => {
                    self.load::<A>(stream_id).await?
                }
                (false, Some(cached)) => cached,
                (false, None) => self.load::<A>(stream_id).await?,
            };
            if let Some(expected) = if_match
                && expected != version
            {
                return Err(HandlerError::VersionConflict {
                    expected,
                    actual: version,
                });
            }
            // A refusal or "nothing to do" appends nothing, so the store never checks the
            // version it was decided on: when that came from the cache, which another process
            // may have made stale, confirm the answer on the log's current state.
            let events = match A::decide(&state, command.clone(), now_micros()) {
                Err(_) if from_cache => {
                    verify_cache = true;
                    continue;
                }
                Err(e) => return Err(HandlerError::Domain(e)),
                Ok(events) => events,
            };
            if events.is_empty() {
                if from_cache {
                    verify_cache = true;
                    continue;
                }
                return Ok(Executed {
                    state,
                    events,
                    version,
                    position: None,
                });
            }

            // The first events of a stream usually introduce a new data subject. Its key is
            // then made here and stored by the append, in the same transaction as the events,
            // instead of in a transaction of its own; if the subject turns out to have a key
            // already, the append is refused and the next attempt uses that key.
            let pending = if version == 0
                && !key_taken
                && matches!(
                    self.codec.vault().cached(subject),
                    None | Some(SubjectKey::Missing)
                ) {
                Some(
                    self.codec
                        .vault()
                        .new_pending_key(subject)
                        .map_err(CodecError::from)?,
                )
            } else {
                None
            };
            let mut stored = Vec::with_capacity(events.len());
            let mut key_used = false;
            for e in &events {
                let domain_event = A::wrap(e.clone());
                let event_id = Uuid::now_v7();
                match &pending {
                    Some(p) => {
                        let (event, used) = self
                            .codec
                            .encode_with_pending(p, event_id, &domain_event, meta)
                            .await?;
                        key_used |= used;
                        stored.push(event);
                    }
                    None => {
                        stored.push(
                            self.codec
                                .encode(subject, event_id, &domain_event, meta)
                                .await?,
                        );
                    }
                }
            }
            let mut req = AppendRequest::new(
                stream_id,
                ExpectedVersion::Exact(version),
                command_id,
                stored,
            );
            let pending = pending.filter(|_| key_used);
            if let Some(p) = &pending {
                req.new_keys.push((p.subject.clone(), p.wrapped.clone()));
            }
            match self.appender.append(req).await {
                Ok(outcome) => {
                    if outcome.duplicate {
                        // The command had already been applied; what we decided now is not
                        // what was stored, so report the stored result and reload next time.
                        // The pending key was not stored, so it is dropped.
                        self.forget(stream_id);
                        let (state, version) = self.load::<A>(stream_id).await?;
                        return Ok(Executed {
                            state,
                            events: vec![],
                            version,
                            position: Some(outcome.last_position),
                        });
                    }
                    if let Some(p) = pending {
                        self.codec.vault().adopt(p);
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
                Err(AppendError::Conflict(c)) if pending.is_some() && c.actual == c.expected => {
                    // The stream was where we expected it, so it was the subject's key that
                    // collided: another writer created it, or the subject was erased. Encrypt
                    // again under whatever the key table holds (or fail as erased).
                    key_taken = true;
                    self.codec.vault().forget(subject);
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
                Err(other) => return Err(HandlerError::Append(other)),
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
        let req = AppendRequest::new(stream_id, ExpectedVersion::Any, Uuid::now_v7(), stored);
        self.appender
            .append(req)
            .await
            .map(|o| o.last_position)
            .map_err(HandlerError::Append)
    }
}
