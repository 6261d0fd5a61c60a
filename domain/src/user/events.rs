use super::credentials::{BackupCodeHashes, TotpSecret};
use crate::encoding::*;
use crate::personal::Personal;
use crate::values::{Email, Invalid, PersonName};
use crate::{Role, UserId};
use chrono::{DateTime, Datelike, Utc};
use std::fmt;

/// A password hash in PHC string form (argon2id, or bcrypt from the old system). Opaque to
/// the domain; kept encrypted in the log like personal data, and never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct PasswordHash(String);

impl PasswordHash {
    pub fn parse(s: &str) -> Result<Self, Invalid> {
        if s.starts_with('$') && s.len() >= 20 && s.len() <= 512 {
            Ok(Self(s.to_owned()))
        } else {
            Err(Invalid("password hash is not a PHC or bcrypt string"))
        }
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for PasswordHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PasswordHash(…)")
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum UserEvent {
    Created {
        user_id: UserId,
        email: Personal<Email>,
        name: Personal<PersonName>,
        role: Role,
        password_hash: Personal<PasswordHash>,
        at: DateTime<Utc>,
    },
    Renamed {
        user_id: UserId,
        name: Personal<PersonName>,
        at: DateTime<Utc>,
    },
    /// The role changed; every session issued before ends (`session_version` is the new one).
    RoleChanged {
        user_id: UserId,
        from: Role,
        to: Role,
        session_version: i64,
        at: DateTime<Utc>,
    },
    /// The user may no longer sign in; every session ends (`session_version` is the new one).
    Deactivated {
        user_id: UserId,
        session_version: i64,
        at: DateTime<Utc>,
    },
    Reactivated {
        user_id: UserId,
        at: DateTime<Utc>,
    },
    /// Logout everywhere (by the user) or force-logout (by an administrator; the actor is in
    /// the metadata): tokens carrying an older session version stop working.
    SessionsRevoked {
        user_id: UserId,
        session_version: i64,
        at: DateTime<Utc>,
    },
    /// The password verified against an outdated hash (bcrypt from the old system, or older
    /// argon2 parameters) and was hashed again with the current ones; the password itself is
    /// unchanged and sessions go on.
    PasswordRehashed {
        user_id: UserId,
        password_hash: Personal<PasswordHash>,
        at: DateTime<Utc>,
    },
    /// The user chose a new password. Every session ends (`session_version` is the new one)
    /// and a pending forced change is satisfied.
    PasswordChanged {
        user_id: UserId,
        password_hash: Personal<PasswordHash>,
        session_version: i64,
        at: DateTime<Utc>,
    },
    /// An administrator requires the user to choose a new password (the actor is in the
    /// metadata); until then only the password change, logout and `me` are allowed.
    PasswordChangeRequired {
        user_id: UserId,
        at: DateTime<Utc>,
    },
    /// A TOTP secret was issued and awaits confirmation by a code (pending, not yet used
    /// at login).
    TotpSetupStarted {
        user_id: UserId,
        secret: Personal<TotpSecret>,
        at: DateTime<Utc>,
    },
    /// The pending secret was confirmed by a code of time step `step` (which counts as
    /// used); from now on logins need a second factor. Hashes of the ten backup codes.
    TotpEnabled {
        user_id: UserId,
        backup_codes: Personal<BackupCodeHashes>,
        step: i64,
        at: DateTime<Utc>,
    },
    /// Two-factor authentication was turned off (after re-authentication).
    TotpDisabled {
        user_id: UserId,
        at: DateTime<Utc>,
    },
    /// A TOTP code of time step `step` was accepted; no code of this or an earlier step is
    /// accepted again.
    TotpUsed {
        user_id: UserId,
        step: i64,
        at: DateTime<Utc>,
    },
    /// The backup code at `index` (of those issued by the last `TotpEnabled`) was used up.
    BackupCodeUsed {
        user_id: UserId,
        index: u32,
        at: DateTime<Utc>,
    },
}

pub const USER_CREATED: &str = "UserCreated";
pub const USER_RENAMED: &str = "UserRenamed";
pub const USER_ROLE_CHANGED: &str = "UserRoleChanged";
pub const USER_DEACTIVATED: &str = "UserDeactivated";
pub const USER_REACTIVATED: &str = "UserReactivated";
pub const USER_SESSIONS_REVOKED: &str = "UserSessionsRevoked";
pub const USER_PASSWORD_REHASHED: &str = "UserPasswordRehashed";
pub const USER_PASSWORD_CHANGED: &str = "UserPasswordChanged";
pub const USER_PASSWORD_CHANGE_REQUIRED: &str = "UserPasswordChangeRequired";
pub const USER_TOTP_SETUP_STARTED: &str = "UserTotpSetupStarted";
pub const USER_TOTP_ENABLED: &str = "UserTotpEnabled";
pub const USER_TOTP_DISABLED: &str = "UserTotpDisabled";
pub const USER_TOTP_USED: &str = "UserTotpUsed";
pub const USER_BACKUP_CODE_USED: &str = "UserBackupCodeUsed";

impl UserEvent {
    pub fn user_id(&self) -> UserId {
        match self {
            UserEvent::Created { user_id, .. }
            | UserEvent::Renamed { user_id, .. }
            | UserEvent::RoleChanged { user_id, .. }
            | UserEvent::Deactivated { user_id, .. }
            | UserEvent::Reactivated { user_id, .. }
            | UserEvent::SessionsRevoked { user_id, .. }
            | UserEvent::PasswordRehashed { user_id, .. }
            | UserEvent::PasswordChanged { user_id, .. }
            | UserEvent::PasswordChangeRequired { user_id, .. }
            | UserEvent::TotpSetupStarted { user_id, .. }
            | UserEvent::TotpEnabled { user_id, .. }
            | UserEvent::TotpDisabled { user_id, .. }
            | UserEvent::TotpUsed { user_id, .. }
            | UserEvent::BackupCodeUsed { user_id, .. } => *user_id,
        }
    }
    pub fn action(&self) -> &'static str {
        match self {
            UserEvent::Created { .. } => "USER_CREATED",
            UserEvent::Renamed { .. } => "USER_RENAMED",
            UserEvent::RoleChanged { .. } => "USER_ROLE_CHANGED",
            UserEvent::Deactivated { .. } => "USER_DEACTIVATED",
            UserEvent::Reactivated { .. } => "USER_REACTIVATED",
            UserEvent::SessionsRevoked { .. } => "SESSIONS_REVOKED",
            UserEvent::PasswordRehashed { .. } => "PASSWORD_REHASHED",
            UserEvent::PasswordChanged { .. } => "PASSWORD_CHANGED",
            UserEvent::PasswordChangeRequired { .. } => "PASSWORD_CHANGE_REQUIRED",
            UserEvent::TotpSetupStarted { .. } => "TOTP_SETUP_STARTED",
            UserEvent::TotpEnabled { .. } => "TOTP_ENABLED",
            UserEvent::TotpDisabled { .. } => "TOTP_DISABLED",
            UserEvent::TotpUsed { .. } => "TOTP_USED",
            UserEvent::BackupCodeUsed { .. } => "BACKUP_CODE_USED",
        }
    }
    pub fn at(&self) -> DateTime<Utc> {
        match self {
            UserEvent::Created { at, .. }
            | UserEvent::Renamed { at, .. }
            | UserEvent::RoleChanged { at, .. }
            | UserEvent::Deactivated { at, .. }
            | UserEvent::Reactivated { at, .. }
            | UserEvent::SessionsRevoked { at, .. }
            | UserEvent::PasswordRehashed { at, .. }
            | UserEvent::PasswordChanged { at, .. }
            | UserEvent::PasswordChangeRequired { at, .. }
            | UserEvent::TotpSetupStarted { at, .. }
            | UserEvent::TotpEnabled { at, .. }
            | UserEvent::TotpDisabled { at, .. }
            | UserEvent::TotpUsed { at, .. }
            | UserEvent::BackupCodeUsed { at, .. } => *at,
        }
    }
}

fn role_fact(e: &DecryptedEvent, key: &str) -> Result<Role, DecodeError> {
    fact_str(e, key)?
        .parse()
        .map_err(|_| DecodeError(format!("{}: bad role in {key}", e.event_type)))
}

fn fact_i64(e: &DecryptedEvent, key: &str) -> Result<i64, DecodeError> {
    e.facts
        .get(key)
        .and_then(serde_json::Value::as_i64)
        .ok_or_else(|| DecodeError(format!("{}: missing number {key}", e.event_type)))
}

impl EventCodec for UserEvent {
    fn encode(&self) -> EncodedEvent {
        match self {
            UserEvent::Created {
                user_id,
                email,
                name,
                role,
                password_hash,
                at,
            } => EncodedEvent::new(USER_CREATED, 1)
                .fact("user_id", user_id.to_string())
                .fact("role", role.as_str())
                .fact("at", time_fact(*at))
                .personal_field("email", email.known().map(|e| e.as_str()))
                .personal_field("name", name.known().map(|n| n.as_str()))
                .personal_field("password_hash", password_hash.known().map(|h| h.as_str())),
            UserEvent::Renamed { user_id, name, at } => EncodedEvent::new(USER_RENAMED, 1)
                .fact("user_id", user_id.to_string())
                .fact("at", time_fact(*at))
                .personal_field("name", name.known().map(|n| n.as_str())),
            UserEvent::RoleChanged {
                user_id,
                from,
                to,
                session_version,
                at,
            } => EncodedEvent::new(USER_ROLE_CHANGED, 1)
                .fact("user_id", user_id.to_string())
                .fact("from", from.as_str())
                .fact("to", to.as_str())
                .fact("session_version", *session_version)
                .fact("at", time_fact(*at)),
            UserEvent::Deactivated {
                user_id,
                session_version,
                at,
            } => EncodedEvent::new(USER_DEACTIVATED, 1)
                .fact("user_id", user_id.to_string())
                .fact("session_version", *session_version)
                .fact("at", time_fact(*at)),
            UserEvent::Reactivated { user_id, at } => EncodedEvent::new(USER_REACTIVATED, 1)
                .fact("user_id", user_id.to_string())
                .fact("at", time_fact(*at)),
            UserEvent::SessionsRevoked {
                user_id,
                session_version,
                at,
            } => EncodedEvent::new(USER_SESSIONS_REVOKED, 1)
                .fact("user_id", user_id.to_string())
                .fact("session_version", *session_version)
                .fact("at", time_fact(*at)),
            UserEvent::PasswordRehashed {
                user_id,
                password_hash,
                at,
            } => EncodedEvent::new(USER_PASSWORD_REHASHED, 1)
                .fact("user_id", user_id.to_string())
                .fact("at", time_fact(*at))
                .personal_field("password_hash", password_hash.known().map(|h| h.as_str())),
            UserEvent::PasswordChanged {
                user_id,
                password_hash,
                session_version,
                at,
            } => EncodedEvent::new(USER_PASSWORD_CHANGED, 1)
                .fact("user_id", user_id.to_string())
                .fact("session_version", *session_version)
                .fact("at", time_fact(*at))
                .personal_field("password_hash", password_hash.known().map(|h| h.as_str())),
            UserEvent::PasswordChangeRequired { user_id, at } => {
                EncodedEvent::new(USER_PASSWORD_CHANGE_REQUIRED, 1)
                    .fact("user_id", user_id.to_string())
                    .fact("at", time_fact(*at))
            }
            UserEvent::TotpSetupStarted {
                user_id,
                secret,
                at,
            } => EncodedEvent::new(USER_TOTP_SETUP_STARTED, 1)
                .fact("user_id", user_id.to_string())
                .fact("at", time_fact(*at))
                .personal_field("secret", secret.known().map(|s| s.as_str())),
            UserEvent::TotpEnabled {
                user_id,
                backup_codes,
                step,
                at,
            } => EncodedEvent::new(USER_TOTP_ENABLED, 1)
                .fact("user_id", user_id.to_string())
                .fact("step", *step)
                .fact("at", time_fact(*at))
                .personal_field(
                    "backup_code_hashes",
                    backup_codes.known().map(|b| b.to_stored()).as_deref(),
                ),
            UserEvent::TotpDisabled { user_id, at } => EncodedEvent::new(USER_TOTP_DISABLED, 1)
                .fact("user_id", user_id.to_string())
                .fact("at", time_fact(*at)),
            UserEvent::TotpUsed { user_id, step, at } => EncodedEvent::new(USER_TOTP_USED, 1)
                .fact("user_id", user_id.to_string())
                .fact("step", *step)
                .fact("at", time_fact(*at)),
            UserEvent::BackupCodeUsed { user_id, index, at } => {
                EncodedEvent::new(USER_BACKUP_CODE_USED, 1)
                    .fact("user_id", user_id.to_string())
                    .fact("index", *index)
                    .fact("at", time_fact(*at))
            }
        }
    }

