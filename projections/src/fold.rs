//! The pure side of the projections: how one event changes one row, and how a batch of
//! events is planned and folded in memory before the storage backends write it.
//!
//! Nothing here does I/O, so every rule is unit-tested without a database, and both backends
//! (and both the live runner and a rebuild) fold with exactly the same code.

use std::collections::HashMap;

use chrono::{DateTime, SubsecRound, Utc};
use egec_domain::customer::{Customer, CustomerChanges, CustomerEvent};
use egec_domain::event::{DomainEvent, Envelope};
use egec_domain::followup::FollowupEvent;
use egec_domain::personal::{ERASED, Personal};
use egec_domain::user::{FIRST_SESSION_VERSION, LoginEvent, UserEvent};
use egec_domain::{CustomerId, UserId};
use uuid::Uuid;

use crate::kind::ProjectionKind;
use crate::rows::{ApiKeyRow, AuditRow, CustomerRow, FollowupRow, SessionRow, UserRow};

pub mod analytics;
mod api_keys;
mod audit;
mod followups;
use analytics::{AnalyticsChanges, AnalyticsFold, AnalyticsWork, Entity};
pub use api_keys::apply_api_key;
pub use audit::{apply_audit, audit_row};
pub use followups::{CUSTOMER_ERASED, apply_followup};
pub(crate) use followups::{FollowupCache, FollowupWork};

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
        // No column changes; the version and time move on as in the domain's `evolve`.
        CustomerEvent::AttachmentAdded(_) => {}
        CustomerEvent::Erased { .. } => {
            r.erased = true;
            r.name = ERASED.to_owned();
            erase(&mut r.email);
            erase(&mut r.phone);
            erase(&mut r.passport_number);
            erase(&mut r.notes);
        }
        CustomerEvent::AgentsAssigned { agent_ids, .. } => {
            r.assigned_agent_ids = agent_ids.iter().map(UserId::as_uuid).collect();
        }
        CustomerEvent::BulkEdited(b) | CustomerEvent::BulkEditReverted(b) => {
            if let Some(s) = b.status {
                r.status = s;
            }
            if let Some(a) = &b.assigned_agent_ids {
                r.assigned_agent_ids = a.iter().map(UserId::as_uuid).collect();
            }
        }
    }
    r.version = stream_version;
    r.updated_at = micros(event.at());
    r.last_position = position;
    Some(r)
}

/// Folds one user event into the user's row (no password hash is ever copied), with the
/// same rules as the domain's `evolve`: a change to a user that does not exist, and a second
/// `Created`, change nothing.
pub fn apply_user(
    row: Option<UserRow>,
    event: &UserEvent,
    stream_version: i64,
    position: i64,
) -> Option<UserRow> {
    let mut r = match (row, event) {
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
        ) => {
            return Some(UserRow {
                id: user_id.as_uuid(),
                email: shown(email),
                name: shown(name),
                role: *role,
                active: true,
                created_at: micros(*at),
                version: stream_version,
                last_position: position,
                session_version: FIRST_SESSION_VERSION,
                mfa_enabled: false,
                must_change_password: false,
                password_changed_at: micros(*at),
            });
        }
        (None, _) => return None,
        (Some(r), UserEvent::Created { .. }) => return Some(r),
        (Some(r), _) => r,
    };
    match event {
        UserEvent::Created { .. } => {}
        UserEvent::Renamed { name, .. } => r.name = shown(name),
        UserEvent::RoleChanged {
            to,
            session_version,
            ..
        } => {
            r.role = *to;
            r.session_version = *session_version;
        }
        UserEvent::Deactivated {
            session_version, ..
        } => {
            r.active = false;
            r.session_version = *session_version;
        }
        UserEvent::Reactivated { .. } => r.active = true,
        UserEvent::SessionsRevoked {
            session_version, ..
        } => r.session_version = *session_version,
        UserEvent::PasswordChanged {
            session_version,
            at,
            ..
        } => {
            r.session_version = *session_version;
            r.must_change_password = false;
            r.password_changed_at = micros(*at);
        }
        UserEvent::PasswordChangeRequired { .. } => r.must_change_password = true,
        UserEvent::TotpEnabled { .. } => r.mfa_enabled = true,
        UserEvent::TotpDisabled { .. } => r.mfa_enabled = false,
        UserEvent::PasswordRehashed { .. }
        | UserEvent::TotpSetupStarted { .. }
        | UserEvent::TotpUsed { .. }
        | UserEvent::BackupCodeUsed { .. } => {}
    }
    r.version = stream_version;
    r.last_position = position;
    Some(r)
}

