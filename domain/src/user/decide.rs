use super::credentials::{self, CredentialCommand, TotpState};
use super::events::{PasswordHash, UserEvent};
use crate::personal::Personal;
use crate::values::{Email, PersonName};
use crate::{Role, UserId};
use chrono::{DateTime, Utc};

/// The session version a new user starts at. Tokens carry the version they were issued
/// under; a token below the user's current version no longer works.
pub const FIRST_SESSION_VERSION: i64 = 1;

#[derive(Debug, Clone, PartialEq)]
pub struct User {
    pub id: UserId,
    pub email: Personal<Email>,
    pub name: Personal<PersonName>,
    pub role: Role,
    pub password_hash: Personal<PasswordHash>,
    pub active: bool,
    /// Raised by every change that must end the user's sessions: a role change, a
    /// deactivation, logout everywhere and force-logout.
    pub session_version: i64,
    pub created_at: DateTime<Utc>,
    pub version: i64,
    /// An administrator asked for a new password; cleared by a password change.
    pub must_change_password: bool,
    /// When the password was set (creation, or the last change; a rehash does not count).
    pub password_changed_at: DateTime<Utc>,
    pub totp: TotpState,
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

/// Changes to a staff user; `None` leaves a field as it is.
#[derive(Debug, Clone, PartialEq)]
pub struct UpdateUser {
    pub name: Option<PersonName>,
    pub role: Option<Role>,
    pub active: Option<bool>,
    /// How many active superadmins exist right now, the user included if they are one. A
    /// fact the caller reads from the users read model (the count spans every user, which no
    /// single aggregate holds), so that the decision stays pure.
    pub active_superadmins: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub enum UserCommand {
    Create(Box<CreateUser>),
    Update(Box<UpdateUser>),
    /// Ends every session of the user (logout everywhere, or force-logout).
    RevokeSessions,
    /// Passwords and the second factor (see `credentials.rs`).
    Credentials(CredentialCommand),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UserError {
    #[error("user already exists")]
    AlreadyExists,
    #[error("no such user")]
    NotFound,
    #[error("the last active superadmin cannot be demoted or deactivated")]
    LastSuperadmin,
    #[error("two-factor authentication is already enabled")]
    TotpAlreadyEnabled,
    #[error("no two-factor setup is in progress")]
    TotpNotPending,
    #[error("two-factor authentication is not enabled")]
    TotpNotEnabled,
    #[error("this code was already used")]
    TotpCodeReused,
    #[error("this backup code was already used")]
    BackupCodeUsed,
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
        UserCommand::Update(u) => match state {
            UserState::Absent => Err(UserError::NotFound),
            UserState::Present(user) => update(user, *u, now),
        },
        UserCommand::RevokeSessions => match state {
            UserState::Absent => Err(UserError::NotFound),
            UserState::Present(user) => Ok(vec![UserEvent::SessionsRevoked {
                user_id: user.id,
                session_version: user.session_version + 1,
                at: now,
            }]),
        },
        UserCommand::Credentials(c) => match state {
            UserState::Absent => Err(UserError::NotFound),
            UserState::Present(user) => credentials::decide(user, c, now),
        },
    }
}

fn update(user: &User, u: UpdateUser, now: DateTime<Utc>) -> Result<Vec<UserEvent>, UserError> {
    let id = user.id;
    let new_role = u.role.filter(|r| *r != user.role);
    let deactivate = u.active == Some(false) && user.active;
    let reactivate = u.active == Some(true) && !user.active;
    // The user stops being an active superadmin: only allowed while another one remains.
    let leaves_superadmins = user.active
        && user.role == Role::Superadmin
        && (deactivate || new_role.is_some_and(|r| r != Role::Superadmin));
    if leaves_superadmins && u.active_superadmins <= 1 {
        return Err(UserError::LastSuperadmin);
    }
    let mut events = Vec::new();
    if let Some(name) = u.name
        && user.name.known() != Some(&name)
    {
        events.push(UserEvent::Renamed {
            user_id: id,
            name: Personal::Known(name),
            at: now,
        });
    }
    let mut session_version = user.session_version;
    if let Some(to) = new_role {
        session_version += 1;
        events.push(UserEvent::RoleChanged {
            user_id: id,
            from: user.role,
            to,
            session_version,
            at: now,
        });
    }
    if deactivate {
        session_version += 1;
        events.push(UserEvent::Deactivated {
            user_id: id,
            session_version,
            at: now,
        });
    }
    if reactivate {
        events.push(UserEvent::Reactivated {
            user_id: id,
            at: now,
        });
    }
    Ok(events)
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
            session_version: FIRST_SESSION_VERSION,
            created_at: *at,
            version: 1,
            must_change_password: false,
            password_changed_at: *at,
            totp: TotpState::default(),
        })),
        (s @ UserState::Present(_), UserEvent::Created { .. }) => s,
        // Only a corrupt log holds changes to a user that was never created.
        (UserState::Absent, _) => UserState::Absent,
        (UserState::Present(mut u), e) => {
            match e {
                UserEvent::Created { .. } => {}
                UserEvent::Renamed { name, .. } => u.name = name.clone(),
                UserEvent::RoleChanged {
                    to,
                    session_version,
                    ..
                } => {
                    u.role = *to;
                    u.session_version = *session_version;
                }
                UserEvent::Deactivated {
                    session_version, ..
                } => {
                    u.active = false;
                    u.session_version = *session_version;
                }
                UserEvent::Reactivated { .. } => u.active = true,
                UserEvent::SessionsRevoked {
                    session_version, ..
                } => u.session_version = *session_version,
                UserEvent::PasswordRehashed { .. }
                | UserEvent::PasswordChanged { .. }
                | UserEvent::PasswordChangeRequired { .. }
                | UserEvent::TotpSetupStarted { .. }
                | UserEvent::TotpEnabled { .. }
                | UserEvent::TotpDisabled { .. }
                | UserEvent::TotpUsed { .. }
                | UserEvent::BackupCodeUsed { .. } => credentials::evolve(&mut u, e),
            }
            u.version += 1;
            UserState::Present(u)
        }
    }
}
