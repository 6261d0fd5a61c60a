//! The `analytics` projection against both backends: a history with controlled times over
//! several days is applied through the real runner in small batches, and every analytics
//! table must equal what a naive computation over the decoded log gives; a rebuild gives
//! the same tables; an erasure changes none of them; and no personal value, nor any
//! customer id, appears anywhere in them.

#[macro_use]
mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};

use chrono::{DateTime, Datelike, Duration, NaiveDate, SubsecRound, TimeZone, Utc};
use common::{Env, WAIT, tiny};
use egec_domain::customer::{
    BulkFields, CustomerChanges, CustomerCreated, CustomerEvent, CustomerStatus, CustomerUpdated,
};
use egec_domain::event::{DomainEvent, Envelope};
use egec_domain::followup::{FollowupEvent, FollowupScheduled};
use egec_domain::ids::FollowupId;
use egec_domain::personal::Personal;
use egec_domain::user::{LoginEvent, LoginFailure, UserEvent, login_stream_id};
use egec_domain::values::{Email, Notes, PassportNumber, PersonName, PhoneE164, Source};
use egec_domain::{CustomerId, Role, UserId};
use uuid::Uuid;

on_both_backends!(
    analytics_numbers_equal_counts_computed_from_the_log,
    a_rebuild_gives_the_live_tables_and_an_erasure_changes_no_analytics_row,
    no_analytics_table_holds_personal_data_or_a_customer_id,
    a_stored_version_other_than_the_builds_rebuilds_the_analytics_tables_at_start_up,
);

/// Day `d` of June 2025 at hour `h`, UTC.
fn t(d: i64, h: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2025, 6, 1, 0, 0, 0).unwrap() + Duration::days(d - 1) + Duration::hours(h)
}

/// A time far in the future: a follow-up due then is neither overdue nor due today.
fn future() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2100, 1, 1, 12, 0, 0).unwrap()
}

/// Personal values of the history, distinctive enough that finding one in a dump is proof.
fn name(n: u32) -> String {
    format!("Quintavius Personname{n}")
}
fn email(n: u32) -> String {
    format!("quintavius{n}@secret-mail.example")
}
fn phone(n: u32) -> String {
    format!("+20101{:07}", 4_242_000 + n)
}
fn passport(n: u32) -> String {
    format!("P{:07}", 7_313_000 + n)
}
fn notes(n: u32) -> String {
    format!("Confidentialnote {n} about the visa")
}

async fn put(
    env: &Env,
    subject: &str,
    stream: String,
    event: DomainEvent,
    at: DateTime<Utc>,
) -> i64 {
    let stored = env.encode(subject, &event, at).await;
    env.append(stream, vec![stored]).await.last_position
}

async fn customer(
    env: &Env,
    n: u32,
    status: CustomerStatus,
    source: Option<&str>,
    agents: &[UserId],
    at: DateTime<Utc>,
) -> CustomerId {
    let id = CustomerId::from_uuid(Uuid::now_v7());
    let event = DomainEvent::Customer(CustomerEvent::Created(CustomerCreated {
        customer_id: id,
        name: Personal::Known(PersonName::parse(&name(n)).unwrap()),
        email: Some(Personal::Known(Email::parse(&email(n)).unwrap())),
        phone: Some(Personal::Known(PhoneE164::parse(&phone(n), None).unwrap())),
        passport_number: Some(Personal::Known(
            PassportNumber::parse(&passport(n)).unwrap(),
        )),
        country: None,
        source: source.map(|s| Source::parse(s).unwrap()),
        status,
        notes: Some(Personal::Known(Notes::parse(&notes(n)).unwrap())),
        assigned_agent_ids: agents.to_vec(),
        at,
    }));
    put(env, &id.subject(), id.stream_id(), event, at).await;
    id
}

async fn set_status(env: &Env, id: CustomerId, s: CustomerStatus, at: DateTime<Utc>) {
    let event = DomainEvent::Customer(CustomerEvent::Updated(CustomerUpdated {
        customer_id: id,
        changes: CustomerChanges {
            status: Some(s),
            ..Default::default()
        },
        at,
    }));
    put(env, &id.subject(), id.stream_id(), event, at).await;
}

