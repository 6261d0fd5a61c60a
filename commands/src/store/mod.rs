//! The event log and the subject-key table: one contract, two backends.
//!
//! Everything above this module sees only [`EventLog`] and [`KeyTable`]; the SQL for each
//! backend lives in its own submodule and nowhere else. Both backends run the same
//! conformance suite (`tests/store_conformance.rs` in this crate).

pub mod blobs;
pub mod hash;
pub mod open;
mod plan;
pub mod postgres;
pub mod sqlite;
mod types;
pub mod verify;

pub use types::*;

use async_trait::async_trait;

/// The append-only log. Appends are batched by the appender (group commit); each request in a
/// batch is answered on its own, so one conflicting command never fails its neighbours.
#[async_trait]
pub trait EventLog: Send + Sync + 'static {
    /// Appends every request that passes its expected-version check, in one transaction, and
    /// answers each request in order. A request whose `command_id` was already appended gets
    /// the first outcome back with `duplicate = true` and appends nothing.
    async fn append_batch(
        &self,
        batch: Vec<AppendRequest>,
    ) -> Result<Vec<Result<AppendOutcome, Conflict>>, StoreError>;

    /// Events of one stream with `stream_version >= from_version`, in version order, cut off
    /// by `bound` (inclusive).
    async fn read_stream(
        &self,
        stream_id: &str,
        from_version: i64,
        bound: ReadBound,
    ) -> Result<Vec<RecordedEvent>, StoreError>;

    /// Up to `limit` events with `global_position > after`, in position order.
    async fn read_all(&self, after: i64, limit: usize) -> Result<Vec<RecordedEvent>, StoreError>;

    /// What [`EventLog::read_all`] reads, with payloads and metadata as stored JSON text and
    /// without the hash chain: the read of projections and rebuilds. Backends answer it
    /// without parsing the JSON; this default (for test doubles) serialises it again. With
    /// `metadata` false every event's metadata reads as `{}` (for folds that never look at it).
    async fn read_all_raw(
        &self,
        after: i64,
        limit: usize,
        metadata: bool,
    ) -> Result<Vec<RawRecordedEvent>, StoreError> {
        Ok(self
            .read_all(after, limit)
            .await?
            .into_iter()
            .map(|e| {
                let mut raw = RawRecordedEvent::from(e);
                if !metadata {
                    raw.metadata = "{}".to_owned();
                }
                raw
            })
            .collect())
    }

    /// The highest committed position and the hash at it (0 and the genesis hash when empty).
    async fn head(&self) -> Result<ChainHead, StoreError>;

    /// Current version of a stream (0 when it has no events).
    async fn stream_version(&self, stream_id: &str) -> Result<i64, StoreError>;

    /// Which backend this is, for logs, metrics and `/readyz`.
    fn backend(&self) -> Backend;

    /// How many `append_batch` calls the appender may have running at once. More than one
    /// only where the backend keeps positions dense and in commit order across concurrent
    /// batches by itself (PostgreSQL: see `postgres/pipeline.rs`).
    fn pipeline_depth(&self) -> usize {
        1
    }
}

/// Wrapped data-encryption keys per data subject, and the tombstones of erased subjects.
#[async_trait]
pub trait KeyTable: Send + Sync + 'static {
    /// All live key versions of a subject, or `Erased` once the subject was erased.
    async fn load(&self, subject: &str) -> Result<SubjectKeys, StoreError>;

    /// [`KeyTable::load`] for many subjects in one query, for decoding a batch of events.
    /// Every subject asked for is in the answer (`SubjectKeys::None` when it has no key).
    /// Both backends answer with one query; this default, one `load` per subject, serves
    /// other implementations (test doubles).
    async fn load_many(
        &self,
        subjects: &[String],
    ) -> Result<std::collections::HashMap<String, SubjectKeys>, StoreError> {
        let mut out = std::collections::HashMap::with_capacity(subjects.len());
        for subject in subjects {
            if !out.contains_key(subject) {
                out.insert(subject.clone(), self.load(subject).await?);
            }
        }
        Ok(out)
    }

    /// Inserts the first key of a subject. Answers with the key that won if another writer
    /// created one first, and with `Erased` if the subject was erased: an erased subject's key
    /// is never re-created.
    async fn create(&self, subject: &str, key: WrappedKey) -> Result<SubjectKeys, StoreError>;

    /// Deletes every key version of the subject and records its tombstone, in one
    /// transaction. Answers with the fingerprints of the destroyed keys (empty when the
    /// subject had none or was already erased).
    async fn destroy(&self, subject: &str) -> Result<Vec<String>, StoreError>;

    /// Every live wrapped key, for master-key rotation.
    async fn all_keys(&self) -> Result<Vec<(String, WrappedKey)>, StoreError>;

    /// Replaces the wrapping of one key version (rotation); the key material is unchanged.
    async fn rewrap(&self, subject: &str, key: WrappedKey) -> Result<(), StoreError>;

    /// The subjects with at least one live key whose name starts with `prefix`, each once,
    /// in order (retention lists its monthly subjects with it). Both backends answer from
    /// the key table's primary-key index; this default serves test doubles.
    async fn live_subjects(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        let mut subjects: Vec<String> = self
            .all_keys()
            .await?
            .into_iter()
            .map(|(s, _)| s)
            .filter(|s| s.starts_with(prefix))
            .collect();
        subjects.dedup();
        Ok(subjects)
    }
}
