//! Given events, when `AddAttachment`, then events or an error — no database.

use super::*;
use crate::CustomerId;
use crate::encoding::EventCodec;
use crate::personal::Personal;
use crate::values::*;
use chrono::{DateTime, TimeZone, Utc};
use uuid::Uuid;

fn t(s: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(1_780_000_000 + s, 0)
        .single()
        .expect("valid test time")
}

fn id() -> CustomerId {
    CustomerId::from_uuid(Uuid::from_u128(0x42))
}

pub(super) fn add_cv() -> AddAttachment {
    AddAttachment {
        attachment_id: Uuid::from_u128(0xa77),
        file_name: FileName::parse("Jane Doe CV.pdf").unwrap(),
        content_type: AttachmentType::Pdf,
        size: 12_345,
        ciphertext_hash: Sha256Hex::parse(&"0f".repeat(32)).unwrap(),
    }
}

fn given(events: &[CustomerEvent]) -> CustomerState {
    events.iter().fold(CustomerState::Absent, evolve)
}

fn created() -> Vec<CustomerEvent> {
    decide(
        &CustomerState::Absent,
        CustomerCommand::Create(Box::new(CreateCustomer {
            customer_id: id(),
            name: PersonName::parse("Jane Doe").unwrap(),
            email: None,
            phone: None,
            passport_number: None,
            country: None,
            source: None,
            status: None,
            notes: None,
            assigned_agent_ids: vec![],
        })),
        t(0),
    )
    .unwrap()
}

#[test]
fn attaching_a_file_to_a_live_customer_records_its_facts_and_personal_name() {
    let history = created();
    let events = decide(
        &given(&history),
        CustomerCommand::AddAttachment(add_cv()),
        t(5),
    )
    .unwrap();
    assert_eq!(
        events,
        vec![CustomerEvent::AttachmentAdded(AttachmentAdded {
            customer_id: id(),
            attachment_id: Uuid::from_u128(0xa77),
            file_name: Personal::Known(FileName::parse("Jane Doe CV.pdf").unwrap()),
            content_type: AttachmentType::Pdf,
            size: 12_345,
            ciphertext_hash: Sha256Hex::parse(&"0f".repeat(32)).unwrap(),
            at: t(5),
        })]
    );
    let enc = events[0].encode();
    assert_eq!(
        enc.personal.get("file_name").map(String::as_str),
        Some("Jane Doe CV.pdf")
    );
    assert!(
        !enc.facts
            .values()
            .any(|v| v.as_str() == Some("Jane Doe CV.pdf"))
    );
    assert_eq!(events[0].action(), "ATTACHMENT_ADDED");
}

#[test]
fn an_attachment_moves_the_version_on_and_leaves_the_fields_alone() {
    let mut history = created();
    let before = given(&history);
    history.extend(decide(&before, CustomerCommand::AddAttachment(add_cv()), t(5)).unwrap());
    let after = given(&history);
    let (b, a) = (before.customer().unwrap(), after.customer().unwrap());
    assert_eq!(a.version, b.version + 1);
    assert_eq!(a.updated_at, t(5));
    assert_eq!((&a.name, &a.email, a.status), (&b.name, &b.email, b.status));
}

#[test]
fn no_file_is_attached_to_a_missing_deleted_or_erased_customer() {
    assert_eq!(
        decide(
            &CustomerState::Absent,
            CustomerCommand::AddAttachment(add_cv()),
            t(1)
        ),
        Err(CustomerError::NotFound)
    );
    let mut deleted = created();
    deleted.extend(decide(&given(&deleted), CustomerCommand::Delete, t(1)).unwrap());
    assert_eq!(
        decide(
            &given(&deleted),
            CustomerCommand::AddAttachment(add_cv()),
            t(2)
        ),
        Err(CustomerError::Deleted)
    );
    let mut erased = created();
    erased.extend(
        decide(
            &given(&erased),
            CustomerCommand::Erase {
                reason: "art. 17".into(),
            },
            t(1),
        )
        .unwrap(),
    );
    assert_eq!(
        decide(
            &given(&erased),
            CustomerCommand::AddAttachment(add_cv()),
            t(2)
        ),
        Err(CustomerError::Erased)
    );
}

#[test]
fn an_erased_file_name_decodes_as_erased() {
    let e = decide(
        &given(&created()),
        CustomerCommand::AddAttachment(add_cv()),
        t(5),
    )
    .unwrap()
    .remove(0);
    let mut d = e.encode().into_decrypted();
    for v in d.personal.values_mut() {
        *v = Personal::Erased;
    }
    let CustomerEvent::AttachmentAdded(a) = CustomerEvent::decode(&d).unwrap() else {
        panic!("not an attachment")
    };
    assert_eq!(a.file_name, Personal::Erased);
    assert_eq!(a.size, 12_345);
}
