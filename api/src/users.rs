//! Creating staff users: shared by `egec user create` and the users API.

use crate::auth::password::Passwords;
use anyhow::Context;
use egec_commands::handler::{CommandBus, HandlerError};
use egec_domain::aggregate::UserAggregate;
use egec_domain::event::Metadata;
use egec_domain::password_policy::{self, PasswordContext, PasswordPolicy};
use egec_domain::user::{CreateUser, PasswordHash, UserCommand};
use egec_domain::values::{Email, PersonName};
use egec_domain::{Role, UserId};
use egec_projections::ReadModels;
use secrecy::{ExposeSecret, SecretString};
use uuid::Uuid;

#[derive(Debug, thiserror::Error)]
pub enum CreateUserError {
    #[error("{0}")]
    WeakPassword(#[from] egec_domain::password_policy::WeakPassword),
    #[error("{field}: {problem}")]
    Invalid {
        field: &'static str,
        problem: String,
    },
    #[error("a user with this email already exists")]
    EmailTaken,
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

/// What a new staff user is made of, as given (not yet validated).
pub struct NewUser<'a> {
    pub email: &'a str,
    pub name: &'a str,
    pub role: Role,
    pub password: &'a SecretString,
    pub policy: PasswordPolicy,
}

pub async fn create_user(
    bus: &CommandBus,
    read: &ReadModels,
    passwords: &Passwords,
    new: NewUser<'_>,
    meta: &Metadata,
) -> Result<(UserId, i64), CreateUserError> {
    let NewUser {
        email,
        name,
        role,
        password,
        policy,
    } = new;
    let email = Email::parse(email).map_err(|e| CreateUserError::Invalid {
        field: "email",
        problem: e.to_string(),
    })?;
    let name = PersonName::parse(name).map_err(|e| CreateUserError::Invalid {
        field: "name",
        problem: e.to_string(),
    })?;
    password_policy::check(
        policy,
        password.expose_secret(),
        &PasswordContext {
            email: Some(email.as_str()),
            name: Some(name.as_str()),
        },
    )?;
    // Known limitation: this check reads the projection, so two simultaneous creations with
    // one email could both pass; a reservation stream per email closes that race later.
    if read
        .find_user_by_email(&email)
        .await
        .context("checking email")?
        .is_some()
    {
        return Err(CreateUserError::EmailTaken);
    }
    let hash = passwords.hash(password).await.context("hashing password")?;
    let password_hash =
        PasswordHash::parse(&hash).map_err(|e| anyhow::anyhow!("hash format: {e}"))?;
    let id = UserId::from_uuid(Uuid::now_v7());
    let cmd = UserCommand::Create(Box::new(CreateUser {
        user_id: id,
        email,
        name,
        role,
        password_hash,
    }));
    let done = bus
        .execute_new::<UserAggregate>(&id.stream_id(), &id.subject(), Uuid::now_v7(), meta, cmd)
        .await
        .map_err(|e| match e {
            HandlerError::Domain(_) => CreateUserError::EmailTaken,
            other => CreateUserError::Internal(anyhow::anyhow!(other)),
        })?;
    Ok((id, done.position.unwrap_or(0)))
}
