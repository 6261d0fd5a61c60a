use crate::encoding::*;
use crate::ids::ApiKeyId;
use crate::permission::Action;
use crate::values::Invalid;
use chrono::{DateTime, Utc};
use serde_json::Value;
use std::fmt;

/// The SHA-256 of a key's secret, as 64 lower-case hex digits. Not a secret itself (the
/// secret has 256 bits of entropy, so the hash cannot be inverted), but never printed whole.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretHash(String);

impl SecretHash {
    pub fn parse(s: &str) -> Result<Self, Invalid> {
        if s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            Ok(Self(s.to_owned()))
        } else {
            Err(Invalid("secret hash is not 64 lower-case hex digits"))
        }
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SecretHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretHash({}…)", &self.0[..8])
    }
}

/// What the issuer calls a key ("CRM import job"): 1 to 100 characters, no control
/// characters. Describes an integration, not a person.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKeyName(String);

impl ApiKeyName {
    pub fn parse(s: &str) -> Result<Self, Invalid> {
        let t = s.trim();
        if t.is_empty() {
            return Err(Invalid("must not be empty"));
        }
        if t.chars().count() > 100 {
            return Err(Invalid("must be at most 100 characters"));
        }
        if t.chars().any(char::is_control) {
            return Err(Invalid("must not contain control characters"));
        }
        Ok(Self(t.to_owned()))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum ApiKeyEvent {
    Issued {
        key_id: ApiKeyId,
        name: ApiKeyName,
        /// Sorted, without repeats.
        permissions: Vec<Action>,
        expires_at: Option<DateTime<Utc>>,
        secret_hash: SecretHash,
        /// The first characters of the key, to tell keys apart in lists and logs.
        prefix: String,
        at: DateTime<Utc>,
    },
    Revoked {
        key_id: ApiKeyId,
        at: DateTime<Utc>,
    },
    /// A new secret replaces the old one, which keeps working until `grace_until`.
    Rotated {
        key_id: ApiKeyId,
        secret_hash: SecretHash,
        prefix: String,
        previous_hash: SecretHash,
        grace_until: DateTime<Utc>,
        at: DateTime<Utc>,
    },
    /// The key authenticated a request (recorded at most about once a minute per key and
    /// node, so its last-used time is known to the minute).
    Used {
        key_id: ApiKeyId,
        at: DateTime<Utc>,
    },
}

pub const API_KEY_ISSUED: &str = "ApiKeyIssued";
pub const API_KEY_REVOKED: &str = "ApiKeyRevoked";
pub const API_KEY_ROTATED: &str = "ApiKeyRotated";
pub const API_KEY_USED: &str = "ApiKeyUsed";

impl ApiKeyEvent {
    pub fn key_id(&self) -> ApiKeyId {
        match self {
            ApiKeyEvent::Issued { key_id, .. }
            | ApiKeyEvent::Revoked { key_id, .. }
            | ApiKeyEvent::Rotated { key_id, .. }
            | ApiKeyEvent::Used { key_id, .. } => *key_id,
        }
    }

    pub fn at(&self) -> DateTime<Utc> {
        match self {
            ApiKeyEvent::Issued { at, .. }
            | ApiKeyEvent::Revoked { at, .. }
            | ApiKeyEvent::Rotated { at, .. }
            | ApiKeyEvent::Used { at, .. } => *at,
        }
    }

    /// The upper-case action name of the audit log.
    pub fn action(&self) -> &'static str {
        match self {
            ApiKeyEvent::Issued { .. } => "API_KEY_ISSUED",
            ApiKeyEvent::Revoked { .. } => "API_KEY_REVOKED",
            ApiKeyEvent::Rotated { .. } => "API_KEY_ROTATED",
            ApiKeyEvent::Used { .. } => "API_KEY_USED",
        }
    }
}

fn opt_time(t: Option<DateTime<Utc>>) -> Value {
    t.map_or(Value::Null, time_fact)
}

fn hash_fact(e: &DecryptedEvent, key: &str) -> Result<SecretHash, DecodeError> {
    SecretHash::parse(fact_str(e, key)?)
        .map_err(|err| DecodeError(format!("{}: {key}: {err}", e.event_type)))
}

fn key_id(e: &DecryptedEvent) -> Result<ApiKeyId, DecodeError> {
    Ok(ApiKeyId::from_uuid(fact_uuid(e, "key_id")?))
}

impl EventCodec for ApiKeyEvent {
    fn encode(&self) -> EncodedEvent {
        match self {
            ApiKeyEvent::Issued {
                key_id,
                name,
                permissions,
                expires_at,
                secret_hash,
                prefix,
                at,
            } => EncodedEvent::new(API_KEY_ISSUED, 1)
                .fact("key_id", key_id.to_string())
                .fact("name", name.as_str())
                .fact(
                    "permissions",
                    Value::Array(permissions.iter().map(|a| a.name().into()).collect()),
                )
                .fact("expires_at", opt_time(*expires_at))
                .fact("secret_hash", secret_hash.as_str())
                .fact("prefix", prefix.as_str())
                .fact("at", time_fact(*at)),
            ApiKeyEvent::Revoked { key_id, at } => EncodedEvent::new(API_KEY_REVOKED, 1)
                .fact("key_id", key_id.to_string())
                .fact("at", time_fact(*at)),
            ApiKeyEvent::Rotated {
                key_id,
                secret_hash,
                prefix,
                previous_hash,
                grace_until,
                at,
            } => EncodedEvent::new(API_KEY_ROTATED, 1)
                .fact("key_id", key_id.to_string())
                .fact("secret_hash", secret_hash.as_str())
                .fact("prefix", prefix.as_str())
                .fact("previous_hash", previous_hash.as_str())
                .fact("grace_until", time_fact(*grace_until))
                .fact("at", time_fact(*at)),
            ApiKeyEvent::Used { key_id, at } => EncodedEvent::new(API_KEY_USED, 1)
                .fact("key_id", key_id.to_string())
                .fact("at", time_fact(*at)),
        }
    }

