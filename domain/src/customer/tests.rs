//! Given events, when a command, then events or an error — no database anywhere.

use super::*;
use crate::encoding::{EncodedEvent, EventCodec, upcast};
use crate::personal::Personal;
use crate::values::*;
use crate::{CustomerId, UserId};
use chrono::{DateTime, TimeZone, Utc};

fn t(s: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(1_780_000_000 + s, 0)
        .single()
        .expect("valid test time")
}

fn id() -> CustomerId {
    CustomerId::from_uuid(uuid::Uuid::from_u128(0x42))
}

fn agent() -> UserId {
    UserId::from_uuid(uuid::Uuid::from_u128(0x7))
}

fn agent2() -> UserId {
    UserId::from_uuid(uuid::Uuid::from_u128(0x8))
}

fn given(events: &[CustomerEvent]) -> CustomerState {
    events.iter().fold(CustomerState::Absent, evolve)
}

fn create_cmd() -> CustomerCommand {
    CustomerCommand::Create(Box::new(CreateCustomer {
        customer_id: id(),
        name: PersonName::parse("Jane Doe").unwrap(),
        email: Some(Email::parse("jane@example.com").unwrap()),
        phone: Some(PhoneE164::parse("+442079460958", None).unwrap()),
        passport_number: Some(PassportNumber::parse("AB1234589").unwrap()),
        country: Some(Country::parse("Germany").unwrap()),
        source: Some(Source::parse("website").unwrap()),
        status: None,
        notes: Some(Notes::parse("Wants a master's in CS").unwrap()),
        assigned_agent_ids: vec![agent()],
    }))
}

fn created() -> Vec<CustomerEvent> {
    decide(&CustomerState::Absent, create_cmd(), t(0)).unwrap()
}

#[test]
fn creating_a_new_customer_records_all_fields_with_status_new() {
    let events = created();
    assert_eq!(events.len(), 1);
    let CustomerEvent::Created(c) = &events[0] else {
        panic!("not created")
    };
    assert_eq!(c.status, CustomerStatus::New);
    assert_eq!(c.at, t(0));
    assert_eq!(c.assigned_agent_ids, vec![agent()]);
}

#[test]
fn creating_an_existing_customer_is_refused() {
    assert_eq!(
        decide(&given(&created()), create_cmd(), t(1)),
        Err(CustomerError::AlreadyExists)
    );
}

#[test]
fn updating_a_missing_customer_is_not_found() {
    let cmd = CustomerCommand::Update(UpdateCustomer {
        status: Some(CustomerStatus::Contacted),
        ..Default::default()
    });
    assert_eq!(
        decide(&CustomerState::Absent, cmd, t(1)),
        Err(CustomerError::NotFound)
    );
}

#[test]
fn an_update_records_only_fields_that_really_change() {
    let cmd = CustomerCommand::Update(UpdateCustomer {
        name: Some(PersonName::parse("Jane Doe").unwrap()),
        email: Some(None),
        status: Some(CustomerStatus::Contacted),
        ..Default::default()
    });
    let events = decide(&given(&created()), cmd, t(5)).unwrap();
    let [CustomerEvent::Updated(u)] = events.as_slice() else {
        panic!("{events:?}")
    };
    assert_eq!(u.changes.name, None, "unchanged name must not be recorded");
    assert_eq!(u.changes.email, Some(None));
    assert_eq!(u.changes.status, Some(CustomerStatus::Contacted));
    let state = given(&[created(), events.clone()].concat());
    let c = state.customer().unwrap();
    assert_eq!(c.email, None);
    assert_eq!(c.version, 2);
    assert_eq!(c.updated_at, t(5));
}

#[test]
fn an_update_that_changes_nothing_appends_nothing() {
    let cmd = CustomerCommand::Update(UpdateCustomer {
        country: Some(Some(Country::parse("Germany").unwrap())),
        ..Default::default()
    });
    assert_eq!(decide(&given(&created()), cmd, t(1)), Ok(vec![]));
}

#[test]
fn status_moves_forward_or_to_lost_but_never_back() {
    let to = |s| {
        CustomerCommand::Update(UpdateCustomer {
            status: Some(s),
            ..Default::default()
        })
    };
    let mut history = created();
    history.extend(decide(&given(&history), to(CustomerStatus::Applied), t(1)).unwrap());
    assert_eq!(
        decide(&given(&history), to(CustomerStatus::Contacted), t(2)),
        Err(CustomerError::IllegalTransition {
            from: CustomerStatus::Applied,
            to: CustomerStatus::Contacted
        })
    );
    history.extend(decide(&given(&history), to(CustomerStatus::Lost), t(3)).unwrap());
    assert!(decide(&given(&history), to(CustomerStatus::Enrolled), t(4)).is_err());
    assert!(decide(&given(&history), to(CustomerStatus::New), t(4)).is_ok());
}