async fn set_source(env: &Env, id: CustomerId, s: &str, at: DateTime<Utc>) {
    let event = DomainEvent::Customer(CustomerEvent::Updated(CustomerUpdated {
        customer_id: id,
        changes: CustomerChanges {
            source: Some(Some(Source::parse(s).unwrap())),
            // A personal change in the same event: never seen by analytics.
            name: Some(Personal::Known(
                PersonName::parse("Quintavius Renamed").unwrap(),
            )),
            ..Default::default()
        },
        at,
    }));
    put(env, &id.subject(), id.stream_id(), event, at).await;
}

async fn bulk(
    env: &Env,
    id: CustomerId,
    s: Option<CustomerStatus>,
    agents: Option<Vec<UserId>>,
    revert: bool,
    at: DateTime<Utc>,
) {
    let fields = BulkFields {
        customer_id: id,
        status: s,
        assigned_agent_ids: agents,
        at,
    };
    let event = DomainEvent::Customer(if revert {
        CustomerEvent::BulkEditReverted(fields)
    } else {
        CustomerEvent::BulkEdited(fields)
    });
    put(env, &id.subject(), id.stream_id(), event, at).await;
}

async fn assign(env: &Env, id: CustomerId, agents: Vec<UserId>, at: DateTime<Utc>) {
    let event = DomainEvent::Customer(CustomerEvent::AgentsAssigned {
        customer_id: id,
        agent_ids: agents,
        at,
    });
    put(env, &id.subject(), id.stream_id(), event, at).await;
}

async fn delete(env: &Env, id: CustomerId, at: DateTime<Utc>) {
    let event = DomainEvent::Customer(CustomerEvent::Deleted {
        customer_id: id,
        at,
    });
    put(env, &id.subject(), id.stream_id(), event, at).await;
}

async fn schedule(
    env: &Env,
    id: CustomerId,
    to: UserId,
    due: DateTime<Utc>,
    at: DateTime<Utc>,
) -> FollowupId {
    let f = FollowupId::from_uuid(Uuid::now_v7());
    let event = DomainEvent::Followup(FollowupEvent::Scheduled(FollowupScheduled {
        followup_id: f,
        customer_id: id,
        due_at: due,
        note: Personal::Known(Notes::parse("Confidentialnote on the follow-up").unwrap()),
        assigned_to: to,
        at,
    }));
    put(env, &id.subject(), f.stream_id(), event, at).await;
    f
}

async fn complete(env: &Env, f: FollowupId, id: CustomerId, by: UserId, at: DateTime<Utc>) {
    let event = DomainEvent::Followup(FollowupEvent::Completed {
        followup_id: f,
        customer_id: id,
        completed_by: by,
        at,
    });
    put(env, &id.subject(), f.stream_id(), event, at).await;
}

async fn login(env: &Env, user: UserId, ok: bool, at: DateTime<Utc>) {
    let event = DomainEvent::Login(if ok {
        LoginEvent::Succeeded {
            user_id: user,
            session_id: Uuid::now_v7(),
            at,
        }
    } else {
        LoginEvent::Failed {
            user_id: user,
            reason: LoginFailure::WrongPassword,
            at,
        }
    });
    put(env, &user.subject(), login_stream_id(user, at), event, at).await;
}

/// What the history made, for the tests to refer to.
struct History {
    customers: Vec<CustomerId>,
    /// A live, assigned customer with an open follow-up: the one the erasure test erases.
    to_erase: CustomerId,
}

