//! The SQL of the `attachment_blobs` table (SQLite).

use async_trait::async_trait;
use rusqlite::{OptionalExtension, params};
use uuid::Uuid;

use super::super::blobs::{BlobStore, SealedBlob};
use super::{SqliteLog, StoreError, corrupt};
use crate::store::plan::now_micros;

#[async_trait]
impl BlobStore for SqliteLog {
    async fn put(&self, blob: SealedBlob) -> Result<bool, StoreError> {
        self.write(move |conn| {
            let inserted = conn.execute(
                "INSERT INTO attachment_blobs (id, customer_id, key_version, nonce, ciphertext, \
                     created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT (id) DO NOTHING",
                params![
                    blob.id.to_string(),
                    blob.customer_id.to_string(),
                    blob.key_version,
                    blob.nonce,
                    blob.ciphertext,
                    now_micros().timestamp_micros(),
                ],
            )?;
            Ok(inserted == 1)
        })
        .await
    }

    async fn get(&self, id: Uuid) -> Result<Option<SealedBlob>, StoreError> {
        self.read(move |conn| {
            let row = conn
                .prepare_cached(
                    "SELECT customer_id, key_version, nonce, ciphertext FROM attachment_blobs \
                     WHERE id = ?1",
                )?
                .query_row([id.to_string()], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, i32>(1)?,
                        r.get::<_, Vec<u8>>(2)?,
                        r.get::<_, Vec<u8>>(3)?,
                    ))
                })
                .optional()?;
            row.map(|(customer_id, key_version, nonce, ciphertext)| {
                Ok(SealedBlob {
                    id,
                    customer_id: Uuid::parse_str(&customer_id)
                        .map_err(|e| corrupt("attachment customer id", e))?,
                    key_version,
                    nonce,
                    ciphertext,
                })
            })
            .transpose()
        })
        .await
    }

    async fn delete(&self, id: Uuid) -> Result<(), StoreError> {
        self.write(move |conn| {
            conn.execute(
                "DELETE FROM attachment_blobs WHERE id = ?1",
                [id.to_string()],
            )?;
            Ok(())
        })
        .await
    }
}
