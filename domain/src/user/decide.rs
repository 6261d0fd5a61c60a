use super::events::{PasswordHash, UserEvent};
use crate::personal::Personal;
use crate::values::{Email, PersonName};
use crate::{Role, UserId};
use chrono::{DateTime, Utc};

#[derive(Debug, Clone, PartialEq)]
pub struct User {
    pub id: UserId,
    pub email: Personal<Email>,
    pub name: Personal<PersonName>,
    pub role: Role,
    pub password_hash: Personal<PasswordHash>,
    pub active: bool,
    pub created_at: DateTime<Utc>,
    pub version: i64,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub enum UserState {
    #[default]
    Absent,
    Present(Box<User>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct CreateUser {
    pub user_id: UserId,
    pub email: Email,
    pub name: PersonName,
    pub role: Role,
    pub password_hash: PasswordHash,
}

#[derive(Debug, Clone, PartialEq)]
pub enum UserCommand {
    Create(Box<CreateUser>),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UserError {
    #[error("user already exists")]
    AlreadyExists,
}

pub fn decide(
    state: &UserState,
    command: UserCommand,
    now: DateTime<Utc>,
) -> Result<Vec<UserEvent>, UserError> {
    match command {
        UserCommand::Create(c) => match state {
            UserState::Present(_) => Err(UserError::AlreadyExists),
            UserState::Absent => Ok(vec![UserEvent::Created {
                user_id: c.user_id,
                email: Personal::Known(c.email),
                name: Personal::Known(c.name),
                role: c.role,
                password_hash: Personal::Known(c.password_hash),
                at: now,
            }]),
        },
    }
}

pub fn evolve(state: UserState, event: &UserEvent) -> UserState {
    match (state, event) {
        (
            UserState::Absent,
            UserEvent::Created {
                user_id,
                email,
                name,
                role,
                password_hash,
                at,
            },
        ) => UserState::Present(Box::new(User {
            id: *user_id,
            email: email.clone(),
            name: name.clone(),
            role: *role,
            password_hash: password_hash.clone(),
            active: true,
            created_at: *at,
            version: 1,
        })),
        (s @ UserState::Present(_), UserEvent::Created { .. }) => s,
    }
}
