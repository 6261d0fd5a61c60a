use super::events::{ApiKeyEvent, ApiKeyName, SecretHash};
use crate::ids::ApiKeyId;
use crate::permission::{self, Action};
use chrono::{DateTime, Duration, Utc};

/// The longest grace period a rotation may give the previous secret: 30 days.
pub const MAX_GRACE_SECONDS: i64 = 30 * 24 * 3600;

#[derive(Debug, Clone, PartialEq)]
pub struct ApiKey {
    pub id: ApiKeyId,
    pub name: ApiKeyName,
    pub permissions: Vec<Action>,
    pub expires_at: Option<DateTime<Utc>>,
    pub secret_hash: SecretHash,
    pub prefix: String,
    /// The secret a rotation replaced, and until when it still works.
    pub previous: Option<(SecretHash, DateTime<Utc>)>,
    pub revoked: bool,
    pub last_used_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub enum ApiKeyState {
    #[default]
    Absent,
    Present(Box<ApiKey>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct IssueApiKey {
    pub key_id: ApiKeyId,
    pub name: ApiKeyName,
    pub permissions: Vec<Action>,
    pub expires_at: Option<DateTime<Utc>>,
    pub secret_hash: SecretHash,
    pub prefix: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RotateApiKey {
    pub secret_hash: SecretHash,
    pub prefix: String,
    /// How long the previous secret keeps working, 0 to [`MAX_GRACE_SECONDS`].
    pub grace_seconds: i64,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ApiKeyCommand {
    Issue(Box<IssueApiKey>),
    Revoke,
    Rotate(Box<RotateApiKey>),
    /// The key authenticated a request at the command's time.
    RecordUse,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiKeyError {
    #[error("the key exists already")]
    AlreadyExists,
    #[error("no such key")]
    NotFound,
    #[error("the key is revoked")]
    Revoked,
    #[error("a key needs at least one permission")]
    NoPermissions,
    #[error("permission {0} cannot be given to a key")]
    NotGrantable(&'static str),
    #[error("the expiry is not in the future")]
    ExpiryInPast,
    #[error("the grace period must be between 0 and {MAX_GRACE_SECONDS} seconds")]
    BadGrace,
}

pub fn decide(
    state: &ApiKeyState,
    command: ApiKeyCommand,
    now: DateTime<Utc>,
) -> Result<Vec<ApiKeyEvent>, ApiKeyError> {
    match (state, command) {
        (ApiKeyState::Present(_), ApiKeyCommand::Issue(_)) => Err(ApiKeyError::AlreadyExists),
        (ApiKeyState::Absent, ApiKeyCommand::Issue(c)) => {
            let IssueApiKey {
                key_id,
                name,
                mut permissions,
                expires_at,
                secret_hash,
                prefix,
            } = *c;
            if permissions.is_empty() {
                return Err(ApiKeyError::NoPermissions);
            }
            if let Some(a) = permissions
                .iter()
                .find(|a| !permission::grantable_to_api_key(**a))
            {
                return Err(ApiKeyError::NotGrantable(a.name()));
            }
            if expires_at.is_some_and(|t| t <= now) {
                return Err(ApiKeyError::ExpiryInPast);
            }
            permissions.sort_by_key(|a| a.name());
            permissions.dedup();
            Ok(vec![ApiKeyEvent::Issued {
                key_id,
                name,
                permissions,
                expires_at,
                secret_hash,
                prefix,
                at: now,
            }])
        }
        (ApiKeyState::Absent, _) => Err(ApiKeyError::NotFound),
        (ApiKeyState::Present(k), ApiKeyCommand::Revoke) => Ok(if k.revoked {
            vec![]
        } else {
            vec![ApiKeyEvent::Revoked {
                key_id: k.id,
                at: now,
            }]
        }),
        (ApiKeyState::Present(k), ApiKeyCommand::Rotate(r)) => {
            if k.revoked {
                return Err(ApiKeyError::Revoked);
            }
            if !(0..=MAX_GRACE_SECONDS).contains(&r.grace_seconds) {
                return Err(ApiKeyError::BadGrace);
            }
            Ok(vec![ApiKeyEvent::Rotated {
                key_id: k.id,
                secret_hash: r.secret_hash,
                prefix: r.prefix,
                previous_hash: k.secret_hash.clone(),
                grace_until: now + Duration::seconds(r.grace_seconds),
                at: now,
            }])
        }
        (ApiKeyState::Present(k), ApiKeyCommand::RecordUse) => Ok(if k.revoked {
            vec![]
        } else {
            vec![ApiKeyEvent::Used {
                key_id: k.id,
                at: now,
            }]
        }),
    }
}

pub fn evolve(state: ApiKeyState, event: &ApiKeyEvent) -> ApiKeyState {
    match (state, event) {
        (
            ApiKeyState::Absent,
            ApiKeyEvent::Issued {
                key_id,
                name,
                permissions,
                expires_at,
                secret_hash,
                prefix,
                at,
            },
        ) => ApiKeyState::Present(Box::new(ApiKey {
            id: *key_id,
            name: name.clone(),
            permissions: permissions.clone(),
            expires_at: *expires_at,
            secret_hash: secret_hash.clone(),
            prefix: prefix.clone(),
            previous: None,
            revoked: false,
            last_used_at: None,
            created_at: *at,
        })),
        (ApiKeyState::Absent, _) => ApiKeyState::Absent,
        (ApiKeyState::Present(k), ApiKeyEvent::Issued { .. }) => ApiKeyState::Present(k),
        (ApiKeyState::Present(mut k), ApiKeyEvent::Revoked { .. }) => {
            k.revoked = true;
            ApiKeyState::Present(k)
        }
        (
            ApiKeyState::Present(mut k),
            ApiKeyEvent::Rotated {
                secret_hash,
                prefix,
                previous_hash,
                grace_until,
                ..
            },
        ) => {
            k.secret_hash = secret_hash.clone();
            k.prefix = prefix.clone();
            k.previous = Some((previous_hash.clone(), *grace_until));
            ApiKeyState::Present(k)
        }
        (ApiKeyState::Present(mut k), ApiKeyEvent::Used { at, .. }) => {
            k.last_used_at = Some(*at);
            ApiKeyState::Present(k)
        }
    }
}

/// Which of a key's secrets a presented key matched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecretMatch {
    Current,
    /// The secret a rotation replaced, valid until the grace period ends.
    Previous {
        grace_until: DateTime<Utc>,
    },
}

/// Whether a key whose secret matched accepts a request at `now`: not revoked, not expired,
/// and, for the previous secret of a rotation, still within the grace period.
pub fn accepts(
    revoked: bool,
    expires_at: Option<DateTime<Utc>>,
    matched: SecretMatch,
    now: DateTime<Utc>,
) -> bool {
    !revoked
        && expires_at.is_none_or(|t| now < t)
        && match matched {
            SecretMatch::Current => true,
            SecretMatch::Previous { grace_until } => now < grace_until,
        }
}
