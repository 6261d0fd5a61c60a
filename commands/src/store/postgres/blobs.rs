//! The SQL of the `egec.attachment_blobs` table (PostgreSQL).

use async_trait::async_trait;
use uuid::Uuid;

use super::super::blobs::{BlobStore, SealedBlob};
use super::{PgLog, StoreError};

#[async_trait]
impl BlobStore for PgLog {
    async fn put(&self, blob: SealedBlob) -> Result<bool, StoreError> {
        let conn = self.pool.get().await?;
        let stmt = conn
            .prepare_cached(
                "INSERT INTO egec.attachment_blobs (id, customer_id, key_version, nonce, \
                 ciphertext) VALUES ($1, $2, $3, $4, $5) ON CONFLICT (id) DO NOTHING",
            )
            .await?;
        let inserted = conn
            .execute(
                &stmt,
                &[
                    &blob.id,
                    &blob.customer_id,
                    &blob.key_version,
                    &blob.nonce,
                    &blob.ciphertext,
                ],
            )
            .await?;
        Ok(inserted == 1)
    }

    async fn get(&self, id: Uuid) -> Result<Option<SealedBlob>, StoreError> {
        let conn = self.pool.get().await?;
        let stmt = conn
            .prepare_cached(
                "SELECT customer_id, key_version, nonce, ciphertext \
                 FROM egec.attachment_blobs WHERE id = $1",
            )
            .await?;
        let row = conn.query_opt(&stmt, &[&id]).await?;
        row.map(|r| {
            Ok(SealedBlob {
                id,
                customer_id: r.try_get(0)?,
                key_version: r.try_get(1)?,
                nonce: r.try_get(2)?,
                ciphertext: r.try_get(3)?,
            })
        })
        .transpose()
    }

    async fn delete(&self, id: Uuid) -> Result<(), StoreError> {
        let conn = self.pool.get().await?;
        conn.execute("DELETE FROM egec.attachment_blobs WHERE id = $1", &[&id])
            .await?;
        Ok(())
    }
}
