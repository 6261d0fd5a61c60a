//! The write path above the store: encryption of personal fields, crypto-shredding, upcasting
//! on read, optimistic concurrency with retries. Every test runs on SQLite and PostgreSQL.

use std::sync::Arc;

use chrono::Utc;
use egec_commands::appender::Appender;
use egec_commands::codec::{Codec, SecurityFields};
use egec_commands::crypto::Key;
use egec_commands::erase::erase_customer;
use egec_commands::handler::{CommandBus, HandlerError};
use egec_commands::master_key::MasterKey;
use egec_commands::store::open::{self, Stores};
use egec_commands::store::{
    AppendRequest, ExpectedVersion, NewEvent, ReadBound, RecordedEvent, SubjectKeys,
};
use egec_commands::testing;
use egec_commands::vault::{SubjectKey, Vault, VaultError};
use egec_domain::CustomerId;
use egec_domain::aggregate::CustomerAggregate;
use egec_domain::customer::{
    CreateCustomer, CustomerCommand, CustomerState, CustomerStatus, UpdateCustomer,
};
use egec_domain::encoding::{EncodedEvent, payload_json};
use egec_domain::event::Metadata;
use egec_domain::personal::Personal;
use egec_domain::values::*;
use uuid::Uuid;

struct Env {
    stores: Stores,
    bus: Arc<CommandBus>,
    _guards: (Option<tempfile::TempDir>, Option<testing::PgDropGuard>),
}

async fn env(postgres: bool) -> Env {
    let dir = testing::fresh_sqlite_dir();
    let (stores, guards) = if postgres {
        let (url, guard) = testing::fresh_postgres().await;
        (
            open::open(Some(&url), dir.path(), 8).await.unwrap(),
            (Some(dir), Some(guard)),
        )
    } else {
        (
            open::open(None, dir.path(), 4).await.unwrap(),
            (Some(dir), None),
        )
    };
    let master = MasterKey::from_key(Key::generate().unwrap());
    let vault = Arc::new(Vault::new(stores.keys.clone(), master, 1000));
    let appender = Appender::spawn(stores.log.clone(), 500);
    let bus = Arc::new(CommandBus::new(
        stores.log.clone(),
        appender,
        Arc::new(Codec::new(vault)),
        1000,
    ));
    Env {
        stores,
        bus,
        _guards: guards,
    }
}

fn meta() -> Metadata {
    let mut m = Metadata::system(Uuid::now_v7(), Utc::now());
    m.ip = Some(Personal::Known("203.0.113.77".into()));
    m.user_agent = Some(Personal::Known("SecretBrowser/1.0".into()));
    m
}

fn create(id: CustomerId) -> CustomerCommand {
    CustomerCommand::Create(Box::new(CreateCustomer {
        customer_id: id,
        name: PersonName::parse("Omar Khalilsecret").unwrap(),
        email: Some(Email::parse("omar.k@example.org").unwrap()),
        phone: Some(PhoneE164::parse("+201012345678", None).unwrap()),
        passport_number: Some(PassportNumber::parse("A12345678").unwrap()),
        country: Some(Country::parse("Canada").unwrap()),
        source: None,
        status: None,
        notes: Some(Notes::parse("prefers evening calls").unwrap()),
        assigned_agent_ids: vec![],
    }))
}

async fn run(
    e: &Env,
    id: CustomerId,
    cmd: CustomerCommand,
) -> Result<i64, HandlerError<egec_domain::customer::CustomerError>> {
    e.bus
        .execute::<CustomerAggregate>(
            &id.stream_id(),
            &id.subject(),
            None,
            Uuid::now_v7(),
            &meta(),
            cmd,
        )
        .await
        .map(|x| x.version)
}

/// The customer's events as stored, still encrypted.
async fn stored_events(e: &Env, id: CustomerId) -> Vec<RecordedEvent> {
    e.stores
        .log
        .read_stream(&id.stream_id(), 1, ReadBound::None)
        .await
        .unwrap()
}

async fn personal_fields_are_ciphertext_in_the_log_and_plaintext_when_read(e: Env) {
    let id = CustomerId::from_uuid(Uuid::now_v7());
    run(&e, id, create(id)).await.unwrap();
    let stored = stored_events(&e, id).await;
    let raw = format!("{}{}", stored[0].payload, stored[0].metadata);
    for secret in [
        "Khalilsecret",
        "omar.k@",
        "+2010",
        "A12345678",
        "evening",
        "203.0.113.77",
        "SecretBrowser",
    ] {
        assert!(!raw.contains(secret), "{secret} stored in clear");
    }
    assert!(raw.contains("Canada"), "non-personal facts stay in clear");
    let env = e.bus.codec().decode(&stored[0]).await.unwrap();
    assert_eq!(
        env.metadata.ip,
        Some(Personal::Known("203.0.113.77".into()))
    );
    let (state, version) = e
        .bus
        .load::<CustomerAggregate>(&id.stream_id())
        .await
        .unwrap();
    assert_eq!(version, 1);
    let CustomerState::Present(c) = state else {
        panic!("absent")
    };
    assert_eq!(
        c.name.known().map(|n| n.as_str()),
        Some("Omar Khalilsecret")
    );
}