/// A session end, as the sessions projection folds it.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionEnded {
    pub session_id: Uuid,
    pub user_id: UserId,
    pub at: DateTime<Utc>,
}

/// Folds a session end into the session's row. A session ends once: a second end (two
/// logouts racing with one token) keeps the first.
pub fn apply_session(
    row: Option<SessionRow>,
    event: &SessionEnded,
    _stream_version: i64,
    position: i64,
) -> Option<SessionRow> {
    match row {
        Some(r) => Some(r),
        None => Some(SessionRow {
            id: event.session_id,
            user_id: event.user_id.as_uuid(),
            ended_at: micros(event.at),
            last_position: position,
        }),
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
    /// The plan of one projection's work in `envelopes`: `pick` answers, for an event the
    /// projection folds, the row id, whether the row cannot exist yet (the event starts the
    /// row's own stream, so there is nothing to load), and the event.
    fn of(envelopes: Vec<Envelope>, pick: impl Fn(Envelope) -> Option<(Uuid, bool, E)>) -> Plan<E> {
        let mut plan = Plan::default();
        let mut seen = IdMap::default();
        for env in envelopes {
            let (position, stream_version) = (env.position, env.stream_version);
            if let Some((id, new_row, event)) = pick(env) {
                let step = Step {
                    id,
                    position,
                    stream_version,
                    event,
                };
                plan.push(&mut seen, step, new_row);
            }
        }
        plan
    }

    fn push(&mut self, seen: &mut IdMap<()>, step: Step<E>, starts_stream: bool) {
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
    Sessions(Plan<SessionEnded>),
    ApiKeys(Plan<egec_domain::api_key::ApiKeyEvent>),
    Audit(Plan<AuditRow>),
    Followups(FollowupWork),
    Analytics(AnalyticsWork),
}

impl Work {
    /// Plans a batch of decoded events (in log order); events the projection does not fold
    /// are dropped here.
    pub fn plan(kind: ProjectionKind, envelopes: Vec<Envelope>) -> Work {
        match kind {
            ProjectionKind::Customers => {
                Work::Customers(Plan::of(envelopes, |env| match env.event {
                    DomainEvent::Customer(event) => {
                        let id = event.customer_id();
                        let starts = env.stream_version == 1
                            && CustomerId::from_stream_id(&env.stream_id) == Some(id);
                        Some((id.as_uuid(), starts, event))
                    }
                    _ => None,
                }))
            }
            ProjectionKind::Users => Work::Users(Plan::of(envelopes, |env| match env.event {
                DomainEvent::User(event) => {
                    let id = event.user_id();
                    let starts = env.stream_version == 1
                        && UserId::from_stream_id(&env.stream_id) == Some(id);
                    Some((id.as_uuid(), starts, event))
                }
                _ => None,
            })),
            ProjectionKind::Sessions => {
                Work::Sessions(Plan::of(envelopes, |env| match env.event {
                    DomainEvent::Login(LoginEvent::LoggedOut {
                        user_id,
                        session_id,
                        at,
                    }) => {
                        let ended = SessionEnded {
                            session_id,
                            user_id,
                            at,
                        };
                        // A session's row may exist already (two logouts with one token):
                        // always look.
                        Some((session_id, false, ended))
                    }
                    _ => None,
                }))
            }
            ProjectionKind::ApiKeys => Work::ApiKeys(Plan::of(envelopes, |env| match env.event {
                DomainEvent::ApiKey(event) => {
                    let id = event.key_id();
                    let starts = env.stream_version == 1
                        && egec_domain::ids::ApiKeyId::from_stream_id(&env.stream_id) == Some(id);
                    Some((id.as_uuid(), starts, event))
                }
                _ => None,
            })),
            // Every event makes its own row: nothing to load.
            ProjectionKind::Audit => Work::Audit(Plan::of(envelopes, |env| {
                Some((env.event_id, true, audit_row(&env)))
            })),
            ProjectionKind::Followups => Work::Followups(FollowupWork::of(envelopes)),
            ProjectionKind::Analytics => Work::Analytics(AnalyticsWork::of(envelopes)),
        }
    }

    /// Appends a later batch's work (used to apply a rebuild's tail in one transaction).
    pub fn extend(&mut self, later: Work) {
        match (self, later) {
            (Work::Customers(a), Work::Customers(b)) => extend_plan(a, b),
            (Work::Users(a), Work::Users(b)) => extend_plan(a, b),
            (Work::Sessions(a), Work::Sessions(b)) => extend_plan(a, b),
            (Work::ApiKeys(a), Work::ApiKeys(b)) => extend_plan(a, b),
            (Work::Audit(a), Work::Audit(b)) => extend_plan(a, b),
            (Work::Followups(a), Work::Followups(b)) => a.extend(b),
            (Work::Analytics(a), Work::Analytics(b)) => a.extend(b),
            // Work of one projection is only ever merged with work of the same projection.
            _ => {}
        }
    }

    pub fn empty(kind: ProjectionKind) -> Work {
        match kind {
            ProjectionKind::Customers => Work::Customers(Plan::default()),
            ProjectionKind::Users => Work::Users(Plan::default()),
            ProjectionKind::Sessions => Work::Sessions(Plan::default()),
            ProjectionKind::ApiKeys => Work::ApiKeys(Plan::default()),
            ProjectionKind::Audit => Work::Audit(Plan::default()),
            ProjectionKind::Followups => Work::Followups(FollowupWork::default()),
            ProjectionKind::Analytics => Work::Analytics(AnalyticsWork::default()),
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
            Work::Sessions(p) => p.steps.len(),
            Work::ApiKeys(p) => p.steps.len(),
            Work::Audit(p) => p.steps.len(),
            Work::Followups(w) => w.len(),
            Work::Analytics(w) => w.len(),
        }
    }
}

fn extend_plan<E>(a: &mut Plan<E>, b: Plan<E>) {
    let mut seen: IdMap<()> = a.steps.iter().map(|s| (s.id, ())).collect();
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
    let mut before: IdMap<R> = loaded.into_iter().map(|r| (id_of(&r), r)).collect();
    let mut order: Vec<Uuid> = Vec::new();
    let mut current: IdMap<Option<R>> = IdMap::default();
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

pub(crate) fn fold_sessions(
    plan: &Plan<SessionEnded>,
    loaded: Vec<SessionRow>,
) -> Vec<Touched<SessionRow>> {
    fold_plan(plan, loaded, |r| r.id, apply_session)
}

pub(crate) fn fold_api_keys(
    plan: &Plan<egec_domain::api_key::ApiKeyEvent>,
    loaded: Vec<ApiKeyRow>,
) -> Vec<Touched<ApiKeyRow>> {
    fold_plan(plan, loaded, |r| r.id, apply_api_key)
}

pub(crate) fn fold_followups(
    plan: &Plan<FollowupEvent>,
    loaded: Vec<FollowupRow>,
) -> Vec<Touched<FollowupRow>> {
    fold_plan(plan, loaded, |r| r.id, apply_followup)
}

pub(crate) fn fold_audit(plan: &Plan<AuditRow>, loaded: Vec<AuditRow>) -> Vec<Touched<AuditRow>> {
    fold_plan(plan, loaded, |r| r.event_id, apply_audit)
}

/// Rows as loaded from storage.
#[derive(Debug, Clone)]
pub(crate) enum Rows {
    Customers(Vec<CustomerRow>),
    Users(Vec<UserRow>),
    Sessions(Vec<SessionRow>),
    ApiKeys(Vec<ApiKeyRow>),
    Audit(Vec<AuditRow>),
    Followups(Vec<FollowupRow>),
    /// Working-state entries of the analytics fold, by id.
    Analytics(Vec<(Uuid, Entity)>),
}

/// Changed rows to write, each with the row as stored (`None`: not stored yet).
#[derive(Debug, Clone)]
pub(crate) enum Changes {
    Customers(Vec<Touched<CustomerRow>>),
    Users(Vec<Touched<UserRow>>),
    Sessions(Vec<Touched<SessionRow>>),
    ApiKeys(Vec<Touched<ApiKeyRow>>),
    Audit(Vec<Touched<AuditRow>>),
    /// Changed rows, then the customers whose follow-up notes are to be erased.
    Followups(Vec<Touched<FollowupRow>>, Vec<Uuid>),
    Analytics(AnalyticsChanges),
}

impl Changes {
    pub fn len(&self) -> usize {
        match self {
            Changes::Customers(v) => v.len(),
            Changes::Users(v) => v.len(),
            Changes::Sessions(v) => v.len(),
            Changes::ApiKeys(v) => v.len(),
            Changes::Audit(v) => v.len(),
            Changes::Followups(v, erased) => v.len() + erased.len(),
            Changes::Analytics(c) => c.len(),
        }
    }

    /// The changes cut into at most `parts` pieces that can be written side by side, each
    /// in its own transaction: lists of whole rows are cut into runs of about equal length.
    /// The other kinds write more than rows (follow-up erasures, analytics totals) and stay
    /// whole.
    pub fn split(self, parts: usize) -> Vec<Changes> {
        fn cut<R>(rows: Vec<R>, parts: usize, wrap: fn(Vec<R>) -> Changes) -> Vec<Changes> {
            if rows.is_empty() {
                return vec![wrap(rows)];
            }
            runs(rows, parts).into_iter().map(wrap).collect()
        }
        match self {
            Changes::Customers(v) => cut(v, parts, Changes::Customers),
            Changes::Users(v) => cut(v, parts, Changes::Users),
            Changes::Sessions(v) => cut(v, parts, Changes::Sessions),
            Changes::Audit(v) => cut(v, parts, Changes::Audit),
            whole @ (Changes::ApiKeys(_) | Changes::Followups(..) | Changes::Analytics(_)) => {
                vec![whole]
            }
        }
    }
}

/// `items` cut into at most `count` runs of consecutive items of about equal length, in
/// order; none when there are no items. Each item is moved once (splitting off the front
/// again and again would copy the rest every time).
pub(crate) fn runs<T>(items: Vec<T>, count: usize) -> Vec<Vec<T>> {
    let len = items.len().div_ceil(count.max(1)).max(1);
    let mut rest = items.into_iter();
    let mut out = Vec::with_capacity(count);
    loop {
        let run: Vec<T> = rest.by_ref().take(len).collect();
        if run.is_empty() {
            return out;
        }
        out.push(run);
    }
}

/// A hasher for uuid keys. The default SipHash guards against collision attacks on keys an
/// attacker chooses; these keys come from our own log, and the fold of a rebuild hashes one
/// per event, so a cheap multiplicative mix is worth it.
#[derive(Default, Clone, Copy)]
pub(crate) struct IdHasher(u64);

impl std::hash::Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.0 = (self.0.rotate_left(5) ^ u64::from_le_bytes(word))
                .wrapping_mul(0x517c_c1b7_2722_0a95);
        }
    }

    fn write_usize(&mut self, n: usize) {
        self.write(&n.to_le_bytes());
    }
}

