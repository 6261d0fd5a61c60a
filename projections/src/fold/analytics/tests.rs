//! The analytics fold without a database: events in, rows and deltas out.

use super::*;
use chrono::{TimeZone, Utc};
use egec_domain::CustomerId;
use egec_domain::customer::{BulkFields, CustomerChanges, CustomerCreated, CustomerUpdated};
use egec_domain::followup::FollowupScheduled;
use egec_domain::ids::FollowupId;
use egec_domain::personal::Personal;
use egec_domain::user::{LoginFailure, PasswordHash};
use egec_domain::values::{Email, Notes, PersonName, Source};

/// Day `d` (from 1 June 2026), hour `h`, UTC.
fn t(d: i64, h: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 6, 1, 0, 0, 0).unwrap()
        + chrono::Duration::days(d - 1)
        + chrono::Duration::hours(h)
}

fn day(d: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, 6, d).unwrap()
}

fn cid(n: u128) -> CustomerId {
    CustomerId::from_uuid(Uuid::from_u128(n))
}

fn uid(n: u128) -> UserId {
    UserId::from_uuid(Uuid::from_u128(0xA000 + n))
}

fn created(
    n: u128,
    status: CustomerStatus,
    source: Option<&str>,
    agents: &[u128],
    at: DateTime<Utc>,
) -> DomainEvent {
    DomainEvent::Customer(CustomerEvent::Created(CustomerCreated {
        customer_id: cid(n),
        name: Personal::Known(PersonName::parse("Zelda Quux").unwrap()),
        email: Some(Personal::Known(Email::parse("zelda@example.com").unwrap())),
        phone: None,
        passport_number: None,
        country: None,
        source: source.map(|s| Source::parse(s).unwrap()),
        status,
        notes: None,
        assigned_agent_ids: agents.iter().map(|a| uid(*a)).collect(),
        at,
    }))
}

fn status(n: u128, s: CustomerStatus, at: DateTime<Utc>) -> DomainEvent {
    DomainEvent::Customer(CustomerEvent::Updated(CustomerUpdated {
        customer_id: cid(n),
        changes: CustomerChanges {
            status: Some(s),
            ..Default::default()
        },
        at,
    }))
}

fn bulk(
    n: u128,
    s: Option<CustomerStatus>,
    agents: Option<&[u128]>,
    at: DateTime<Utc>,
) -> DomainEvent {
    DomainEvent::Customer(CustomerEvent::BulkEdited(BulkFields {
        customer_id: cid(n),
        status: s,
        assigned_agent_ids: agents.map(|a| a.iter().map(|x| uid(*x)).collect()),
        at,
    }))
}

fn deleted(n: u128, at: DateTime<Utc>) -> DomainEvent {
    DomainEvent::Customer(CustomerEvent::Deleted {
        customer_id: cid(n),
        at,
    })
}

fn erased(n: u128, at: DateTime<Utc>) -> DomainEvent {
    DomainEvent::Customer(CustomerEvent::Erased {
        customer_id: cid(n),
        reason: "art. 17".into(),
        at,
    })
}

fn scheduled(f: u128, n: u128, agent: u128, due: DateTime<Utc>) -> DomainEvent {
    DomainEvent::Followup(FollowupEvent::Scheduled(FollowupScheduled {
        followup_id: FollowupId::from_uuid(Uuid::from_u128(0xF000 + f)),
        customer_id: cid(n),
        due_at: due,
        note: Personal::Known(Notes::parse("call about the visa").unwrap()),
        assigned_to: uid(agent),
        at: due,
    }))
}

fn completed(f: u128, n: u128, at: DateTime<Utc>) -> DomainEvent {
    DomainEvent::Followup(FollowupEvent::Completed {
        followup_id: FollowupId::from_uuid(Uuid::from_u128(0xF000 + f)),
        customer_id: cid(n),
        completed_by: uid(1),
        at,
    })
}

