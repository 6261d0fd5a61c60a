//! Decoding a batch of stored events for one projection.

use std::sync::Arc;

use egec_commands::codec::Codec;
use egec_commands::store::RecordedEvent;
use egec_domain::event::Envelope;

use crate::error::ProjectionError;
use crate::kind::ProjectionKind;

/// Below this many events a batch is decoded inline; above, it is split over tasks so that
/// decryption and parsing use every core (a rebuild is bound by this work).
const PARALLEL_MIN: usize = 512;

/// Tasks a large batch is split over. More than there are cores: with a cold key cache each
/// new data subject costs a round trip to the key table, and many tasks overlap those waits.
const DECODE_TASKS: usize = 16;

/// Decodes (decrypts, upcasts) the events of `records` that `kind` folds, in log order.
/// Events of other types are skipped without being decrypted. The first event that cannot
/// be decoded fails the batch: a projection never skips an event silently.
pub(crate) async fn decode_for(
    codec: &Arc<Codec>,
    kind: ProjectionKind,
    records: Vec<RecordedEvent>,
) -> Result<Vec<Envelope>, ProjectionError> {
    let relevant: Vec<RecordedEvent> = records
        .into_iter()
        .filter(|r| kind.wants(&r.event_type))
        .collect();
    // One query fetches the keys of every subject in the batch; without it each subject not
    // yet cached costs its own round trip to the key table. A failed preload is not fatal:
    // decoding then loads keys one by one, as it always could.
    forget_expired_months(codec, &relevant);
    let subjects = batch_subjects(&relevant);
    if let Err(e) = codec.vault().preload(&subjects).await {
        tracing::warn!(error = %e, "key preload failed; decoding with per-subject loads");
    }
    if relevant.len() < PARALLEL_MIN {
        return decode_chunk(codec, relevant).await;
    }
    let chunk_len = relevant.len().div_ceil(DECODE_TASKS);
    let mut rest = relevant;
    let mut chunks = Vec::with_capacity(DECODE_TASKS);
    while !rest.is_empty() {
        let tail = rest.split_off(chunk_len.min(rest.len()));
        chunks.push(std::mem::replace(&mut rest, tail));
    }
    let handles: Vec<_> = chunks
        .into_iter()
        .map(|chunk| {
            let codec = Arc::clone(codec);
            tokio::spawn(async move { decode_chunk(&codec, chunk).await })
        })
        .collect();
    let mut out = Vec::new();
    for h in handles {
        let part = h.await.map_err(|e| {
            ProjectionError::Storage(crate::error::StorageError::Join(e.to_string()))
        })??;
        out.extend(part);
    }
    Ok(out)
}

/// The data subjects whose keys decoding `records` needs: each payload's subject and each
/// metadata's retention subject, without repeats.
fn batch_subjects(records: &[RecordedEvent]) -> Vec<String> {
    let mut seen = std::collections::HashSet::new();
    records
        .iter()
        .flat_map(|r| {
            [
                r.payload.get("subject").and_then(|v| v.as_str()),
                r.metadata.get("retention_subject").and_then(|v| v.as_str()),
            ]
        })
        .flatten()
        .filter(|s| seen.insert(*s))
        .map(str::to_owned)
        .collect()
}

/// Drops from the key cache the month keys that a retention run in `records` destroyed. The
/// run may have happened on another node, whose vault alone knows; without this, this
/// node's cache would keep decrypting the month's IP addresses until the entry is evicted.
/// The next read of those subjects asks the key table, which answers with the tombstone.
fn forget_expired_months(codec: &Codec, records: &[RecordedEvent]) {
    for rec in records
        .iter()
        .filter(|r| r.event_type == egec_domain::user::RETENTION_APPLIED)
    {
        let months = rec
            .payload
            .get("facts")
            .and_then(|f| f.get("months"))
            .and_then(|m| m.as_array());
        for month in months.into_iter().flatten() {
            if let Some(m) = month
                .as_str()
                .and_then(egec_domain::retention::Month::parse)
            {
                codec.vault().forget(&m.subject());
            }
        }
    }
}

async fn decode_chunk(
    codec: &Codec,
    records: Vec<RecordedEvent>,
) -> Result<Vec<Envelope>, ProjectionError> {
    let mut out = Vec::with_capacity(records.len());
    for rec in records {
        match codec.decode(&rec).await {
            Ok(env) => out.push(env),
            Err(source) => {
                return Err(ProjectionError::Decode {
                    position: rec.global_position,
                    event_type: rec.event_type,
                    source,
                });
            }
        }
    }
    Ok(out)
}