pub(crate) type IdMap<V> = HashMap<Uuid, V, std::hash::BuildHasherDefault<IdHasher>>;

/// One row of a [`RowCache`]: its current state and the state it has in storage.
#[derive(Debug)]
struct Cached<R> {
    /// `None`: the row does not exist (yet).
    row: Option<R>,
    /// `None`: not stored. Only rows loaded from storage carry a stored copy.
    stored: Option<R>,
}

/// The rows a rebuild folds in memory between two writes. Each row is written once per
/// flush instead of once per batch, and never loaded again while it stays cached: on a
/// history where events of a customer are spread over the whole log this removes nearly all
/// storage work. Bounded by its owner, which flushes and starts afresh when it grows too big.
#[derive(Debug)]
pub(crate) struct RowCache<R> {
    rows: IdMap<Cached<R>>,
}

impl<R> Default for RowCache<R> {
    fn default() -> Self {
        Self {
            rows: IdMap::default(),
        }
    }
}

impl<R: Clone + PartialEq> RowCache<R> {
    fn missing<E>(&self, plan: &Plan<E>) -> Vec<Uuid> {
        plan.load
            .iter()
            .filter(|id| !self.rows.contains_key(id))
            .copied()
            .collect()
    }

    fn add_loaded(&mut self, ids: &[Uuid], loaded: Vec<R>, id_of: impl Fn(&R) -> Uuid) {
        for row in loaded {
            self.rows.insert(
                id_of(&row),
                Cached {
                    row: Some(row.clone()),
                    stored: Some(row),
                },
            );
        }
        // Ids that were looked for and not found are remembered as absent, so they are not
        // looked for again.
        for id in ids {
            self.rows.entry(*id).or_insert(Cached {
                row: None,
                stored: None,
            });
        }
    }