/// Customers with several sources over eight days (with days without any event), status
/// changes by update, bulk edit and bulk undo, assignments, deletions, an erasure,
/// follow-ups scheduled and completed, and logins and failures by users of four roles, one
/// of whom changes role half-way.
async fn history(env: &Env) -> History {
    use CustomerStatus::*;
    let (a1, _) = env
        .create_user("agent.one@staff.example", "Agent One", Role::Agent)
        .await;
    let (a2, _) = env
        .create_user("agent.two@staff.example", "Agent Two", Role::Agent)
        .await;
    let (admin, _) = env
        .create_user("admin@staff.example", "Admin Person", Role::Admin)
        .await;
    let (sup, _) = env
        .create_user("super@staff.example", "Super Agent", Role::Superagent)
        .await;

    let c1 = customer(env, 1, New, Some("fair"), &[a1], t(1, 9)).await;
    let c2 = customer(env, 2, New, Some("web"), &[a1], t(1, 10)).await;
    let c3 = customer(env, 3, Contacted, None, &[a2], t(1, 11)).await;
    let c4 = customer(env, 4, New, Some("fair"), &[], t(1, 12)).await;
    login(env, a1, true, t(1, 8)).await;
    login(env, a1, false, t(1, 8)).await;
    login(env, admin, true, t(1, 13)).await;

    set_status(env, c1, Contacted, t(2, 9)).await;
    set_status(env, c2, Qualified, t(2, 10)).await;
    let f1 = schedule(env, c1, a1, t(5, 9), t(2, 11)).await;
    let f2 = schedule(env, c2, a1, t(3, 9), t(2, 11)).await;
    let _f3 = schedule(env, c3, a2, future(), t(2, 12)).await;
    login(env, a2, true, t(2, 8)).await;

    // Day 3: nothing. Day 4: a bulk edit of two customers (status and agents).
    bulk(env, c1, Some(Applied), Some(vec![a2]), false, t(4, 9)).await;
    bulk(env, c2, Some(Applied), Some(vec![a2]), false, t(4, 9)).await;
    let c5 = customer(env, 5, New, Some("referral"), &[a1, a2], t(4, 10)).await;
    env.user_event(UserEvent::RoleChanged {
        user_id: a2,
        from: Role::Agent,
        to: Role::Superagent,
        session_version: 2,
        at: t(4, 11),
    })
    .await;
    login(env, a2, true, t(4, 12)).await;
    login(env, sup, false, t(4, 12)).await;
    login(env, sup, false, t(4, 13)).await;

    set_status(env, c2, Enrolled, t(5, 9)).await;
    set_status(env, c3, Lost, t(5, 10)).await;
    complete(env, f2, c2, a1, t(5, 11)).await;
    delete(env, c4, t(5, 12)).await;
    let c6 = customer(env, 6, New, Some("web"), &[a1], t(5, 13)).await;
    let _f6 = schedule(env, c6, a1, t(7, 9), t(5, 14)).await;
    set_source(env, c5, "partner", t(5, 15)).await;

    // Day 6: the bulk edit of c1 is undone; c2 (enrolled) is moved back by an undo too,
    // and stays counted as ever enrolled.
    bulk(env, c1, Some(Contacted), Some(vec![a1]), true, t(6, 9)).await;
    bulk(env, c2, Some(Qualified), None, true, t(6, 9)).await;
    let c7 = customer(env, 7, Enrolled, Some("fair"), &[a1], t(6, 10)).await;
    env.erase(c6).await;
    let _f5 = schedule(env, c5, a2, t(9, 9), t(6, 11)).await;
    assign(env, c5, vec![a2], t(6, 12)).await;
    login(env, admin, true, t(6, 13)).await;

    // Day 7: nothing. Day 8: a deleted customer with an open follow-up, a new one, and an
    // event whose time lies before the last day (it counts on day 8).
    let f8 = schedule(env, c1, a1, t(8, 9), t(8, 8)).await;
    complete(env, f1, c1, a1, t(8, 9)).await;
    let c8 = customer(env, 8, New, None, &[a1], t(8, 10)).await;
    delete(env, c3, t(8, 11)).await;
    set_status(env, c8, Contacted, t(7, 23)).await;
    login(env, sup, true, t(8, 12)).await;
    let _ = f8;
    History {
        customers: vec![c1, c2, c3, c4, c5, c6, c7, c8],
        to_erase: c5,
    }
}

/// Every analytics table and the view, as sorted lines of `|`-joined columns.
type Tables = BTreeMap<&'static str, Vec<String>>;