async fn a_fold_decodes_the_same_event_without_its_security_metadata(e: Env) {
    let id = CustomerId::from_uuid(Uuid::now_v7());
    run(&e, id, create(id)).await.unwrap();
    let stored = stored_events(&e, id).await;
    let codec = e.bus.codec();
    let full = codec.decode(&stored[0]).await.unwrap();
    let owned = codec
        .decode_owned(stored[0].clone(), SecurityFields::Decrypt)
        .await
        .unwrap();
    assert_eq!(
        owned, full,
        "the owned decode answers what the borrowed one does"
    );
    assert_eq!(
        full.metadata.user_agent,
        Some(Personal::Known("SecretBrowser/1.0".into()))
    );
    let folded = codec
        .decode_owned(stored[0].clone(), SecurityFields::Omit)
        .await
        .unwrap();
    assert_eq!(folded.metadata.ip, None, "the IP address is left out");
    assert_eq!(
        folded.metadata.user_agent, None,
        "the user agent is left out"
    );
    let mut expected = full.clone();
    expected.metadata.ip = None;
    expected.metadata.user_agent = None;
    assert_eq!(folded, expected, "everything else is decoded as usual");
}

async fn after_erasure_every_field_reads_erased_and_the_key_is_never_recreated(e: Env) {
    let id = CustomerId::from_uuid(Uuid::now_v7());
    run(&e, id, create(id)).await.unwrap();
    run(
        &e,
        id,
        CustomerCommand::Update(UpdateCustomer {
            notes: Some(Some(Notes::parse("more notes").unwrap())),
            ..Default::default()
        }),
    )
    .await
    .unwrap();
    let erasure = erase_customer(&e.bus, id, "art. 17", &meta())
        .await
        .unwrap();
    assert_eq!(erasure.destroyed_key_fingerprints.len(), 1);
    assert_eq!(
        e.stores.keys.load(&id.subject()).await.unwrap(),
        SubjectKeys::Erased
    );
    // A fresh bus (another process: no caches) sees the same thing.
    let cold = env_like(&e);
    for bus in [&e.bus, &cold] {
        let (state, version) = bus
            .load::<CustomerAggregate>(&id.stream_id())
            .await
            .unwrap();
        assert_eq!(version, 3);
        let CustomerState::Present(c) = state else {
            panic!()
        };
        assert_eq!(c.name, Personal::Erased);
        assert_eq!(c.email, Some(Personal::Erased));
        assert_eq!(c.notes, Some(Personal::Erased));
        assert_eq!(c.country.as_ref().map(|x| x.as_str()), Some("Canada"));
        let (past, _) = bus
            .load_at::<CustomerAggregate>(&id.stream_id(), ReadBound::Version(1))
            .await
            .unwrap();
        assert_eq!(
            past.customer().unwrap().name,
            Personal::Erased,
            "time travel shows erasure too"
        );
    }
    // Nothing can be written for the subject again: its key is never re-created.
    let err = run(
        &e,
        id,
        CustomerCommand::Update(UpdateCustomer {
            status: Some(CustomerStatus::Lost),
            ..Default::default()
        }),
    )
    .await;
    assert!(
        matches!(
            err,
            Err(HandlerError::Domain(
                egec_domain::customer::CustomerError::Erased
            ))
        ),
        "{err:?}"
    );
    let vault_err = e.bus.codec().vault().for_write(&id.subject()).await;
    assert!(matches!(vault_err, Err(VaultError::Erased)));
    assert_eq!(
        e.stores.keys.load(&id.subject()).await.unwrap(),
        SubjectKeys::Erased
    );
}

/// A second command bus over the same store, with its own empty caches.
fn env_like(e: &Env) -> Arc<CommandBus> {
    let vault = Arc::new(Vault::new(
        e.stores.keys.clone(),
        e.bus.codec().vault().master().clone(),
        10,
    ));
    Arc::new(CommandBus::new(
        e.stores.log.clone(),
        Appender::spawn(e.stores.log.clone(), 10),
        Arc::new(Codec::new(vault)),
        10,
    ))
}

