use super::*;
use chrono::TimeZone;
use egec_domain::customer::{
    CustomerCreated, CustomerState, CustomerStatus, CustomerUpdated, evolve,
};
use egec_domain::event::Metadata;
use egec_domain::user::{
    FIRST_SESSION_VERSION, PasswordHash, UpdateUser, UserCommand, UserState, decide as decide_user,
    evolve as evolve_user,
};
use egec_domain::values::{Country, Email, Notes, PassportNumber, PersonName, PhoneE164, Source};
use egec_domain::{CustomerId, Role, UserId};
use proptest::prelude::*;

fn t(secs: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(1_700_000_000 + secs, 0).single().unwrap()
}

fn cid(n: u128) -> CustomerId {
    CustomerId::from_uuid(Uuid::from_u128(n))
}

fn uid(n: u128) -> UserId {
    UserId::from_uuid(Uuid::from_u128(0xA000 + n))
}

fn created(id: CustomerId, at: DateTime<Utc>) -> CustomerEvent {
    CustomerEvent::Created(CustomerCreated {
        customer_id: id,
        name: Personal::Known(PersonName::parse("Amira Hassan").unwrap()),
        email: Some(Personal::Known(Email::parse("Amira@Example.com").unwrap())),
        phone: Some(Personal::Known(
            PhoneE164::parse("+44 20 7946 0958", None).unwrap(),
        )),
        passport_number: Some(Personal::Known(PassportNumber::parse("ab1234567").unwrap())),
        country: Some(Country::parse("Germany").unwrap()),
        source: Some(Source::parse("fair").unwrap()),
        status: CustomerStatus::New,
        notes: None,
        assigned_agent_ids: vec![uid(1), uid(2)],
        at,
    })
}

fn updated(id: CustomerId, changes: CustomerChanges, at: DateTime<Utc>) -> CustomerEvent {
    CustomerEvent::Updated(CustomerUpdated {
        customer_id: id,
        changes,
        at,
    })
}

/// Folds events (stream versions 1, 2, … and positions 10, 20, …) into a row.
fn fold(events: &[CustomerEvent]) -> Option<CustomerRow> {
    events.iter().enumerate().fold(None, |row, (i, e)| {
        apply_customer(row, e, i as i64 + 1, (i as i64 + 1) * 10)
    })
}

fn envelope(stream_id: String, version: i64, position: i64, event: DomainEvent) -> Envelope {
    Envelope {
        position,
        stream_id,
        stream_version: version,
        event_id: Uuid::from_u128(position as u128),
        command_id: Uuid::from_u128(position as u128),
        recorded_at: t(position),
        metadata: Metadata::system(Uuid::nil(), t(position)),
        event,
    }
}

fn customer_env(version: i64, position: i64, event: CustomerEvent) -> Envelope {
    envelope(
        event.customer_id().stream_id(),
        version,
        position,
        DomainEvent::Customer(event),
    )
}

#[test]
fn a_created_event_makes_a_row_with_every_field_as_decoded() {
    let row = fold(&[created(cid(1), t(0))]).unwrap();
    assert_eq!(
        row,
        CustomerRow {
            id: Uuid::from_u128(1),
            name: "Amira Hassan".into(),
            email: Some("amira@example.com".into()),
            phone: Some("+442079460958".into()),
            passport_number: Some("AB1234567".into()),
            country: Some("Germany".into()),
            source: Some("fair".into()),
            status: CustomerStatus::New,
            notes: None,
            assigned_agent_ids: vec![uid(1).as_uuid(), uid(2).as_uuid()],
            created_at: t(0),
            updated_at: t(0),
            version: 1,
            deleted: false,
            erased: false,
            last_position: 10,
        }
    );
}

#[test]
fn an_update_changes_only_the_fields_it_names_and_clears_the_ones_it_clears() {
    let changes = CustomerChanges {
        status: Some(CustomerStatus::Contacted),
        phone: Some(None),
        notes: Some(Some(Personal::Known(Notes::parse("called back").unwrap()))),
        ..Default::default()
    };
    let row = fold(&[created(cid(1), t(0)), updated(cid(1), changes, t(5))]).unwrap();
    assert_eq!(row.status, CustomerStatus::Contacted);
    assert_eq!(row.phone, None);
    assert_eq!(row.notes.as_deref(), Some("called back"));
    assert_eq!(row.name, "Amira Hassan");
    assert_eq!(row.email.as_deref(), Some("amira@example.com"));
    assert_eq!(row.created_at, t(0));
    assert_eq!(row.updated_at, t(5));
    assert_eq!(row.version, 2);
    assert_eq!(row.last_position, 20);
}