fn user(n: u128, role: Role, at: DateTime<Utc>) -> DomainEvent {
    DomainEvent::User(UserEvent::Created {
        user_id: uid(n),
        email: Personal::Known(Email::parse("staff@example.com").unwrap()),
        name: Personal::Known(PersonName::parse("Staff Member").unwrap()),
        role,
        password_hash: Personal::Known(
            PasswordHash::parse("$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA").unwrap(),
        ),
        at,
    })
}

fn login(n: u128, ok: bool, at: DateTime<Utc>) -> DomainEvent {
    DomainEvent::Login(if ok {
        LoginEvent::Succeeded {
            user_id: uid(n),
            session_id: Uuid::from_u128(n),
            at,
        }
    } else {
        LoginEvent::Failed {
            user_id: uid(n),
            reason: LoginFailure::WrongPassword,
            at,
        }
    })
}

fn fold_all(events: &[DomainEvent]) -> AnalyticsChanges {
    let mut fold = AnalyticsFold::default();
    for e in events {
        if let Some(f) = Fact::of(e) {
            fold.apply(&f);
        }
    }
    fold.take_changes()
}

fn daily_of(rows: &[DailyRow], d: NaiveDate, s: CustomerStatus) -> (i64, i64, i64) {
    let r = rows
        .iter()
        .find(|r| r.day == d && r.status == s)
        .unwrap_or_else(|| panic!("no row for {d} {s:?}"));
    (r.customers, r.entered, r.exited)
}

use CustomerStatus::{Contacted, Enrolled, Lost, New, Qualified};

#[test]
fn the_daily_table_has_every_day_and_status_with_counts_carried_over_gaps() {
    let c = fold_all(&[
        created(1, New, Some("fair"), &[], t(1, 9)),
        created(2, New, None, &[], t(1, 10)),
        status(1, Contacted, t(1, 11)),
        // Days 2 and 3 have no event; day 4 moves customer 2 on.
        status(2, Qualified, t(4, 8)),
        deleted(1, t(4, 9)),
    ]);
    assert_eq!(c.daily.len(), 4 * CustomerStatus::ALL.len());
    assert_eq!(daily_of(&c.daily, day(1), New), (1, 2, 1));
    assert_eq!(daily_of(&c.daily, day(1), Contacted), (1, 1, 0));
    assert_eq!(daily_of(&c.daily, day(2), Contacted), (1, 0, 0));
    assert_eq!(daily_of(&c.daily, day(3), New), (1, 0, 0));
    assert_eq!(daily_of(&c.daily, day(3), Lost), (0, 0, 0));
    assert_eq!(daily_of(&c.daily, day(4), New), (0, 0, 1));
    assert_eq!(daily_of(&c.daily, day(4), Qualified), (1, 1, 0));
    // Deletion takes the customer out of the live count and counts as leaving.
    assert_eq!(daily_of(&c.daily, day(4), Contacted), (0, 0, 1));
}

#[test]
fn an_event_dated_before_the_last_day_counts_on_the_last_day() {
    let c = fold_all(&[
        created(1, New, None, &[], t(2, 0)),
        created(2, New, None, &[], t(1, 23)),
    ]);
    assert_eq!(c.daily.len(), CustomerStatus::ALL.len());
    assert_eq!(daily_of(&c.daily, day(2), New), (2, 2, 0));
}

