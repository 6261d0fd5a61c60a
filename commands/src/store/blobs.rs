//! The blob table: encrypted attachment contents, beside the log in the same database.
//!
//! Only sealed bytes pass through here; sealing and opening (under the customer's key) is
//! `crate::attachments`. The SQL of each backend lives in `sqlite/blobs.rs` and
//! `postgres/blobs.rs` and nowhere else.

use async_trait::async_trait;
use uuid::Uuid;

use super::StoreError;

/// One sealed attachment: AES-256-GCM `ciphertext` (tag included) under `nonce`, with the
/// customer's key of version `key_version`.
#[derive(Clone, PartialEq, Eq)]
pub struct SealedBlob {
    pub id: Uuid,
    pub customer_id: Uuid,
    pub key_version: i32,
    pub nonce: Vec<u8>,
    pub ciphertext: Vec<u8>,
}

impl std::fmt::Debug for SealedBlob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SealedBlob")
            .field("id", &self.id)
            .field("customer_id", &self.customer_id)
            .field("key_version", &self.key_version)
            .field("bytes", &self.ciphertext.len())
            .finish()
    }
}

#[async_trait]
pub trait BlobStore: Send + Sync + 'static {
    /// Stores a sealed blob. Answers `false`, storing nothing, when a blob with that id
    /// exists already (a retried upload with the same idempotency key).
    async fn put(&self, blob: SealedBlob) -> Result<bool, StoreError>;

    async fn get(&self, id: Uuid) -> Result<Option<SealedBlob>, StoreError>;

    /// Removes a blob whose event could not be appended, so no orphan stays behind.
    async fn delete(&self, id: Uuid) -> Result<(), StoreError>;
}