#[test]
fn an_erasure_leaves_every_personal_field_erased_and_keeps_status_assignment_and_times() {
    let changes = CustomerChanges {
        status: Some(CustomerStatus::Qualified),
        notes: Some(Some(Personal::Known(
            Notes::parse("prefers email").unwrap(),
        ))),
        ..Default::default()
    };
    let row = fold(&[
        created(cid(1), t(0)),
        updated(cid(1), changes, t(5)),
        CustomerEvent::Erased {
            customer_id: cid(1),
            reason: "art. 17 request".into(),
            at: t(9),
        },
    ])
    .unwrap();
    assert_eq!(row.name, ERASED);
    assert_eq!(row.email.as_deref(), Some(ERASED));
    assert_eq!(row.phone.as_deref(), Some(ERASED));
    assert_eq!(row.passport_number.as_deref(), Some(ERASED));
    assert_eq!(row.notes.as_deref(), Some(ERASED));
    assert!(row.erased);
    // What is not personal survives, so the pipeline and the assignment stay countable.
    assert_eq!(row.status, CustomerStatus::Qualified);
    assert_eq!(row.country.as_deref(), Some("Germany"));
    assert_eq!(row.source.as_deref(), Some("fair"));
    assert_eq!(
        row.assigned_agent_ids,
        vec![uid(1).as_uuid(), uid(2).as_uuid()]
    );
    assert_eq!(row.created_at, t(0));
    assert_eq!(row.updated_at, t(9));
    assert_eq!(row.version, 3);
    assert!(!search_text(&row).contains("amira"));
}

#[test]
fn a_customer_replayed_after_erasure_reads_the_same_as_one_erased_live() {
    // After the key is destroyed, a rebuild decodes the creation with every stored personal
    // value erased; it must arrive at the very row the live fold produced.
    let live = fold(&[
        created(cid(1), t(0)),
        CustomerEvent::Erased {
            customer_id: cid(1),
            reason: "r".into(),
            at: t(1),
        },
    ])
    .unwrap();
    let CustomerEvent::Created(mut c) = created(cid(1), t(0)) else {
        unreachable!()
    };
    c.name = Personal::Erased;
    c.email = Some(Personal::Erased);
    c.phone = Some(Personal::Erased);
    c.passport_number = Some(Personal::Erased);
    let replayed = fold(&[
        CustomerEvent::Created(c),
        CustomerEvent::Erased {
            customer_id: cid(1),
            reason: "r".into(),
            at: t(1),
        },
    ])
    .unwrap();
    assert_eq!(live, replayed);
}

#[test]
fn a_deleted_customer_keeps_its_row_and_is_marked_deleted() {
    let row = fold(&[
        created(cid(1), t(0)),
        CustomerEvent::Deleted {
            customer_id: cid(1),
            at: t(3),
        },
    ])
    .unwrap();
    assert!(row.deleted);
    assert_eq!(row.name, "Amira Hassan");
    assert_eq!(row.updated_at, t(3));
}

#[test]
fn events_for_a_customer_that_does_not_exist_change_nothing() {
    let orphan = updated(
        cid(1),
        CustomerChanges {
            status: Some(CustomerStatus::Lost),
            ..Default::default()
        },
        t(1),
    );
    assert_eq!(apply_customer(None, &orphan, 1, 10), None);
}

#[test]
fn a_second_created_event_changes_nothing() {
    let first = fold(&[created(cid(1), t(0))]).unwrap();
    let again = apply_customer(Some(first.clone()), &created(cid(1), t(7)), 2, 20);
    assert_eq!(again, Some(first));
}

#[test]
fn times_are_kept_to_the_microsecond_both_backends_store() {
    let at = t(0) + chrono::Duration::nanoseconds(1_234_567);
    let row = fold(&[created(cid(1), at)]).unwrap();
    assert_eq!(row.created_at, t(0) + chrono::Duration::microseconds(1_234));
}