const PG_DUMPS: [(&str, &str); 7] = [
    (
        "customers_by_status_daily",
        "SELECT day::text || '|' || status || '|' || customers || '|' || entered || '|' || exited \
         FROM analytics.customers_by_status_daily",
    ),
    (
        "conversion_by_source",
        "SELECT source || '|' || customers || '|' || enrolled || '|' || lost \
         FROM analytics.conversion_by_source",
    ),
    (
        "time_in_status",
        "SELECT status || '|' || month::text || '|' || exits || '|' || total_seconds \
         FROM analytics.time_in_status",
    ),
    (
        "agent_open_customers",
        "SELECT agent_id::text || '|' || open_customers FROM analytics.agent_open_customers",
    ),
    (
        "agent_open_followups",
        "SELECT agent_id::text || '|' || \
           to_char(due_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS') || '|' || followups \
         FROM analytics.agent_open_followups",
    ),
    (
        "logins_daily",
        "SELECT day::text || '|' || role || '|' || logins || '|' || failures \
         FROM analytics.logins_daily",
    ),
    (
        "agent_workload",
        "SELECT agent_id::text || '|' || open_customers || '|' || followups_due_today || '|' \
           || followups_overdue || '|' || followups_open FROM analytics.agent_workload",
    ),
];

const SQLITE_DUMPS: [(&str, &str); 7] = [
    (
        "customers_by_status_daily",
        "SELECT day || '|' || status || '|' || customers || '|' || entered || '|' || exited \
         FROM customers_by_status_daily",
    ),
    (
        "conversion_by_source",
        "SELECT source || '|' || customers || '|' || enrolled || '|' || lost \
         FROM conversion_by_source",
    ),
    (
        "time_in_status",
        "SELECT status || '|' || month || '|' || exits || '|' || total_seconds \
         FROM time_in_status",
    ),
    (
        "agent_open_customers",
        "SELECT agent_id || '|' || open_customers FROM agent_open_customers",
    ),
    (
        "agent_open_followups",
        "SELECT agent_id || '|' || due_at || '|' || followups FROM agent_open_followups",
    ),
    (
        "logins_daily",
        "SELECT day || '|' || role || '|' || logins || '|' || failures FROM logins_daily",
    ),
    (
        "agent_workload",
        "SELECT agent_id || '|' || open_customers || '|' || followups_due_today || '|' \
           || followups_overdue || '|' || followups_open FROM agent_workload",
    ),
];

async fn dump(env: &Env) -> Tables {
    let mut out = Tables::new();
    match &env.pool {
        Some(pool) => {
            let conn = pool.get().await.unwrap();
            for (table, sql) in PG_DUMPS {
                let mut lines: Vec<String> = conn
                    .query(sql, &[])
                    .await
                    .unwrap_or_else(|e| panic!("{table}: {e}"))
                    .iter()
                    .map(|r| r.get::<_, String>(0))
                    .collect();
                lines.sort();
                out.insert(table, lines);
            }
        }
        None => {
            let conn = rusqlite::Connection::open(env.data_dir.join("read.db")).unwrap();
            for (table, sql) in SQLITE_DUMPS {
                let mut stmt = conn.prepare(sql).unwrap();
                let mut lines: Vec<String> = stmt
                    .query_map([], |r| r.get::<_, String>(0))
                    .unwrap()
                    .collect::<Result<_, _>>()
                    .unwrap();
                lines.sort();
                out.insert(table, lines);
            }
        }
    }
    out
}

/// Every value of every relation in the analytics schema (PostgreSQL) or of the analytics
/// tables (SQLite), whatever its columns: the personal-data check must not depend on the
/// dumps above listing every column.
async fn raw_dump(env: &Env) -> Vec<String> {
    let mut out = Vec::new();
    match &env.pool {
        Some(pool) => {
            let conn = pool.get().await.unwrap();
            let relations: Vec<String> = conn
                .query(
                    "SELECT table_name::text FROM information_schema.tables \
                     WHERE table_schema = 'analytics'",
                    &[],
                )
                .await
                .unwrap()
                .iter()
                .map(|r| r.get(0))
                .collect();
            assert!(relations.len() >= 7, "analytics relations: {relations:?}");
            for rel in relations {
                for row in conn
                    .query(
                        &format!("SELECT row_to_json(t)::text FROM analytics.{rel} t"),
                        &[],
                    )
                    .await
                    .unwrap()
                {
                    out.push(format!("{rel}: {}", row.get::<_, String>(0)));
                }
            }
        }
        None => {
            let conn = rusqlite::Connection::open(env.data_dir.join("read.db")).unwrap();
            for (rel, _) in SQLITE_DUMPS {
                let mut stmt = conn.prepare(&format!("SELECT * FROM {rel}")).unwrap();
                let n = stmt.column_count();
                let rows: Vec<String> = stmt
                    .query_map([], |r| {
                        let mut cols = Vec::new();
                        for i in 0..n {
                            let v: rusqlite::types::Value = r.get(i)?;
                            cols.push(format!("{v:?}"));
                        }
                        Ok(cols.join("|"))
                    })
                    .unwrap()
                    .collect::<Result<_, _>>()
                    .unwrap();
                out.extend(rows.into_iter().map(|r| format!("{rel}: {r}")));
            }
        }
    }
    out
}

