//! API keys at the edge: drawing secrets, hashing them, and authenticating `X-API-Key`.
//!
//! A key is `egec_` followed by the URL-safe base64 of 32 bytes from the operating system's
//! random source (256 bits). It is shown once, when issued or rotated; the log and the read
//! model hold only its SHA-256. A fast hash is right here, unlike for passwords: a secret with
//! 256 bits of entropy cannot be guessed however fast each guess is, so a slow, salted hash
//! would add cost to every request and no protection. Keys travel in the `X-API-Key` header
//! only; a key in the query string would end up in proxy and server logs and is refused.
//!
//! Last-used time: each node remembers when it last recorded a key's use and records an
//! `ApiKeyUsed` event at most once a minute per key, off the request path. The read model
//! folds those events, so the time is known to the minute, survives restarts and is the same
//! on every node, at the cost of at most one small event per key, node and minute (a key
//! used all day long adds 1,440 events a day per node). Writing on every request would put
//! an append on the hot path of every integration call; memory only would lose it on restart.

use crate::auth::actor::{Actor, ApiKeyGrant};
use crate::error::ApiError;
use crate::state::AppState;
use axum::http::request::Parts;
use base64::Engine;
use chrono::{DateTime, Duration, Utc};
use egec_domain::aggregate::ApiKeyAggregate;
use egec_domain::api_key::{ApiKeyCommand, SecretMatch, accepts};
use egec_domain::event::Metadata;
use egec_domain::ids::ApiKeyId;
use egec_domain::permission::Action;
use egec_domain::{Role, UserId};
use egec_projections::ApiKeyRow;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::Mutex;
use subtle::ConstantTimeEq;
use uuid::Uuid;

/// What every key starts with, so a leaked key is recognisable by secret scanners.
pub const KEY_PREFIX: &str = "egec_";
/// Characters of a key shown in lists to tell keys apart (`egec_` and 7 more: 42 bits, far
/// too few to help guess the 256-bit rest).
const SHOWN_PREFIX_LEN: usize = 12;
/// A key's use is recorded at most this often per node.
const USE_RECORD_INTERVAL_SECONDS: i64 = 60;

/// A new key: the secret to show once, its hash to store, and its shown prefix.
pub struct NewKey {
    pub secret: String,
    pub hash: String,
    pub prefix: String,
}

/// Draws a new key from the operating system's random source.
pub fn generate() -> Result<NewKey, ApiError> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| ApiError::internal(anyhow::anyhow!("random: {e}")))?;
    let secret = format!(
        "{KEY_PREFIX}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    );
    let hash = hash(&secret);
    let prefix = secret.chars().take(SHOWN_PREFIX_LEN).collect();
    Ok(NewKey {
        secret,
        hash,
        prefix,
    })
}

