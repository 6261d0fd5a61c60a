//! The customer aggregate: its state, commands, events and the pure `decide`/`evolve` pair.

mod attachment;
mod decide;
mod events;
mod state;
mod status;
mod undo;
mod upcast;

pub use attachment::{AddAttachment, AttachmentAdded};
pub use decide::{CreateCustomer, CustomerCommand, CustomerError, UpdateCustomer, decide};
pub use events::{BulkFields, CustomerChanges, CustomerCreated, CustomerEvent, CustomerUpdated};
pub use state::{Customer, CustomerState, evolve};
pub use status::CustomerStatus;
pub use undo::{BulkField, UndoPlan, plan_undo};
pub(crate) use upcast::UPCASTERS;

#[cfg(test)]
mod attachment_tests;
#[cfg(test)]
mod tests;