async fn decoded_log(env: &Env) -> Vec<Envelope> {
    let mut out = Vec::new();
    let mut pos = 0;
    loop {
        let batch = env.stores.log.read_all(pos, 1_000).await.unwrap();
        let Some(last) = batch.last().map(|r| r.global_position) else {
            return out;
        };
        for rec in &batch {
            out.push(env.codec.decode(rec).await.unwrap());
        }
        pos = last;
    }
}

/// One customer as the naive computation sees it: every change of its live status with its
/// index in the log and its time (`None`: deleted), and its facts at the end of the log.
#[derive(Default)]
struct Life {
    timeline: Vec<(usize, DateTime<Utc>, Option<CustomerStatus>)>,
    source: Option<String>,
    agents: Vec<Uuid>,
    deleted: bool,
}

impl Life {
    fn status(&self) -> Option<CustomerStatus> {
        self.timeline.last().and_then(|(_, _, s)| *s)
    }

    fn move_to(&mut self, seq: usize, at: DateTime<Utc>, s: CustomerStatus) {
        if !self.deleted && self.status() != Some(s) {
            self.timeline.push((seq, at, Some(s)));
        }
    }
}

/// The analytics tables computed straight from the decoded log, the slow and obvious way:
/// each customer's life is replayed, then every day, source, month, agent and login is
/// counted from those lives. `now` decides overdue and due-today follow-ups.
fn expected(log: &[Envelope], now: DateTime<Utc>) -> Tables {
    use CustomerStatus::*;
    let mut lives: HashMap<Uuid, Life> = HashMap::new();
    let mut roles: HashMap<Uuid, Role> = HashMap::new();
    let mut followups: BTreeMap<Uuid, (Uuid, Uuid, DateTime<Utc>)> = BTreeMap::new();
    let mut done: BTreeSet<Uuid> = BTreeSet::new();
    let mut logins: BTreeMap<(NaiveDate, String), (i64, i64)> = BTreeMap::new();
    for (seq, env) in log.iter().enumerate() {
        match &env.event {
            DomainEvent::Customer(CustomerEvent::Created(c)) => {
                let id = c.customer_id.as_uuid();
                lives.insert(
                    id,
                    Life {
                        timeline: vec![(seq, c.at, Some(c.status))],
                        source: c.source.as_ref().map(|s| s.as_str().to_owned()),
                        agents: c.assigned_agent_ids.iter().map(|a| a.as_uuid()).collect(),
                        deleted: false,
                    },
                );
            }
            DomainEvent::Customer(CustomerEvent::Updated(u)) => {
                let life = lives.get_mut(&u.customer_id.as_uuid()).unwrap();
                if let Some(s) = u.changes.status {
                    life.move_to(seq, u.at, s);
                }
                if let Some(src) = &u.changes.source {
                    life.source = src.as_ref().map(|s| s.as_str().to_owned());
                }
            }
            DomainEvent::Customer(
                CustomerEvent::BulkEdited(b) | CustomerEvent::BulkEditReverted(b),
            ) => {
                let life = lives.get_mut(&b.customer_id.as_uuid()).unwrap();
                if let Some(s) = b.status {
                    life.move_to(seq, b.at, s);
                }
                if let Some(a) = &b.assigned_agent_ids {
                    life.agents = a.iter().map(|x| x.as_uuid()).collect();
                }
            }
            DomainEvent::Customer(CustomerEvent::AgentsAssigned {
                customer_id,
                agent_ids,
                ..
            }) => {
                lives.get_mut(&customer_id.as_uuid()).unwrap().agents =
                    agent_ids.iter().map(|x| x.as_uuid()).collect();
            }
            DomainEvent::Customer(CustomerEvent::Deleted { customer_id, at }) => {
                let life = lives.get_mut(&customer_id.as_uuid()).unwrap();
                if !life.deleted {
                    life.timeline.push((seq, *at, None));
                    life.deleted = true;
                }
            }
            DomainEvent::Followup(FollowupEvent::Scheduled(s)) => {
                followups.insert(
                    s.followup_id.as_uuid(),
                    (
                        s.customer_id.as_uuid(),
                        s.assigned_to.as_uuid(),
                        s.due_at.trunc_subsecs(0),
                    ),
                );
            }
            DomainEvent::Followup(FollowupEvent::Completed { followup_id, .. }) => {
                done.insert(followup_id.as_uuid());
            }
            DomainEvent::User(UserEvent::Created { user_id, role, .. }) => {
                roles.insert(user_id.as_uuid(), *role);
            }
            DomainEvent::User(UserEvent::RoleChanged { user_id, to, .. }) => {
                roles.insert(user_id.as_uuid(), *to);
            }
            DomainEvent::Login(LoginEvent::Succeeded { user_id, at, .. }) => {
                let role = roles[&user_id.as_uuid()].as_str().to_owned();
                logins.entry((at.date_naive(), role)).or_default().0 += 1;
            }
            DomainEvent::Login(LoginEvent::Failed { user_id, at, .. }) => {
                let role = roles[&user_id.as_uuid()].as_str().to_owned();
                logins.entry((at.date_naive(), role)).or_default().1 += 1;
            }
            _ => {}
        }
    }
    let mut out = Tables::new();

    // Customers by status per day. The history's times only go forward, except one event
    // dated before the last day already reached, which counts on that day.
    let mut all_moves = Vec::new();
    for life in lives.values() {
        let mut prev = None;
        for (seq, at, to) in &life.timeline {
            all_moves.push((*seq, *at, prev, *to));
            prev = *to;
        }
    }
    all_moves.sort_by_key(|m| m.0);
    let mut moves: Vec<(NaiveDate, Option<CustomerStatus>, Option<CustomerStatus>)> = Vec::new();
    let mut last_day: Option<NaiveDate> = None;
    for (_, at, from, to) in all_moves {
        let day = last_day.map_or(at.date_naive(), |l| l.max(at.date_naive()));
        last_day = Some(day);
        moves.push((day, from, to));
    }
    if let (Some(first), Some(last)) = (moves.first().map(|m| m.0), last_day) {
        let mut day = first;
        while day <= last {
            for s in CustomerStatus::ALL {
                let customers = moves
                    .iter()
                    .filter(|m| m.0 <= day)
                    .map(|m| i64::from(m.2 == Some(s)) - i64::from(m.1 == Some(s)))
                    .sum::<i64>();
                let entered = moves
                    .iter()
                    .filter(|m| m.0 == day && m.2 == Some(s))
                    .count();
                let exited = moves
                    .iter()
                    .filter(|m| m.0 == day && m.1 == Some(s))
                    .count();
                out.entry("customers_by_status_daily")
                    .or_default()
                    .push(format!(
                        "{day}|{}|{customers}|{entered}|{exited}",
                        s.as_str()
                    ));
            }
            day = day.succ_opt().unwrap();
        }
    }

    // Conversion by source: live customers, by their source at the end.
    let mut conversion: BTreeMap<String, (i64, i64, i64)> = BTreeMap::new();
    for life in lives.values().filter(|l| !l.deleted) {
        let c = conversion
            .entry(life.source.clone().unwrap_or_else(|| "(none)".into()))
            .or_default();
        c.0 += 1;
        c.1 += i64::from(life.timeline.iter().any(|(_, _, s)| *s == Some(Enrolled)));
        c.2 += i64::from(life.status() == Some(Lost));
    }
    out.insert(
        "conversion_by_source",
        conversion
            .iter()
            .map(|(k, v)| format!("{k}|{}|{}|{}", v.0, v.1, v.2))
            .collect(),
    );

    // Time in each status: consecutive live statuses of one customer.
    let mut time: BTreeMap<(&str, NaiveDate), (i64, i64)> = BTreeMap::new();
    for life in lives.values() {
        for pair in life.timeline.windows(2) {
            if let ((_, t0, Some(s0)), (_, t1, Some(_))) = (pair[0], pair[1]) {
                let month = NaiveDate::from_ymd_opt(t1.year(), t1.month(), 1).unwrap();
                let e = time.entry((s0.as_str(), month)).or_default();
                e.0 += 1;
                // A stay whose end is dated before its start (clocks of two nodes) lasted
                // no time, never a negative one.
                e.1 += (t1 - t0).num_seconds().max(0);
            }
        }
    }
    out.insert(
        "time_in_status",
        time.iter()
            .map(|((s, m), v)| format!("{s}|{m}|{}|{}", v.0, v.1))
            .collect(),
    );

    // Workload: open customers per agent, and open follow-ups of live customers.
    let mut open: BTreeMap<Uuid, i64> = BTreeMap::new();
    for life in lives.values().filter(|l| !l.deleted) {
        if matches!(life.status(), Some(Enrolled | Lost)) {
            continue;
        }
        for a in life.agents.iter().collect::<BTreeSet<_>>() {
            *open.entry(*a).or_default() += 1;
        }
    }
    out.insert(
        "agent_open_customers",
        open.iter().map(|(a, n)| format!("{a}|{n}")).collect(),
    );
    let mut due: BTreeMap<(Uuid, DateTime<Utc>), i64> = BTreeMap::new();
    for (f, (c, to, at)) in &followups {
        if !done.contains(f) && lives.get(c).is_some_and(|l| !l.deleted) {
            *due.entry((*to, *at)).or_default() += 1;
        }
    }
    out.insert(
        "agent_open_followups",
        due.iter()
            .map(|((a, d), n)| format!("{a}|{}|{n}", d.format("%Y-%m-%d %H:%M:%S")))
            .collect(),
    );
    let tomorrow = (now.date_naive() + Duration::days(1))
        .and_hms_opt(0, 0, 0)
        .unwrap()
        .and_utc();
    let agents: BTreeSet<Uuid> = open
        .keys()
        .chain(due.keys().map(|(a, _)| a))
        .copied()
        .collect();
    out.insert(
        "agent_workload",
        agents
            .iter()
            .map(|a| {
                let mine = due.iter().filter(|((x, _), _)| x == a);
                let total: i64 = mine.clone().map(|(_, n)| n).sum();
                let overdue: i64 = mine
                    .clone()
                    .filter(|((_, d), _)| *d < now)
                    .map(|(_, n)| n)
                    .sum();
                let today: i64 = mine
                    .filter(|((_, d), _)| *d >= now && *d < tomorrow)
                    .map(|(_, n)| n)
                    .sum();
                format!(
                    "{a}|{}|{today}|{overdue}|{total}",
                    open.get(a).unwrap_or(&0)
                )
            })
            .collect(),
    );
    out.insert(
        "logins_daily",
        logins
            .iter()
            .map(|((d, r), (ok, failed))| format!("{d}|{r}|{ok}|{failed}"))
            .collect(),
    );
    for lines in out.values_mut() {
        lines.sort();
    }
    out
}

