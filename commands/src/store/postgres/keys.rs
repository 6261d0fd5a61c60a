//! The subject-key table on PostgreSQL: each subject's wrapped keys, its tombstone once
//! erased, and the per-subject advisory lock that orders `create`, `destroy` and an append
//! that stores a subject's first key.

use std::collections::HashMap;

use async_trait::async_trait;
use tokio_postgres::Row;
use tokio_postgres::types::Type;

use super::{LOCK_CLASS, PgLog};
use crate::store::{KeyTable, StoreError, SubjectKeys, WrappedKey};

fn key_from_row(row: &Row, offset: usize) -> Result<WrappedKey, StoreError> {
    Ok(WrappedKey {
        key_version: row.try_get(offset)?,
        kek_id: row.try_get(offset + 1)?,
        wrapped: row.try_get(offset + 2)?,
        fingerprint: row.try_get(offset + 3)?,
    })
}

/// Reads tombstone and keys in one statement, hence from one snapshot: a concurrent erasure
/// is seen either entirely or not at all. Sent unprepared, so planned on every call: the key
/// table starts empty, and a generic plan cached then scans the whole table on every look-up
/// until autovacuum next analyses it.
const LOAD_SUBJECT: &str = "SELECT EXISTS (SELECT 1 FROM egec.erased_subjects WHERE subject = $1), \
     k.key_version, k.kek_id, k.wrapped, k.fingerprint \
     FROM (SELECT 1) AS one LEFT JOIN egec.subject_keys k ON k.subject = $1 \
     ORDER BY k.key_version";

/// [`LOAD_SUBJECT`] for many subjects at once: one row per key, or one all-NULL key row for a
/// subject without keys, ordered so that each subject's keys come oldest first.
const LOAD_SUBJECTS: &str = "SELECT u.s, \
     EXISTS (SELECT 1 FROM egec.erased_subjects e WHERE e.subject = u.s), \
     k.key_version, k.kek_id, k.wrapped, k.fingerprint \
     FROM (SELECT DISTINCT s FROM unnest($1::text[]) AS x(s)) AS u \
     LEFT JOIN egec.subject_keys k ON k.subject = u.s \
     ORDER BY u.s, k.key_version";

fn subject_keys_from_rows(rows: &[Row]) -> Result<SubjectKeys, StoreError> {
    let Some(first) = rows.first() else {
        return Ok(SubjectKeys::None);
    };
    if first.try_get::<_, bool>(0)? {
        return Ok(SubjectKeys::Erased);
    }
    let mut keys = Vec::with_capacity(rows.len());
    for row in rows {
        // The left join yields one all-NULL key row when the subject has no key.
        if row.try_get::<_, Option<i32>>(1)?.is_some() {
            keys.push(key_from_row(row, 1)?);
        }
    }
    Ok(if keys.is_empty() {
        SubjectKeys::None
    } else {
        SubjectKeys::Active(keys)
    })
}

/// Serialises `create` and `destroy` of one subject. Without it, a create could check for
/// the tombstone before a concurrent destroy commits and insert its key after the destroy
/// deleted the others, leaving a live key beside a tombstone. A hash collision between two
/// subjects only makes them wait for each other.
const LOCK_SUBJECT: &str = "SELECT pg_advisory_xact_lock($1, hashtext($2))";

#[async_trait]
impl KeyTable for PgLog {
    async fn load(&self, subject: &str) -> Result<SubjectKeys, StoreError> {
        let conn = self.pool.get().await?;
        // Planned per call (see [`LOAD_SUBJECT`]).
        let rows = conn
            .query_typed(LOAD_SUBJECT, &[(&subject, Type::TEXT)])
            .await?;
        subject_keys_from_rows(&rows)
    }

    async fn load_many(
        &self,
        subjects: &[String],
    ) -> Result<HashMap<String, SubjectKeys>, StoreError> {
        if subjects.is_empty() {
            return Ok(HashMap::new());
        }
        let conn = self.pool.get().await?;
        // Planned per call (see [`LOAD_SUBJECT`]).
        let rows = conn
            .query_typed(LOAD_SUBJECTS, &[(&subjects, Type::TEXT_ARRAY)])
            .await?;
        let mut out: HashMap<String, SubjectKeys> = HashMap::with_capacity(subjects.len());
        for row in &rows {
            let subject: String = row.try_get(0)?;
            let entry = out.entry(subject).or_insert(SubjectKeys::None);
            if row.try_get::<_, bool>(1)? {
                *entry = SubjectKeys::Erased;
                continue;
            }
            // The left join yields one all-NULL key row when the subject has no key.
            if row.try_get::<_, Option<i32>>(2)?.is_some() {
                let key = key_from_row(row, 2)?;
                match entry {
                    SubjectKeys::Active(keys) => keys.push(key),
                    SubjectKeys::None => *entry = SubjectKeys::Active(vec![key]),
                    SubjectKeys::Erased => {}
                }
            }
        }
        Ok(out)
    }