    fn decode(e: &DecryptedEvent) -> Result<Self, DecodeError> {
        match (e.event_type.as_str(), e.schema_version) {
            (USER_CREATED, 1) => Ok(UserEvent::Created {
                user_id: UserId::from_uuid(fact_uuid(e, "user_id")?),
                email: personal_req(e, "email", Email::parse)?,
                name: personal_req(e, "name", PersonName::from_stored)?,
                role: fact_str(e, "role")?
                    .parse()
                    .map_err(|_| DecodeError::new("bad role"))?,
                password_hash: personal_req(e, "password_hash", PasswordHash::parse)?,
                at: fact_time(e, "at")?,
            }),
            (USER_RENAMED, 1) => Ok(UserEvent::Renamed {
                user_id: UserId::from_uuid(fact_uuid(e, "user_id")?),
                name: personal_req(e, "name", PersonName::from_stored)?,
                at: fact_time(e, "at")?,
            }),
            (USER_ROLE_CHANGED, 1) => Ok(UserEvent::RoleChanged {
                user_id: UserId::from_uuid(fact_uuid(e, "user_id")?),
                from: role_fact(e, "from")?,
                to: role_fact(e, "to")?,
                session_version: fact_i64(e, "session_version")?,
                at: fact_time(e, "at")?,
            }),
            (USER_DEACTIVATED, 1) => Ok(UserEvent::Deactivated {
                user_id: UserId::from_uuid(fact_uuid(e, "user_id")?),
                session_version: fact_i64(e, "session_version")?,
                at: fact_time(e, "at")?,
            }),
            (USER_REACTIVATED, 1) => Ok(UserEvent::Reactivated {
                user_id: UserId::from_uuid(fact_uuid(e, "user_id")?),
                at: fact_time(e, "at")?,
            }),
            (USER_SESSIONS_REVOKED, 1) => Ok(UserEvent::SessionsRevoked {
                user_id: UserId::from_uuid(fact_uuid(e, "user_id")?),
                session_version: fact_i64(e, "session_version")?,
                at: fact_time(e, "at")?,
            }),
            (USER_PASSWORD_REHASHED, 1) => Ok(UserEvent::PasswordRehashed {
                user_id: UserId::from_uuid(fact_uuid(e, "user_id")?),
                password_hash: personal_req(e, "password_hash", PasswordHash::parse)?,
                at: fact_time(e, "at")?,
            }),
            (USER_PASSWORD_CHANGED, 1) => Ok(UserEvent::PasswordChanged {
                user_id: UserId::from_uuid(fact_uuid(e, "user_id")?),
                password_hash: personal_req(e, "password_hash", PasswordHash::parse)?,
                session_version: fact_i64(e, "session_version")?,
                at: fact_time(e, "at")?,
            }),
            (USER_PASSWORD_CHANGE_REQUIRED, 1) => Ok(UserEvent::PasswordChangeRequired {
                user_id: UserId::from_uuid(fact_uuid(e, "user_id")?),
                at: fact_time(e, "at")?,
            }),
            (USER_TOTP_SETUP_STARTED, 1) => Ok(UserEvent::TotpSetupStarted {
                user_id: UserId::from_uuid(fact_uuid(e, "user_id")?),
                secret: personal_req(e, "secret", TotpSecret::parse)?,
                at: fact_time(e, "at")?,
            }),
            (USER_TOTP_ENABLED, 1) => Ok(UserEvent::TotpEnabled {
                user_id: UserId::from_uuid(fact_uuid(e, "user_id")?),
                backup_codes: personal_req(e, "backup_code_hashes", BackupCodeHashes::parse)?,
                step: fact_i64(e, "step")?,
                at: fact_time(e, "at")?,
            }),
            (USER_TOTP_DISABLED, 1) => Ok(UserEvent::TotpDisabled {
                user_id: UserId::from_uuid(fact_uuid(e, "user_id")?),
                at: fact_time(e, "at")?,
            }),
            (USER_TOTP_USED, 1) => Ok(UserEvent::TotpUsed {
                user_id: UserId::from_uuid(fact_uuid(e, "user_id")?),
                step: fact_i64(e, "step")?,
                at: fact_time(e, "at")?,
            }),
            (USER_BACKUP_CODE_USED, 1) => Ok(UserEvent::BackupCodeUsed {
                user_id: UserId::from_uuid(fact_uuid(e, "user_id")?),
                index: u32::try_from(fact_i64(e, "index")?)
                    .map_err(|_| DecodeError::new("UserBackupCodeUsed: bad index"))?,
                at: fact_time(e, "at")?,
            }),
            (t, v) => Err(DecodeError(format!("unknown user event {t} v{v}"))),
        }
    }
}

/// Login activity of one user, in a stream per calendar month (see [`login_stream_id`]).
#[derive(Debug, Clone, PartialEq)]
pub enum LoginEvent {
    Succeeded {
        user_id: UserId,
        session_id: uuid::Uuid,
        at: DateTime<Utc>,
    },
    /// A refused attempt: wrong password, or any attempt while locked.
    Failed {
        user_id: UserId,
        reason: LoginFailure,
        at: DateTime<Utc>,
    },
    /// Too many failures in a row: attempts are refused until `until`.
    Locked {
        user_id: UserId,
        until: DateTime<Utc>,
        at: DateTime<Utc>,
    },
    /// An administrator lifted the lock (the actor is in the metadata).
    Unlocked { user_id: UserId, at: DateTime<Utc> },
    /// The user ended one session (the one whose token carried `session_id`).
    LoggedOut {
        user_id: UserId,
        session_id: uuid::Uuid,
        at: DateTime<Utc>,
    },
    /// An authenticated request was refused by a network rule (e.g. the admin IP allowlist);
    /// recorded in the month's security stream (see [`crate::security`]), not the user's
    /// login stream. `path` is the request path without its query string.
    ///
    /// Schema version 2 adds the refused permission (`action`, when a permission was
    /// missing) and the customer concerned (`customer_id`, when a customer was hidden or
    /// the refusal was about one); version 1 events read back with neither.
    AccessDenied {
        user_id: UserId,
        path: String,
        reason: crate::security::DenialReason,
        action: Option<crate::permission::Action>,
        customer_id: Option<crate::CustomerId>,
        at: DateTime<Utc>,
    },
    /// An attempt for an email no active account has. `account_key` is a keyed hash of the
    /// normalised email (the stream is keyed by it); the email itself is personal, kept
    /// under the month's retention key like IP addresses.
    UnknownAccountFailed {
        account_key: String,
        email: Personal<String>,
        at: DateTime<Utc>,
    },
    /// `egec retention apply` (or the daily task of `serve`) destroyed the keys of the
    /// listed months (`YYYY-MM`, see [`crate::retention`]): their IP addresses, user agents
    /// and unknown login emails read `[EXPIRED]` from now on. Recorded in the month's
    /// security stream like access denials, so every reader of the `Login` family decodes it.
    /// `destroyed` counts the key versions destroyed.
    RetentionApplied {
        months: Vec<crate::retention::Month>,
        retention_months: u32,
        destroyed: u32,
        at: DateTime<Utc>,
    },
}

/// Why an attempt failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoginFailure {
    WrongPassword,
    Locked,
    /// The password was right but the TOTP or backup code was wrong or already used;
    /// counts towards the lockout like a wrong password.
    WrongSecondFactor,
}

