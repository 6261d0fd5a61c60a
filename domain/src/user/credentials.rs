//! A user's credentials beyond creation: password rehash and change, an administrator's
//! demand for a new password, password expiry, and TOTP two-factor authentication with
//! single-use backup codes.
//!
//! Everything that needs a secret, a clock or randomness (hashing, checking a code against
//! the time, generating secrets) happens in the API; the domain receives the results as
//! facts (a new hash, the time step a code matched, which backup code matched) and decides
//! whether they may be recorded: a time step is accepted once, a backup code once.

use super::decide::{User, UserError};
use super::events::{PasswordHash, UserEvent};
use crate::personal::Personal;
use crate::values::Invalid;
use chrono::{DateTime, Duration, Utc};
use std::collections::BTreeSet;
use std::fmt;

/// A TOTP shared secret in RFC 4648 base32 (upper case, no padding). Kept encrypted in the
/// log like personal data, and never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct TotpSecret(String);

impl TotpSecret {
    pub fn parse(s: &str) -> Result<Self, Invalid> {
        let ok = (16..=128).contains(&s.len())
            && s.bytes()
                .all(|b| b.is_ascii_uppercase() || (b'2'..=b'7').contains(&b));
        if ok {
            Ok(Self(s.to_owned()))
        } else {
            Err(Invalid("TOTP secret is not 16 to 128 base32 characters"))
        }
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for TotpSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TotpSecret(…)")
    }
}

/// The SHA-256 hashes (lower-case hex) of a user's backup codes, in the order issued.
#[derive(Clone, PartialEq, Eq)]
pub struct BackupCodeHashes(Vec<String>);

impl BackupCodeHashes {
    pub const COUNT: usize = 10;

    pub fn new(hashes: Vec<String>) -> Result<Self, Invalid> {
        let ok = hashes.len() == Self::COUNT
            && hashes.iter().all(|h| {
                h.len() == 64
                    && h.bytes()
                        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
            });
        if ok {
            Ok(Self(hashes))
        } else {
            Err(Invalid("backup codes must be ten SHA-256 hashes in hex"))
        }
    }

    /// The stored form: the hashes joined by commas.
    pub fn parse(s: &str) -> Result<Self, Invalid> {
        Self::new(s.split(',').map(str::to_owned).collect())
    }

    pub fn to_stored(&self) -> String {
        self.0.join(",")
    }

    pub fn hashes(&self) -> &[String] {
        &self.0
    }
}

impl fmt::Debug for BackupCodeHashes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BackupCodeHashes({} hashes)", self.0.len())
    }
}

/// A user's second factor.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TotpState {
    /// Issued by a setup, not yet confirmed by a code.
    pub pending: Option<Personal<TotpSecret>>,
    /// The confirmed secret: logins need a code while it is set.
    pub secret: Option<Personal<TotpSecret>>,
    pub backup_codes: Option<Personal<BackupCodeHashes>>,
    /// Indexes of the backup codes already used (of the current set).
    pub used_backup_codes: BTreeSet<u32>,
    /// The latest time step accepted; codes of this step or earlier are refused.
    pub last_step: Option<i64>,
}

impl TotpState {
    pub fn enabled(&self) -> bool {
        self.secret.is_some()
    }

    fn step_is_fresh(&self, step: i64) -> bool {
        self.last_step.is_none_or(|last| step > last)
    }
}

/// Whether a user must choose a new password before anything else: an administrator asked
/// for it, or the password is older than `max_age` (`None`: passwords never expire, the
/// NIST default).
pub fn password_change_due(
    forced: bool,
    password_changed_at: DateTime<Utc>,
    max_age: Option<Duration>,
    now: DateTime<Utc>,
) -> bool {
    forced || max_age.is_some_and(|age| now >= password_changed_at + age)
}

/// Commands on a user's credentials (see [`super::UserCommand`]).
#[derive(Debug, Clone, PartialEq)]
pub enum CredentialCommand {
    /// Store a fresh hash of the password that just verified against an outdated one.
    RehashPassword(PasswordHash),
    /// Store the hash of a new password (the current one was verified by the caller).
    ChangePassword(PasswordHash),
    /// An administrator requires a new password.
    RequirePasswordChange,
    /// Issue a pending TOTP secret (replacing any earlier pending one).
    StartTotpSetup(TotpSecret),
    /// The pending secret's code matched at time step `step`.
    EnableTotp {
        step: i64,
        backup_codes: BackupCodeHashes,
    },
    /// The user re-authenticated with password and a code of time step `step`.
    DisableTotp { step: i64 },
    /// A login's TOTP code matched at time step `step`.
    UseTotp { step: i64 },
    /// A login's backup code matched the one at `index`.
    UseBackupCode { index: u32 },
}