#[test]
fn a_user_row_starts_active_and_never_holds_the_password_hash() {
    let hash = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNo";
    let e = UserEvent::Created {
        user_id: uid(7),
        email: Personal::Known(Email::parse("ops@example.com").unwrap()),
        name: Personal::Known(PersonName::parse("Omar Farouk").unwrap()),
        role: Role::Agent,
        password_hash: Personal::Known(PasswordHash::parse(hash).unwrap()),
        at: t(0),
    };
    let row = apply_user(None, &e, 1, 4).unwrap();
    assert_eq!(
        row,
        UserRow {
            id: uid(7).as_uuid(),
            email: "ops@example.com".into(),
            name: "Omar Farouk".into(),
            role: Role::Agent,
            active: true,
            created_at: t(0),
            version: 1,
            last_position: 4,
            session_version: 1,
            mfa_enabled: false,
            must_change_password: false,
            password_changed_at: t(0),
        }
    );
    let json = serde_json::to_string(&row).unwrap();
    assert!(!json.contains("argon2"), "{json}");
    assert!(!json.contains("password_hash"), "{json}");
}

#[test]
fn a_user_row_tracks_two_factor_a_forced_password_change_and_the_password_age() {
    let hash = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNo";
    let created = UserEvent::Created {
        user_id: uid(7),
        email: Personal::Known(Email::parse("ops@example.com").unwrap()),
        name: Personal::Known(PersonName::parse("Omar Farouk").unwrap()),
        role: Role::Admin,
        password_hash: Personal::Known(PasswordHash::parse(hash).unwrap()),
        at: t(0),
    };
    let codes =
        egec_domain::user::credentials::BackupCodeHashes::new(vec!["a".repeat(64); 10]).unwrap();
    let mut row = apply_user(None, &created, 1, 1);
    for (i, e) in [
        UserEvent::TotpEnabled {
            user_id: uid(7),
            backup_codes: Personal::Known(codes),
            step: 1,
            at: t(1),
        },
        UserEvent::PasswordChangeRequired {
            user_id: uid(7),
            at: t(2),
        },
    ]
    .iter()
    .enumerate()
    {
        row = apply_user(row, e, 2 + i as i64, 2 + i as i64);
    }
    let r = row.clone().unwrap();
    assert!(r.mfa_enabled && r.must_change_password);
    assert_eq!(r.password_changed_at, t(0));
    let changed = UserEvent::PasswordChanged {
        user_id: uid(7),
        password_hash: Personal::Known(PasswordHash::parse(hash).unwrap()),
        session_version: 2,
        at: t(3),
    };
    let r = apply_user(row, &changed, 4, 4).unwrap();
    assert!(!r.must_change_password);
    assert_eq!(r.password_changed_at, t(3));
    assert_eq!(r.session_version, 2);
    let off = UserEvent::TotpDisabled {
        user_id: uid(7),
        at: t(4),
    };
    assert!(!apply_user(Some(r), &off, 5, 5).unwrap().mfa_enabled);
}

#[test]
fn the_search_text_covers_the_four_searchable_fields_lowercased_and_skips_erased_ones() {
    let mut row = fold(&[created(cid(1), t(0))]).unwrap();
    let s = search_text(&row);
    for part in [
        "amira hassan",
        "amira@example.com",
        "+442079460958",
        "ab1234567",
    ] {
        assert!(s.contains(part), "{s:?} lacks {part:?}");
    }
    // Country and notes are not searched.
    assert!(!s.contains("germany"));
    row.email = Some(ERASED.into());
    assert!(!search_text(&row).contains("[erased]"));
}

#[test]
fn a_search_term_matches_within_one_field_only() {
    let row = fold(&[created(cid(1), t(0))]).unwrap();
    let s = search_text(&row);
    // The end of the name followed by the start of the email must not match.
    let across = search_needle("hassanamira").unwrap();
    assert!(!s.contains(&across));
    let with_control = search_needle("hassan\u{1f}amira").unwrap();
    assert!(!s.contains(&with_control));
}

#[test]
fn a_search_term_is_trimmed_and_lowercased_and_an_empty_one_is_none() {
    assert_eq!(search_needle("  AMIRA "), Some("amira".into()));
    assert_eq!(search_needle("Ünal"), Some("ünal".into()));
    assert_eq!(search_needle("   "), None);
    assert_eq!(search_needle("\u{1f}"), None);
}