    fn fold<E>(&mut self, plan: &Plan<E>, apply: impl Fn(Option<R>, &E, i64, i64) -> Option<R>) {
        for step in &plan.steps {
            let cached = self.rows.entry(step.id).or_insert(Cached {
                row: None,
                stored: None,
            });
            cached.row = apply(
                cached.row.take(),
                &step.event,
                step.stream_version,
                step.position,
            );
        }
    }

    /// Every row that differs from storage, and an empty cache.
    fn take_changes(&mut self) -> Vec<Touched<R>> {
        std::mem::take(&mut self.rows)
            .into_values()
            .filter_map(|c| match c.row {
                Some(row) if c.stored.as_ref() != Some(&row) => Some(Touched {
                    row,
                    before: c.stored,
                }),
                _ => None,
            })
            .collect()
    }
}

/// The in-memory fold of one projection's rebuild.
#[derive(Debug)]
pub(crate) enum FoldCache {
    Customers(RowCache<CustomerRow>),
    Users(RowCache<UserRow>),
    Sessions(RowCache<SessionRow>),
    ApiKeys(RowCache<ApiKeyRow>),
    Audit(RowCache<AuditRow>),
    Followups(FollowupCache),
    Analytics(AnalyticsFold),
}

impl FoldCache {
    pub fn new(kind: ProjectionKind) -> Self {
        match kind {
            ProjectionKind::Customers => FoldCache::Customers(RowCache::default()),
            ProjectionKind::Users => FoldCache::Users(RowCache::default()),
            ProjectionKind::Sessions => FoldCache::Sessions(RowCache::default()),
            ProjectionKind::ApiKeys => FoldCache::ApiKeys(RowCache::default()),
            ProjectionKind::Audit => FoldCache::Audit(RowCache::default()),
            ProjectionKind::Followups => FoldCache::Followups(FollowupCache::default()),
            // A rebuild fills empty shadow tables: the daily table starts with no last day.
            ProjectionKind::Analytics => FoldCache::Analytics(AnalyticsFold::default()),
        }
    }

