//! Files attached to a customer. The content lives encrypted in the blob store under the
//! customer's key; the customer's stream records that it was attached, with the facts needed
//! to serve it and to check that the stored bytes are the ones attached.

use crate::CustomerId;
use crate::encoding::*;
use crate::personal::Personal;
use crate::values::{AttachmentType, FileName, Sha256Hex};
use chrono::{DateTime, Utc};
use serde_json::Value;
use uuid::Uuid;

pub const ATTACHMENT_ADDED: &str = "CustomerAttachmentAdded";

/// What the API knows once it stored a file's encrypted content: the command to record it.
#[derive(Debug, Clone, PartialEq)]
pub struct AddAttachment {
    pub attachment_id: Uuid,
    pub file_name: FileName,
    pub content_type: AttachmentType,
    /// Size of the file in bytes (before encryption).
    pub size: u64,
    /// SHA-256 of the stored ciphertext (nonce and tag included).
    pub ciphertext_hash: Sha256Hex,
}

/// A file was attached to the customer. The file name is personal (names of scans and CVs
/// usually carry the person's name), so it is encrypted with the rest of the customer's data
/// and reads `[ERASED]` after an erasure, when the content itself can no longer be decrypted.
#[derive(Debug, Clone, PartialEq)]
pub struct AttachmentAdded {
    pub customer_id: CustomerId,
    pub attachment_id: Uuid,
    pub file_name: Personal<FileName>,
    pub content_type: AttachmentType,
    pub size: u64,
    pub ciphertext_hash: Sha256Hex,
    pub at: DateTime<Utc>,
}

impl AttachmentAdded {
    pub(super) fn encode(&self) -> EncodedEvent {
        EncodedEvent::new(ATTACHMENT_ADDED, 1)
            .fact("customer_id", self.customer_id.to_string())
            .fact("attachment_id", self.attachment_id.to_string())
            .fact("content_type", self.content_type.mime())
            .fact("size", self.size)
            .fact("ciphertext_hash", self.ciphertext_hash.as_str())
            .fact("at", time_fact(self.at))
            .personal_field("file_name", self.file_name.known().map(|n| n.as_str()))
    }

    pub(super) fn decode(
        e: &DecryptedEvent,
        customer_id: CustomerId,
        at: DateTime<Utc>,
    ) -> Result<Self, DecodeError> {
        let bad = |what: &str| DecodeError(format!("{ATTACHMENT_ADDED}: bad {what}"));
        Ok(AttachmentAdded {
            customer_id,
            attachment_id: fact_uuid(e, "attachment_id")?,
            file_name: personal_req(e, "file_name", FileName::parse)?,
            content_type: AttachmentType::from_mime(fact_str(e, "content_type")?)
                .map_err(|_| bad("content_type"))?,
            size: e
                .facts
                .get("size")
                .and_then(Value::as_u64)
                .ok_or_else(|| bad("size"))?,
            ciphertext_hash: Sha256Hex::parse(fact_str(e, "ciphertext_hash")?)
                .map_err(|_| bad("ciphertext_hash"))?,
            at,
        })
    }
}
