//! The pure side of the projections: how one event changes one row, and how a batch of
//! events is planned and folded in memory before the storage backends write it.
//!
//! Nothing here does I/O, so every rule is unit-tested without a database, and both backends
//! (and both the live runner and a rebuild) fold with exactly the same code.

use std::collections::HashMap;

use chrono::{DateTime, SubsecRound, Utc};
use egec_domain::customer::{Customer, CustomerChanges, CustomerEvent};
use egec_domain::event::{DomainEvent, Envelope};
use egec_domain::personal::{ERASED, Personal};
use egec_domain::user::UserEvent;
use egec_domain::{CustomerId, UserId};
use uuid::Uuid;

use crate::kind::ProjectionKind;
use crate::rows::{CustomerRow, UserRow};

/// Both backends store whole microseconds; folding at that precision keeps a row read back
/// from storage equal to the row that was written.
fn micros(t: DateTime<Utc>) -> DateTime<Utc> {
    t.trunc_subsecs(6)
}

fn shown<T: AsRef<str>>(v: &Personal<T>) -> String {
    v.shown().to_owned()
}

fn shown_opt<T: AsRef<str>>(v: &Option<Personal<T>>) -> Option<String> {
    v.as_ref().map(shown)
}

/// The row of a customer folded by the domain's own `evolve`. The projection folds rows
/// directly (see [`apply_customer`]) so that it never has to re-validate stored strings, and
/// the tests hold the two folds equal; replay and history can use this to compare.
pub fn customer_row(c: &Customer, last_position: i64) -> CustomerRow {
    CustomerRow {
        id: c.id.as_uuid(),
        name: shown(&c.name),
        email: shown_opt(&c.email),
        phone: shown_opt(&c.phone),
        passport_number: shown_opt(&c.passport_number),
        country: c.country.as_ref().map(|x| x.as_str().to_owned()),
        source: c.source.as_ref().map(|x| x.as_str().to_owned()),
        status: c.status,
        notes: shown_opt(&c.notes),
        assigned_agent_ids: c.assigned_agent_ids.iter().map(UserId::as_uuid).collect(),
        created_at: micros(c.created_at),
        updated_at: micros(c.updated_at),
        version: c.version,
        deleted: c.deleted,
        erased: c.erased,
        last_position,
    }
}

fn apply_changes(r: &mut CustomerRow, ch: &CustomerChanges) {
    if let Some(v) = &ch.name {
        r.name = shown(v);
    }
    if let Some(v) = &ch.email {
        r.email = shown_opt(v);
    }
    if let Some(v) = &ch.phone {
        r.phone = shown_opt(v);
    }
    if let Some(v) = &ch.passport_number {
        r.passport_number = shown_opt(v);
    }
    if let Some(v) = &ch.country {
        r.country = v.as_ref().map(|x| x.as_str().to_owned());
    }
    if let Some(v) = &ch.source {
        r.source = v.as_ref().map(|x| x.as_str().to_owned());
    }
    if let Some(v) = ch.status {
        r.status = v;
    }
    if let Some(v) = &ch.notes {
        r.notes = shown_opt(v);
    }
}

/// Replaces a present personal value by the erased marker. An absent value stays absent, as
/// in the domain's `evolve`: there is nothing of the person in it, and a rebuild after the
/// erasure (which decodes every stored value as erased) arrives at the same row.
fn erase(v: &mut Option<String>) {
    if v.is_some() {
        *v = Some(ERASED.to_owned());
    }
}

/// Folds one customer event into the customer's row, with the same rules as the domain's
/// `evolve`: an event for a customer that does not exist, and a second `Created`, change
/// nothing (only a corrupt log holds them, and a read model must not panic on one).
pub fn apply_customer(
    row: Option<CustomerRow>,
    event: &CustomerEvent,
    stream_version: i64,
    position: i64,
) -> Option<CustomerRow> {
    let Some(mut r) = row else {
        return match event {
            CustomerEvent::Created(c) => Some(CustomerRow {
                id: c.customer_id.as_uuid(),
                name: shown(&c.name),
                email: shown_opt(&c.email),
                phone: shown_opt(&c.phone),
                passport_number: shown_opt(&c.passport_number),
                country: c.country.as_ref().map(|x| x.as_str().to_owned()),
                source: c.source.as_ref().map(|x| x.as_str().to_owned()),
                status: c.status,
                notes: shown_opt(&c.notes),
                assigned_agent_ids: c.assigned_agent_ids.iter().map(UserId::as_uuid).collect(),
                created_at: micros(c.at),
                updated_at: micros(c.at),
                version: stream_version,
                deleted: false,
                erased: false,
                last_position: position,
            }),
            _ => None,
        };
    };
    match event {
        CustomerEvent::Created(_) => return Some(r),
        CustomerEvent::Updated(u) => apply_changes(&mut r, &u.changes),
        CustomerEvent::Deleted { .. } => r.deleted = true,
        CustomerEvent::Erased { .. } => {
            r.erased = true;
            r.name = ERASED.to_owned();
            erase(&mut r.email);
            erase(&mut r.phone);
            erase(&mut r.passport_number);
            erase(&mut r.notes);
        }
    }
    r.version = stream_version;
    r.updated_at = micros(event.at());
    r.last_position = position;
    Some(r)
}