async fn analytics_numbers_equal_counts_computed_from_the_log(env: Env) {
    let runner = env.start_with(tiny()).await;
    history(&env).await;
    let head = env.head().await;
    assert!(runner.wait_for(head, WAIT).await);
    let got = dump(&env).await;
    let want = expected(&decoded_log(&env).await, Utc::now());
    for (table, lines) in &want {
        assert_eq!(&got[table], lines, "{table}");
    }
    assert_eq!(got, want);
    // The history reaches every table: none is trivially equal by being empty.
    for (table, lines) in &got {
        assert!(!lines.is_empty(), "{table} is empty");
    }
    assert_eq!(
        got["customers_by_status_daily"].len(),
        8 * 6,
        "eight days, six statuses"
    );
    runner.shutdown().await;
}

async fn a_rebuild_gives_the_live_tables_and_an_erasure_changes_no_analytics_row(env: Env) {
    let runner = env.start_with(tiny()).await;
    let h = history(&env).await;
    let head = env.head().await;
    assert!(runner.wait_for(head, WAIT).await);
    let live = dump(&env).await;

    let report = runner.rebuild("analytics", |_, _| {}).await.unwrap();
    assert_eq!(report.position, head);
    assert_eq!(dump(&env).await, live, "rebuilt equals live");

    let pos = env.erase(h.to_erase).await;
    assert!(runner.wait_for(pos, WAIT).await);
    assert_eq!(
        dump(&env).await,
        live,
        "the erasure changed an analytics row"
    );
    runner.rebuild("analytics", |_, _| {}).await.unwrap();
    assert_eq!(
        dump(&env).await,
        live,
        "a rebuild after the erasure changed a row"
    );
    assert_eq!(
        dump(&env).await,
        expected(&decoded_log(&env).await, Utc::now())
    );
    runner.shutdown().await;
}