#[test]
fn a_fold_continued_from_the_stored_last_day_equals_one_fold_of_everything() {
    let events = [
        created(1, New, Some("web"), &[1], t(1, 9)),
        created(2, Contacted, Some("web"), &[1, 2], t(1, 10)),
        status(1, Contacted, t(3, 11)),
        bulk(2, Some(Enrolled), Some(&[2]), t(3, 12)),
        created(3, New, None, &[2], t(5, 1)),
        deleted(3, t(5, 2)),
    ];
    let whole = fold_all(&events);
    // Split after the third event, as two batches would be: the second batch starts from
    // the stored last day and the stored working state.
    let first = fold_all(&events[..3]);
    let mut second = AnalyticsFold::new(Daily::from_last_day(
        &first
            .daily
            .iter()
            .filter(|r| r.day == day(3))
            .copied()
            .collect::<Vec<_>>(),
    ));
    let ids: Vec<Uuid> = first.entities.iter().map(|(id, _)| *id).collect();
    second.add_loaded(&ids, first.entities.clone());
    for e in &events[3..] {
        second.apply(&Fact::of(e).unwrap());
    }
    let second = second.take_changes();
    // Daily rows: the second batch rewrites day 3 and adds days 4 and 5.
    let mut merged: BTreeMap<(NaiveDate, &str), DailyRow> = BTreeMap::new();
    for r in first.daily.iter().chain(&second.daily) {
        merged.insert((r.day, r.status.as_str()), *r);
    }
    let mut expected: BTreeMap<(NaiveDate, &str), DailyRow> = BTreeMap::new();
    for r in &whole.daily {
        expected.insert((r.day, r.status.as_str()), *r);
    }
    assert_eq!(merged, expected);
    // Counters: the deltas add up.
    let mut conv: BTreeMap<String, [i64; 3]> = first.deltas.conversion.clone();
    for (k, v) in &second.deltas.conversion {
        let e = conv.entry(k.clone()).or_default();
        for i in 0..3 {
            e[i] += v[i];
        }
    }
    conv.retain(|_, v| v.iter().any(|x| *x != 0));
    assert_eq!(conv, whole.deltas.conversion);
}

#[test]
fn conversion_counts_live_customers_by_current_source_and_enrolment_ever_reached() {
    let c = fold_all(&[
        created(1, New, Some("fair"), &[], t(1, 1)),
        created(2, New, Some("fair"), &[], t(1, 2)),
        created(3, New, None, &[], t(1, 3)),
        status(1, Enrolled, t(2, 1)),
        // Enrolled once: still counted as enrolled after a bulk edit's undo moves it back.
        DomainEvent::Customer(CustomerEvent::BulkEditReverted(BulkFields {
            customer_id: cid(1),
            status: Some(Qualified),
            assigned_agent_ids: None,
            at: t(2, 2),
        })),
        status(2, Lost, t(2, 3)),
        // Customer 3 changes source; then is deleted and drops out.
        DomainEvent::Customer(CustomerEvent::Updated(CustomerUpdated {
            customer_id: cid(3),
            changes: CustomerChanges {
                source: Some(Some(Source::parse("web").unwrap())),
                ..Default::default()
            },
            at: t(2, 4),
        })),
        deleted(3, t(2, 5)),
    ]);
    let mut want = BTreeMap::new();
    want.insert("fair".to_owned(), [2, 1, 1]);
    assert_eq!(c.deltas.conversion, want, "(none) and web cancelled out");
}

#[test]
fn time_in_status_counts_each_exit_by_the_month_it_happened() {
    let c = fold_all(&[
        created(1, New, None, &[], t(1, 0)),
        status(1, Contacted, t(1, 2)),
        bulk(1, Some(Qualified), None, t(3, 2)),
        // Same status again: no exit.
        status(1, Qualified, t(3, 3)),
        // Deletion ends no stay.
        deleted(1, t(40, 0)),
    ]);
    let mut want = BTreeMap::new();
    want.insert(("new", day(1)), [1, 2 * 3600]);
    want.insert(("contacted", day(1)), [1, 2 * 86_400]);
    assert_eq!(c.deltas.time_in_status, want);
}

#[test]
fn workload_counts_open_customers_per_agent_and_open_follow_ups_of_live_customers() {
    let c = fold_all(&[
        created(1, New, None, &[1, 2], t(1, 0)),
        created(2, New, None, &[1], t(1, 1)),
        created(3, New, None, &[2], t(1, 2)),
        // Customer 2 is reassigned to agent 2, then enrolled: no longer open.
        DomainEvent::Customer(CustomerEvent::AgentsAssigned {
            customer_id: cid(2),
            agent_ids: vec![uid(2)],
            at: t(1, 3),
        }),
        status(2, Enrolled, t(1, 4)),
        scheduled(1, 1, 1, t(5, 0)),
        scheduled(2, 1, 1, t(6, 0)),
        scheduled(3, 3, 2, t(5, 0)),
        completed(2, 1, t(2, 0)),
        // Completing twice changes nothing.
        completed(2, 1, t(2, 1)),
        // Customer 3 is deleted: its open follow-up no longer counts.
        deleted(3, t(2, 2)),
    ]);
    let mut open = BTreeMap::new();
    open.insert(uid(1).as_uuid(), 1);
    open.insert(uid(2).as_uuid(), 1);
    assert_eq!(c.deltas.open_customers, open);
    let mut due = BTreeMap::new();
    due.insert((uid(1).as_uuid(), t(5, 0)), 1);
    assert_eq!(c.deltas.open_followups, due);
}