pub(super) fn decide(
    user: &User,
    command: CredentialCommand,
    now: DateTime<Utc>,
) -> Result<Vec<UserEvent>, UserError> {
    let user_id = user.id;
    let totp = &user.totp;
    let event = match command {
        CredentialCommand::RehashPassword(hash) => UserEvent::PasswordRehashed {
            user_id,
            password_hash: Personal::Known(hash),
            at: now,
        },
        CredentialCommand::ChangePassword(hash) => UserEvent::PasswordChanged {
            user_id,
            password_hash: Personal::Known(hash),
            session_version: user.session_version + 1,
            at: now,
        },
        CredentialCommand::RequirePasswordChange => {
            if user.must_change_password {
                return Ok(vec![]);
            }
            UserEvent::PasswordChangeRequired { user_id, at: now }
        }
        CredentialCommand::StartTotpSetup(secret) => {
            if totp.enabled() {
                return Err(UserError::TotpAlreadyEnabled);
            }
            UserEvent::TotpSetupStarted {
                user_id,
                secret: Personal::Known(secret),
                at: now,
            }
        }
        CredentialCommand::EnableTotp { step, backup_codes } => {
            if totp.enabled() {
                return Err(UserError::TotpAlreadyEnabled);
            }
            if totp.pending.is_none() {
                return Err(UserError::TotpNotPending);
            }
            if !totp.step_is_fresh(step) {
                return Err(UserError::TotpCodeReused);
            }
            UserEvent::TotpEnabled {
                user_id,
                backup_codes: Personal::Known(backup_codes),
                step,
                at: now,
            }
        }
        CredentialCommand::DisableTotp { step } => {
            if !totp.enabled() {
                return Err(UserError::TotpNotEnabled);
            }
            if !totp.step_is_fresh(step) {
                return Err(UserError::TotpCodeReused);
            }
            UserEvent::TotpDisabled { user_id, at: now }
        }
        CredentialCommand::UseTotp { step } => {
            if !totp.enabled() {
                return Err(UserError::TotpNotEnabled);
            }
            if !totp.step_is_fresh(step) {
                return Err(UserError::TotpCodeReused);
            }
            UserEvent::TotpUsed {
                user_id,
                step,
                at: now,
            }
        }
        CredentialCommand::UseBackupCode { index } => {
            if !totp.enabled() {
                return Err(UserError::TotpNotEnabled);
            }
            let issued = match &totp.backup_codes {
                Some(Personal::Known(codes)) => codes.hashes().len(),
                _ => 0,
            };
            if index as usize >= issued || totp.used_backup_codes.contains(&index) {
                return Err(UserError::BackupCodeUsed);
            }
            UserEvent::BackupCodeUsed {
                user_id,
                index,
                at: now,
            }
        }
    };
    Ok(vec![event])
}

/// Folds a credential event into the user; other events are not this module's.
pub(super) fn evolve(u: &mut User, event: &UserEvent) {
    match event {
        UserEvent::PasswordRehashed { password_hash, .. } => {
            u.password_hash = password_hash.clone();
        }
        UserEvent::PasswordChanged {
            password_hash,
            session_version,
            at,
            ..
        } => {
            u.password_hash = password_hash.clone();
            u.session_version = *session_version;
            u.must_change_password = false;
            u.password_changed_at = *at;
        }
        UserEvent::PasswordChangeRequired { .. } => u.must_change_password = true,
        UserEvent::TotpSetupStarted { secret, .. } => u.totp.pending = Some(secret.clone()),
        UserEvent::TotpEnabled {
            backup_codes, step, ..
        } => {
            u.totp.secret = u.totp.pending.take();
            u.totp.backup_codes = Some(backup_codes.clone());
            u.totp.used_backup_codes.clear();
            u.totp.last_step = Some(u.totp.last_step.map_or(*step, |l| l.max(*step)));
        }
        UserEvent::TotpDisabled { .. } => {
            u.totp.secret = None;
            u.totp.pending = None;
            u.totp.backup_codes = None;
            u.totp.used_backup_codes.clear();
        }
        UserEvent::TotpUsed { step, .. } => {
            u.totp.last_step = Some(u.totp.last_step.map_or(*step, |l| l.max(*step)));
        }
        UserEvent::BackupCodeUsed { index, .. } => {
            u.totp.used_backup_codes.insert(*index);
        }
        UserEvent::Created { .. }
        | UserEvent::Renamed { .. }
        | UserEvent::RoleChanged { .. }
        | UserEvent::Deactivated { .. }
        | UserEvent::Reactivated { .. }
        | UserEvent::SessionsRevoked { .. } => {}
    }
}