#[test]
fn a_batch_loads_only_rows_whose_stream_began_before_it() {
    let fresh = cid(1);
    let old = cid(2);
    let envs = vec![
        customer_env(1, 1, created(fresh, t(0))),
        customer_env(
            4,
            2,
            CustomerEvent::Deleted {
                customer_id: old,
                at: t(1),
            },
        ),
        customer_env(
            2,
            3,
            CustomerEvent::Deleted {
                customer_id: fresh,
                at: t(2),
            },
        ),
    ];
    let Work::Customers(plan) = Work::plan(ProjectionKind::Customers, envs) else {
        panic!("customers work expected");
    };
    assert_eq!(plan.load, vec![old.as_uuid()]);
    assert_eq!(plan.steps.len(), 3);
}

#[test]
fn a_batch_skips_events_of_other_projections() {
    let user = UserEvent::Created {
        user_id: uid(1),
        email: Personal::Erased,
        name: Personal::Erased,
        role: Role::Admin,
        password_hash: Personal::Erased,
        at: t(0),
    };
    let envs = vec![
        envelope(uid(1).stream_id(), 1, 1, DomainEvent::User(user)),
        customer_env(1, 2, created(cid(1), t(0))),
    ];
    assert_eq!(Work::plan(ProjectionKind::Customers, envs.clone()).len(), 1);
    assert_eq!(Work::plan(ProjectionKind::Users, envs).len(), 1);
}

#[test]
fn a_row_touched_many_times_in_a_batch_is_written_once_with_its_final_state() {
    let envs = vec![
        customer_env(1, 1, created(cid(1), t(0))),
        customer_env(1, 2, created(cid(2), t(0))),
        customer_env(
            2,
            3,
            updated(
                cid(1),
                CustomerChanges {
                    status: Some(CustomerStatus::Contacted),
                    ..Default::default()
                },
                t(1),
            ),
        ),
        customer_env(
            3,
            4,
            CustomerEvent::Deleted {
                customer_id: cid(1),
                at: t(2),
            },
        ),
    ];
    let Work::Customers(plan) = Work::plan(ProjectionKind::Customers, envs) else {
        panic!("customers work expected");
    };
    let touched = fold_customers(&plan, vec![]);
    assert_eq!(touched.len(), 2);
    assert_eq!(touched[0].row.id, cid(1).as_uuid());
    assert!(touched[0].before.is_none());
    assert_eq!(touched[0].row.status, CustomerStatus::Contacted);
    assert!(touched[0].row.deleted);
    assert_eq!(touched[0].row.version, 3);
    assert_eq!(touched[0].row.last_position, 4);
    assert_eq!(touched[1].row.id, cid(2).as_uuid());
}

#[test]
fn a_batch_folds_on_from_the_stored_row_and_skips_rows_it_does_not_change() {
    let stored = fold(&[created(cid(1), t(0))]).unwrap();
    let envs = vec![
        // A duplicate creation changes nothing, so the row is not rewritten.
        customer_env(2, 30, created(cid(1), t(5))),
    ];
    let Work::Customers(plan) = Work::plan(ProjectionKind::Customers, envs) else {
        panic!("customers work expected");
    };
    assert!(fold_customers(&plan, vec![stored.clone()]).is_empty());

    let envs = vec![customer_env(
        2,
        31,
        CustomerEvent::Deleted {
            customer_id: cid(1),
            at: t(6),
        },
    )];
    let Work::Customers(plan) = Work::plan(ProjectionKind::Customers, envs) else {
        panic!("customers work expected");
    };
    let touched = fold_customers(&plan, vec![stored.clone()]);
    assert_eq!(touched.len(), 1);
    assert_eq!(touched[0].before.as_ref(), Some(&stored));
    assert!(touched[0].row.deleted);
    assert_eq!(touched[0].row.name, stored.name);
}

#[test]
fn merged_batches_fold_like_the_batches_one_after_another() {
    let first = vec![customer_env(1, 1, created(cid(1), t(0)))];
    let second = vec![
        customer_env(1, 2, created(cid(2), t(1))),
        customer_env(
            2,
            3,
            CustomerEvent::Deleted {
                customer_id: cid(1),
                at: t(2),
            },
        ),
    ];
    let third = vec![customer_env(
        5,
        4,
        CustomerEvent::Deleted {
            customer_id: cid(3),
            at: t(3),
        },
    )];
    let mut merged = Work::plan(ProjectionKind::Customers, first);
    merged.extend(Work::plan(ProjectionKind::Customers, second));
    merged.extend(Work::plan(ProjectionKind::Customers, third));
    let Work::Customers(plan) = merged else {
        panic!("customers work expected");
    };
    // Customer 1 and 2 began inside the merged batch; customer 3 began before it.
    assert_eq!(plan.load, vec![cid(3).as_uuid()]);
    let touched = fold_customers(&plan, vec![]);
    assert_eq!(touched.len(), 2);
    assert!(touched[0].row.deleted);
}