#[test]
fn a_deleted_customer_cannot_be_edited() {
    let mut history = created();
    history.extend(decide(&given(&history), CustomerCommand::Delete, t(1)).unwrap());
    let cmd = CustomerCommand::Update(UpdateCustomer {
        status: Some(CustomerStatus::Lost),
        ..Default::default()
    });
    assert_eq!(
        decide(&given(&history), cmd, t(2)),
        Err(CustomerError::Deleted)
    );
}

#[test]
fn erasure_needs_a_reason_is_idempotent_and_blanks_every_personal_field() {
    let history = created();
    assert_eq!(
        decide(
            &given(&history),
            CustomerCommand::Erase {
                reason: "  ".into()
            },
            t(1)
        ),
        Err(CustomerError::ReasonRequired)
    );
    let erased = decide(
        &given(&history),
        CustomerCommand::Erase {
            reason: "art. 17 request".into(),
        },
        t(1),
    )
    .unwrap();
    let all = [history, erased].concat();
    let state = given(&all);
    let c = state.customer().unwrap();
    assert!(c.erased);
    assert_eq!(c.name, Personal::Erased);
    assert_eq!(c.email, Some(Personal::Erased));
    assert_eq!(c.status, CustomerStatus::New, "non-personal facts survive");
    assert_eq!(
        decide(
            &state,
            CustomerCommand::Erase {
                reason: "again".into()
            },
            t(2)
        ),
        Ok(vec![])
    );
}

fn all_event_kinds() -> Vec<CustomerEvent> {
    let mut history = created();
    history.extend(
        decide(
            &given(&history),
            CustomerCommand::Update(UpdateCustomer {
                name: Some(PersonName::parse("Jane Q. Doe").unwrap()),
                email: Some(None),
                country: Some(None),
                source: Some(Some(Source::parse("fair").unwrap())),
                status: Some(CustomerStatus::Qualified),
                ..Default::default()
            }),
            t(10),
        )
        .unwrap(),
    );
    history.extend(
        decide(
            &given(&history),
            CustomerCommand::AssignAgents {
                agent_ids: vec![agent(), agent2()],
            },
            t(11),
        )
        .unwrap(),
    );
    history.extend(
        decide(
            &given(&history),
            CustomerCommand::BulkEdit {
                status: Some(CustomerStatus::Applied),
                assigned_agent_ids: Some(vec![agent2()]),
            },
            t(12),
        )
        .unwrap(),
    );
    history.extend(
        decide(
            &given(&history),
            CustomerCommand::RevertBulkEdit {
                status: Some(CustomerStatus::Qualified),
                assigned_agent_ids: Some(vec![agent(), agent2()]),
            },
            t(13),
        )
        .unwrap(),
    );
    history.extend(
        decide(
            &given(&history),
            CustomerCommand::AddAttachment(super::attachment_tests::add_cv()),
            t(15),
        )
        .unwrap(),
    );
    history.extend(decide(&given(&history), CustomerCommand::Delete, t(20)).unwrap());
    history.push(CustomerEvent::Erased {
        customer_id: id(),
        reason: "art. 17".into(),
        at: t(30),
    });
    history
}

#[test]
fn every_event_survives_encoding_and_decoding_unchanged() {
    for e in all_event_kinds() {
        let decoded = CustomerEvent::decode(&e.encode().into_decrypted()).unwrap();
        assert_eq!(decoded, e);
    }
}

#[test]
fn the_persisted_json_of_every_customer_event_type_is_pinned() {
    for e in all_event_kinds() {
        let enc = e.encode();
        let json = crate::encoding::payload_json(&enc.facts, &enc.personal);
        insta::assert_json_snapshot!(format!("{}_v{}", enc.event_type, enc.schema_version), json);
    }
}

#[test]
fn a_legacy_v1_created_event_is_upcast_to_the_current_shape() {
    let mut v1 = EncodedEvent::new("CustomerCreated", 1)
        .fact("customer_id", id().to_string())
        .fact("status", "Contacted")
        .fact("at", "2026-01-01T00:00:00.000000Z")
        .personal_field("customerName", Some("Old Record"))
        .personal_field("customerEmail", Some("old@example.com"))
        .personal_field("passportNumber", Some("XY9876543"));
    v1.facts.insert("source".into(), serde_json::Value::Null);
    let up = upcast(v1.into_decrypted()).unwrap();
    assert_eq!(up.schema_version, 2);
    let CustomerEvent::Created(c) = CustomerEvent::decode(&up).unwrap() else {
        panic!()
    };
    assert_eq!(c.name.known().map(|n| n.as_str()), Some("Old Record"));
    assert_eq!(
        c.email.and_then(|e| e.known().cloned()),
        Some(Email::parse("old@example.com").unwrap())
    );
    assert_eq!(c.status, CustomerStatus::Contacted);
    assert!(c.assigned_agent_ids.is_empty());
}

