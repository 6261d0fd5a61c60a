//! The read side against both backends: the same test bodies run on SQLite (a temporary
//! directory) and on PostgreSQL (a fresh database per test).

#[macro_use]
mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::{Env, NewCustomer, WAIT, agent, sample_customer, tiny};
use egec_commands::store::{AppendRequest, ExpectedVersion, NewEvent};
use egec_domain::customer::{CustomerChanges, CustomerStatus};
use egec_domain::permission::Visibility;
use egec_domain::personal::{ERASED, Personal};
use egec_domain::values::{Email, Notes};
use egec_domain::{CustomerId, Role};
use egec_projections::{CustomerQuery, RunState, RunnerOptions};
use uuid::Uuid;

on_both_backends!(
    a_projection_rebuilt_from_scratch_equals_the_one_built_incrementally,
    a_rebuild_in_many_small_batches_through_a_small_cache_equals_the_log,
    a_fresh_read_model_on_a_long_log_is_built_by_a_rebuild_at_start,
    the_checkpoint_and_the_rows_commit_together,
    wait_for_is_true_once_the_runner_applied_a_position_and_false_on_timeout,
    a_rebuild_while_writes_continue_ends_equal_to_the_log_and_reads_answer_throughout,
    the_list_is_newest_first_and_pages_carry_the_total,
    the_search_matches_a_substring_of_name_email_phone_or_passport_in_any_case,
    an_agent_sees_only_the_customers_assigned_to_them,
    deleted_customers_are_listed_only_when_asked_for,
    the_status_filter_lists_only_that_status,
    users_are_found_by_id_and_by_email_and_listed_oldest_first,
    an_erased_customer_reads_erased_everywhere_and_is_not_found_by_its_old_name,
    the_runner_resumes_from_its_checkpoint_after_a_restart,
    a_projection_stops_at_an_event_it_cannot_decode_instead_of_skipping_it,
    two_runners_on_the_same_read_models_apply_every_event_exactly_once,
    session_versions_and_logged_out_sessions_are_read_in_one_query_and_survive_a_rebuild,
    a_users_table_from_before_sessions_gains_the_session_version_column_on_open,
);

fn all() -> CustomerQuery {
    CustomerQuery::new(Visibility::All)
}

/// A mixed history: customers created, changed, deleted and erased, and users.
async fn mixed_history(env: &Env, customers: u32) -> Vec<CustomerId> {
    let mut ids = Vec::new();
    for n in 0..customers {
        let (id, _) = env.create(&sample_customer(n)).await;
        ids.push(id);
    }
    for (i, id) in ids.iter().enumerate() {
        match i % 7 {
            0 => {
                env.set_status(*id, CustomerStatus::Contacted).await;
            }
            1 => {
                env.update(
                    *id,
                    CustomerChanges {
                        phone: Some(None),
                        notes: Some(Some(Personal::Known(Notes::parse("call after 5").unwrap()))),
                        ..Default::default()
                    },
                )
                .await;
            }
            2 => {
                env.delete(*id).await;
            }
            3 => {
                env.rename(*id, &format!("Renamed {i}")).await;
                env.set_status(*id, CustomerStatus::Qualified).await;
            }
            4 if i % 2 == 0 => {
                env.erase(*id).await;
            }
            _ => {}
        }
    }
    for n in 0..5 {
        env.create_user(
            &format!("staff{n}@example.com"),
            &format!("Staff {n}"),
            Role::Agent,
        )
        .await;
    }
    ids
}

async fn a_projection_rebuilt_from_scratch_equals_the_one_built_incrementally(env: Env) {
    let runner = env.start().await;
    // Appended one command at a time while the runner follows, so the incremental build
    // goes through many small batches, while the rebuild reads thousands at once.
    mixed_history(&env, 60).await;
    let head = env.head().await;
    assert!(runner.wait_for(head, WAIT).await);
    let rm = runner.read_models();
    let incremental = (
        rm.all_customers().await.unwrap(),
        rm.list_users().await.unwrap(),
    );
    assert_eq!(incremental.0.len(), 60);
    assert_eq!(incremental.1.len(), 5);
    assert_eq!(incremental, env.expected().await);

    let report = runner.rebuild("customers", |_, _| {}).await.unwrap();
    assert_eq!(report.position, head);
    assert_eq!(report.events, head as u64);
    runner.rebuild("users", |_, _| {}).await.unwrap();
    let rebuilt = (
        rm.all_customers().await.unwrap(),
        rm.list_users().await.unwrap(),
    );
    assert_eq!(rebuilt, incremental);
    assert_eq!(rm.checkpoint("customers").await.unwrap(), head);
    assert_eq!(rm.checkpoint("users").await.unwrap(), head);
}

