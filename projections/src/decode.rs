//! Decoding a batch of stored events for one projection.

use std::future::Future;
use std::sync::Arc;

use egec_commands::codec::{Codec, ParsedEvent, SecurityFields};
use egec_commands::store::RawRecordedEvent;
use egec_domain::event::Envelope;

use crate::error::{ProjectionError, StorageError};
use crate::fold::runs;
use crate::kind::ProjectionKind;

/// Below this many events a batch is decoded inline; above, it is split over tasks so that
/// decryption and parsing use every core (a rebuild is bound by this work).
const PARALLEL_MIN: usize = 512;

/// Tasks a large batch is split over. More than there are cores: with a cold key cache each
/// new data subject costs a round trip to the key table, and many tasks overlap those waits.
const DECODE_TASKS: usize = 16;

/// Decodes (parses, decrypts, upcasts) the events of `records` that `kind` folds, in log
/// order. Events of other types are skipped without being parsed. The first event that
/// cannot be decoded fails the batch: a projection never skips an event silently.
///
/// No read model holds IP addresses or user agents (the security metadata kept under
/// monthly retention keys), so they are not decrypted: the envelopes' `ip` and `user_agent`
/// are `None`.
pub(crate) async fn decode_for(
    codec: &Arc<Codec>,
    kind: ProjectionKind,
    records: Vec<RawRecordedEvent>,
) -> Result<Vec<Envelope>, ProjectionError> {
    let relevant: Vec<RawRecordedEvent> = records
        .into_iter()
        .filter(|r| kind.wants(&r.event_type))
        .collect();
    let parsed = in_parallel(relevant, |chunk| async move {
        chunk
            .into_iter()
            .map(|raw| {
                let (position, event_type) = (raw.global_position, raw.event_type.clone());
                ParsedEvent::parse(raw).map_err(|source| ProjectionError::Decode {
                    position,
                    event_type,
                    source,
                })
            })
            .collect::<Result<Vec<ParsedEvent>, ProjectionError>>()
    })
    .await?;
    // One query fetches the keys of every subject in the batch; without it each subject not
    // yet cached costs its own round trip to the key table. A failed preload is not fatal:
    // decoding then loads keys one by one, as it always could.
    forget_expired_months(codec, &parsed);
    let subjects = batch_subjects(&parsed);
    if let Err(e) = codec.vault().preload(&subjects).await {
        tracing::warn!(error = %e, "key preload failed; decoding with per-subject loads");
    }
    let codec = Arc::clone(codec);
    in_parallel(parsed, move |chunk| {
        let codec = Arc::clone(&codec);
        async move { decode_chunk(&codec, chunk).await }
    })
    .await
}

/// Runs `work` over `items` in order: inline when they are few, else over up to
/// [`DECODE_TASKS`] tasks, each given a run of consecutive items, and the answers joined in
/// the items' order.
async fn in_parallel<T, U, F, Fut>(items: Vec<T>, work: F) -> Result<Vec<U>, ProjectionError>
where
    T: Send + 'static,
    U: Send + 'static,
    F: Fn(Vec<T>) -> Fut,
    Fut: Future<Output = Result<Vec<U>, ProjectionError>> + Send + 'static,
{
    if items.len() < PARALLEL_MIN {
        return work(items).await;
    }
    let handles: Vec<_> = runs(items, DECODE_TASKS)
        .into_iter()
        .map(|chunk| tokio::spawn(work(chunk)))
        .collect();
    let mut out = Vec::new();
    for h in handles {
        let part = h
            .await
            .map_err(|e| ProjectionError::Storage(StorageError::Join(e.to_string())))??;
        out.extend(part);
    }
    Ok(out)
}

/// The data subjects whose keys decoding `events` needs: each payload's subject, without
/// repeats (the metadata's retention subjects are not needed: see [`decode_for`]).
fn batch_subjects(events: &[ParsedEvent]) -> Vec<String> {
    let mut seen = std::collections::HashSet::new();
    events
        .iter()
        .filter_map(ParsedEvent::subject)
        .filter(|s| seen.insert(*s))
        .map(str::to_owned)
        .collect()
}

/// Drops from the key cache the month keys that a retention run in `events` destroyed. The
/// run may have happened on another node, whose vault alone knows; without this, this
/// node's cache would keep decrypting the month's IP addresses until the entry is evicted.
/// The next read of those subjects asks the key table, which answers with the tombstone.
fn forget_expired_months(codec: &Codec, events: &[ParsedEvent]) {
    for event in events
        .iter()
        .filter(|e| e.event_type() == egec_domain::user::RETENTION_APPLIED)
    {
        let months = event.facts().get("months").and_then(|m| m.as_array());
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
    events: Vec<ParsedEvent>,
) -> Result<Vec<Envelope>, ProjectionError> {
    let mut out = Vec::with_capacity(events.len());
    for event in events {
        let position = event.position();
        let event_type = event.event_type().to_owned();
        match codec.decode_parsed(event, SecurityFields::Omit).await {
            Ok(env) => out.push(env),
            Err(source) => {
                return Err(ProjectionError::Decode {
                    position,
                    event_type,
                    source,
                });
            }
        }
    }
    Ok(out)
}