/// SHA-256 of a presented key, as lower-case hex (see the module comment for why SHA-256).
pub fn hash(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

fn eq_ct(a: &str, b: &str) -> bool {
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

/// Whether the query string carries something named like an API key (`api_key`, `apikey`,
/// `api-key`, `key`, `x-api-key`, any case). Such a request is refused outright, even with
/// valid credentials elsewhere: the key has leaked into URLs and logs already.
pub fn key_in_query(parts: &Parts) -> bool {
    let Some(q) = parts.uri.query() else {
        return false;
    };
    q.split('&').any(|pair| {
        let name = pair.split('=').next().unwrap_or("").to_ascii_lowercase();
        matches!(
            name.as_str(),
            "api_key" | "apikey" | "api-key" | "key" | "x-api-key" | "x_api_key"
        )
    })
}

/// The `X-API-Key` header, when present (an unreadable value counts as present and wrong).
pub fn header_key(parts: &Parts) -> Option<&str> {
    parts
        .headers
        .get("x-api-key")
        .map(|v| v.to_str().unwrap_or(""))
}

/// The permissions of a key row; a name this build does not know grants nothing.
fn scopes(row: &ApiKeyRow) -> Vec<Action> {
    row.permissions
        .iter()
        .filter_map(|n| Action::from_name(n))
        .collect()
}

/// Authenticates a presented key: known hash, not revoked, not expired, and for the previous
/// secret of a rotation still within the grace period. Any failure is 401 `unauthorized`.
/// A valid key is refused (403) on the session endpoints under `/api/auth/`: a key has no
/// session, password or second factor to manage, and must not write login activity.
pub async fn authenticate(
    state: &AppState,
    presented: &str,
    path: &str,
) -> Result<Actor, ApiError> {
    let presented = presented.trim();
    if !presented.starts_with(KEY_PREFIX) || presented.len() > 128 {
        return Err(ApiError::Unauthorized);
    }
    let h = hash(presented);
    let row = state
        .read()
        .find_api_key_by_hash(&h)
        .await
        .map_err(ApiError::internal)?
        .ok_or(ApiError::Unauthorized)?;
    let matched = if eq_ct(&row.secret_hash, &h) {
        SecretMatch::Current
    } else if row.previous_hash.as_deref().is_some_and(|p| eq_ct(p, &h)) {
        SecretMatch::Previous {
            grace_until: row.grace_until.ok_or(ApiError::Unauthorized)?,
        }
    } else {
        return Err(ApiError::Unauthorized);
    };
    let now = Utc::now();
    if !accepts(row.revoked_at.is_some(), row.expires_at, matched, now) {
        tracing::debug!(key = %row.id, "api key refused");
        return Err(ApiError::Unauthorized);
    }
    // Sessions, passwords and second factors belong to people: a key is refused there, and
    // the refusal is recorded like every other one.
    if path.starts_with("/api/auth/") {
        return Err(ApiError::Denied(crate::denial::Denial {
            user_id: UserId::from_uuid(row.id),
            role: None,
            reason: egec_domain::security::DenialReason::Forbidden,
            action: None,
            customer_id: None,
        }));
    }
    if state.api_key_usage.should_record(row.id, now) {
        record_use(state, row.id);
    }
    Ok(Actor {
        user_id: UserId::from_uuid(row.id),
        role: KEY_STANDING,
        session_id: Uuid::nil(),
        api_key: Some(ApiKeyGrant {
            key_id: row.id,
            scopes: scopes(&row),
        }),
    })
}

/// The role whose rank a key acts with where a rule depends on rank rather than on a
/// permission (which customers it sees: all; which staff users it may manage with
/// `users:manage`: not admins or superadmins). What it may do at all is its scopes alone.
pub const KEY_STANDING: Role = Role::Admin;

/// Appends `ApiKeyUsed` in the background; a failure only loses a last-used time.
fn record_use(state: &AppState, key: Uuid) {
    let bus = state.bus.clone();
    tokio::spawn(async move {
        let id = ApiKeyId::from_uuid(key);
        let mut meta = Metadata::system(Uuid::now_v7(), Utc::now());
        meta.actor_id = Some(UserId::from_uuid(key));
        if let Err(e) = bus
            .execute::<ApiKeyAggregate>(
                &id.stream_id(),
                &id.subject(),
                None,
                Uuid::now_v7(),
                &meta,
                ApiKeyCommand::RecordUse,
            )
            .await
        {
            tracing::warn!(key = %key, error = %e, "recording an api key's use failed");
        }
    });
}

/// When this node last recorded each key's use, so it records at most once a minute.
#[derive(Default)]
pub struct ApiKeyUsage {
    last: Mutex<HashMap<Uuid, DateTime<Utc>>>,
}

/// Entries kept before old ones are swept; keys are few, so this is never reached in practice.
const MAX_TRACKED_KEYS: usize = 100_000;

impl ApiKeyUsage {
    /// Whether a use at `now` should be recorded; if so, remembers it as recorded.
    pub fn should_record(&self, key: Uuid, now: DateTime<Utc>) -> bool {
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        let interval = Duration::seconds(USE_RECORD_INTERVAL_SECONDS);
        if last.get(&key).is_some_and(|t| now - *t < interval) {
            return false;
        }
        if last.len() >= MAX_TRACKED_KEYS {
            last.retain(|_, t| now - *t < interval);
        }
        last.insert(key, now);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_key_has_256_random_bits_and_only_its_hash_and_prefix_are_kept() {
        let a = generate().unwrap();
        let b = generate().unwrap();
        assert_ne!(a.secret, b.secret);
        assert!(a.secret.starts_with(KEY_PREFIX));
        // 32 bytes in unpadded base64 are 43 characters.
        assert_eq!(a.secret.len(), KEY_PREFIX.len() + 43);
        assert_eq!(a.hash, hash(&a.secret));
        assert_eq!(a.hash.len(), 64);
        assert!(a.secret.starts_with(&a.prefix));
        assert_eq!(a.prefix.len(), SHOWN_PREFIX_LEN);
    }

    #[test]
    fn a_use_is_recorded_at_most_once_a_minute_per_key() {
        let usage = ApiKeyUsage::default();
        let t = Utc::now();
        let k = Uuid::from_u128(1);
        assert!(usage.should_record(k, t));
        assert!(!usage.should_record(k, t + Duration::seconds(59)));
        assert!(usage.should_record(Uuid::from_u128(2), t));
        assert!(usage.should_record(k, t + Duration::seconds(60)));
    }

    #[test]
    fn keys_in_the_query_string_are_recognised_under_any_common_name() {
        for (uri, found) in [
            ("/api/customers?api_key=egec_x", true),
            ("/api/customers?page=1&KEY=egec_x", true),
            ("/api/customers?apikey", true),
            ("/api/customers?page=1&keyword=x", false),
            ("/api/customers", false),
        ] {
            let req = axum::http::Request::builder().uri(uri).body(()).unwrap();
            let (parts, _) = req.into_parts();
            assert_eq!(key_in_query(&parts), found, "{uri}");
        }
    }

    #[test]
    fn hashes_compare_equal_only_when_identical() {
        assert!(eq_ct(&hash("egec_a"), &hash("egec_a")));
        assert!(!eq_ct(&hash("egec_a"), &hash("egec_b")));
        assert!(!eq_ct("ab", "abc"));
    }
}