async fn a_rebuild_in_many_small_batches_through_a_small_cache_equals_the_log(env: Env) {
    let runner = env.start_with(tiny()).await;
    mixed_history(&env, 40).await;
    let head = env.head().await;
    assert!(runner.wait_for(head, WAIT).await);
    let expected = env.expected().await;
    let rm = runner.read_models();
    assert_eq!(rm.all_customers().await.unwrap(), expected.0);
    let done = std::sync::Mutex::new(Vec::new());
    let report = runner
        .rebuild("customers", |pos, _| done.lock().unwrap().push(pos))
        .await
        .unwrap();
    assert_eq!(report.position, head);
    // Progress came batch by batch, in order.
    let done = done.into_inner().unwrap();
    assert!(done.len() > 10, "{done:?}");
    assert!(done.windows(2).all(|w| w[0] <= w[1]), "{done:?}");
    assert_eq!(done.last(), Some(&head));
    runner.rebuild("users", |_, _| {}).await.unwrap();
    assert_eq!(
        (
            rm.all_customers().await.unwrap(),
            rm.list_users().await.unwrap()
        ),
        expected
    );
}

async fn a_fresh_read_model_on_a_long_log_is_built_by_a_rebuild_at_start(env: Env) {
    mixed_history(&env, 30).await;
    let head = env.head().await;
    let runner = env
        .start_with(RunnerOptions {
            fresh_rebuild_min: 10,
            ..tiny()
        })
        .await;
    assert!(runner.wait_for(head, WAIT).await);
    let rm = runner.read_models();
    assert_eq!(
        (
            rm.all_customers().await.unwrap(),
            rm.list_users().await.unwrap()
        ),
        env.expected().await
    );
    assert_eq!(rm.checkpoint("customers").await.unwrap(), head);
    // And it carries on live from there.
    let (id, pos) = env.create(&NewCustomer::named("After Start")).await;
    assert!(runner.wait_for(pos, WAIT).await);
    assert!(rm.get_customer(id).await.unwrap().is_some());
}

async fn the_checkpoint_and_the_rows_commit_together(env: Env) {
    let runner = env.start().await;
    let (_, first) = env.create(&NewCustomer::named("Before All")).await;
    assert!(runner.wait_for(first, WAIT).await);

    env.sabotage_customer_writes("Boom Boom").await;
    // Both customers in one append, so the runner sees them in one batch.
    let (good, good_request) = env.create_request(&NewCustomer::named("Good Row")).await;
    let (bad, bad_request) = env.create_request(&NewCustomer::named("Boom Boom")).await;
    let answers = env
        .stores
        .log
        .append_batch(vec![good_request, bad_request])
        .await
        .unwrap();
    let last = answers[1].as_ref().unwrap().last_position;

    assert!(!runner.wait_for(last, Duration::from_millis(1500)).await);
    let rm = runner.read_models();
    assert_eq!(rm.checkpoint("customers").await.unwrap(), first);
    assert_eq!(
        rm.get_customer(good).await.unwrap(),
        None,
        "a row of the failed batch was kept"
    );

    env.repair_customer_writes().await;
    // The runner retries with backoff and then applies the whole batch.
    assert!(runner.wait_for(last, WAIT).await);
    assert_eq!(rm.checkpoint("customers").await.unwrap(), last);
    assert!(rm.get_customer(good).await.unwrap().is_some());
    assert!(rm.get_customer(bad).await.unwrap().is_some());
}

async fn wait_for_is_true_once_the_runner_applied_a_position_and_false_on_timeout(env: Env) {
    let runner = env.start().await;
    let (id, pos) = env.create(&NewCustomer::named("Read Mywrite")).await;
    assert!(runner.wait_for(pos, WAIT).await);
    // Read-your-writes: once wait_for answered, the row is there.
    let row = runner
        .read_models()
        .get_customer(id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.name, "Read Mywrite");
    for status in runner.status() {
        assert!(status.position >= pos, "{status:?}");
        assert_eq!(status.state, RunState::Running);
    }
    assert!(runner.ready(0));

    let started = Instant::now();
    assert!(
        !runner
            .wait_for(pos + 1_000, Duration::from_millis(300))
            .await
    );
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(290),
        "gave up after {waited:?}"
    );
    assert!(
        waited < Duration::from_secs(3),
        "overran its timeout: {waited:?}"
    );
}

