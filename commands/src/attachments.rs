//! Attachment contents sealed under the customer's data key.
//!
//! A file is encrypted with AES-256-GCM under the current key of the customer's subject
//! (`CustomerId::subject()`), with the attachment id, the subject and the word `attachment`
//! as associated data, so a blob copied under another id or customer fails to open. Erasing
//! the customer destroys that key, and with it every way to read the blob.
//!
//! The blob is written before the event that names it is appended. When the append is
//! refused for certain (the domain said no) the caller deletes the blob; when the outcome is
//! unknown (a storage failure after which the commit may have happened) it stays. A blob that
//! no event names is unreadable by anyone, since downloads start from an event of the
//! customer's stream, and its ciphertext dies with the customer's key like the rest.

use crate::crypto::{CryptoError, field_aad};
use crate::store::StoreError;
use crate::store::blobs::{BlobStore, SealedBlob};
use crate::vault::{SubjectKey, Vault, VaultError};
use egec_domain::CustomerId;
use sha2::{Digest, Sha256};
use std::sync::Arc;
use uuid::Uuid;
use zeroize::Zeroizing;

/// Field name in the associated data of an attachment's ciphertext.
const AAD_FIELD: &str = "attachment";

#[derive(Debug, thiserror::Error)]
pub enum AttachmentError {
    /// The customer was erased: nothing can be stored for it, and nothing stored can be read.
    #[error("the customer's key was destroyed")]
    Erased,
    /// No blob with this id.
    #[error("attachment content not found")]
    NotFound,
    /// The stored bytes do not authenticate or do not hash to what the event recorded.
    #[error("attachment content does not match its record")]
    Mismatch,
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Vault(VaultError),
    #[error(transparent)]
    Crypto(#[from] CryptoError),
}

impl From<VaultError> for AttachmentError {
    fn from(e: VaultError) -> Self {
        match e {
            VaultError::Erased => AttachmentError::Erased,
            other => AttachmentError::Vault(other),
        }
    }
}

/// What storing a file produced: the facts its event records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    /// Lower-case hex SHA-256 of nonce ‖ ciphertext, as stored.
    pub ciphertext_hash: String,
    /// `false` when a blob with this id already existed (a retried upload).
    pub created: bool,
}

/// Seals, stores, opens and removes attachment contents.
#[derive(Clone)]
pub struct Attachments {
    blobs: Arc<dyn BlobStore>,
    vault: Arc<Vault>,
}

fn digest(nonce: &[u8], ciphertext: &[u8]) -> String {
    let mut h = Sha256::new();
    h.update(nonce);
    h.update(ciphertext);
    hex::encode(h.finalize())
}

impl Attachments {
    pub fn new(blobs: Arc<dyn BlobStore>, vault: Arc<Vault>) -> Self {
        Self { blobs, vault }
    }

    /// Which customer a stored blob belongs to, to check visibility before anything else.
    pub async fn owner(&self, attachment_id: Uuid) -> Result<Option<CustomerId>, StoreError> {
        Ok(self
            .blobs
            .get(attachment_id)
            .await?
            .map(|b| CustomerId::from_uuid(b.customer_id)))
    }

    /// Encrypts `content` under the customer's current key and stores it.
    pub async fn store(
        &self,
        customer_id: CustomerId,
        attachment_id: Uuid,
        content: &[u8],
    ) -> Result<Stored, AttachmentError> {
        let subject = customer_id.subject();
        let (key_version, key) = self.vault.for_write(&subject).await?;
        let mut sealed = key.seal(content, &field_aad(&attachment_id, &subject, AAD_FIELD))?;
        let ciphertext = sealed.split_off(12);
        let nonce = sealed;
        let ciphertext_hash = digest(&nonce, &ciphertext);
        let created = self
            .blobs
            .put(SealedBlob {
                id: attachment_id,
                customer_id: customer_id.as_uuid(),
                key_version,
                nonce,
                ciphertext,
            })
            .await?;
        if !created {
            // A retry stored nothing new: answer with the digest of what is stored.
            let existing = self
                .blobs
                .get(attachment_id)
                .await?
                .ok_or(AttachmentError::NotFound)?;
            return Ok(Stored {
                ciphertext_hash: digest(&existing.nonce, &existing.ciphertext),
                created: false,
            });
        }
        Ok(Stored {
            ciphertext_hash,
            created: true,
        })
    }

    /// Decrypts a stored blob, after checking that it belongs to `customer_id` and hashes to
    /// `ciphertext_hash` (both from the event that recorded it).
    pub async fn open(
        &self,
        customer_id: CustomerId,
        attachment_id: Uuid,
        ciphertext_hash: &str,
    ) -> Result<Zeroizing<Vec<u8>>, AttachmentError> {
        let blob = self
            .blobs
            .get(attachment_id)
            .await?
            .ok_or(AttachmentError::NotFound)?;
        if blob.customer_id != customer_id.as_uuid()
            || digest(&blob.nonce, &blob.ciphertext) != ciphertext_hash
        {
            return Err(AttachmentError::Mismatch);
        }
        let subject = customer_id.subject();
        let keys = match self.vault.for_read(&subject).await? {
            SubjectKey::Live(keys) => keys,
            SubjectKey::Erased | SubjectKey::Missing => return Err(AttachmentError::Erased),
        };
        let key = usize::try_from(blob.key_version)
            .ok()
            .and_then(|v| v.checked_sub(1))
            .and_then(|i| keys.get(i))
            .ok_or(AttachmentError::Mismatch)?;
        let mut sealed = blob.nonce;
        sealed.extend_from_slice(&blob.ciphertext);
        key.open(&sealed, &field_aad(&attachment_id, &subject, AAD_FIELD))
            .map_err(|_| AttachmentError::Mismatch)
    }

    /// Removes a blob whose event was not appended.
    pub async fn discard(&self, attachment_id: Uuid) -> Result<(), StoreError> {
        self.blobs.delete(attachment_id).await
    }
}
