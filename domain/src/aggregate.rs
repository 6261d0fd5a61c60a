//! The shape every aggregate shares, so the write side can load, decide and append any of
//! them with one piece of code.

use crate::customer::{self, CustomerCommand, CustomerError, CustomerEvent, CustomerState};
use crate::event::DomainEvent;
use crate::user::{self, UserCommand, UserError, UserEvent, UserState};
use chrono::{DateTime, Utc};

pub trait Aggregate: Send + Sync + 'static {
    type State: Default + Clone + Send + Sync + 'static;
    type Command: Clone + Send;
    type Event: Clone + Send;
    type Error: std::error::Error + Clone + Send + Sync + 'static;

    fn decide(
        state: &Self::State,
        command: Self::Command,
        now: DateTime<Utc>,
    ) -> Result<Vec<Self::Event>, Self::Error>;
    fn evolve(state: Self::State, event: &Self::Event) -> Self::State;
    fn wrap(event: Self::Event) -> DomainEvent;
    fn unwrap(event: DomainEvent) -> Option<Self::Event>;
}

pub struct CustomerAggregate;

impl Aggregate for CustomerAggregate {
    type State = CustomerState;
    type Command = CustomerCommand;
    type Event = CustomerEvent;
    type Error = CustomerError;

    fn decide(
        s: &CustomerState,
        c: CustomerCommand,
        now: DateTime<Utc>,
    ) -> Result<Vec<CustomerEvent>, CustomerError> {
        customer::decide(s, c, now)
    }
    fn evolve(s: CustomerState, e: &CustomerEvent) -> CustomerState {
        customer::evolve(s, e)
    }
    fn wrap(e: CustomerEvent) -> DomainEvent {
        DomainEvent::Customer(e)
    }
    fn unwrap(e: DomainEvent) -> Option<CustomerEvent> {
        match e {
            DomainEvent::Customer(c) => Some(c),
            _ => None,
        }
    }
}

pub struct UserAggregate;

impl Aggregate for UserAggregate {
    type State = UserState;
    type Command = UserCommand;
    type Event = UserEvent;
    type Error = UserError;

    fn decide(
        s: &UserState,
        c: UserCommand,
        now: DateTime<Utc>,
    ) -> Result<Vec<UserEvent>, UserError> {
        user::decide(s, c, now)
    }
    fn evolve(s: UserState, e: &UserEvent) -> UserState {
        user::evolve(s, e)
    }
    fn wrap(e: UserEvent) -> DomainEvent {
        DomainEvent::User(e)
    }
    fn unwrap(e: DomainEvent) -> Option<UserEvent> {
        match e {
            DomainEvent::User(u) => Some(u),
            _ => None,
        }
    }
}

pub struct ApiKeyAggregate;

impl Aggregate for ApiKeyAggregate {
    type State = crate::api_key::ApiKeyState;
    type Command = crate::api_key::ApiKeyCommand;
    type Event = crate::api_key::ApiKeyEvent;
    type Error = crate::api_key::ApiKeyError;

    fn decide(
        s: &Self::State,
        c: Self::Command,
        now: DateTime<Utc>,
    ) -> Result<Vec<Self::Event>, Self::Error> {
        crate::api_key::decide(s, c, now)
    }
    fn evolve(s: Self::State, e: &Self::Event) -> Self::State {
        crate::api_key::evolve(s, e)
    }
    fn wrap(e: Self::Event) -> DomainEvent {
        DomainEvent::ApiKey(e)
    }
    fn unwrap(e: DomainEvent) -> Option<Self::Event> {
        match e {
            DomainEvent::ApiKey(k) => Some(k),
            _ => None,
        }
    }
}

pub struct FollowupAggregate;

impl Aggregate for FollowupAggregate {
    type State = crate::followup::FollowupState;
    type Command = crate::followup::FollowupCommand;
    type Event = crate::followup::FollowupEvent;
    type Error = crate::followup::FollowupError;

    fn decide(
        s: &Self::State,
        c: Self::Command,
        now: DateTime<Utc>,
    ) -> Result<Vec<Self::Event>, Self::Error> {
        crate::followup::decide(s, c, now)
    }
    fn evolve(s: Self::State, e: &Self::Event) -> Self::State {
        crate::followup::evolve(s, e)
    }
    fn wrap(e: Self::Event) -> DomainEvent {
        DomainEvent::Followup(e)
    }
    fn unwrap(e: DomainEvent) -> Option<Self::Event> {
        match e {
            DomainEvent::Followup(f) => Some(f),
            _ => None,
        }
    }
}

/// A bulk edit's batch (see [`crate::bulk`]).
pub struct BulkAggregate;

impl Aggregate for BulkAggregate {
    type State = crate::bulk::BulkState;
    type Command = crate::bulk::BulkCommand;
    type Event = crate::bulk::BulkEvent;
    type Error = crate::bulk::BulkError;

    fn decide(
        s: &Self::State,
        c: Self::Command,
        now: DateTime<Utc>,
    ) -> Result<Vec<Self::Event>, Self::Error> {
        crate::bulk::decide(s, c, now)
    }
    fn evolve(s: Self::State, e: &Self::Event) -> Self::State {
        crate::bulk::evolve(s, e)
    }
    fn wrap(e: Self::Event) -> DomainEvent {
        DomainEvent::Bulk(e)
    }
    fn unwrap(e: DomainEvent) -> Option<Self::Event> {
        match e {
            DomainEvent::Bulk(b) => Some(b),
            _ => None,
        }
    }
}
