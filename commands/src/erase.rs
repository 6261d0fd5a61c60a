//! Crypto-shredding of one customer: the erasure event, then destruction of every key version.
//!
//! The order makes a retry safe: the event carries no personal data, so it can be appended
//! whether or not the key still exists; deciding `Erase` again on an erased customer appends
//! nothing; and the key is destroyed on every attempt, so a crash between the two steps is
//! repaired by running the erasure again.

use crate::handler::{CommandBus, HandlerError};
use egec_domain::CustomerId;
use egec_domain::aggregate::CustomerAggregate;
use egec_domain::customer::{CustomerCommand, CustomerError};
use egec_domain::event::Metadata;
use uuid::Uuid;

/// What an erasure did, for the erasure certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Erasure {
    pub customer_id: CustomerId,
    /// Position of the erasure event this call appended; `None` when the customer was
    /// already erased (the first erasure's event is on the customer's stream).
    pub position: Option<i64>,
    /// Fingerprints of the keys destroyed by this call (empty when already destroyed).
    pub destroyed_key_fingerprints: Vec<String>,
}

pub async fn erase_customer(
    bus: &CommandBus,
    customer_id: CustomerId,
    reason: &str,
    meta: &Metadata,
) -> Result<Erasure, HandlerError<CustomerError>> {
    let stream = customer_id.stream_id();
    let done = bus
        .execute::<CustomerAggregate>(
            &stream,
            &customer_id.subject(),
            None,
            Uuid::now_v7(),
            meta,
            CustomerCommand::Erase {
                reason: reason.to_owned(),
            },
        )
        .await?;
    let destroyed = bus
        .codec()
        .vault()
        .destroy(&customer_id.subject())
        .await
        .map_err(|e| HandlerError::Codec(e.into()))?;
    // Cached state holds decrypted fields: drop it so nothing personal outlives the key.
    bus.forget(&stream);
    Ok(Erasure {
        customer_id,
        position: done.position,
        destroyed_key_fingerprints: destroyed,
    })
}
