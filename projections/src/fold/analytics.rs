//! The fold of the `analytics` projection: aggregates for analysts that hold no personal
//! data (no customer ids either, since a customer id is a pseudonym of a person).
//!
//! Each event the projection reads is first reduced to a [`Fact`]: statuses, sources,
//! agent and user ids, times. Nothing personal survives that step, so nothing personal can
//! reach a table. The fold then needs state per customer (status and since when, source,
//! assigned agents, deleted, whether it ever reached `enrolled`, its open follow-ups) and per
//! staff user (the role), kept as [`Entity`] values in a working-state table outside schema
//! `analytics`. Every change to an aggregate is computed as the difference between what a
//! customer contributed before an event and what it contributes after it, so one rule set
//! decides every table and the live runner and a rebuild fold with exactly this code:
//!
//! - counters (`conversion_by_source`, `time_in_status`, `logins_daily`, the two workload
//!   tables) are written as deltas added to the stored rows, and rows whose counters all
//!   reach zero are deleted, so a table holds the same rows however the log was batched;
//! - `customers_by_status_daily` is written with absolute values: the fold holds the last
//!   day's rows (loaded, or kept by a rebuild between flushes) and fills every day between
//!   the last one and the day of a new event, so the table has no gaps.
//!
//! Days and months are UTC. An event whose day is before the last day already folded (two
//! nodes' clocks a few milliseconds apart around midnight) counts on that last day, so
//! rows already written never change with hindsight.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Datelike, NaiveDate, SubsecRound, Utc};
use egec_domain::customer::{CustomerEvent, CustomerStatus};
use egec_domain::event::{DomainEvent, Envelope};
use egec_domain::followup::FollowupEvent;
use egec_domain::user::{LoginEvent, UserEvent};
use egec_domain::{Role, UserId};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::IdMap;

/// The source of a customer created without one, in `conversion_by_source`.
pub const NO_SOURCE: &str = "(none)";
/// The role of a login by a user id the log never created (only a corrupt log holds one).
pub const UNKNOWN_ROLE: &str = "(unknown)";
/// The "role" of a failed login for an email no active account has.
pub const UNKNOWN_ACCOUNT: &str = "(unknown account)";

/// Whether the analytics projection reads events of this stored type. The erasure and
/// attachments change no analytics number, so they are not even decoded for it; user events
/// other than creation and role changes carry nothing it counts.
pub fn wants(event_type: &str) -> bool {
    // The domain does not export every stored type name; a unit test encodes one event of
    // each type named here and checks the names.
    (event_type.starts_with("Customer")
        && event_type != "CustomerErased"
        && event_type != "CustomerAttachmentAdded")
        || event_type.starts_with("Followup")
        || matches!(
            event_type,
            "UserCreated"
                | "UserRoleChanged"
                | "LoginSucceeded"
                | "LoginFailed"
                | egec_domain::user::LOGIN_FAILED_UNKNOWN_ACCOUNT
        )
}

/// What the analytics fold takes from one event: facts only, never a personal value.
#[derive(Debug, Clone, PartialEq)]
pub enum Fact {
    CustomerCreated {
        customer: Uuid,
        status: CustomerStatus,
        source: Option<String>,
        agents: Vec<Uuid>,
        at: DateTime<Utc>,
    },
    /// An update, a bulk edit, a bulk edit's undo or an assignment: `None` fields are not
    /// changed.
    CustomerChanged {
        customer: Uuid,
        status: Option<CustomerStatus>,
        source: Option<Option<String>>,
        agents: Option<Vec<Uuid>>,
        at: DateTime<Utc>,
    },
    CustomerDeleted {
        customer: Uuid,
        at: DateTime<Utc>,
    },
    FollowupScheduled {
        followup: Uuid,
        customer: Uuid,
        assignee: Uuid,
        /// To the second: both backends then store exactly the same value.
        due_at: DateTime<Utc>,
    },
    FollowupCompleted {
        followup: Uuid,
        customer: Uuid,
    },
    UserRole {
        user: Uuid,
        role: Role,
    },
    /// A login attempt; `user` is `None` for an email no active account has.
    Login {
        user: Option<Uuid>,
        succeeded: bool,
        at: DateTime<Utc>,
    },
}