// ---- the row fold agrees with the domain's evolve ---------------------------------------

#[derive(Debug, Clone)]
enum Op {
    Status(usize),
    Name(u8),
    Email(Option<u8>),
    Phone(Option<u8>),
    Passport(Option<u8>),
    Notes(Option<u8>),
    Country(Option<u8>),
    Attach(u8),
    Delete,
    Erase,
    Assign(Vec<u8>),
    Bulk(Option<usize>, Option<Vec<u8>>),
    Revert(Option<usize>, Option<Vec<u8>>),
}

fn agents_of(ns: &[u8]) -> Vec<UserId> {
    ns.iter().map(|n| uid(u128::from(*n))).collect()
}

fn bulk_fields(
    id: CustomerId,
    status: &Option<usize>,
    agents: &Option<Vec<u8>>,
    at: DateTime<Utc>,
) -> egec_domain::customer::BulkFields {
    egec_domain::customer::BulkFields {
        customer_id: id,
        status: status.map(|i| CustomerStatus::ALL[i]),
        assigned_agent_ids: agents.as_deref().map(agents_of),
        at,
    }
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0usize..6).prop_map(Op::Status),
        any::<u8>().prop_map(Op::Name),
        proptest::option::of(any::<u8>()).prop_map(Op::Email),
        proptest::option::of(any::<u8>()).prop_map(Op::Phone),
        proptest::option::of(any::<u8>()).prop_map(Op::Passport),
        proptest::option::of(any::<u8>()).prop_map(Op::Notes),
        proptest::option::of(any::<u8>()).prop_map(Op::Country),
        any::<u8>().prop_map(Op::Attach),
        Just(Op::Delete),
        Just(Op::Erase),
        proptest::collection::vec(any::<u8>(), 0..3).prop_map(Op::Assign),
        (
            proptest::option::of(0usize..6),
            proptest::option::of(proptest::collection::vec(any::<u8>(), 0..3))
        )
            .prop_map(|(s, a)| Op::Bulk(s, a)),
        (
            proptest::option::of(0usize..6),
            proptest::option::of(proptest::collection::vec(any::<u8>(), 0..3))
        )
            .prop_map(|(s, a)| Op::Revert(s, a)),
    ]
}

fn event_of(op: &Op, id: CustomerId, at: DateTime<Utc>) -> CustomerEvent {
    let k = |v: String| Personal::Known(v);
    let mut ch = CustomerChanges::default();
    match op {
        Op::Status(i) => ch.status = Some(CustomerStatus::ALL[*i]),
        Op::Name(n) => {
            ch.name = Some(k(format!("Name {n}")).map(|s| PersonName::parse(&s).unwrap()))
        }
        Op::Email(v) => {
            ch.email = Some(
                v.map(|n| Personal::Known(Email::parse(&format!("p{n}@example.com")).unwrap())),
            )
        }
        Op::Phone(v) => {
            ch.phone = Some(v.map(|n| {
                Personal::Known(
                    PhoneE164::parse(&format!("+2010123456{:02}", n % 100), None).unwrap(),
                )
            }))
        }
        Op::Passport(v) => {
            ch.passport_number = Some(
                v.map(|n| Personal::Known(PassportNumber::parse(&format!("X{n:06}")).unwrap())),
            )
        }
        Op::Notes(v) => {
            ch.notes = Some(v.map(|n| Personal::Known(Notes::parse(&format!("note {n}")).unwrap())))
        }
        Op::Country(v) => {
            ch.country = Some(v.map(|n| Country::parse(&format!("Land {n}")).unwrap()))
        }
        Op::Attach(n) => {
            use egec_domain::values::{AttachmentType, FileName, Sha256Hex};
            return CustomerEvent::AttachmentAdded(egec_domain::customer::AttachmentAdded {
                customer_id: id,
                attachment_id: uuid::Uuid::from_u128(u128::from(*n)),
                file_name: k(format!("file {n}.pdf")).map(|s| FileName::parse(&s).unwrap()),
                content_type: AttachmentType::Pdf,
                size: u64::from(*n),
                ciphertext_hash: Sha256Hex::parse(&"ab".repeat(32)).unwrap(),
                at,
            });
        }
        Op::Delete => {
            return CustomerEvent::Deleted {
                customer_id: id,
                at,
            };
        }
        Op::Erase => {
            return CustomerEvent::Erased {
                customer_id: id,
                reason: "r".into(),
                at,
            };
        }
        Op::Assign(ns) => {
            return CustomerEvent::AgentsAssigned {
                customer_id: id,
                agent_ids: agents_of(ns),
                at,
            };
        }
        Op::Bulk(s, a) => return CustomerEvent::BulkEdited(bulk_fields(id, s, a, at)),
        Op::Revert(s, a) => return CustomerEvent::BulkEditReverted(bulk_fields(id, s, a, at)),
    }
    updated(id, ch, at)
}

