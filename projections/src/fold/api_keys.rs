//! The fold of the `api_keys` projection: one row per key.

use egec_domain::api_key::ApiKeyEvent;

use super::micros;
use crate::rows::ApiKeyRow;

/// Folds one API key event into the key's row, with the domain's rules: an event for a key
/// that does not exist, and a second `Issued`, change nothing.
pub fn apply_api_key(
    row: Option<ApiKeyRow>,
    event: &ApiKeyEvent,
    stream_version: i64,
    position: i64,
) -> Option<ApiKeyRow> {
    let mut r = match (row, event) {
        (
            None,
            ApiKeyEvent::Issued {
                key_id,
                name,
                permissions,
                expires_at,
                secret_hash,
                prefix,
                at,
            },
        ) => {
            return Some(ApiKeyRow {
                id: key_id.as_uuid(),
                name: name.as_str().to_owned(),
                permissions: permissions.iter().map(|a| a.name().to_owned()).collect(),
                prefix: prefix.clone(),
                secret_hash: secret_hash.as_str().to_owned(),
                previous_hash: None,
                grace_until: None,
                expires_at: expires_at.map(micros),
                revoked_at: None,
                created_at: micros(*at),
                last_used_at: None,
                version: stream_version,
                last_position: position,
            });
        }
        (None, _) => return None,
        (Some(r), ApiKeyEvent::Issued { .. }) => return Some(r),
        (Some(r), _) => r,
    };
    match event {
        ApiKeyEvent::Issued { .. } => {}
        ApiKeyEvent::Revoked { at, .. } => {
            if r.revoked_at.is_none() {
                r.revoked_at = Some(micros(*at));
            }
        }
        ApiKeyEvent::Rotated {
            secret_hash,
            prefix,
            previous_hash,
            grace_until,
            ..
        } => {
            r.secret_hash = secret_hash.as_str().to_owned();
            r.prefix = prefix.clone();
            r.previous_hash = Some(previous_hash.as_str().to_owned());
            r.grace_until = Some(micros(*grace_until));
        }
        ApiKeyEvent::Used { at, .. } => {
            r.last_used_at = Some(r.last_used_at.map_or(micros(*at), |t| t.max(micros(*at))));
        }
    }
    r.version = stream_version;
    r.last_position = position;
    Some(r)
}