#[test]
fn erased_personal_fields_decode_as_erased() {
    let mut d = created()[0].encode().into_decrypted();
    for v in d.personal.values_mut() {
        *v = Personal::Erased;
    }
    let CustomerEvent::Created(c) = CustomerEvent::decode(&d).unwrap() else {
        panic!()
    };
    assert_eq!(c.name, Personal::Erased);
    assert_eq!(c.phone, Some(Personal::Erased));
}

fn assign(ids: Vec<UserId>) -> CustomerCommand {
    CustomerCommand::AssignAgents { agent_ids: ids }
}

fn bulk(status: Option<CustomerStatus>, agents: Option<Vec<UserId>>) -> CustomerCommand {
    CustomerCommand::BulkEdit {
        status,
        assigned_agent_ids: agents,
    }
}

#[test]
fn assigning_agents_replaces_the_assignment_without_repeats() {
    let events = decide(
        &given(&created()),
        assign(vec![agent2(), agent2(), agent()]),
        t(1),
    )
    .unwrap();
    assert_eq!(
        events,
        vec![CustomerEvent::AgentsAssigned {
            customer_id: id(),
            agent_ids: vec![agent2(), agent()],
            at: t(1),
        }]
    );
    let state = given(&[created(), events].concat());
    assert_eq!(
        state.customer().unwrap().assigned_agent_ids,
        vec![agent2(), agent()]
    );
}

#[test]
fn assigning_the_same_agents_in_another_order_appends_nothing() {
    let mut history = created();
    history.extend(decide(&given(&history), assign(vec![agent(), agent2()]), t(1)).unwrap());
    assert_eq!(
        decide(&given(&history), assign(vec![agent2(), agent()]), t(2)),
        Ok(vec![])
    );
}

#[test]
fn assigning_no_agents_unassigns_everyone() {
    let events = decide(&given(&created()), assign(vec![]), t(1)).unwrap();
    let state = given(&[created(), events].concat());
    assert!(state.customer().unwrap().assigned_agent_ids.is_empty());
}

#[test]
fn agents_of_a_deleted_or_missing_customer_cannot_be_assigned() {
    assert_eq!(
        decide(&CustomerState::Absent, assign(vec![agent()]), t(1)),
        Err(CustomerError::NotFound)
    );
    let mut history = created();
    history.extend(decide(&given(&history), CustomerCommand::Delete, t(1)).unwrap());
    assert_eq!(
        decide(&given(&history), assign(vec![agent2()]), t(2)),
        Err(CustomerError::Deleted)
    );
}

#[test]
fn a_bulk_edit_records_only_the_fields_it_really_changes() {
    let events = decide(
        &given(&created()),
        bulk(Some(CustomerStatus::New), Some(vec![agent2()])),
        t(1),
    )
    .unwrap();
    assert_eq!(
        events,
        vec![CustomerEvent::BulkEdited(BulkFields {
            customer_id: id(),
            status: None,
            assigned_agent_ids: Some(vec![agent2()]),
            at: t(1),
        })]
    );
    assert_eq!(
        decide(
            &given(&created()),
            bulk(Some(CustomerStatus::New), Some(vec![agent()])),
            t(1)
        ),
        Ok(vec![])
    );
}

#[test]
fn a_bulk_edit_follows_the_status_workflow() {
    let mut history = created();
    history.extend(
        decide(
            &given(&history),
            bulk(Some(CustomerStatus::Enrolled), None),
            t(1),
        )
        .unwrap(),
    );
    assert_eq!(
        given(&history).customer().unwrap().status,
        CustomerStatus::Enrolled
    );
    assert_eq!(
        decide(
            &given(&history),
            bulk(Some(CustomerStatus::Contacted), None),
            t(2)
        ),
        Err(CustomerError::IllegalTransition {
            from: CustomerStatus::Enrolled,
            to: CustomerStatus::Contacted
        })
    );
}

#[test]
fn reverting_a_bulk_edit_may_move_the_status_backwards() {
    let mut history = created();
    history.extend(
        decide(
            &given(&history),
            bulk(Some(CustomerStatus::Enrolled), None),
            t(1),
        )
        .unwrap(),
    );
    let reverted = decide(
        &given(&history),
        CustomerCommand::RevertBulkEdit {
            status: Some(CustomerStatus::New),
            assigned_agent_ids: None,
        },
        t(2),
    )
    .unwrap();
    assert_eq!(
        reverted,
        vec![CustomerEvent::BulkEditReverted(BulkFields {
            customer_id: id(),
            status: Some(CustomerStatus::New),
            assigned_agent_ids: None,
            at: t(2),
        })]
    );
    history.extend(reverted);
    assert_eq!(
        given(&history).customer().unwrap().status,
        CustomerStatus::New
    );
}