    pub fn len(&self) -> usize {
        match self {
            FoldCache::Customers(c) => c.rows.len(),
            FoldCache::Users(c) => c.rows.len(),
            FoldCache::Sessions(c) => c.rows.len(),
            FoldCache::ApiKeys(c) => c.rows.len(),
            FoldCache::Audit(c) => c.rows.len(),
            FoldCache::Followups(c) => c.rows.rows.len(),
            FoldCache::Analytics(c) => c.len(),
        }
    }

    /// Rows the work needs that may be stored and are not cached: load them first.
    pub fn missing(&self, work: &Work) -> Vec<Uuid> {
        match (self, work) {
            (FoldCache::Customers(c), Work::Customers(p)) => c.missing(p),
            (FoldCache::Users(c), Work::Users(p)) => c.missing(p),
            (FoldCache::Sessions(c), Work::Sessions(p)) => c.missing(p),
            (FoldCache::ApiKeys(c), Work::ApiKeys(p)) => c.missing(p),
            (FoldCache::Audit(c), Work::Audit(p)) => c.missing(p),
            (FoldCache::Followups(c), Work::Followups(w)) => c.rows.missing(&w.plan),
            (FoldCache::Analytics(c), Work::Analytics(w)) => c.missing(w),
            _ => Vec::new(),
        }
    }