/// Folds one user event into the user's row (no password hash is ever copied).
pub fn apply_user(
    row: Option<UserRow>,
    event: &UserEvent,
    stream_version: i64,
    position: i64,
) -> Option<UserRow> {
    match (row, event) {
        (
            None,
            UserEvent::Created {
                user_id,
                email,
                name,
                role,
                at,
                ..
            },
        ) => Some(UserRow {
            id: user_id.as_uuid(),
            email: shown(email),
            name: shown(name),
            role: *role,
            active: true,
            created_at: micros(*at),
            version: stream_version,
            last_position: position,
        }),
        (Some(r), UserEvent::Created { .. }) => Some(r),
    }
}

/// The lower-cased text the `q` filter searches: name, email, phone and passport number,
/// joined by a control character a search term never contains (see [`search_needle`]), so a
/// match never spans two fields. Erased values are left out, so searching for the marker does
/// not list every erased customer. Computed here, not in SQL, so that both backends fold
/// case the same (Unicode) way.
pub fn search_text(r: &CustomerRow) -> String {
    let mut out = String::new();
    let fields = [
        Some(r.name.as_str()),
        r.email.as_deref(),
        r.phone.as_deref(),
        r.passport_number.as_deref(),
    ];
    for f in fields.into_iter().flatten() {
        if f == ERASED {
            continue;
        }
        if !out.is_empty() {
            out.push('\u{1f}');
        }
        out.push_str(&f.to_lowercase());
    }
    out
}

/// The search term as matched against [`search_text`]: trimmed, lower-cased, control
/// characters removed. `None` when nothing is left to search for.
pub fn search_needle(q: &str) -> Option<String> {
    let s: String = q.trim().chars().filter(|c| !c.is_control()).collect();
    let s = s.to_lowercase();
    (!s.is_empty()).then_some(s)
}

/// One event of a batch, reduced to what the fold needs.
#[derive(Debug, Clone)]
pub(crate) struct Step<E> {
    pub id: Uuid,
    pub position: i64,
    pub stream_version: i64,
    pub event: E,
}

/// A batch of one projection's events, planned: which rows it touches and which of those may
/// already be stored (and so must be loaded before folding).
#[derive(Debug, Clone)]
pub(crate) struct Plan<E> {
    pub steps: Vec<Step<E>>,
    /// Rows that may exist already. A row whose first event in the batch is its stream's
    /// first event cannot exist yet and is not loaded, which saves a lookup per new row on a
    /// rebuild.
    pub load: Vec<Uuid>,
}

impl<E> Default for Plan<E> {
    fn default() -> Self {
        Self {
            steps: Vec::new(),
            load: Vec::new(),
        }
    }
}

impl<E> Plan<E> {
    fn push(&mut self, seen: &mut HashMap<Uuid, ()>, step: Step<E>, starts_stream: bool) {
        if seen.insert(step.id, ()).is_none() && !starts_stream {
            self.load.push(step.id);
        }
        self.steps.push(step);
    }
}

/// The planned work of one batch for one projection.
#[derive(Debug, Clone)]
pub(crate) enum Work {
    Customers(Plan<CustomerEvent>),
    Users(Plan<UserEvent>),
}