impl LoginFailure {
    fn as_str(self) -> &'static str {
        match self {
            LoginFailure::WrongPassword => "wrong_password",
            LoginFailure::Locked => "locked",
            LoginFailure::WrongSecondFactor => "wrong_second_factor",
        }
    }
}

pub const LOGIN_SUCCEEDED: &str = "LoginSucceeded";
pub const LOGIN_FAILED: &str = "LoginFailed";
pub const ACCOUNT_LOCKED: &str = "LoginAccountLocked";
pub const ACCOUNT_UNLOCKED: &str = "LoginAccountUnlocked";
/// Stored type of [`LoginEvent::LoggedOut`]; the sessions projection folds exactly this type.
pub const SESSION_ENDED: &str = "LoginSessionEnded";
/// Stored type of [`LoginEvent::AccessDenied`] (the "Login" prefix routes its decoding).
pub const ACCESS_DENIED: &str = "LoginAccessDenied";
pub const LOGIN_FAILED_UNKNOWN_ACCOUNT: &str = "LoginFailedUnknownAccount";
/// Stored type of [`LoginEvent::RetentionApplied`].
pub const RETENTION_APPLIED: &str = "LoginRetentionApplied";

impl LoginEvent {
    pub fn action(&self) -> &'static str {
        match self {
            LoginEvent::Succeeded { .. } => "LOGIN",
            LoginEvent::Failed { .. } => "LOGIN_FAILED",
            LoginEvent::Locked { .. } => "ACCOUNT_LOCKED",
            LoginEvent::Unlocked { .. } => "ACCOUNT_UNLOCKED",
            LoginEvent::LoggedOut { .. } => "LOGOUT",
            LoginEvent::AccessDenied { .. } => "ACCESS_DENIED",
            LoginEvent::UnknownAccountFailed { .. } => "LOGIN_FAILED",
            LoginEvent::RetentionApplied { .. } => "RETENTION_APPLIED",
        }
    }
}