async fn a_legacy_v1_event_in_the_log_is_upcast_on_every_read_path(e: Env) {
    let id = CustomerId::from_uuid(Uuid::now_v7());
    // Write a v1 event as the legacy importer would have, encrypted like any other.
    let codec = e.bus.codec();
    let v1 = EncodedEvent::new("CustomerCreated", 1)
        .fact("customer_id", id.to_string())
        .fact("status", "Qualified")
        .fact("at", "2025-03-01T10:00:00.000000Z")
        .personal_field("customerName", Some("Legacy Person"))
        .personal_field("passportNumber", Some("LG7654321"));
    let event_id = Uuid::now_v7();
    let (ver, key) = codec.vault().for_write(&id.subject()).await.unwrap();
    let mut personal = std::collections::BTreeMap::new();
    for (k, v) in &v1.personal {
        let aad = egec_commands::crypto::field_aad(&event_id, &id.subject(), k);
        personal.insert(
            k.clone(),
            egec_commands::crypto::encrypt_field(&key, ver, v, &aad).unwrap(),
        );
    }
    let mut payload = payload_json(&v1.facts, &personal);
    payload["subject"] = serde_json::Value::String(id.subject());
    e.stores
        .log
        .append_batch(vec![AppendRequest {
            new_keys: vec![],
            stream_id: id.stream_id(),
            expected: ExpectedVersion::Exact(0),
            command_id: Uuid::now_v7(),
            events: vec![NewEvent {
                event_id,
                event_type: "CustomerCreated".into(),
                schema_version: 1,
                payload,
                metadata: serde_json::json!({}),
            }],
        }])
        .await
        .unwrap()
        .remove(0)
        .unwrap();
    let (state, _) = e
        .bus
        .load::<CustomerAggregate>(&id.stream_id())
        .await
        .unwrap();
    let c = state.customer().unwrap();
    assert_eq!(c.name.known().map(|n| n.as_str()), Some("Legacy Person"));
    assert_eq!(c.status, CustomerStatus::Qualified);
    let all = e.stores.log.read_all(0, 100).await.unwrap();
    let env = codec.decode(all.last().unwrap()).await.unwrap();
    assert!(matches!(
        env.event,
        egec_domain::event::DomainEvent::Customer(egec_domain::customer::CustomerEvent::Created(_))
    ));
    // And the upcast event accepts new commands on top.
    run(
        &e,
        id,
        CustomerCommand::Update(UpdateCustomer {
            status: Some(CustomerStatus::Applied),
            ..Default::default()
        }),
    )
    .await
    .unwrap();
}

async fn concurrent_updates_to_one_customer_all_land_through_retries(e: Env) {
    let id = CustomerId::from_uuid(Uuid::now_v7());
    run(&e, id, create(id)).await.unwrap();
    let mut tasks = Vec::new();
    for i in 0..16 {
        let bus = if i % 2 == 0 {
            e.bus.clone()
        } else {
            env_like(&e)
        };
        tasks.push(tokio::spawn(async move {
            let notes = Notes::parse(&format!("note {i}")).unwrap();
            bus.execute::<CustomerAggregate>(
                &id.stream_id(),
                &id.subject(),
                None,
                Uuid::now_v7(),
                &meta(),
                CustomerCommand::Update(UpdateCustomer {
                    notes: Some(Some(notes)),
                    ..Default::default()
                }),
            )
            .await
            .map(|x| x.position.is_some())
        }));
    }
    let mut applied = 0;
    for t in tasks {
        if t.await.unwrap().unwrap() {
            applied += 1;
        }
    }
    let (_, version) = env_like(&e)
        .load::<CustomerAggregate>(&id.stream_id())
        .await
        .unwrap();
    assert_eq!(
        version,
        1 + applied,
        "every applied update is in the stream; none lost"
    );
    assert_eq!(
        applied, 16,
        "each update sets a distinct note, so all 16 must apply"
    );
}

async fn a_stale_if_match_is_refused_without_appending(e: Env) {
    let id = CustomerId::from_uuid(Uuid::now_v7());
    run(&e, id, create(id)).await.unwrap();
    let before = e.stores.log.head().await.unwrap().position;
    let r = e
        .bus
        .execute::<CustomerAggregate>(
            &id.stream_id(),
            &id.subject(),
            Some(0),
            Uuid::now_v7(),
            &meta(),
            CustomerCommand::Update(UpdateCustomer {
                status: Some(CustomerStatus::Lost),
                ..Default::default()
            }),
        )
        .await;
    assert!(
        matches!(
            r,
            Err(HandlerError::VersionConflict {
                expected: 0,
                actual: 1
            })
        ),
        "{r:?}"
    );
    assert_eq!(e.stores.log.head().await.unwrap().position, before);
}

