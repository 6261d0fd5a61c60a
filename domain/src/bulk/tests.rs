//! Given events, when a command, then events or an error.

use super::*;
use crate::customer::CustomerStatus;
use chrono::TimeZone;

fn t(s: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(1_780_000_000 + s, 0)
        .single()
        .expect("valid test time")
}

fn batch() -> Uuid {
    Uuid::from_u128(0xb0)
}

fn given(events: &[BulkEvent]) -> BulkState {
    events.iter().fold(BulkState::Absent, evolve)
}

fn record() -> BulkCommand {
    BulkCommand::Record {
        batch_id: batch(),
        customer_ids: vec![
            CustomerId::from_uuid(Uuid::from_u128(1)),
            CustomerId::from_uuid(Uuid::from_u128(2)),
        ],
        set: BulkSet {
            status: Some(CustomerStatus::Contacted),
            assigned_agent_ids: Some(vec![UserId::from_uuid(Uuid::from_u128(7))]),
        },
    }
}

fn applied() -> Vec<BulkEvent> {
    decide(&BulkState::Absent, record(), t(0)).unwrap()
}

fn undo() -> BulkCommand {
    BulkCommand::Undo {
        undo_batch_id: Uuid::from_u128(0xd0),
    }
}

#[test]
fn recording_a_batch_remembers_its_customers_and_cannot_happen_twice() {
    let events = applied();
    assert_eq!(events.len(), 1);
    assert_eq!(
        given(&events),
        BulkState::Applied {
            batch_id: batch(),
            customer_ids: vec![
                CustomerId::from_uuid(Uuid::from_u128(1)),
                CustomerId::from_uuid(Uuid::from_u128(2)),
            ],
        }
    );
    assert_eq!(
        decide(&given(&events), record(), t(1)),
        Err(BulkError::AlreadyRecorded)
    );
}

#[test]
fn undoing_an_unknown_batch_is_not_found() {
    assert_eq!(
        decide(&BulkState::Absent, undo(), t(1)),
        Err(BulkError::NotFound)
    );
}

#[test]
fn a_batch_is_undone_once_and_a_second_undo_is_refused() {
    let mut history = applied();
    let undone = decide(&given(&history), undo(), t(1)).unwrap();
    assert_eq!(
        undone,
        vec![BulkEvent::Undone {
            batch_id: batch(),
            undo_batch_id: Uuid::from_u128(0xd0),
            at: t(1),
        }]
    );
    history.extend(undone);
    assert_eq!(
        decide(&given(&history), undo(), t(2)),
        Err(BulkError::AlreadyUndone)
    );
}

fn all_event_kinds() -> Vec<BulkEvent> {
    let mut history = applied();
    history.extend(decide(&given(&history), undo(), t(1)).unwrap());
    history
}

#[test]
fn every_bulk_event_survives_encoding_and_decoding_unchanged() {
    for e in all_event_kinds() {
        let enc = e.encode();
        assert!(enc.personal.is_empty(), "a batch holds no personal data");
        assert_eq!(BulkEvent::decode(&enc.into_decrypted()).unwrap(), e);
    }
}

#[test]
fn the_persisted_json_of_every_bulk_event_type_is_pinned() {
    for e in all_event_kinds() {
        let enc = e.encode();
        let json = crate::encoding::payload_json(&enc.facts, &enc.personal);
        insta::assert_json_snapshot!(format!("{}_v{}", enc.event_type, enc.schema_version), json);
    }
}