/// The streams whose events decide a login at `at`: the previous month's and the current
/// month's activity, oldest first.
pub fn recent_login_stream_ids(user: UserId, at: DateTime<Utc>) -> [String; 2] {
    let first_of_month = at.date_naive().with_day(1).unwrap_or(at.date_naive());
    let last_month = first_of_month.pred_opt().unwrap_or(first_of_month);
    [
        format!(
            "login-{}-{:04}{:02}",
            user,
            last_month.year(),
            last_month.month()
        ),
        login_stream_id(user, at),
    ]
}

/// The stream holding failed attempts for one unknown email (by its keyed hash) in the
/// month of `at`.
pub fn unknown_login_stream_id(account_key: &str, at: DateTime<Utc>) -> String {
    format!(
        "login-unknown-{}-{:04}{:02}",
        account_key,
        at.year(),
        at.month()
    )
}

/// The stream holding a user's login activity in the month of `at`.
pub fn login_stream_id(user: UserId, at: DateTime<Utc>) -> String {
    format!("login-{}-{:04}{:02}", user, at.year(), at.month())
}

impl EventCodec for LoginEvent {
    fn encode(&self) -> EncodedEvent {
        match self {
            LoginEvent::Succeeded {
                user_id,
                session_id,
                at,
            } => EncodedEvent::new(LOGIN_SUCCEEDED, 1)
                .fact("user_id", user_id.to_string())
                .fact("session_id", session_id.to_string())
                .fact("at", time_fact(*at)),
            LoginEvent::Failed {
                user_id,
                reason,
                at,
            } => EncodedEvent::new(LOGIN_FAILED, 1)
                .fact("user_id", user_id.to_string())
                .fact("reason", reason.as_str())
                .fact("at", time_fact(*at)),
            LoginEvent::Locked { user_id, until, at } => EncodedEvent::new(ACCOUNT_LOCKED, 1)
                .fact("user_id", user_id.to_string())
                .fact("until", time_fact(*until))
                .fact("at", time_fact(*at)),
            LoginEvent::Unlocked { user_id, at } => EncodedEvent::new(ACCOUNT_UNLOCKED, 1)
                .fact("user_id", user_id.to_string())
                .fact("at", time_fact(*at)),
            LoginEvent::LoggedOut {
                user_id,
                session_id,
                at,
            } => EncodedEvent::new(SESSION_ENDED, 1)
                .fact("user_id", user_id.to_string())
                .fact("session_id", session_id.to_string())
                .fact("at", time_fact(*at)),
            LoginEvent::AccessDenied {
                user_id,
                path,
                reason,
                action,
                customer_id,
                at,
            } => EncodedEvent::new(ACCESS_DENIED, 2)
                .fact("user_id", user_id.to_string())
                .fact("path", path.as_str())
                .fact("reason", reason.as_str())
                .fact("action", action.map(|a| a.name()))
                .fact("customer_id", customer_id.map(|c| c.to_string()))
                .fact("at", time_fact(*at)),
            LoginEvent::UnknownAccountFailed {
                account_key,
                email,
                at,
            } => EncodedEvent::new(LOGIN_FAILED_UNKNOWN_ACCOUNT, 1)
                .fact("account_key", account_key.as_str())
                .fact("at", time_fact(*at))
                .personal_field("email", email.known().map(String::as_str)),
            LoginEvent::RetentionApplied {
                months,
                retention_months,
                destroyed,
                at,
            } => EncodedEvent::new(RETENTION_APPLIED, 1)
                .fact(
                    "months",
                    months
                        .iter()
                        .map(|m| serde_json::Value::String(m.to_string()))
                        .collect::<Vec<_>>(),
                )
                .fact("retention_months", *retention_months)
                .fact("destroyed", *destroyed)
                .fact("at", time_fact(*at)),
        }
    }

