use super::*;
use crate::encoding::EventCodec;
use crate::event::DomainEvent;
use crate::ids::FollowupId;
use crate::personal::Personal;
use crate::values::Notes;
use crate::{CustomerId, UserId};
use chrono::{DateTime, Duration, TimeZone, Utc};
use uuid::Uuid;

fn now() -> DateTime<Utc> {
    Utc.timestamp_opt(1_780_000_000, 0).single().unwrap()
}

fn fid() -> FollowupId {
    FollowupId::from_uuid(Uuid::from_u128(11))
}

fn cid() -> CustomerId {
    CustomerId::from_uuid(Uuid::from_u128(22))
}

fn agent() -> UserId {
    UserId::from_uuid(Uuid::from_u128(33))
}

fn schedule() -> FollowupCommand {
    FollowupCommand::Schedule(Box::new(ScheduleFollowup {
        followup_id: fid(),
        customer_id: cid(),
        due_at: now() + Duration::days(2),
        note: Notes::parse("Call back about the visa appointment").unwrap(),
        assigned_to: agent(),
    }))
}

/// Given events, the state they fold into.
fn given(events: &[FollowupEvent]) -> FollowupState {
    events.iter().fold(FollowupState::Absent, evolve)
}

fn scheduled() -> Vec<FollowupEvent> {
    decide(&FollowupState::Absent, schedule(), now()).unwrap()
}

#[test]
fn scheduling_records_the_due_time_the_note_and_the_assignee() {
    assert_eq!(
        scheduled(),
        vec![FollowupEvent::Scheduled(FollowupScheduled {
            followup_id: fid(),
            customer_id: cid(),
            due_at: now() + Duration::days(2),
            note: Personal::Known(Notes::parse("Call back about the visa appointment").unwrap()),
            assigned_to: agent(),
            at: now(),
        })]
    );
}

#[test]
fn scheduling_an_existing_follow_up_is_refused() {
    assert_eq!(
        decide(&given(&scheduled()), schedule(), now()),
        Err(FollowupError::AlreadyExists)
    );
}

#[test]
fn completing_records_who_and_when_and_a_second_completion_is_refused() {
    let mut history = scheduled();
    let done = decide(
        &given(&history),
        FollowupCommand::Complete {
            completed_by: agent(),
        },
        now() + Duration::hours(1),
    )
    .unwrap();
    assert_eq!(
        done,
        vec![FollowupEvent::Completed {
            followup_id: fid(),
            customer_id: cid(),
            completed_by: agent(),
            at: now() + Duration::hours(1),
        }]
    );
    history.extend(done);
    let FollowupState::Present(f) = given(&history) else {
        panic!("absent");
    };
    assert_eq!(f.completed, Some((agent(), now() + Duration::hours(1))));
    assert_eq!(
        decide(
            &given(&history),
            FollowupCommand::Complete {
                completed_by: agent()
            },
            now()
        ),
        Err(FollowupError::AlreadyCompleted)
    );
}

#[test]
fn completing_a_follow_up_that_does_not_exist_is_refused() {
    assert_eq!(
        decide(
            &FollowupState::Absent,
            FollowupCommand::Complete {
                completed_by: agent()
            },
            now()
        ),
        Err(FollowupError::NotFound)
    );
}

#[test]
fn the_status_is_done_once_completed_overdue_after_the_due_time_and_open_before() {
    let due = now();
    let later = due + Duration::seconds(1);
    assert_eq!(FollowupStatus::at(due, None, due), FollowupStatus::Open);
    assert_eq!(
        FollowupStatus::at(due, None, later),
        FollowupStatus::Overdue
    );
    assert_eq!(
        FollowupStatus::at(due, Some(later), later + Duration::days(9)),
        FollowupStatus::Done
    );
    for s in [
        FollowupStatus::Open,
        FollowupStatus::Done,
        FollowupStatus::Overdue,
    ] {
        assert_eq!(s.as_str().parse::<FollowupStatus>(), Ok(s));
    }
    assert!("closed".parse::<FollowupStatus>().is_err());
}

#[test]
fn the_persisted_json_of_every_follow_up_event_type_is_pinned_and_decodes_back() {
    let scheduled = scheduled().remove(0);
    let completed = decide(
        &given(std::slice::from_ref(&scheduled)),
        FollowupCommand::Complete {
            completed_by: agent(),
        },
        now(),
    )
    .unwrap()
    .remove(0);
    for e in [scheduled, completed] {
        let enc = e.encode();
        let back = DomainEvent::decode(enc.clone().into_decrypted()).unwrap();
        assert_eq!(back, DomainEvent::Followup(e.clone()));
        assert!(back.action().starts_with("FOLLOWUP_"));
        let json = crate::encoding::payload_json(&enc.facts, &enc.personal);
        insta::assert_json_snapshot!(format!("{}_v{}", enc.event_type, enc.schema_version), json);
    }
}

#[test]
fn the_note_is_personal_and_never_a_fact() {
    let enc = scheduled().remove(0).encode();
    assert!(enc.personal.contains_key("note"));
    assert!(
        !serde_json::Value::Object(enc.facts)
            .to_string()
            .contains("visa")
    );
}

#[test]
fn an_erased_note_decodes_as_erased() {
    let mut dec = scheduled().remove(0).encode().into_decrypted();
    dec.personal.insert("note".into(), Personal::Erased);
    let DomainEvent::Followup(FollowupEvent::Scheduled(s)) = DomainEvent::decode(dec).unwrap()
    else {
        panic!("not scheduled");
    };
    assert_eq!(s.note, Personal::Erased);
}

mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Done exactly when completed; otherwise overdue exactly when the due time is past.
        #[test]
        fn the_status_follows_completion_then_the_due_time(
            due in -1_000_000i64..1_000_000,
            read in -1_000_000i64..1_000_000,
            completed in proptest::option::of(-1_000_000i64..1_000_000),
        ) {
            let at = |s: i64| now() + Duration::seconds(s);
            let status = FollowupStatus::at(at(due), completed.map(at), at(read));
            let expected = match completed {
                Some(_) => FollowupStatus::Done,
                None if due < read => FollowupStatus::Overdue,
                None => FollowupStatus::Open,
            };
            prop_assert_eq!(status, expected);
        }

        /// Only the three status names parse, and each prints back as itself.
        #[test]
        fn only_open_done_and_overdue_parse_as_a_status(s in "\\PC{0,12}") {
            match s.parse::<FollowupStatus>() {
                Ok(st) => prop_assert_eq!(st.as_str(), s.as_str()),
                Err(_) => prop_assert!(!["open", "done", "overdue"].contains(&s.as_str())),
            }
        }
    }
}