async fn a_rebuild_while_writes_continue_ends_equal_to_the_log_and_reads_answer_throughout(
    env: Env,
) {
    let env = Arc::new(env);
    // Batches small enough that the rebuild goes through many of them, flushes its cache
    // several times, and meets the live runner's batches along the way.
    let runner = env
        .start_with(RunnerOptions {
            live_batch: 50,
            rebuild_batch: 100,
            rebuild_cache_rows: 300,
            ..RunnerOptions::default()
        })
        .await;
    let seeded = 1_500;
    let ids = env.create_many(0..seeded).await;
    assert!(runner.wait_for(env.head().await, WAIT).await);

    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let env = Arc::clone(&env);
        let stop = Arc::clone(&stop);
        let ids = ids.clone();
        tokio::spawn(async move {
            let mut n = 0usize;
            while !stop.load(Ordering::SeqCst) {
                let id = ids[(n * 7919) % ids.len()];
                match n % 4 {
                    0 => {
                        env.create(&sample_customer(10_000 + n as u32)).await;
                    }
                    1 => {
                        env.set_status(id, CustomerStatus::Applied).await;
                    }
                    2 => {
                        env.rename(id, &format!("During Rebuild {n}")).await;
                    }
                    _ => {
                        if n % 40 == 3 {
                            env.erase(id).await;
                        } else {
                            env.delete(id).await;
                        }
                    }
                }
                n += 1;
            }
            n
        })
    };
    let reads = Arc::new(AtomicU64::new(0));
    let reader = {
        let rm = runner.read_models().clone();
        let stop = Arc::clone(&stop);
        let reads = Arc::clone(&reads);
        let probe = ids[0];
        tokio::spawn(async move {
            let mut failures = Vec::new();
            while !stop.load(Ordering::SeqCst) {
                let mut q = all();
                q.include_deleted = true;
                match rm.list_customers(&q, 1, 20).await {
                    Ok((items, total)) if total >= seeded as u64 && items.len() == 20 => {}
                    Ok((items, total)) => {
                        failures.push(format!("short list: {} of {total}", items.len()))
                    }
                    Err(e) => failures.push(e.to_string()),
                }
                match rm.get_customer(probe).await {
                    Ok(Some(_)) => {}
                    Ok(None) => failures.push("probe customer missing".into()),
                    Err(e) => failures.push(e.to_string()),
                }
                reads.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            failures
        })
    };

    let report = runner.rebuild("customers", |_, _| {}).await.unwrap();
    // Keep writing a little after the swap, so the live runner has to carry on from the
    // rebuilt tables' checkpoint.
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::SeqCst);
    let written = writer.await.unwrap();
    let failures = reader.await.unwrap();
    assert!(written > 0, "no write happened during the rebuild");
    assert!(reads.load(Ordering::SeqCst) > 0);
    assert!(
        failures.is_empty(),
        "reads failed during the rebuild: {failures:?}"
    );
    assert!(report.position >= seeded as i64);

    let head = env.head().await;
    assert!(runner.wait_for(head, WAIT).await);
    let (expected, _) = env.expected().await;
    let live = runner.read_models().all_customers().await.unwrap();
    assert_eq!(live.len(), expected.len());
    assert!(live == expected, "live tables differ from the log's fold");

    // A fresh rebuild of the quiet log arrives at the same rows.
    runner.rebuild("customers", |_, _| {}).await.unwrap();
    assert!(runner.read_models().all_customers().await.unwrap() == expected);
}