impl Work {
    /// Plans a batch of decoded events (in log order); events the projection does not fold
    /// are dropped here.
    pub fn plan(kind: ProjectionKind, envelopes: Vec<Envelope>) -> Work {
        match kind {
            ProjectionKind::Customers => {
                let mut plan = Plan::default();
                let mut seen = HashMap::new();
                for env in envelopes {
                    if let DomainEvent::Customer(event) = env.event {
                        let id = event.customer_id();
                        let starts_stream = env.stream_version == 1
                            && CustomerId::from_stream_id(&env.stream_id) == Some(id);
                        let step = Step {
                            id: id.as_uuid(),
                            position: env.position,
                            stream_version: env.stream_version,
                            event,
                        };
                        plan.push(&mut seen, step, starts_stream);
                    }
                }
                Work::Customers(plan)
            }
            ProjectionKind::Users => {
                let mut plan = Plan::default();
                let mut seen = HashMap::new();
                for env in envelopes {
                    if let DomainEvent::User(event) = env.event {
                        let id = event.user_id();
                        let starts_stream = env.stream_version == 1
                            && UserId::from_stream_id(&env.stream_id) == Some(id);
                        let step = Step {
                            id: id.as_uuid(),
                            position: env.position,
                            stream_version: env.stream_version,
                            event,
                        };
                        plan.push(&mut seen, step, starts_stream);
                    }
                }
                Work::Users(plan)
            }
        }
    }

    /// Appends a later batch's work (used to apply a rebuild's tail in one transaction).
    pub fn extend(&mut self, later: Work) {
        match (self, later) {
            (Work::Customers(a), Work::Customers(b)) => extend_plan(a, b),
            (Work::Users(a), Work::Users(b)) => extend_plan(a, b),
            // Work of one projection is only ever merged with work of the same projection.
            _ => {}
        }
    }

    pub fn empty(kind: ProjectionKind) -> Work {
        match kind {
            ProjectionKind::Customers => Work::Customers(Plan::default()),
            ProjectionKind::Users => Work::Users(Plan::default()),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Number of events to fold.
    pub fn len(&self) -> usize {
        match self {
            Work::Customers(p) => p.steps.len(),
            Work::Users(p) => p.steps.len(),
        }
    }
}

fn extend_plan<E>(a: &mut Plan<E>, b: Plan<E>) {
    let mut seen: HashMap<Uuid, ()> = a.steps.iter().map(|s| (s.id, ())).collect();
    let load: std::collections::HashSet<Uuid> = b.load.into_iter().collect();
    for step in b.steps {
        // A row first seen in the later batch keeps that batch's decision; a row already
        // touched by the earlier batch is folded on from there and needs no load.
        let starts_stream = !load.contains(&step.id);
        a.push(&mut seen, step, starts_stream);
    }
}

/// A row the batch changed, with the stored row it replaces (`None`: the row is new).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Touched<R> {
    pub row: R,
    pub before: Option<R>,
}

/// Folds a planned batch over the rows loaded for it. Returns each changed row once, in the
/// order the batch first touched it, so each is written once per batch.
pub(crate) fn fold_plan<E, R: Clone + PartialEq>(
    plan: &Plan<E>,
    loaded: Vec<R>,
    id_of: impl Fn(&R) -> Uuid,
    apply: impl Fn(Option<R>, &E, i64, i64) -> Option<R>,
) -> Vec<Touched<R>> {
    let mut before: HashMap<Uuid, R> = loaded.into_iter().map(|r| (id_of(&r), r)).collect();
    let mut order: Vec<Uuid> = Vec::new();
    let mut current: HashMap<Uuid, Option<R>> = HashMap::new();
    for step in &plan.steps {
        let slot = current.entry(step.id).or_insert_with(|| {
            order.push(step.id);
            before.get(&step.id).cloned()
        });
        *slot = apply(slot.take(), &step.event, step.stream_version, step.position);
    }
    let mut out = Vec::with_capacity(order.len());
    for id in order {
        let prev = before.remove(&id);
        if let Some(Some(row)) = current.remove(&id)
            && prev.as_ref() != Some(&row)
        {
            out.push(Touched { row, before: prev });
        }
    }
    out
}

pub(crate) fn fold_customers(
    plan: &Plan<CustomerEvent>,
    loaded: Vec<CustomerRow>,
) -> Vec<Touched<CustomerRow>> {
    fold_plan(plan, loaded, |r| r.id, apply_customer)
}

pub(crate) fn fold_users(plan: &Plan<UserEvent>, loaded: Vec<UserRow>) -> Vec<Touched<UserRow>> {
    fold_plan(plan, loaded, |r| r.id, apply_user)
}

#[cfg(test)]
mod tests;