async fn no_analytics_table_holds_personal_data_or_a_customer_id(env: Env) {
    let runner = env.start_with(tiny()).await;
    let h = history(&env).await;
    let head = env.head().await;
    assert!(runner.wait_for(head, WAIT).await);
    let rows = raw_dump(&env).await;
    assert!(rows.len() > 50, "{} analytics rows", rows.len());
    let text = rows.join("\n");
    let mut forbidden: Vec<String> = Vec::new();
    for n in 1..=8 {
        forbidden.extend([name(n), email(n), phone(n), passport(n), notes(n)]);
    }
    forbidden.extend(
        [
            "Quintavius",
            "Personname",
            "secret-mail",
            "Confidentialnote",
            "visa",
            "staff.example",
            "Agent One",
            "Admin Person",
        ]
        .map(String::from),
    );
    for id in &h.customers {
        forbidden.push(id.as_uuid().to_string());
        forbidden.push(id.as_uuid().simple().to_string());
    }
    for f in &forbidden {
        assert!(
            !text.contains(f.as_str()),
            "{f:?} found in analytics:\n{text}"
        );
    }
    runner.shutdown().await;
}

/// Runs one statement on the read-model database of either backend.
async fn execute(env: &Env, pg: &str, sqlite: &str) {
    match &env.pool {
        Some(pool) => pool.get().await.unwrap().batch_execute(pg).await.unwrap(),
        None => rusqlite::Connection::open(env.data_dir.join("read.db"))
            .unwrap()
            .execute_batch(sqlite)
            .unwrap(),
    }
}