async fn the_list_is_newest_first_and_pages_carry_the_total(env: Env) {
    let runner = env.start().await;
    let mut ids = Vec::new();
    for n in 0..25 {
        ids.push(env.create(&sample_customer(n)).await.0);
    }
    assert!(runner.wait_for(env.head().await, WAIT).await);
    let rm = runner.read_models();
    let newest_first: Vec<Uuid> = ids.iter().rev().map(|i| i.as_uuid()).collect();

    let (page1, total) = rm.list_customers(&all(), 1, 10).await.unwrap();
    assert_eq!(total, 25);
    assert_eq!(
        page1.iter().map(|r| r.id).collect::<Vec<_>>(),
        newest_first[..10]
    );
    let (page3, total) = rm.list_customers(&all(), 3, 10).await.unwrap();
    assert_eq!(total, 25);
    assert_eq!(
        page3.iter().map(|r| r.id).collect::<Vec<_>>(),
        newest_first[20..]
    );
    let (beyond, total) = rm.list_customers(&all(), 9, 10).await.unwrap();
    assert!(beyond.is_empty());
    assert_eq!(total, 25);
    // Page 0 is read as page 1.
    let (page0, _) = rm.list_customers(&all(), 0, 10).await.unwrap();
    assert_eq!(page0, page1);
}

async fn the_search_matches_a_substring_of_name_email_phone_or_passport_in_any_case(env: Env) {
    let runner = env.start().await;
    let (amira, _) = env
        .create(&NewCustomer {
            name: "Amira Hassan".into(),
            email: Some("amira.h@Example.org".into()),
            phone: Some("+201012345678".into()),
            passport: Some("A12345678".into()),
            ..NewCustomer::named("x")
        })
        .await;
    let (omar, _) = env
        .create(&NewCustomer {
            name: "Omar Zaki".into(),
            email: Some("oz@mail.example.com".into()),
            phone: Some("+442079460958".into()),
            passport: Some("ZZ9876543".into()),
            ..NewCustomer::named("x")
        })
        .await;
    assert!(runner.wait_for(env.head().await, WAIT).await);
    let rm = runner.read_models();
    let search = |q: &str| {
        let mut query = all();
        query.q = Some(q.into());
        query
    };
    for (q, expected) in [
        ("hASSan", vec![amira]),
        ("example.org", vec![amira]),
        ("12345678", vec![amira]),
        ("a12345", vec![amira]),
        ("7946", vec![omar]),
        ("zz98", vec![omar]),
        ("example", vec![omar, amira]),
        ("  omar ", vec![omar]),
        ("nobody", vec![]),
        ("germany", vec![]),
    ] {
        let (items, total) = rm.list_customers(&search(q), 1, 50).await.unwrap();
        let got: Vec<Uuid> = items.iter().map(|r| r.id).collect();
        let want: Vec<Uuid> = expected.iter().map(|i| i.as_uuid()).collect();
        assert_eq!(got, want, "search {q:?}");
        assert_eq!(total, want.len() as u64, "search {q:?}");
    }
    // A blank search is no filter.
    assert_eq!(rm.list_customers(&search("   "), 1, 50).await.unwrap().1, 2);
}

async fn an_agent_sees_only_the_customers_assigned_to_them(env: Env) {
    let runner = env.start().await;
    let (mine, _) = env
        .create(&NewCustomer {
            agents: vec![agent(1)],
            ..NewCustomer::named("Mine Only")
        })
        .await;
    let (shared, _) = env
        .create(&NewCustomer {
            agents: vec![agent(2), agent(1)],
            ..NewCustomer::named("Shared One")
        })
        .await;
    let (_theirs, _) = env
        .create(&NewCustomer {
            agents: vec![agent(2)],
            ..NewCustomer::named("Theirs Only")
        })
        .await;
    env.create(&NewCustomer::named("Nobody's")).await;
    assert!(runner.wait_for(env.head().await, WAIT).await);
    let rm = runner.read_models();

    let as_agent = CustomerQuery::new(Visibility::AssignedTo(agent(1)));
    let (items, total) = rm.list_customers(&as_agent, 1, 50).await.unwrap();
    let ids: Vec<Uuid> = items.iter().map(|r| r.id).collect();
    assert_eq!(ids, vec![shared.as_uuid(), mine.as_uuid()]);
    assert_eq!(total, 2);

    // The agent filter of an admin narrows the same way; combined with the agent's own
    // visibility it can only narrow further.
    let mut filtered = all();
    filtered.agent_id = Some(agent(2));
    assert_eq!(rm.list_customers(&filtered, 1, 50).await.unwrap().1, 2);
    let mut both = as_agent.clone();
    both.agent_id = Some(agent(2));
    let (items, _) = rm.list_customers(&both, 1, 50).await.unwrap();
    assert_eq!(
        items.iter().map(|r| r.id).collect::<Vec<_>>(),
        vec![shared.as_uuid()]
    );

    assert_eq!(rm.list_customers(&all(), 1, 50).await.unwrap().1, 4);
    let nobody = CustomerQuery::new(Visibility::AssignedTo(agent(9)));
    assert_eq!(rm.list_customers(&nobody, 1, 50).await.unwrap().1, 0);
}

