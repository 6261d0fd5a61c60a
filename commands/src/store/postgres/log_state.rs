//! What the log holds about a batch before it is planned, read in one statement.
//!
//! A batch needs three answers: the outcome of each of its command ids already appended
//! (a repeated command is answered, not appended again), the current version of each of its
//! streams, and which of its new subjects already have a key or a tombstone. They used to be
//! three statements; as one, an append saves two statement executions, two flushes of the
//! server's output and, since the statement is prepared once per connection of the append
//! pool and planned once (see `settings`), all of their planning.

use std::collections::{HashMap, HashSet};

use deadpool_postgres::ClientWrapper;
use tokio_postgres::Row;
use uuid::Uuid;

use crate::store::{AppendOutcome, StoreError};

/// The three look-ups, one row per answer, told apart by the first column:
///
/// - `0`: a command id already in the log (column 2), with the first and last position it
///   appended and the version it left its stream at (columns 4 to 6). One probe of the
///   command-id index per id, as a lateral join over the ids: the inner `GROUP BY` answers
///   no row for an id not in the log, and `command_id = ANY($1)` would let the planner
///   read the index as a bitmap or, on a table without statistics, in parallel workers
///   (650 processes forked in 5 s of appends on 2026-11-30);
/// - `1`: a stream of the batch (column 3) with its current version (column 4), NULL for a
///   new stream. One backward probe of the unique index per stream, however long the stream;
/// - `2`: a new subject (column 3) that already has a key or was erased. Also a lateral
///   join: written as `EXISTS … OR EXISTS …`, a plan made while the key table was small
///   hashed the whole table on every call instead of probing it (2026-11-30: 0.9 ms per
///   look-up, a quarter of the throughput).
const LOOK_UP: &str = "\
    SELECT 0::int2, u.c, NULL::text, a.first, a.last, a.version \
    FROM unnest($1::uuid[]) AS u(c) CROSS JOIN LATERAL (\
      SELECT min(e.global_position) AS first, max(e.global_position) AS last, \
             max(e.stream_version) AS version \
      FROM egec.events e WHERE e.command_id = u.c GROUP BY e.command_id) AS a \
    UNION ALL \
    SELECT 1::int2, NULL::uuid, s.s, \
      (SELECT max(e.stream_version) FROM egec.events e WHERE e.stream_id = s.s), \
      NULL::int8, NULL::int8 \
    FROM unnest($2::text[]) AS s(s) \
    UNION ALL \
    SELECT 2::int2, NULL::uuid, k.s, NULL::int8, NULL::int8, NULL::int8 \
    FROM unnest($3::text[]) AS k(s) CROSS JOIN LATERAL (\
      SELECT 1 FROM egec.erased_subjects e WHERE e.subject = k.s \
      UNION ALL \
      SELECT 1 FROM egec.subject_keys sk WHERE sk.subject = k.s \
      LIMIT 1) AS t";

/// What the log holds about a batch: see the module comment.
pub(super) struct LogState {
    pub(super) prior: HashMap<Uuid, AppendOutcome>,
    pub(super) versions: HashMap<String, i64>,
    pub(super) taken: HashSet<String>,
}

impl LogState {
    /// Reads the state of the log for these command ids, streams and new subjects. Under
    /// READ COMMITTED the statement sees every append committed before it started, so a
    /// caller that needs it to see a lock's holder's writes sends it after taking the lock.
    pub(super) async fn read(
        client: &ClientWrapper,
        command_ids: &[Uuid],
        streams: &[String],
        new_subjects: &[String],
    ) -> Result<Self, StoreError> {
        let stmt = client.prepare_cached(LOOK_UP).await?;
        let rows = client
            .query(&stmt, &[&command_ids, &streams, &new_subjects])
            .await?;
        Self::from_rows(&rows)
    }

    fn from_rows(rows: &[Row]) -> Result<Self, StoreError> {
        let mut state = LogState {
            prior: HashMap::new(),
            versions: HashMap::new(),
            taken: HashSet::new(),
        };
        for row in rows {
            match row.try_get::<_, i16>(0)? {
                0 => {
                    state.prior.insert(
                        row.try_get(1)?,
                        AppendOutcome {
                            first_position: row.try_get(3)?,
                            last_position: row.try_get(4)?,
                            stream_version: row.try_get(5)?,
                            duplicate: true,
                        },
                    );
                }
                1 => {
                    if let Some(version) = row.try_get::<_, Option<i64>>(3)? {
                        state.versions.insert(row.try_get(2)?, version);
                    }
                }
                2 => {
                    state.taken.insert(row.try_get(2)?);
                }
                other => {
                    return Err(StoreError::Corrupt(format!(
                        "the log look-up answered a row of unknown kind {other}"
                    )));
                }
            }
        }
        Ok(state)
    }
}

#[cfg(test)]
mod tests {
    use super::super::cached_plan::{STARTS, after_growth, assert_probes_only};
    use super::LOOK_UP;

    /// The arguments of one look-up: a command id, a stream and a new subject.
    const ARGS: &str = "('{0192f0c8-0000-7000-8000-000000000001}', '{customer-7}', '{customer-8}')";

    /// An append session plans the look-up once, usually while the log is still small; the
    /// plan it keeps must probe the indexes however large the tables grow afterwards.
    #[tokio::test]
    async fn the_look_up_planned_on_empty_or_tiny_tables_still_probes_the_indexes_once_they_are_large()
     {
        for start in STARTS {
            let plan = after_growth(start, "uuid[], text[], text[]", LOOK_UP, ARGS).await;

            assert_probes_only(
                start,
                &plan,
                &["Seq Scan"],
                &[
                    "events_command_id",
                    "events_stream_version_key",
                    "erased_subjects_pkey",
                    "subject_keys_pkey",
                ],
            );
        }
    }
}
