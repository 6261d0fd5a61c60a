//! The `followups` projection against both backends: rows folded live in small batches, the
//! customer's visibility applied through the customers read model, erasure of the notes,
//! and a blue/green rebuild through a small cache that arrives at the same rows.

#[macro_use]
mod common;

use chrono::Duration;
use common::{Env, WAIT, agent, sample_customer, tiny};
use egec_domain::CustomerId;
use egec_domain::event::DomainEvent;
use egec_domain::followup::{FollowupEvent, FollowupScheduled, FollowupStatus};
use egec_domain::ids::FollowupId;
use egec_domain::permission::Visibility;
use egec_domain::personal::{ERASED, Personal};
use egec_domain::values::Notes;
use egec_projections::{FollowupQuery, FollowupRow, ReadModels};
use uuid::Uuid;

on_both_backends!(
    follow_ups_fold_live_are_seen_with_their_customer_and_lose_their_notes_on_erasure,
    a_rebuild_of_follow_ups_through_a_small_cache_equals_the_incremental_rows,
);

async fn schedule(env: &Env, customer: CustomerId, note: &str, due_in_days: i64) -> FollowupId {
    let id = FollowupId::from_uuid(Uuid::now_v7());
    let at = env.now();
    let event = DomainEvent::Followup(FollowupEvent::Scheduled(FollowupScheduled {
        followup_id: id,
        customer_id: customer,
        due_at: at + Duration::days(due_in_days),
        note: Personal::Known(Notes::parse(note).unwrap()),
        assigned_to: agent(1),
        at,
    }));
    let stored = env.encode(&customer.subject(), &event, at).await;
    env.append(id.stream_id(), vec![stored]).await;
    id
}

async fn complete(env: &Env, id: FollowupId, customer: CustomerId) -> i64 {
    let at = env.now();
    let event = DomainEvent::Followup(FollowupEvent::Completed {
        followup_id: id,
        customer_id: customer,
        completed_by: agent(1),
        at,
    });
    let stored = env.encode(&customer.subject(), &event, at).await;
    env.append(id.stream_id(), vec![stored]).await.last_position
}

fn query(visibility: Visibility) -> FollowupQuery {
    FollowupQuery {
        assigned_to: None,
        customer_id: None,
        status: None,
        due_before: None,
        now: chrono::Utc::now(),
        visibility,
        include_deleted: true,
    }
}

async fn all(rm: &ReadModels) -> Vec<FollowupRow> {
    let (rows, total) = rm
        .list_followups(&query(Visibility::All), 1, 100)
        .await
        .unwrap();
    assert_eq!(rows.len() as u64, total);
    rows
}

/// Two customers with follow-ups spread over the log, some completed: A assigned to
/// agent 1, B to nobody. Answers (A, B, A's follow-ups, B's follow-ups).
async fn history(env: &Env) -> (CustomerId, CustomerId, Vec<FollowupId>, Vec<FollowupId>) {
    let mut a_customer = sample_customer(1);
    a_customer.agents = vec![agent(1)];
    let (a, _) = env.create(&a_customer).await;
    let mut b_customer = sample_customer(2);
    b_customer.agents = vec![];
    let (b, _) = env.create(&b_customer).await;
    let (mut of_a, mut of_b) = (Vec::new(), Vec::new());
    for i in 0..6 {
        of_a.push(schedule(env, a, &format!("secret note {i} about A"), i - 2).await);
        of_b.push(schedule(env, b, &format!("note {i} about B"), i).await);
    }
    complete(env, of_a[0], a).await;
    complete(env, of_b[1], b).await;
    (a, b, of_a, of_b)
}

async fn follow_ups_fold_live_are_seen_with_their_customer_and_lose_their_notes_on_erasure(
    env: Env,
) {
    let runner = env.start_with(tiny()).await;
    let (a, _b, of_a, of_b) = history(&env).await;
    let head = env.head().await;
    assert!(runner.wait_for(head, WAIT).await);
    let rm = runner.read_models();

    let rows = all(rm).await;
    assert_eq!(rows.len(), 12);
    let first = rm.get_followup(of_a[0]).await.unwrap().unwrap();
    assert_eq!(first.note, "secret note 0 about A");
    assert!(first.completed_at.is_some());
    assert_eq!(first.completed_by, Some(agent(1).as_uuid()));

    // Agent 1 sees A's follow-ups only; another agent sees none.
    let (mine, total) = rm
        .list_followups(&query(Visibility::AssignedTo(agent(1))), 1, 100)
        .await
        .unwrap();
    assert_eq!(total, 6);
    assert!(mine.iter().all(|r| r.customer_id == a.as_uuid()));
    let (none, _) = rm
        .list_followups(&query(Visibility::AssignedTo(agent(2))), 1, 100)
        .await
        .unwrap();
    assert!(none.is_empty());
    let overdue = FollowupQuery {
        status: Some(FollowupStatus::Overdue),
        now: env.now() + Duration::hours(1),
        ..query(Visibility::All)
    };
    let (late, _) = rm.list_followups(&overdue, 1, 100).await.unwrap();
    // Due two and one days before their scheduling, not completed: A's 2nd; B's none
    // (B's first is due at its scheduling time, which the clock has passed since).
    let late_ids: Vec<Uuid> = late.iter().map(|r| r.id).collect();
    assert!(late_ids.contains(&of_a[1].as_uuid()));
    assert!(
        !late_ids.contains(&of_a[0].as_uuid()),
        "done is not overdue"
    );

    let pos = env.erase(a).await;
    assert!(runner.wait_for(pos, WAIT).await);
    for id in &of_a {
        assert_eq!(rm.get_followup(*id).await.unwrap().unwrap().note, ERASED);
    }
    for id in &of_b {
        assert_ne!(rm.get_followup(*id).await.unwrap().unwrap().note, ERASED);
    }
    runner.shutdown().await;
}

async fn a_rebuild_of_follow_ups_through_a_small_cache_equals_the_incremental_rows(env: Env) {
    let runner = env.start_with(tiny()).await;
    let (a, _b, of_a, _) = history(&env).await;
    env.erase(a).await;
    // Events after the erasure too: a completion of an erased customer's follow-up.
    complete(&env, of_a[1], a).await;
    let head = env.head().await;
    assert!(runner.wait_for(head, WAIT).await);
    let rm = runner.read_models();
    let before = all(rm).await;
    assert_eq!(before.len(), 12);
    assert_eq!(
        before.iter().filter(|r| r.note == ERASED).count(),
        6,
        "A's notes are erased, B's are not"
    );
    let report = runner.rebuild("followups", |_, _| {}).await.unwrap();
    assert_eq!(report.position, head);
    assert_eq!(all(rm).await, before);
    runner.shutdown().await;
}