fn ids(agents: &[UserId]) -> Vec<Uuid> {
    agents.iter().map(UserId::as_uuid).collect()
}

impl Fact {
    /// The fact of an event, or `None` for an event analytics does not count. Any event
    /// type not named here (including ones added to the domain later) is ignored.
    pub fn of(event: &DomainEvent) -> Option<Fact> {
        match event {
            DomainEvent::Customer(e) => Self::of_customer(e),
            DomainEvent::Followup(FollowupEvent::Scheduled(s)) => Some(Fact::FollowupScheduled {
                followup: s.followup_id.as_uuid(),
                customer: s.customer_id.as_uuid(),
                assignee: s.assigned_to.as_uuid(),
                due_at: s.due_at.trunc_subsecs(0),
            }),
            DomainEvent::Followup(FollowupEvent::Completed {
                followup_id,
                customer_id,
                ..
            }) => Some(Fact::FollowupCompleted {
                followup: followup_id.as_uuid(),
                customer: customer_id.as_uuid(),
            }),
            DomainEvent::User(UserEvent::Created { user_id, role, .. }) => Some(Fact::UserRole {
                user: user_id.as_uuid(),
                role: *role,
            }),
            DomainEvent::User(UserEvent::RoleChanged { user_id, to, .. }) => Some(Fact::UserRole {
                user: user_id.as_uuid(),
                role: *to,
            }),
            DomainEvent::Login(LoginEvent::Succeeded { user_id, at, .. }) => Some(Fact::Login {
                user: Some(user_id.as_uuid()),
                succeeded: true,
                at: *at,
            }),
            DomainEvent::Login(LoginEvent::Failed { user_id, at, .. }) => Some(Fact::Login {
                user: Some(user_id.as_uuid()),
                succeeded: false,
                at: *at,
            }),
            DomainEvent::Login(LoginEvent::UnknownAccountFailed { at, .. }) => Some(Fact::Login {
                user: None,
                succeeded: false,
                at: *at,
            }),
            _ => None,
        }
    }

    fn of_customer(e: &CustomerEvent) -> Option<Fact> {
        let customer = e.customer_id().as_uuid();
        match e {
            CustomerEvent::Created(c) => Some(Fact::CustomerCreated {
                customer,
                status: c.status,
                source: c.source.as_ref().map(|s| s.as_str().to_owned()),
                agents: ids(&c.assigned_agent_ids),
                at: c.at,
            }),
            CustomerEvent::Updated(u) => {
                let source = u
                    .changes
                    .source
                    .as_ref()
                    .map(|s| s.as_ref().map(|s| s.as_str().to_owned()));
                (u.changes.status.is_some() || source.is_some()).then_some(Fact::CustomerChanged {
                    customer,
                    status: u.changes.status,
                    source,
                    agents: None,
                    at: u.at,
                })
            }
            CustomerEvent::AgentsAssigned { agent_ids, at, .. } => Some(Fact::CustomerChanged {
                customer,
                status: None,
                source: None,
                agents: Some(ids(agent_ids)),
                at: *at,
            }),
            CustomerEvent::BulkEdited(b) | CustomerEvent::BulkEditReverted(b) => {
                (b.status.is_some() || b.assigned_agent_ids.is_some()).then(|| {
                    Fact::CustomerChanged {
                        customer,
                        status: b.status,
                        source: None,
                        agents: b.assigned_agent_ids.as_deref().map(ids),
                        at: b.at,
                    }
                })
            }
            CustomerEvent::Deleted { at, .. } => Some(Fact::CustomerDeleted { customer, at: *at }),
            // Erasure destroys personal values only: every fact analytics counts stands.
            _ => None,
        }
    }

    /// The working-state entry the fact reads and changes, if any.
    pub fn subject(&self) -> Option<Uuid> {
        match self {
            Fact::CustomerCreated { customer, .. }
            | Fact::CustomerChanged { customer, .. }
            | Fact::CustomerDeleted { customer, .. }
            | Fact::FollowupScheduled { customer, .. }
            | Fact::FollowupCompleted { customer, .. } => Some(*customer),
            Fact::UserRole { user, .. } => Some(*user),
            Fact::Login { user, .. } => *user,
        }
    }
}

