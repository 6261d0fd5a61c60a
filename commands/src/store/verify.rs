//! Verification of the whole hash chain, from the genesis hash to the counter row.
//!
//! The chain alone proves that no stored row was changed, reordered or removed from the
//! middle; the counter row (`log_head`), which every append updates in the same transaction,
//! proves that nothing was cut off or added at the end. Rewriting the counter row too is
//! beyond what the database can prove about itself; anchoring the head outside (an exported
//! head hash) covers that.

use super::hash::{GENESIS, recompute};
use super::{EventLog, StoreError};

/// The result of a verification run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    pub ok: bool,
    pub events_checked: i64,
    /// The first position where the stored log differs from what the chain proves.
    pub first_bad_position: Option<i64>,
    /// What is wrong there, in a sentence.
    pub problem: Option<String>,
}

impl VerifyReport {
    fn bad(events_checked: i64, position: i64, problem: String) -> Self {
        Self {
            ok: false,
            events_checked,
            first_bad_position: Some(position),
            problem: Some(problem),
        }
    }
}

/// Reads the whole log in pages of `batch` events and checks every link of the chain.
///
/// Safe to run while the log is being appended to: the head is read before the events, so
/// every event the head covers is visible to the reads that follow; events appended later are
/// verified as well, and the head is read again until the two agree.
pub async fn verify_chain(log: &dyn EventLog, batch: usize) -> Result<VerifyReport, StoreError> {
    let batch = batch.max(1);
    let mut prev_hash = GENESIS.to_vec();
    let mut last_position = 0_i64;
    let mut checked = 0_i64;

    loop {
        let head = log.head().await?;
        let mut new_rows = 0_usize;
        loop {
            let events = log.read_all(last_position, batch).await?;
            if events.is_empty() {
                break;
            }
            new_rows += events.len();
            for event in events {
                let expected = last_position + 1;
                if event.global_position != expected {
                    return Ok(VerifyReport::bad(
                        checked,
                        expected,
                        format!(
                            "position {expected} is missing: the next stored event is at {}",
                            event.global_position
                        ),
                    ));
                }
                if event.prev_hash != prev_hash {
                    return Ok(VerifyReport::bad(
                        checked,
                        expected,
                        format!(
                            "the event at position {expected} does not link to the hash of \
                             position {}",
                            expected - 1
                        ),
                    ));
                }
                let hash = recompute(&prev_hash, &event);
                if hash != event.hash {
                    return Ok(VerifyReport::bad(
                        checked,
                        expected,
                        format!(
                            "the event at position {expected} was changed: its content does \
                             not match its hash"
                        ),
                    ));
                }
                prev_hash = hash;
                last_position = expected;
                checked += 1;
            }
        }

        if last_position < head.position {
            // Every event up to the head was committed before the head was read, so it would
            // have been visible to the reads above.
            return Ok(VerifyReport::bad(
                checked,
                last_position + 1,
                format!(
                    "the log head is at position {} but the stored events end at {}",
                    head.position, last_position
                ),
            ));
        }
        if last_position == head.position {
            if head.hash != prev_hash {
                return Ok(VerifyReport::bad(
                    checked,
                    head.position,
                    format!(
                        "the hash recorded in the log head does not match the event at \
                         position {}",
                        head.position
                    ),
                ));
            }
            return Ok(VerifyReport {
                ok: true,
                events_checked: checked,
                first_bad_position: None,
                problem: None,
            });
        }
        // Events beyond the head: appended since the head was read, unless this round found
        // nothing new, in which case they were there already and no append accounts for them.
        if new_rows == 0 {
            return Ok(VerifyReport::bad(
                checked,
                head.position + 1,
                format!(
                    "events are stored beyond the log head (position {}): they were not \
                     appended by the log",
                    head.position
                ),
            ));
        }
    }
}