    pub fn add_loaded(&mut self, ids: &[Uuid], rows: Rows) {
        match (self, rows) {
            (FoldCache::Customers(c), Rows::Customers(r)) => c.add_loaded(ids, r, |x| x.id),
            (FoldCache::Users(c), Rows::Users(r)) => c.add_loaded(ids, r, |x| x.id),
            (FoldCache::Sessions(c), Rows::Sessions(r)) => c.add_loaded(ids, r, |x| x.id),
            (FoldCache::ApiKeys(c), Rows::ApiKeys(r)) => c.add_loaded(ids, r, |x| x.id),
            (FoldCache::Audit(c), Rows::Audit(r)) => c.add_loaded(ids, r, |x| x.event_id),
            (FoldCache::Followups(c), Rows::Followups(r)) => c.rows.add_loaded(ids, r, |x| x.id),
            (FoldCache::Analytics(c), Rows::Analytics(r)) => c.add_loaded(ids, r),
            _ => {}
        }
    }

    pub fn fold(&mut self, work: &Work) {
        match (self, work) {
            (FoldCache::Customers(c), Work::Customers(p)) => c.fold(p, apply_customer),
            (FoldCache::Users(c), Work::Users(p)) => c.fold(p, apply_user),
            (FoldCache::Sessions(c), Work::Sessions(p)) => c.fold(p, apply_session),
            (FoldCache::ApiKeys(c), Work::ApiKeys(p)) => c.fold(p, apply_api_key),
            (FoldCache::Audit(c), Work::Audit(p)) => c.fold(p, apply_audit),
            (FoldCache::Followups(c), Work::Followups(w)) => c.fold(w),
            (FoldCache::Analytics(c), Work::Analytics(w)) => c.fold(w),
            // A cache only ever receives work of its own projection.
            _ => {}
        }
    }

    /// The rows to write, leaving the cache empty.
    pub fn take_changes(&mut self) -> Changes {
        match self {
            FoldCache::Customers(c) => Changes::Customers(c.take_changes()),
            FoldCache::Users(c) => Changes::Users(c.take_changes()),
            FoldCache::Sessions(c) => Changes::Sessions(c.take_changes()),
            FoldCache::ApiKeys(c) => Changes::ApiKeys(c.take_changes()),
            FoldCache::Audit(c) => Changes::Audit(c.take_changes()),
            FoldCache::Followups(c) => {
                let (rows, erased) = c.take_changes();
                Changes::Followups(rows, erased)
            }
            FoldCache::Analytics(c) => Changes::Analytics(c.take_changes()),
        }
    }
}

#[cfg(test)]
mod tests;