/// An open follow-up of a customer, as the workload counts it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpenFollowup {
    pub id: Uuid,
    pub assignee: Uuid,
    pub due_at: DateTime<Utc>,
}

/// The facts of one customer the fold needs. Working state: kept outside schema
/// `analytics`, since it is keyed by the customer id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CustomerFacts {
    pub status: CustomerStatus,
    /// When the customer entered its current status.
    pub since: DateTime<Utc>,
    pub source: Option<String>,
    pub agents: Vec<Uuid>,
    pub deleted: bool,
    pub ever_enrolled: bool,
    pub followups: Vec<OpenFollowup>,
}

/// One entry of the working state, stored as JSON by id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Entity {
    Customer(CustomerFacts),
    User { role: Role },
}

/// One row of `customers_by_status_daily`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DailyRow {
    pub day: NaiveDate,
    pub status: CustomerStatus,
    /// Live (not deleted) customers in the status at the end of the day.
    pub customers: i64,
    /// Customers that came into the status that day (created in it, or moved to it).
    pub entered: i64,
    /// Customers that went out of it that day (moved to another status, or deleted).
    pub exited: i64,
}

fn status_index(s: CustomerStatus) -> usize {
    CustomerStatus::ALL
        .iter()
        .position(|x| *x == s)
        .unwrap_or_default()
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Cell {
    customers: i64,
    entered: i64,
    exited: i64,
}

type DayCells = [Cell; CustomerStatus::ALL.len()];

/// The daily table's part of the fold: the rows from the last day on, with the days a
/// batch wrote.
#[derive(Debug, Clone, Default)]
pub struct Daily {
    last: Option<NaiveDate>,
    rows: BTreeMap<NaiveDate, DayCells>,
    dirty: BTreeSet<NaiveDate>,
}

impl Daily {
    /// The state after the stored rows of the last day (empty: nothing stored yet).
    pub fn from_last_day(rows: &[DailyRow]) -> Daily {
        let mut daily = Daily::default();
        let Some(day) = rows.iter().map(|r| r.day).max() else {
            return daily;
        };
        let mut cells = DayCells::default();
        for r in rows.iter().filter(|r| r.day == day) {
            cells[status_index(r.status)] = Cell {
                customers: r.customers,
                entered: r.entered,
                exited: r.exited,
            };
        }
        daily.last = Some(day);
        daily.rows.insert(day, cells);
        daily
    }

    /// The day an event at `at` counts on, with every day up to it filled.
    fn advance(&mut self, at: DateTime<Utc>) -> NaiveDate {
        let day = at.date_naive();
        let Some(last) = self.last else {
            self.last = Some(day);
            self.rows.insert(day, DayCells::default());
            self.dirty.insert(day);
            return day;
        };
        if day <= last {
            return last;
        }
        let mut carried = self.rows.get(&last).copied().unwrap_or_default();
        for c in &mut carried {
            c.entered = 0;
            c.exited = 0;
        }
        let mut d = last;
        while d < day {
            let Some(next) = d.succ_opt() else { break };
            d = next;
            self.rows.insert(d, carried);
            self.dirty.insert(d);
        }
        self.last = Some(d);
        d
    }

    fn moved(
        &mut self,
        at: DateTime<Utc>,
        from: Option<CustomerStatus>,
        to: Option<CustomerStatus>,
    ) {
        if from == to {
            return;
        }
        let day = self.advance(at);
        let cells = self.rows.entry(day).or_default();
        if let Some(s) = from {
            let c = &mut cells[status_index(s)];
            c.customers -= 1;
            c.exited += 1;
        }
        if let Some(s) = to {
            let c = &mut cells[status_index(s)];
            c.customers += 1;
            c.entered += 1;
        }
        self.dirty.insert(day);
    }

    /// The rows of the days written since the last call, keeping the last day's row (later
    /// events of that day change it) and forgetting the days before it.
    fn take_rows(&mut self) -> Vec<DailyRow> {
        let mut out = Vec::new();
        for day in std::mem::take(&mut self.dirty) {
            if let Some(cells) = self.rows.get(&day) {
                for (i, c) in cells.iter().enumerate() {
                    out.push(DailyRow {
                        day,
                        status: CustomerStatus::ALL[i],
                        customers: c.customers,
                        entered: c.entered,
                        exited: c.exited,
                    });
                }
            }
        }
        if let Some(last) = self.last {
            self.rows.retain(|d, _| *d >= last);
        }
        out
    }
}

/// Changes to the counter tables, added to the stored rows.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Deltas {
    /// Source → live customers, of them ever enrolled, of them lost now.
    pub conversion: BTreeMap<String, [i64; 3]>,
    /// (status left, first day of the month it was left in) → exits, seconds spent.
    pub time_in_status: BTreeMap<(&'static str, NaiveDate), [i64; 2]>,
    /// Agent → open customers assigned to them.
    pub open_customers: BTreeMap<Uuid, i64>,
    /// (assignee, due time) → open follow-ups.
    pub open_followups: BTreeMap<(Uuid, DateTime<Utc>), i64>,
    /// (day, role) → successful logins, failed attempts.
    pub logins: BTreeMap<(NaiveDate, String), [i64; 2]>,
}

impl Deltas {
    pub fn len(&self) -> usize {
        self.conversion.len()
            + self.time_in_status.len()
            + self.open_customers.len()
            + self.open_followups.len()
            + self.logins.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Drops entries whose changes cancelled out, which need no write.
    fn prune(&mut self) {
        self.conversion.retain(|_, v| v.iter().any(|x| *x != 0));
        self.time_in_status.retain(|_, v| v.iter().any(|x| *x != 0));
        self.open_customers.retain(|_, v| *v != 0);
        self.open_followups.retain(|_, v| *v != 0);
        self.logins.retain(|_, v| v.iter().any(|x| *x != 0));
    }
}

/// What one customer adds to the counters: nothing once deleted.
#[derive(Debug, Default)]
struct Contribution {
    status: Option<CustomerStatus>,
    conversion: Option<(String, [i64; 3])>,
    open_for: Vec<Uuid>,
    followups: Vec<(Uuid, DateTime<Utc>)>,
}

fn is_open(s: CustomerStatus) -> bool {
    !matches!(s, CustomerStatus::Enrolled | CustomerStatus::Lost)
}

fn contribution(c: Option<&CustomerFacts>) -> Contribution {
    let Some(c) = c.filter(|c| !c.deleted) else {
        return Contribution::default();
    };
    let mut open_for = Vec::new();
    if is_open(c.status) {
        for a in &c.agents {
            // An agent listed twice still has one customer more, not two.
            if !open_for.contains(a) {
                open_for.push(*a);
            }
        }
    }
    Contribution {
        status: Some(c.status),
        conversion: Some((
            c.source.clone().unwrap_or_else(|| NO_SOURCE.to_owned()),
            [
                1,
                i64::from(c.ever_enrolled),
                i64::from(c.status == CustomerStatus::Lost),
            ],
        )),
        open_for,
        followups: c.followups.iter().map(|f| (f.assignee, f.due_at)).collect(),
    }
}

/// The first day of the month of `at`.
pub fn month_of(at: DateTime<Utc>) -> NaiveDate {
    let d = at.date_naive();
    d.with_day(1).unwrap_or(d)
}

/// A working-state entry held by the fold: as it is now, and as it is stored.
#[derive(Debug, Clone, Default)]
struct Held {
    current: Option<Entity>,
    stored: Option<Entity>,
}

/// The analytics fold of a batch (live) or of a rebuild's bulk (between flushes).
#[derive(Debug, Default)]
pub struct AnalyticsFold {
    entities: IdMap<Held>,
    daily: Daily,
    deltas: Deltas,
}

/// The planned work of one batch: its facts in log order and the working-state entries they
/// read.
#[derive(Debug, Clone, Default)]
pub struct AnalyticsWork {
    pub facts: Vec<Fact>,
    pub load: Vec<Uuid>,
}

impl AnalyticsWork {
    pub fn of(envelopes: Vec<Envelope>) -> Self {
        let mut work = AnalyticsWork::default();
        for env in envelopes {
            if let Some(fact) = Fact::of(&env.event) {
                work.push(fact);
            }
        }
        work
    }

    fn push(&mut self, fact: Fact) {
        if let Some(id) = fact.subject()
            && !self.load.contains(&id)
        {
            self.load.push(id);
        }
        self.facts.push(fact);
    }

    pub fn extend(&mut self, later: AnalyticsWork) {
        let mut seen: std::collections::HashSet<Uuid> = self.load.iter().copied().collect();
        for id in later.load {
            if seen.insert(id) {
                self.load.push(id);
            }
        }
        self.facts.extend(later.facts);
    }

    pub fn len(&self) -> usize {
        self.facts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.facts.is_empty()
    }
}

/// What a batch or a flush writes: changed working-state entries, daily rows (absolute)
/// and counter deltas.
#[derive(Debug, Clone, Default)]
pub struct AnalyticsChanges {
    pub entities: Vec<(Uuid, Entity)>,
    pub daily: Vec<DailyRow>,
    pub deltas: Deltas,
}

impl AnalyticsChanges {
    pub fn len(&self) -> usize {
        self.entities.len() + self.daily.len() + self.deltas.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl AnalyticsFold {
    /// A fold that continues from the stored last day of the daily table.
    pub fn new(daily: Daily) -> Self {
        Self {
            entities: IdMap::default(),
            daily,
            deltas: Deltas::default(),
        }
    }

    /// Working-state entries held (the rebuild bounds its memory by this).
    pub fn len(&self) -> usize {
        self.entities.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entities.is_empty()
    }

    /// Entries the work reads that the fold does not hold: load them first.
    pub fn missing(&self, work: &AnalyticsWork) -> Vec<Uuid> {
        work.load
            .iter()
            .filter(|id| !self.entities.contains_key(id))
            .copied()
            .collect()
    }

    /// Takes in loaded entries; ids looked for and not found are held as absent.
    pub fn add_loaded(&mut self, ids: &[Uuid], loaded: Vec<(Uuid, Entity)>) {
        for (id, e) in loaded {
            self.entities.insert(
                id,
                Held {
                    current: Some(e.clone()),
                    stored: Some(e),
                },
            );
        }
        for id in ids {
            self.entities.entry(*id).or_default();
        }
    }

    pub fn fold(&mut self, work: &AnalyticsWork) {
        for fact in &work.facts {
            self.apply(fact);
        }
    }

    /// Folds one fact.
    pub fn apply(&mut self, fact: &Fact) {
        match fact {
            Fact::UserRole { user, role } => {
                self.entities.entry(*user).or_default().current =
                    Some(Entity::User { role: *role });
            }
            Fact::Login {
                user,
                succeeded,
                at,
            } => {
                let role = match user {
                    None => UNKNOWN_ACCOUNT.to_owned(),
                    Some(u) => match self.entities.get(u).and_then(|h| h.current.as_ref()) {
                        Some(Entity::User { role }) => role.as_str().to_owned(),
                        _ => UNKNOWN_ROLE.to_owned(),
                    },
                };
                let v = self
                    .deltas
                    .logins
                    .entry((at.date_naive(), role))
                    .or_default();
                // The pair is (successful logins, failed attempts).
                v[usize::from(!*succeeded)] += 1;
            }
            _ => self.apply_customer(fact),
        }
    }

    fn apply_customer(&mut self, fact: &Fact) {
        let Some(id) = fact.subject() else { return };
        let held = self.entities.entry(id).or_default();
        let before = match &held.current {
            Some(Entity::Customer(c)) => Some(c.clone()),
            Some(Entity::User { .. }) => return,
            None => None,
        };
        let mut at_time = None;
        let after = match (before.clone(), fact) {
            (
                None,
                Fact::CustomerCreated {
                    status,
                    source,
                    agents,
                    at,
                    ..
                },
            ) => {
                at_time = Some(*at);
                CustomerFacts {
                    status: *status,
                    since: *at,
                    source: source.clone(),
                    agents: agents.clone(),
                    deleted: false,
                    ever_enrolled: *status == CustomerStatus::Enrolled,
                    followups: Vec::new(),
                }
            }
            // A second creation, or any change of a customer that was never created, is
            // only found in a corrupt log: it changes nothing, as in the customers model.
            (None, _) | (Some(_), Fact::CustomerCreated { .. }) => return,
            (
                Some(mut c),
                Fact::CustomerChanged {
                    status,
                    source,
                    agents,
                    at,
                    ..
                },
            ) => {
                at_time = Some(*at);
                if let Some(s) = status
                    && *s != c.status
                {
                    c.status = *s;
                    c.since = *at;
                    c.ever_enrolled |= *s == CustomerStatus::Enrolled;
                }
                if let Some(s) = source {
                    c.source = s.clone();
                }
                if let Some(a) = agents {
                    c.agents = a.clone();
                }
                c
            }
            (Some(mut c), Fact::CustomerDeleted { at, .. }) => {
                at_time = Some(*at);
                c.deleted = true;
                c
            }
            (
                Some(mut c),
                Fact::FollowupScheduled {
                    followup,
                    assignee,
                    due_at,
                    ..
                },
            ) => {
                if c.followups.iter().any(|f| f.id == *followup) {
                    return;
                }
                c.followups.push(OpenFollowup {
                    id: *followup,
                    assignee: *assignee,
                    due_at: *due_at,
                });
                c
            }
            (Some(mut c), Fact::FollowupCompleted { followup, .. }) => {
                c.followups.retain(|f| f.id != *followup);
                c
            }
            (Some(_), Fact::UserRole { .. } | Fact::Login { .. }) => return,
        };
        let old = contribution(before.as_ref());
        let new = contribution(Some(&after));
        held.current = Some(Entity::Customer(after.clone()));

        if let Some(at) = at_time {
            self.daily.moved(at, old.status, new.status);
            // A stay ends when a live customer moves to another status; deletion is not a
            // status change and ends none.
            if let (Some(b), Some(s)) = (before.as_ref(), old.status)
                && Some(after.status) != old.status
                && new.status.is_some()
            {
                let v = self
                    .deltas
                    .time_in_status
                    .entry((s.as_str(), month_of(at)))
                    .or_default();
                v[0] += 1;
                v[1] += (at - b.since).num_seconds().max(0);
            }
        }
        let d = &mut self.deltas;
        if let Some((src, v)) = old.conversion {
            let e = d.conversion.entry(src).or_default();
            for i in 0..3 {
                e[i] -= v[i];
            }
        }
        if let Some((src, v)) = new.conversion {
            let e = d.conversion.entry(src).or_default();
            for i in 0..3 {
                e[i] += v[i];
            }
        }
        for a in old.open_for {
            *d.open_customers.entry(a).or_default() -= 1;
        }
        for a in new.open_for {
            *d.open_customers.entry(a).or_default() += 1;
        }
        for k in old.followups {
            *d.open_followups.entry(k).or_default() -= 1;
        }
        for k in new.followups {
            *d.open_followups.entry(k).or_default() += 1;
        }
    }

    /// Everything to write, leaving the fold empty but for the daily table's last day (a
    /// rebuild goes on from there after a flush).
    pub fn take_changes(&mut self) -> AnalyticsChanges {
        let mut entities: Vec<(Uuid, Entity)> = std::mem::take(&mut self.entities)
            .into_iter()
            .filter_map(|(id, h)| match h.current {
                Some(e) if h.stored.as_ref() != Some(&e) => Some((id, e)),
                _ => None,
            })
            .collect();
        entities.sort_by_key(|(id, _)| *id);
        let mut deltas = std::mem::take(&mut self.deltas);
        deltas.prune();
        AnalyticsChanges {
            entities,
            daily: self.daily.take_rows(),
            deltas,
        }
    }
}

#[cfg(test)]
mod tests;