    async fn create(&self, subject: &str, key: WrappedKey) -> Result<SubjectKeys, StoreError> {
        let mut conn = self.pool.get().await?;
        let tx = conn.transaction().await?;
        let lock = tx.prepare_cached(LOCK_SUBJECT).await?;
        let erased_stmt = tx
            .prepare_cached("SELECT 1 FROM egec.erased_subjects WHERE subject = $1")
            .await?;
        let insert = tx
            .prepare_cached(
                "INSERT INTO egec.subject_keys (subject, key_version, kek_id, wrapped, \
                 fingerprint) VALUES ($1, $2, $3, $4, $5) \
                 ON CONFLICT (subject, key_version) DO NOTHING",
            )
            .await?;
        // The tombstone check must run after the lock was granted, in a statement of its own,
        // so that it sees a destroy that committed while we waited.
        let (_, erased) = futures::try_join!(
            async { tx.execute(&lock, &[&LOCK_CLASS, &subject]).await },
            async { tx.query_opt(&erased_stmt, &[&subject]).await },
        )?;
        if erased.is_some() {
            tx.commit().await?;
            return Ok(SubjectKeys::Erased);
        }
        let (_, rows) = futures::try_join!(
            async {
                tx.execute(
                    &insert,
                    &[
                        &subject,
                        &key.key_version,
                        &key.kek_id,
                        &key.wrapped,
                        &key.fingerprint,
                    ],
                )
                .await
            },
            async {
                tx.query_typed(LOAD_SUBJECT, &[(&subject, Type::TEXT)])
                    .await
            },
        )?;
        let keys = subject_keys_from_rows(&rows)?;
        tx.commit().await?;
        Ok(keys)
    }

    async fn destroy(&self, subject: &str) -> Result<Vec<String>, StoreError> {
        let mut conn = self.pool.get().await?;
        let tx = conn.transaction().await?;
        // The same per-subject lock as `create` and as an append that creates the subject's
        // first key: whichever comes second sees what the first one committed, so a key is
        // never left beside a tombstone.
        let lock = tx.prepare_cached(LOCK_SUBJECT).await?;
        let delete = tx
            .prepare_cached(
                "DELETE FROM egec.subject_keys WHERE subject = $1 RETURNING fingerprint",
            )
            .await?;
        let tombstone = tx
            .prepare_cached(
                "INSERT INTO egec.erased_subjects (subject) VALUES ($1) \
                 ON CONFLICT (subject) DO NOTHING",
            )
            .await?;
        let (_, rows, _) = futures::try_join!(
            async { tx.execute(&lock, &[&LOCK_CLASS, &subject]).await },
            async { tx.query(&delete, &[&subject]).await },
            async { tx.execute(&tombstone, &[&subject]).await },
        )?;
        let fingerprints = rows
            .iter()
            .map(|row| row.try_get::<_, String>(0))
            .collect::<Result<Vec<_>, _>>()?;
        tx.commit().await?;
        Ok(fingerprints)
    }

    async fn all_keys(&self) -> Result<Vec<(String, WrappedKey)>, StoreError> {
        let conn = self.pool.get().await?;
        let stmt = conn
            .prepare_cached(
                "SELECT subject, key_version, kek_id, wrapped, fingerprint \
                 FROM egec.subject_keys ORDER BY subject, key_version",
            )
            .await?;
        let rows = conn.query(&stmt, &[]).await?;
        rows.iter()
            .map(|row| Ok((row.try_get(0)?, key_from_row(row, 1)?)))
            .collect()
    }

    async fn live_subjects(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        let conn = self.pool.get().await?;
        // `starts_with` rather than LIKE: a prefix holding `%` or `_` must match literally.
        let stmt = conn
            .prepare_cached(
                "SELECT DISTINCT subject FROM egec.subject_keys \
                 WHERE starts_with(subject, $1) ORDER BY subject",
            )
            .await?;
        let rows = conn.query(&stmt, &[&prefix]).await?;
        rows.iter()
            .map(|row| Ok(row.try_get::<_, String>(0)?))
            .collect()
    }

    async fn rewrap(&self, subject: &str, key: WrappedKey) -> Result<(), StoreError> {
        let conn = self.pool.get().await?;
        let update = conn
            .prepare_cached(
                "UPDATE egec.subject_keys SET kek_id = $3, wrapped = $4 \
                 WHERE subject = $1 AND key_version = $2 AND fingerprint = $5",
            )
            .await?;
        let updated = conn
            .execute(
                &update,
                &[
                    &subject,
                    &key.key_version,
                    &key.kek_id,
                    &key.wrapped,
                    &key.fingerprint,
                ],
            )
            .await?;
        if updated == 0 {
            // Either the subject was erased since the caller listed its key (nothing left to
            // rewrap), or the fingerprint differs, which would mean new key material.
            let stored = conn
                .query_opt(
                    "SELECT 1 FROM egec.subject_keys WHERE subject = $1 AND key_version = $2",
                    &[&subject, &key.key_version],
                )
                .await?;
            if stored.is_some() {
                return Err(StoreError::Corrupt(format!(
                    "rewrap of key version {} would change the key material",
                    key.key_version
                )));
            }
        }
        Ok(())
    }
}