async fn run_new(
    bus: &CommandBus,
    id: CustomerId,
) -> Result<i64, HandlerError<egec_domain::customer::CustomerError>> {
    bus.execute_new::<CustomerAggregate>(
        &id.stream_id(),
        &id.subject(),
        Uuid::now_v7(),
        &meta(),
        create(id),
    )
    .await
    .map(|x| x.version)
}

fn name_of(state: &CustomerState) -> Personal<String> {
    state
        .customer()
        .expect("present")
        .name
        .clone()
        .map(|n| n.as_str().to_owned())
}

async fn a_new_customers_key_is_stored_with_its_first_event(e: Env) {
    let ids: Vec<CustomerId> = (0..8)
        .map(|_| CustomerId::from_uuid(Uuid::now_v7()))
        .collect();
    let mut tasks = Vec::new();
    for id in ids.clone() {
        let bus = e.bus.clone();
        tasks.push(tokio::spawn(async move { run_new(&bus, id).await }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap().unwrap(), 1);
    }
    for id in &ids {
        assert!(matches!(
            e.stores.keys.load(&id.subject()).await.unwrap(),
            SubjectKeys::Active(k) if k.len() == 1
        ));
    }
    // Another process, with cold caches, decodes every event through one bulk key load.
    let cold = env_like(&e);
    let all = e.stores.log.read_all(0, 1000).await.unwrap();
    let decoded = cold.codec().decode_batch(&all).await;
    assert_eq!(decoded.len(), ids.len());
    for d in decoded {
        let env = d.unwrap();
        assert_eq!(
            env.metadata.ip,
            Some(Personal::Known("203.0.113.77".into()))
        );
    }
    let (state, _) = cold
        .load::<CustomerAggregate>(&ids[0].stream_id())
        .await
        .unwrap();
    assert_eq!(name_of(&state), Personal::Known("Omar Khalilsecret".into()));
    // An existing id given to `execute_new` conflicts, reloads, and the domain refuses it.
    let again = run_new(&e.bus, ids[0]).await;
    assert!(matches!(again, Err(HandlerError::Domain(_))), "{again:?}");
}

async fn a_create_whose_subject_already_has_a_key_uses_that_key(e: Env) {
    let id = CustomerId::from_uuid(Uuid::now_v7());
    // Another process made the subject's key; this bus has not seen it.
    let cold = env_like(&e);
    let (_, made) = cold.codec().vault().for_write(&id.subject()).await.unwrap();
    assert_eq!(run_new(&e.bus, id).await.unwrap(), 1);
    let SubjectKeys::Active(keys) = e.stores.keys.load(&id.subject()).await.unwrap() else {
        panic!("the key stays")
    };
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0].fingerprint, made.fingerprint());
    let (state, _) = env_like(&e)
        .load::<CustomerAggregate>(&id.stream_id())
        .await
        .unwrap();
    assert_eq!(name_of(&state), Personal::Known("Omar Khalilsecret".into()));
}

async fn a_create_for_an_erased_subject_appends_nothing(e: Env) {
    let id = CustomerId::from_uuid(Uuid::now_v7());
    e.stores.keys.destroy(&id.subject()).await.unwrap();
    let r = run_new(&e.bus, id).await;
    assert!(
        matches!(r, Err(HandlerError::Codec(_))),
        "an erased subject's key is never re-created: {r:?}"
    );
    assert_eq!(
        e.stores.log.stream_version(&id.stream_id()).await.unwrap(),
        0
    );
    assert_eq!(
        e.stores.keys.load(&id.subject()).await.unwrap(),
        SubjectKeys::Erased
    );
}