async fn stored_version(env: &Env) -> i32 {
    match &env.pool {
        Some(pool) => pool
            .get()
            .await
            .unwrap()
            .query_one(
                "SELECT version FROM crm.projection_checkpoints WHERE projection = 'analytics'",
                &[],
            )
            .await
            .unwrap()
            .get(0),
        None => rusqlite::Connection::open(env.data_dir.join("read.db"))
            .unwrap()
            .query_row(
                "SELECT version FROM projection_checkpoints WHERE projection = 'analytics'",
                [],
                |r| r.get(0),
            )
            .unwrap(),
    }
}

async fn a_stored_version_other_than_the_builds_rebuilds_the_analytics_tables_at_start_up(
    env: Env,
) {
    let runner = env.start_with(tiny()).await;
    history(&env).await;
    let head = env.head().await;
    assert!(runner.wait_for(head, WAIT).await);
    let live = dump(&env).await;
    runner.shutdown().await;
    drop(runner);

    // Tables "built by an older version": a stored version that is not this build's, and
    // rows that only a rebuild puts right.
    let sql = "UPDATE {cp} SET version = 0 WHERE projection = 'analytics'; \
               DELETE FROM {a}conversion_by_source; DELETE FROM {a}logins_daily;";
    execute(
        &env,
        &sql.replace("{cp}", "crm.projection_checkpoints")
            .replace("{a}", "analytics."),
        &sql.replace("{cp}", "projection_checkpoints")
            .replace("{a}", ""),
    )
    .await;
    assert_ne!(dump(&env).await, live);

    let runner = env.start_with(tiny()).await;
    let deadline = std::time::Instant::now() + WAIT;
    while stored_version(&env).await != egec_projections::ProjectionKind::Analytics.version() {
        assert!(
            std::time::Instant::now() < deadline,
            "no rebuild at start-up"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(runner.wait_for(head, WAIT).await);
    assert_eq!(dump(&env).await, live);
    runner.shutdown().await;
}