async fn deleted_customers_are_listed_only_when_asked_for(env: Env) {
    let runner = env.start().await;
    let (kept, _) = env.create(&NewCustomer::named("Kept Here")).await;
    let (gone, _) = env.create(&NewCustomer::named("Gone Away")).await;
    env.delete(gone).await;
    assert!(runner.wait_for(env.head().await, WAIT).await);
    let rm = runner.read_models();
    let (items, total) = rm.list_customers(&all(), 1, 50).await.unwrap();
    assert_eq!(
        items.iter().map(|r| r.id).collect::<Vec<_>>(),
        vec![kept.as_uuid()]
    );
    assert_eq!(total, 1);
    let mut q = all();
    q.include_deleted = true;
    assert_eq!(rm.list_customers(&q, 1, 50).await.unwrap().1, 2);
    // A deleted customer is still readable by id (the API decides who may see it).
    assert!(rm.get_customer(gone).await.unwrap().unwrap().deleted);
}

async fn the_status_filter_lists_only_that_status(env: Env) {
    let runner = env.start().await;
    for n in 0..12 {
        env.create(&sample_customer(n)).await;
    }
    let (moved, _) = env.create(&NewCustomer::named("Moved Along")).await;
    env.set_status(moved, CustomerStatus::Enrolled).await;
    assert!(runner.wait_for(env.head().await, WAIT).await);
    let rm = runner.read_models();
    for status in CustomerStatus::ALL {
        let mut q = all();
        q.status = Some(status);
        let (items, total) = rm.list_customers(&q, 1, 50).await.unwrap();
        assert!(items.iter().all(|r| r.status == status), "{status}");
        let expected = 2 + u64::from(status == CustomerStatus::Enrolled);
        assert_eq!(total, expected, "{status}");
    }
}