proptest! {
    #[test]
    fn the_row_fold_agrees_with_the_domain_evolve_for_any_sequence_of_events(
        ops in proptest::collection::vec(op(), 0..12)
    ) {
        let id = cid(42);
        let mut events = vec![created(id, t(0))];
        events.extend(ops.iter().enumerate().map(|(i, o)| event_of(o, id, t(i as i64 + 1))));
        let state = events.iter().fold(CustomerState::Absent, evolve);
        let from_evolve = state.customer().map(|c| customer_row(c, events.len() as i64 * 10));
        prop_assert_eq!(fold(&events), from_evolve);
    }
}

fn user_created(id: UserId, role: Role) -> UserEvent {
    UserEvent::Created {
        user_id: id,
        email: Personal::Known(Email::parse("ops@example.com").unwrap()),
        name: Personal::Known(PersonName::parse("Omar Farouk").unwrap()),
        role,
        password_hash: Personal::Erased,
        at: t(0),
    }
}

#[test]
fn a_user_row_follows_renames_role_changes_deactivation_and_revoked_sessions_like_the_domain() {
    let id = uid(7);
    let mut history = vec![user_created(id, Role::Superadmin)];
    let commands = [
        UserCommand::Update(Box::new(UpdateUser {
            name: Some(PersonName::parse("Omar F").unwrap()),
            role: Some(Role::Agent),
            active: None,
            active_superadmins: 2,
        })),
        UserCommand::RevokeSessions,
        UserCommand::Update(Box::new(UpdateUser {
            name: None,
            role: None,
            active: Some(false),
            active_superadmins: 2,
        })),
        UserCommand::Update(Box::new(UpdateUser {
            name: None,
            role: None,
            active: Some(true),
            active_superadmins: 2,
        })),
    ];
    for c in commands {
        let state = history.iter().fold(UserState::Absent, evolve_user);
        history.extend(decide_user(&state, c, t(1)).unwrap());
    }
    let row = history.iter().enumerate().fold(None, |row, (i, e)| {
        apply_user(row, e, i as i64 + 1, (i as i64 + 1) * 10)
    });
    let row = row.unwrap();
    let UserState::Present(user) = history.iter().fold(UserState::Absent, evolve_user) else {
        panic!("user expected");
    };
    assert_eq!(row.name, "Omar F");
    assert_eq!(row.role, user.role);
    assert_eq!(row.active, user.active);
    assert!(row.active);
    assert_eq!(row.session_version, user.session_version);
    assert_eq!(row.session_version, FIRST_SESSION_VERSION + 3);
    assert_eq!(row.version, history.len() as i64);
    assert_eq!(row.last_position, history.len() as i64 * 10);
}

#[test]
fn a_change_to_a_user_that_was_never_created_makes_no_row() {
    let e = UserEvent::SessionsRevoked {
        user_id: uid(1),
        session_version: 2,
        at: t(0),
    };
    assert_eq!(apply_user(None, &e, 2, 5), None);
}

fn logged_out(session: u128, user: UserId, at: DateTime<Utc>) -> DomainEvent {
    DomainEvent::Login(egec_domain::user::LoginEvent::LoggedOut {
        user_id: user,
        session_id: Uuid::from_u128(session),
        at,
    })
}