async fn a_stale_cached_aggregate_is_caught_by_the_version_check(e: Env) {
    let id = CustomerId::from_uuid(Uuid::now_v7());
    run(&e, id, create(id)).await.unwrap();
    let other = env_like(&e);
    let status = |s: &str| {
        CustomerCommand::Update(UpdateCustomer {
            notes: Some(Some(Notes::parse(s).unwrap())),
            ..Default::default()
        })
    };
    // Another process writes; this bus's cache still says version 1.
    let v = other
        .execute::<CustomerAggregate>(
            &id.stream_id(),
            &id.subject(),
            None,
            Uuid::now_v7(),
            &meta(),
            status("lost"),
        )
        .await
        .unwrap()
        .version;
    assert_eq!(v, 2);
    // A client that saw version 2 is right, though the cache is behind.
    let done = e
        .bus
        .execute::<CustomerAggregate>(
            &id.stream_id(),
            &id.subject(),
            Some(2),
            Uuid::now_v7(),
            &meta(),
            status("contacted"),
        )
        .await
        .unwrap();
    assert_eq!(done.version, 3);
    other
        .execute::<CustomerAggregate>(
            &id.stream_id(),
            &id.subject(),
            None,
            Uuid::now_v7(),
            &meta(),
            status("lost"),
        )
        .await
        .unwrap();
    // Without If-Match, the stale cache costs one conflict and a reload, never a lost write.
    let done = run(&e, id, status("contacted")).await.unwrap();
    assert_eq!(done, 5);
    let (state, version) = env_like(&e)
        .load::<CustomerAggregate>(&id.stream_id())
        .await
        .unwrap();
    assert_eq!(version, 5);
    assert_eq!(
        state
            .customer()
            .unwrap()
            .notes
            .clone()
            .map(|n| n.map(|n| n.as_str().to_owned())),
        Some(Personal::Known("contacted".to_owned()))
    );
}

async fn a_batch_id_is_stored_in_clear_metadata_and_read_back_only_where_given(e: Env) {
    let batch = Uuid::now_v7();
    let with_batch = CustomerId::from_uuid(Uuid::now_v7());
    let mut m = meta();
    m.batch_id = Some(batch);
    e.bus
        .execute::<CustomerAggregate>(
            &with_batch.stream_id(),
            &with_batch.subject(),
            None,
            Uuid::now_v7(),
            &m,
            create(with_batch),
        )
        .await
        .unwrap();
    let without = CustomerId::from_uuid(Uuid::now_v7());
    run(&e, without, create(without)).await.unwrap();
    for (id, expected) in [(with_batch, Some(batch)), (without, None)] {
        let stored = stored_events(&e, id).await;
        assert_eq!(
            stored[0].metadata.get("batch_id").is_some(),
            expected.is_some(),
            "only batch events carry the key"
        );
        let env = e.bus.codec().decode(&stored[0]).await.unwrap();
        assert_eq!(env.metadata.batch_id, expected);
    }
}

async fn a_key_destroyed_by_another_node_stops_decrypting_here_once_the_cache_lifetime_passes(
    e: Env,
) {
    let id = CustomerId::from_uuid(Uuid::now_v7());
    run(&e, id, create(id)).await.unwrap();
    // Another node: its own vault and cache, short-lived for the test.
    let other = Arc::new(
        Vault::new(
            e.stores.keys.clone(),
            e.bus.codec().vault().master().clone(),
            10,
        )
        .with_cache_ttl(std::time::Duration::from_millis(300)),
    );
    assert!(matches!(
        other.for_read(&id.subject()).await.unwrap(),
        SubjectKey::Live(_)
    ));
    // This node erases; the other one did not hear of it (no signal).
    e.bus.codec().vault().destroy(&id.subject()).await.unwrap();
    assert!(
        matches!(
            other.for_read(&id.subject()).await.unwrap(),
            SubjectKey::Live(_)
        ),
        "still cached on the other node"
    );
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    assert!(
        matches!(
            other.for_read(&id.subject()).await.unwrap(),
            SubjectKey::Erased
        ),
        "past its lifetime the cached key is read again from the key table"
    );
}

macro_rules! both {
    ($($name:ident),* $(,)?) => {
        mod sqlite { use super::*; $( #[tokio::test(flavor = "multi_thread", worker_threads = 4)] async fn $name() { super::$name(env(false).await).await } )* }
        mod postgres { use super::*; $( #[tokio::test(flavor = "multi_thread", worker_threads = 4)] async fn $name() { super::$name(env(true).await).await } )* }
    };
}

both!(
    a_fold_decodes_the_same_event_without_its_security_metadata,
    a_batch_id_is_stored_in_clear_metadata_and_read_back_only_where_given,
    personal_fields_are_ciphertext_in_the_log_and_plaintext_when_read,
    after_erasure_every_field_reads_erased_and_the_key_is_never_recreated,
    a_legacy_v1_event_in_the_log_is_upcast_on_every_read_path,
    concurrent_updates_to_one_customer_all_land_through_retries,
    a_stale_if_match_is_refused_without_appending,
    a_new_customers_key_is_stored_with_its_first_event,
    a_create_whose_subject_already_has_a_key_uses_that_key,
    a_create_for_an_erased_subject_appends_nothing,
    a_stale_cached_aggregate_is_caught_by_the_version_check,
    a_key_destroyed_by_another_node_stops_decrypting_here_once_the_cache_lifetime_passes,
);