#[test]
fn logins_count_by_day_and_the_role_held_at_the_time() {
    let c = fold_all(&[
        user(1, Role::Agent, t(1, 0)),
        login(1, true, t(1, 1)),
        login(1, false, t(1, 2)),
        DomainEvent::User(UserEvent::RoleChanged {
            user_id: uid(1),
            from: Role::Agent,
            to: Role::Admin,
            session_version: 2,
            at: t(1, 3),
        }),
        login(1, true, t(1, 4)),
        login(9, true, t(2, 0)),
        DomainEvent::Login(LoginEvent::UnknownAccountFailed {
            account_key: "k".into(),
            email: Personal::Known("who@example.com".into()),
            at: t(2, 1),
        }),
    ]);
    let mut want = BTreeMap::new();
    want.insert((day(1), "agent".to_owned()), [1, 1]);
    want.insert((day(1), "admin".to_owned()), [1, 0]);
    want.insert((day(2), UNKNOWN_ROLE.to_owned()), [1, 0]);
    want.insert((day(2), UNKNOWN_ACCOUNT.to_owned()), [0, 1]);
    assert_eq!(c.deltas.logins, want);
}

#[test]
fn an_erasure_is_no_fact_and_changes_nothing() {
    let before = [
        created(1, New, Some("fair"), &[1], t(1, 0)),
        scheduled(1, 1, 1, t(3, 0)),
    ];
    let mut after = before.to_vec();
    after.push(erased(1, t(2, 0)));
    assert_eq!(Fact::of(&erased(1, t(2, 0))), None);
    let (a, b) = (fold_all(&before), fold_all(&after));
    assert_eq!(a.daily, b.daily);
    assert_eq!(a.deltas, b.deltas);
    assert_eq!(a.entities, b.entities);
}

#[test]
fn no_fact_and_no_working_state_carries_a_personal_value() {
    let c = fold_all(&[
        created(1, New, Some("fair"), &[1], t(1, 0)),
        scheduled(1, 1, 1, t(3, 0)),
        user(1, Role::Agent, t(1, 0)),
    ]);
    let json = serde_json::to_string(&c.entities).unwrap();
    for secret in ["Zelda", "zelda@", "visa", "Staff", "staff@", "argon2"] {
        assert!(!json.contains(secret), "{secret} in {json}");
    }
}

#[test]
fn the_projection_reads_exactly_the_stored_types_it_folds() {
    // The names `wants` matches, checked against the domain's own encoding.
    let folded = [
        created(1, New, Some("fair"), &[], t(1, 0)),
        status(1, Contacted, t(1, 1)),
        deleted(1, t(1, 1)),
        bulk(1, Some(New), None, t(1, 1)),
        scheduled(1, 1, 1, t(1, 1)),
        completed(1, 1, t(1, 1)),
        user(1, Role::Agent, t(1, 0)),
        login(1, true, t(1, 0)),
        login(1, false, t(1, 0)),
    ];
    for e in &folded {
        let ty = e.encode().event_type;
        assert!(wants(&ty), "{ty} must be read");
    }
    assert!(!wants(&erased(1, t(1, 1)).encode().event_type));
    assert!(!wants("CustomerAttachmentAdded"));
    assert!(!wants("LoginSessionEnded"));
    assert!(!wants("UserRenamed"));
    // The source is a fact stored in clear, never under the customer's key, so it
    // survives an erasure.
    let enc = created(1, New, Some("fair"), &[], t(1, 0)).encode();
    assert_eq!(
        enc.facts.get("source").and_then(|v| v.as_str()),
        Some("fair")
    );
    assert!(!enc.personal.contains_key("source"));
}