#[test]
fn the_sessions_projection_folds_logouts_only_and_keeps_the_first_end_of_a_session() {
    let login = DomainEvent::Login(egec_domain::user::LoginEvent::Succeeded {
        user_id: uid(1),
        session_id: Uuid::from_u128(1),
        at: t(0),
    });
    let stream = format!("login-{}-202611", uid(1));
    let envs = vec![
        envelope(stream.clone(), 1, 1, login),
        envelope(stream.clone(), 2, 2, logged_out(1, uid(1), t(5))),
        envelope(stream.clone(), 3, 3, logged_out(1, uid(1), t(9))),
        envelope(
            uid(1).stream_id(),
            1,
            4,
            DomainEvent::User(user_created(uid(1), Role::Agent)),
        ),
    ];
    assert_eq!(Work::plan(ProjectionKind::Users, envs.clone()).len(), 1);
    let Work::Sessions(plan) = Work::plan(ProjectionKind::Sessions, envs) else {
        panic!("sessions work expected");
    };
    assert_eq!(plan.steps.len(), 2);
    assert_eq!(plan.load, vec![Uuid::from_u128(1)]);
    let touched = fold_sessions(&plan, vec![]);
    assert_eq!(
        touched,
        vec![Touched {
            row: SessionRow {
                id: Uuid::from_u128(1),
                user_id: uid(1).as_uuid(),
                ended_at: t(5),
                last_position: 2,
            },
            before: None,
        }]
    );
    // Stored already: nothing to write.
    let again = fold_sessions(&plan, vec![touched[0].row.clone()]);
    assert!(again.is_empty());
}

#[test]
fn the_sessions_projection_wants_only_the_session_end_type() {
    assert!(ProjectionKind::Sessions.wants("LoginSessionEnded"));
    assert!(!ProjectionKind::Sessions.wants("LoginSucceeded"));
    assert!(!ProjectionKind::Users.wants("LoginSessionEnded"));
    assert_eq!(
        ProjectionKind::from_name("sessions"),
        Some(ProjectionKind::Sessions)
    );
}

#[test]
fn an_api_key_row_follows_rotation_revocation_and_use_and_never_goes_back_in_time() {
    use egec_domain::api_key::{ApiKeyEvent, ApiKeyName, SecretHash};
    use egec_domain::ids::ApiKeyId;
    use egec_domain::permission::Action;
    let id = ApiKeyId::from_uuid(Uuid::from_u128(77));
    let h = |n: u8| SecretHash::parse(&format!("{n:02x}").repeat(32)).unwrap();
    let issued = ApiKeyEvent::Issued {
        key_id: id,
        name: ApiKeyName::parse("Import").unwrap(),
        permissions: vec![Action::CustomersView],
        expires_at: None,
        secret_hash: h(1),
        prefix: "egec_abcdefg".into(),
        at: t(0),
    };
    assert_eq!(
        crate::fold::apply_api_key(
            None,
            &ApiKeyEvent::Revoked {
                key_id: id,
                at: t(1)
            },
            1,
            1
        ),
        None
    );
    let r = crate::fold::apply_api_key(None, &issued, 1, 1).unwrap();
    assert_eq!(r.permissions, vec!["customers:view".to_owned()]);
    let r = crate::fold::apply_api_key(
        Some(r),
        &ApiKeyEvent::Rotated {
            key_id: id,
            secret_hash: h(2),
            prefix: "egec_hijklmn".into(),
            previous_hash: h(1),
            grace_until: t(60),
            at: t(2),
        },
        2,
        5,
    )
    .unwrap();
    assert_eq!(r.secret_hash, h(2).as_str());
    assert_eq!(r.previous_hash.as_deref(), Some(h(1).as_str()));
    assert_eq!(r.grace_until, Some(t(60)));
    let r = crate::fold::apply_api_key(
        Some(r),
        &ApiKeyEvent::Used {
            key_id: id,
            at: t(9),
        },
        3,
        6,
    )
    .unwrap();
    let r = crate::fold::apply_api_key(
        Some(r),
        &ApiKeyEvent::Used {
            key_id: id,
            at: t(8),
        },
        4,
        7,
    )
    .unwrap();
    assert_eq!(
        r.last_used_at,
        Some(t(9)),
        "a late-arriving older use does not win"
    );
    let r = crate::fold::apply_api_key(
        Some(r),
        &ApiKeyEvent::Revoked {
            key_id: id,
            at: t(10),
        },
        5,
        8,
    )
    .unwrap();
    let r = crate::fold::apply_api_key(
        Some(r),
        &ApiKeyEvent::Revoked {
            key_id: id,
            at: t(11),
        },
        6,
        9,
    )
    .unwrap();
    assert_eq!(r.revoked_at, Some(t(10)));
    assert_eq!((r.version, r.last_position), (6, 9));
}

