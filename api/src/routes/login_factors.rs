//! The parts of a login beyond the password check: the second factor, the rehash of an
//! outdated password hash, and the record of attempts for unknown emails.

use crate::auth::totp;
use crate::error::ApiError;
use crate::routes::auth::LoginBody;
use crate::routes::credentials::execute;
use crate::routes::meta::RequestMeta;
use crate::state::AppState;
use chrono::{DateTime, Datelike, Utc};
use egec_commands::codec::retention_subject;
use egec_commands::handler::now_micros;
use egec_commands::store::ReadBound;
use egec_domain::UserId;
use egec_domain::event::{DomainEvent, Metadata};
use egec_domain::personal::Personal;
use egec_domain::user::credentials::{CredentialCommand, TotpSecret};
use egec_domain::user::{LoginEvent, PasswordHash, User, unknown_login_stream_id};
use secrecy::SecretString;
use uuid::Uuid;

/// How the second factor of a login turned out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecondFactor {
    /// The user has no second factor.
    NotEnabled,
    /// Neither `totp_code` nor `backup_code` was given.
    Missing,
    /// Wrong, or already used.
    Wrong,
    /// Accepted, and recorded as used (`UserTotpUsed` / `UserBackupCodeUsed`).
    Accepted,
}

fn secret_of(user: &User) -> Option<&TotpSecret> {
    user.totp.secret.as_ref().and_then(Personal::known)
}

/// Checks the code of a login whose password was right, and records its use: a time step,
/// or a backup code, is accepted once (the domain refuses a second use, also when two
/// logins race: the second append conflicts, and deciding again refuses it).
pub async fn second_factor(
    state: &AppState,
    user: &User,
    body: &LoginBody,
    meta: &Metadata,
    now: DateTime<Utc>,
) -> Result<SecondFactor, ApiError> {
    let Some(secret) = secret_of(user) else {
        return Ok(SecondFactor::NotEnabled);
    };
    let command = if let Some(code) = body.totp_code.as_deref().filter(|c| !c.is_empty()) {
        match totp::check(secret, code, now) {
            Some(step) => CredentialCommand::UseTotp { step },
            None => return Ok(SecondFactor::Wrong),
        }
    } else if let Some(code) = body.backup_code.as_deref().filter(|c| !c.is_empty()) {
        let index = match &user.totp.backup_codes {
            Some(Personal::Known(hashes)) => totp::match_backup_code(hashes, code),
            _ => None,
        };
        match index {
            Some(index) => CredentialCommand::UseBackupCode { index },
            None => return Ok(SecondFactor::Wrong),
        }
    } else {
        return Ok(SecondFactor::Missing);
    };
    match execute(state, user.id, Uuid::now_v7(), meta, command).await {
        Ok(_) => Ok(SecondFactor::Accepted),
        // The domain's refusal of a used step or backup code.
        Err(ApiError::TotpRequired) => Ok(SecondFactor::Wrong),
        Err(e) => Err(e),
    }
}

/// Replaces an outdated hash (bcrypt from the old system, or older argon2 parameters) with
/// a current argon2id hash of the password that just verified. A failure is logged and
/// the login goes on: the next login tries again.
pub async fn rehash(state: &AppState, user: UserId, password: &SecretString, meta: &Metadata) {
    let hashed = match state.passwords.hash(password).await {
        Ok(h) => PasswordHash::parse(&h).map_err(|e| anyhow::anyhow!("hash format: {e}")),
        Err(e) => Err(anyhow::anyhow!(e)),
    };
    let result = match hashed {
        Ok(hash) => execute(
            state,
            user,
            Uuid::now_v7(),
            meta,
            CredentialCommand::RehashPassword(hash),
        )
        .await
        .map(|_| ())
        .map_err(|e| anyhow::anyhow!("{e}")),
        Err(e) => Err(e),
    };
    if let Err(e) = result {
        tracing::warn!(user = %user, error = %e, "password rehash failed; retried at next login");
    }
}

/// Records a failed attempt for an email no active account has, doing the work a wrong
/// password does (two months of the stream read, one append) so the answer takes a
/// similar time.
pub async fn record_unknown_account(
    state: &AppState,
    meta: &RequestMeta,
    email: &str,
) -> Result<(), ApiError> {
    let now = now_micros();
    let key = state.account_keys.account_key(email);
    let last_month = now
        .date_naive()
        .with_day(1)
        .and_then(|d| d.pred_opt())
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|d| d.and_utc())
        .unwrap_or(now);
    for stream in [
        unknown_login_stream_id(&key, last_month),
        unknown_login_stream_id(&key, now),
    ] {
        state
            .bus
            .stream_events(&stream, ReadBound::None)
            .await
            .map_err(ApiError::internal)?;
    }
    let event = DomainEvent::Login(LoginEvent::UnknownAccountFailed {
        account_key: key.clone(),
        email: Personal::Known(crate::auth::unknown_login::normalise(email)),
        at: now,
    });
    let mut md = meta.anonymous();
    md.occurred_at = now;
    state
        .bus
        .record(
            &unknown_login_stream_id(&key, now),
            &retention_subject(now),
            &md,
            &[event],
        )
        .await
        .map_err(ApiError::internal)?;
    Ok(())
}