    fn decode(e: &DecryptedEvent) -> Result<Self, DecodeError> {
        match (e.event_type.as_str(), e.schema_version) {
            (LOGIN_SUCCEEDED, 1) => Ok(LoginEvent::Succeeded {
                user_id: UserId::from_uuid(fact_uuid(e, "user_id")?),
                session_id: fact_uuid(e, "session_id")?,
                at: fact_time(e, "at")?,
            }),
            (LOGIN_FAILED, 1) => Ok(LoginEvent::Failed {
                user_id: UserId::from_uuid(fact_uuid(e, "user_id")?),
                reason: match fact_str(e, "reason")? {
                    "wrong_password" => LoginFailure::WrongPassword,
                    "locked" => LoginFailure::Locked,
                    "wrong_second_factor" => LoginFailure::WrongSecondFactor,
                    _ => return Err(DecodeError::new("bad login failure reason")),
                },
                at: fact_time(e, "at")?,
            }),
            (ACCOUNT_LOCKED, 1) => Ok(LoginEvent::Locked {
                user_id: UserId::from_uuid(fact_uuid(e, "user_id")?),
                until: fact_time(e, "until")?,
                at: fact_time(e, "at")?,
            }),
            (ACCOUNT_UNLOCKED, 1) => Ok(LoginEvent::Unlocked {
                user_id: UserId::from_uuid(fact_uuid(e, "user_id")?),
                at: fact_time(e, "at")?,
            }),
            (SESSION_ENDED, 1) => Ok(LoginEvent::LoggedOut {
                user_id: UserId::from_uuid(fact_uuid(e, "user_id")?),
                session_id: fact_uuid(e, "session_id")?,
                at: fact_time(e, "at")?,
            }),
            (ACCESS_DENIED, 2) => Ok(LoginEvent::AccessDenied {
                user_id: UserId::from_uuid(fact_uuid(e, "user_id")?),
                path: fact_str(e, "path")?.to_owned(),
                reason: crate::security::DenialReason::parse(fact_str(e, "reason")?)
                    .ok_or_else(|| DecodeError::new("bad access denial reason"))?,
                action: fact_opt_str(e, "action")
                    .map(|a| {
                        crate::permission::Action::from_name(a)
                            .ok_or_else(|| DecodeError::new("bad refused action"))
                    })
                    .transpose()?,
                customer_id: match fact_opt_str(e, "customer_id") {
                    None => None,
                    Some(_) => Some(crate::CustomerId::from_uuid(fact_uuid(e, "customer_id")?)),
                },
                at: fact_time(e, "at")?,
            }),
            (LOGIN_FAILED_UNKNOWN_ACCOUNT, 1) => Ok(LoginEvent::UnknownAccountFailed {
                account_key: fact_str(e, "account_key")?.to_owned(),
                email: personal_req(e, "email", |s| Ok(s.to_owned()))?,
                at: fact_time(e, "at")?,
            }),
            (RETENTION_APPLIED, 1) => {
                let count = |key: &str| {
                    e.facts
                        .get(key)
                        .and_then(serde_json::Value::as_u64)
                        .and_then(|n| u32::try_from(n).ok())
                        .ok_or_else(|| DecodeError(format!("{RETENTION_APPLIED}: bad {key}")))
                };
                let months = e
                    .facts
                    .get("months")
                    .and_then(serde_json::Value::as_array)
                    .ok_or_else(|| DecodeError::new("retention months missing"))?
                    .iter()
                    .map(|m| {
                        m.as_str()
                            .and_then(crate::retention::Month::parse)
                            .ok_or_else(|| DecodeError::new("bad retention month"))
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(LoginEvent::RetentionApplied {
                    months,
                    retention_months: count("retention_months")?,
                    destroyed: count("destroyed")?,
                    at: fact_time(e, "at")?,
                })
            }
            (t, v) => Err(DecodeError(format!("unknown login event {t} v{v}"))),
        }
    }
}