    fn decode(e: &DecryptedEvent) -> Result<Self, DecodeError> {
        match (e.event_type.as_str(), e.schema_version) {
            (API_KEY_ISSUED, 1) => {
                let names = e
                    .facts
                    .get("permissions")
                    .and_then(Value::as_array)
                    .ok_or_else(|| DecodeError::new("ApiKeyIssued: missing permissions"))?;
                let mut permissions = Vec::with_capacity(names.len());
                for n in names {
                    let a = n
                        .as_str()
                        .and_then(Action::from_name)
                        .ok_or_else(|| DecodeError::new("ApiKeyIssued: unknown permission"))?;
                    permissions.push(a);
                }
                let expires_at = match e.facts.get("expires_at") {
                    None | Some(Value::Null) => None,
                    Some(_) => Some(fact_time(e, "expires_at")?),
                };
                Ok(ApiKeyEvent::Issued {
                    key_id: key_id(e)?,
                    name: ApiKeyName::parse(fact_str(e, "name")?)
                        .map_err(|err| DecodeError(format!("ApiKeyIssued: name: {err}")))?,
                    permissions,
                    expires_at,
                    secret_hash: hash_fact(e, "secret_hash")?,
                    prefix: fact_str(e, "prefix")?.to_owned(),
                    at: fact_time(e, "at")?,
                })
            }
            (API_KEY_REVOKED, 1) => Ok(ApiKeyEvent::Revoked {
                key_id: key_id(e)?,
                at: fact_time(e, "at")?,
            }),
            (API_KEY_ROTATED, 1) => Ok(ApiKeyEvent::Rotated {
                key_id: key_id(e)?,
                secret_hash: hash_fact(e, "secret_hash")?,
                prefix: fact_str(e, "prefix")?.to_owned(),
                previous_hash: hash_fact(e, "previous_hash")?,
                grace_until: fact_time(e, "grace_until")?,
                at: fact_time(e, "at")?,
            }),
            (API_KEY_USED, 1) => Ok(ApiKeyEvent::Used {
                key_id: key_id(e)?,
                at: fact_time(e, "at")?,
            }),
            (t, v) => Err(DecodeError(format!("unknown api key event {t} v{v}"))),
        }
    }
}