async fn users_are_found_by_id_and_by_email_and_listed_oldest_first(env: Env) {
    let runner = env.start().await;
    let (first, _) = env
        .create_user("First@Example.com", "First User", Role::Admin)
        .await;
    let (second, _) = env
        .create_user("second@example.com", "Second User", Role::Agent)
        .await;
    assert!(runner.wait_for(env.head().await, WAIT).await);
    let rm = runner.read_models();

    let row = rm.get_user(first).await.unwrap().unwrap();
    assert_eq!(row.email, "first@example.com");
    assert_eq!(row.name, "First User");
    assert_eq!(row.role, Role::Admin);
    assert!(row.active);
    assert_eq!(row.version, 1);

    let by_email = rm
        .find_user_by_email(&Email::parse("FIRST@example.com").unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(by_email, row);
    let nobody = Email::parse("nobody@example.com").unwrap();
    assert_eq!(rm.find_user_by_email(&nobody).await.unwrap(), None);

    let ids: Vec<Uuid> = rm
        .list_users()
        .await
        .unwrap()
        .iter()
        .map(|u| u.id)
        .collect();
    assert_eq!(ids, vec![first.as_uuid(), second.as_uuid()]);
}

async fn an_erased_customer_reads_erased_everywhere_and_is_not_found_by_its_old_name(env: Env) {
    let runner = env.start().await;
    let (id, _) = env
        .create(&NewCustomer {
            name: "Layla Mansour".into(),
            email: Some("layla@example.com".into()),
            phone: Some("+201011112222".into()),
            passport: Some("LM1234567".into()),
            status: CustomerStatus::Qualified,
            agents: vec![agent(1)],
        })
        .await;
    let pos = env.erase(id).await;
    assert!(runner.wait_for(pos, WAIT).await);
    let rm = runner.read_models();
    let row = rm.get_customer(id).await.unwrap().unwrap();
    assert!(row.erased);
    assert_eq!(row.name, ERASED);
    assert_eq!(row.email.as_deref(), Some(ERASED));
    assert_eq!(row.phone.as_deref(), Some(ERASED));
    assert_eq!(row.passport_number.as_deref(), Some(ERASED));
    assert_eq!(row.status, CustomerStatus::Qualified);
    assert_eq!(row.assigned_agent_ids, vec![agent(1).as_uuid()]);

    for q in ["layla", "mansour", "1111", "lm123", "erased"] {
        let mut query = all();
        query.q = Some(q.into());
        assert_eq!(rm.list_customers(&query, 1, 10).await.unwrap().1, 0, "{q}");
    }
    // After a rebuild (which can no longer decrypt anything of hers) the row is the same.
    runner.rebuild("customers", |_, _| {}).await.unwrap();
    assert_eq!(rm.get_customer(id).await.unwrap().unwrap(), row);
}

async fn the_runner_resumes_from_its_checkpoint_after_a_restart(env: Env) {
    let runner = env.start().await;
    let (id, pos) = env.create(&NewCustomer::named("Before Restart")).await;
    assert!(runner.wait_for(pos, WAIT).await);
    runner.shutdown().await;
    drop(runner);

    env.set_status(id, CustomerStatus::Contacted).await;
    let (other, _) = env.create(&NewCustomer::named("While Down")).await;
    let head = env.head().await;

    let runner = env.start().await;
    assert!(runner.wait_for(head, WAIT).await);
    let rm = runner.read_models();
    let row = rm.get_customer(id).await.unwrap().unwrap();
    assert_eq!(row.version, 2, "an event was applied twice or not at all");
    assert_eq!(row.status, CustomerStatus::Contacted);
    assert!(rm.get_customer(other).await.unwrap().is_some());
    assert_eq!(rm.all_customers().await.unwrap(), env.expected().await.0);
}

async fn a_projection_stops_at_an_event_it_cannot_decode_instead_of_skipping_it(env: Env) {
    let runner = env.start().await;
    let (_, pos) = env.create(&NewCustomer::named("Fine Customer")).await;
    assert!(runner.wait_for(pos, WAIT).await);

    // A customer event this build cannot decode (no customer id), as a missing upcaster or a
    // corrupt log would leave.
    let broken = NewEvent {
        event_id: Uuid::now_v7(),
        event_type: "CustomerUpdated".into(),
        schema_version: 1,
        payload: serde_json::json!({"facts": {"at": "2025-01-01T00:00:00Z"}, "personal": {}}),
        metadata: serde_json::json!({"correlation_id": Uuid::nil().to_string()}),
    };
    let bad = env
        .appender
        .append(AppendRequest {
            new_keys: vec![],
            stream_id: "customer-broken".into(),
            expected: ExpectedVersion::Any,
            command_id: Uuid::now_v7(),
            events: vec![broken],
        })
        .await
        .unwrap()
        .last_position;
    let (after, after_pos) = env.create(&NewCustomer::named("After Broken")).await;

    let started = Instant::now();
    while runner.status()[0].state != RunState::Failed && started.elapsed() < WAIT {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let status = runner.status();
    assert_eq!(status[0].name, "customers");
    assert_eq!(status[0].state, RunState::Failed);
    assert_eq!(status[0].position, pos);
    assert!(status[0].lag >= after_pos - pos);
    let rm = runner.read_models();
    assert_eq!(rm.checkpoint("customers").await.unwrap(), pos);
    assert_eq!(rm.get_customer(after).await.unwrap(), None);
    // Read-your-writes gives up at once instead of waiting out its timeout.
    let started = Instant::now();
    assert!(!runner.wait_for(bad, Duration::from_secs(10)).await);
    assert!(started.elapsed() < Duration::from_secs(2));
    // The users projection ignores customer events and carries on.
    assert_eq!(status[1].state, RunState::Running);
    assert!(
        !runner.ready(i64::MAX),
        "a stopped projection must fail readiness"
    );
}

async fn two_runners_on_the_same_read_models_apply_every_event_exactly_once(env: Env) {
    let one = env.start().await;
    let two = env.start_another().await;
    let mut ids = Vec::new();
    for n in 0..40 {
        let (id, _) = env.create(&sample_customer(n)).await;
        env.set_status(id, CustomerStatus::Contacted).await;
        ids.push(id);
    }
    let head = env.head().await;
    assert!(one.wait_for(head, WAIT).await);
    assert!(two.wait_for(head, WAIT).await);
    let rows = one.read_models().all_customers().await.unwrap();
    assert_eq!(rows, env.expected().await.0);
    assert!(rows.iter().all(|r| r.version == 2));
    if env.backend == "postgres" {
        // One process holds each projection's lock; the other stands by.
        let states: Vec<RunState> = [&one, &two].iter().map(|r| r.status()[0].state).collect();
        assert!(states.contains(&RunState::Running), "{states:?}");
        assert!(states.contains(&RunState::Standby), "{states:?}");
    }
}

async fn session_versions_and_logged_out_sessions_are_read_in_one_query_and_survive_a_rebuild(
    env: Env,
) {
    use egec_domain::user::UserEvent;
    let runner = env.start().await;
    let (boss, _) = env
        .create_user("boss@example.com", "Boss", Role::Superadmin)
        .await;
    let (agent, _) = env
        .create_user("agent@example.com", "Agent", Role::Agent)
        .await;
    let (s1, s2) = (Uuid::now_v7(), Uuid::now_v7());
    env.logout(agent, s1).await;
    env.user_event(UserEvent::RoleChanged {
        user_id: agent,
        from: Role::Agent,
        to: Role::Superagent,
        session_version: 2,
        at: env.now(),
    })
    .await;
    env.user_event(UserEvent::SessionsRevoked {
        user_id: agent,
        session_version: 3,
        at: env.now(),
    })
    .await;
    env.user_event(UserEvent::Deactivated {
        user_id: boss,
        session_version: 2,
        at: env.now(),
    })
    .await;
    let head = env.head().await;
    assert!(runner.wait_for(head, WAIT).await);
    let rm = runner.read_models();
    let check = async |rm: &egec_projections::ReadModels| {
        let one = rm.session_user(agent, s1).await.unwrap().unwrap();
        assert!(one.ended, "the logged-out session reads ended");
        assert_eq!(one.user.session_version, 3);
        assert_eq!(one.user.role, Role::Superagent);
        let two = rm.session_user(agent, s2).await.unwrap().unwrap();
        assert!(!two.ended, "another session of the same user is not");
        // A session id is only ever ended for its own user.
        assert!(!rm.session_user(boss, s1).await.unwrap().unwrap().ended);
        assert!(
            rm.session_user(agent_id_absent(), s1)
                .await
                .unwrap()
                .is_none()
        );
        assert_eq!(rm.count_active_superadmins().await.unwrap(), 0);
        let b = rm.get_user(boss).await.unwrap().unwrap();
        assert!(!b.active);
        assert_eq!(b.session_version, 2);
    };
    check(rm).await;
    let users_before = rm.list_users().await.unwrap();
    assert_eq!(users_before, env.expected().await.1);
    runner.rebuild("users", |_, _| {}).await.unwrap();
    runner.rebuild("sessions", |_, _| {}).await.unwrap();
    check(rm).await;
    assert_eq!(rm.list_users().await.unwrap(), users_before);
    assert_eq!(rm.checkpoint("sessions").await.unwrap(), head);
}

fn agent_id_absent() -> egec_domain::UserId {
    egec_domain::UserId::from_uuid(Uuid::from_u128(0xdead))
}

async fn a_users_table_from_before_sessions_gains_the_session_version_column_on_open(env: Env) {
    let runner = env.start().await;
    let (id, pos) = env
        .create_user("old@example.com", "Old Timer", Role::Admin)
        .await;
    assert!(runner.wait_for(pos, WAIT).await);
    runner.shutdown().await;
    drop(runner);
    // The table as it was before sessions existed.
    match &env.pool {
        Some(pool) => {
            let c = pool.get().await.unwrap();
            c.batch_execute("ALTER TABLE crm.users DROP COLUMN session_version")
                .await
                .unwrap();
        }
        None => {
            let c = rusqlite::Connection::open(env.data_dir.join(egec_projections::READ_DB_FILE))
                .unwrap();
            c.execute_batch("ALTER TABLE users DROP COLUMN session_version")
                .unwrap();
        }
    }
    let rm = env.read_models().await;
    let row = rm.get_user(id).await.unwrap().unwrap();
    assert_eq!(row.session_version, 1);
    assert_eq!(
        rm.checkpoint("users").await.unwrap(),
        pos,
        "nothing was rebuilt"
    );
}