#[test]
fn undo_restores_every_field_the_batch_changed_when_nothing_changed_it_since() {
    let mut history = created();
    history.extend(
        decide(
            &given(&history),
            bulk(Some(CustomerStatus::Qualified), Some(vec![agent2()])),
            t(1),
        )
        .unwrap(),
    );
    let batch = history.len() - 1;
    // A later change to another field does not stand in the way.
    history.extend(
        decide(
            &given(&history),
            CustomerCommand::Update(UpdateCustomer {
                country: Some(None),
                ..Default::default()
            }),
            t(2),
        )
        .unwrap(),
    );
    let plan = plan_undo(&history, batch).unwrap();
    assert_eq!(
        plan,
        UndoPlan {
            status: Some(CustomerStatus::New),
            assigned_agent_ids: Some(vec![agent()]),
            changed_since: vec![],
        }
    );
}

#[test]
fn undo_skips_a_field_that_was_changed_after_the_batch() {
    let mut history = created();
    history.extend(
        decide(
            &given(&history),
            bulk(Some(CustomerStatus::Contacted), Some(vec![agent2()])),
            t(1),
        )
        .unwrap(),
    );
    let batch = history.len() - 1;
    history.extend(
        decide(
            &given(&history),
            CustomerCommand::Update(UpdateCustomer {
                status: Some(CustomerStatus::Applied),
                ..Default::default()
            }),
            t(2),
        )
        .unwrap(),
    );
    let plan = plan_undo(&history, batch).unwrap();
    assert_eq!(plan.status, None);
    assert_eq!(plan.assigned_agent_ids, Some(vec![agent()]));
    assert_eq!(plan.changed_since, vec![BulkField::Status]);
    history.extend(decide(&given(&history), assign(vec![]), t(3)).unwrap());
    let plan = plan_undo(&history, batch).unwrap();
    assert!(!plan.restores_anything());
    assert_eq!(
        plan.changed_since,
        vec![BulkField::Status, BulkField::AssignedAgentIds]
    );
}

#[test]
fn undo_is_planned_only_for_a_bulk_edit_event() {
    let history = created();
    assert_eq!(plan_undo(&history, 0), None);
    assert_eq!(plan_undo(&history, 5), None);
}

mod undo_properties {
    use super::*;
    use proptest::prelude::*;

    fn agents(ns: &[u8]) -> Vec<UserId> {
        ns.iter()
            .map(|n| UserId::from_uuid(uuid::Uuid::from_u128(u128::from(*n) + 100)))
            .collect()
    }

    proptest! {
        /// Whatever the customer looked like and whatever the batch set, undoing it with
        /// nothing in between brings back exactly the status and agents of before.
        #[test]
        fn undoing_a_batch_with_nothing_since_restores_the_state_before_it(
            start in 0usize..5,
            status in proptest::option::of(0usize..6),
            new_agents in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..4)),
            before_agents in proptest::collection::vec(any::<u8>(), 0..4),
        ) {
            let mut history = created();
            history.extend(
                decide(&given(&history), assign(agents(&before_agents)), t(1)).unwrap(),
            );
            history.extend(
                decide(
                    &given(&history),
                    bulk(Some(CustomerStatus::ALL[start]), None),
                    t(2),
                )
                .unwrap(),
            );
            let before = given(&history).customer().unwrap().clone();
            let Ok(batch) = decide(
                &given(&history),
                bulk(status.map(|i| CustomerStatus::ALL[i]), new_agents.as_deref().map(agents)),
                t(3),
            ) else {
                // An illegal move is refused and there is nothing to undo.
                return Ok(());
            };
            if batch.is_empty() {
                return Ok(());
            }
            history.extend(batch);
            let plan = plan_undo(&history, history.len() - 1).unwrap();
            prop_assert!(plan.changed_since.is_empty());
            history.extend(
                decide(
                    &given(&history),
                    CustomerCommand::RevertBulkEdit {
                        status: plan.status,
                        assigned_agent_ids: plan.assigned_agent_ids,
                    },
                    t(4),
                )
                .unwrap(),
            );
            let after = given(&history).customer().unwrap().clone();
            prop_assert_eq!(after.status, before.status);
            prop_assert!(same_set(&after.assigned_agent_ids, &before.assigned_agent_ids));
        }
    }

    fn same_set(a: &[UserId], b: &[UserId]) -> bool {
        a.len() == b.len() && a.iter().all(|x| b.contains(x))
    }
}