#[test]
fn changes_split_for_parallel_writes_keep_every_row_once_in_order() {
    let rows: Vec<Touched<CustomerRow>> = (1..=7)
        .map(|n| Touched {
            row: fold(&[created(cid(n), t(n as i64))]).expect("a created customer has a row"),
            before: None,
        })
        .collect();
    let ids = |c: &Changes| match c {
        Changes::Customers(v) => v.iter().map(|t| t.row.id).collect::<Vec<_>>(),
        _ => panic!("customer changes split into other changes"),
    };
    let all = ids(&Changes::Customers(rows.clone()));
    for parts in [1, 2, 3, 7, 10] {
        let pieces = Changes::Customers(rows.clone()).split(parts);
        assert!(pieces.len() <= parts, "{parts} parts gave {}", pieces.len());
        assert!(pieces.iter().all(|p| p.len() > 0), "an empty piece");
        let joined: Vec<Uuid> = pieces.iter().flat_map(ids).collect();
        assert_eq!(joined, all, "{parts} parts");
    }
    let empty = Changes::Customers(Vec::new()).split(2);
    assert_eq!(empty.len(), 1);
    assert_eq!(empty[0].len(), 0);
    let followups = Changes::Followups(Vec::new(), vec![cid(1).as_uuid()]).split(2);
    assert!(
        matches!(followups.as_slice(), [Changes::Followups(rows, erased)] if rows.is_empty() && erased.len() == 1)
    );
}

#[test]
fn folds_that_do_not_read_metadata_fold_alike_with_and_without_it() {
    let id = cid(9);
    let events = || {
        vec![
            customer_env(1, 1, created(id, t(1))),
            customer_env(
                2,
                2,
                updated(
                    id,
                    CustomerChanges {
                        status: Some(CustomerStatus::Contacted),
                        ..CustomerChanges::default()
                    },
                    t(2),
                ),
            ),
        ]
    };
    let with_metadata = |mut e: Envelope| {
        e.metadata = Metadata {
            actor_id: Some(uid(1)),
            actor_role: Some(Role::Admin),
            ip: Some(Personal::Known("203.0.113.9".into())),
            user_agent: Some(Personal::Known("Browser/1".into())),
            correlation_id: Uuid::from_u128(77),
            causation_id: Some(Uuid::from_u128(78)),
            batch_id: Some(Uuid::from_u128(79)),
            occurred_at: t(99),
        };
        e
    };
    let folded = |kind: ProjectionKind, envelopes: Vec<Envelope>| {
        let mut cache = FoldCache::new(kind);
        cache.fold(&Work::plan(kind, envelopes));
        format!("{:?}", cache.take_changes())
    };
    for kind in ProjectionKind::ALL
        .into_iter()
        .filter(|k| !k.reads_metadata())
    {
        assert_eq!(
            folded(kind, events().into_iter().map(with_metadata).collect()),
            folded(kind, events()),
            "{kind}"
        );
    }
    // The audit log does read it, so the check above can tell.
    assert_ne!(
        folded(
            ProjectionKind::Audit,
            events().into_iter().map(with_metadata).collect()
        ),
        folded(ProjectionKind::Audit, events())
    );
}

#[test]
fn only_the_folds_named_by_reads_metadata_touch_an_envelopes_metadata() {
    // A tripwire beside the test above: a fold that starts reading metadata must be named in
    // `ProjectionKind::reads_metadata`, or the log is read for it without any.
    let sources = [
        ("fold.rs", include_str!("../fold.rs")),
        ("fold/api_keys.rs", include_str!("api_keys.rs")),
        ("fold/followups.rs", include_str!("followups.rs")),
        ("fold/analytics.rs", include_str!("analytics.rs")),
    ];
    for (file, text) in sources {
        assert!(!text.contains(".metadata"), "{file} reads metadata");
    }
    assert!(include_str!("audit.rs").contains(".metadata"));
    assert!(ProjectionKind::Audit.reads_metadata());
}
