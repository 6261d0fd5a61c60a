//! Session tokens: HS256 JWTs with an algorithm allowlist, audience, expiry, not-before and a
//! key id (so the signing secret can rotate). Each carries its session id (`sid`) and the
//! user's session version at login (`sv`); the `Actor` extractor checks both on every
//! request.

use chrono::{DateTime, Utc};
use jsonwebtoken::{
    Algorithm, DecodingKey, EncodingKey, Header, Validation, decode, decode_header, encode,
};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use uuid::Uuid;

pub const AUDIENCE: &str = "egec-api";
pub const ISSUER: &str = "egec";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Claims {
    pub sub: Uuid,
    pub sid: Uuid,
    /// The user's session version when the token was issued: a role change, deactivation,
    /// logout everywhere or force-logout raises the user's version and ends older tokens.
    pub sv: i64,
    pub aud: String,
    pub iss: String,
    pub iat: i64,
    pub nbf: i64,
    pub exp: i64,
}

pub struct TokenKeys {
    kid: String,
    encoding: EncodingKey,
    decoding: DecodingKey,
    ttl_seconds: i64,
    /// The secret before the last rotation (`EGEC_JWT_SECRET_PREVIOUS`): its tokens still
    /// verify, by their own `kid`, until they expire; nothing new is signed with it.
    previous: Option<(String, DecodingKey)>,
}

/// The key id of a secret: the first 8 bytes of its SHA-256, in hex (names it, reveals nothing).
fn kid_of(bytes: &[u8]) -> String {
    hex::encode(&Sha256::digest(bytes)[..8])
}

impl TokenKeys {
    pub fn new(secret: &SecretString, ttl_seconds: i64) -> Self {
        let bytes = secret.expose_secret().as_bytes();
        Self {
            kid: kid_of(bytes),
            encoding: EncodingKey::from_secret(bytes),
            decoding: DecodingKey::from_secret(bytes),
            ttl_seconds,
            previous: None,
        }
    }

    /// Also verifies tokens signed with `previous` (the grace period of a rotation).
    pub fn with_previous(mut self, previous: Option<&SecretString>) -> Self {
        self.previous = previous.map(|p| {
            let bytes = p.expose_secret().as_bytes();
            (kid_of(bytes), DecodingKey::from_secret(bytes))
        });
        self
    }

    pub fn issue(
        &self,
        user: Uuid,
        session: Uuid,
        session_version: i64,
        now: DateTime<Utc>,
    ) -> Result<(String, DateTime<Utc>), jsonwebtoken::errors::Error> {
        let exp = now + chrono::Duration::seconds(self.ttl_seconds);
        let claims = Claims {
            sub: user,
            sid: session,
            sv: session_version,
            aud: AUDIENCE.into(),
            iss: ISSUER.into(),
            iat: now.timestamp(),
            nbf: now.timestamp(),
            exp: exp.timestamp(),
        };
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some(self.kid.clone());
        Ok((encode(&header, &claims, &self.encoding)?, exp))
    }

    /// Verifies signature, algorithm, key id, audience, issuer, expiry and not-before.
    pub fn verify(&self, token: &str) -> Option<Claims> {
        let header = decode_header(token).ok()?;
        if header.alg != Algorithm::HS256 {
            return None;
        }
        let key = match header.kid.as_deref() {
            Some(kid) if kid == self.kid => &self.decoding,
            Some(kid) => match &self.previous {
                Some((prev_kid, prev)) if kid == prev_kid => prev,
                _ => return None,
            },
            None => return None,
        };
        let mut v = Validation::new(Algorithm::HS256);
        v.algorithms = vec![Algorithm::HS256];
        v.set_audience(&[AUDIENCE]);
        v.set_issuer(&[ISSUER]);
        v.set_required_spec_claims(&["exp", "nbf", "aud", "iss", "sub", "iat"]);
        v.validate_nbf = true;
        v.leeway = 5;
        decode::<Claims>(token, key, &v).ok().map(|d| d.claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(secret: &str) -> TokenKeys {
        TokenKeys::new(&SecretString::from(secret.to_owned()), 3600)
    }

    #[test]
    fn a_token_verifies_with_its_own_secret_only() {
        let k = keys("0123456789abcdef0123456789abcdef");
        let (t, _) = k
            .issue(Uuid::now_v7(), Uuid::now_v7(), 1, Utc::now())
            .unwrap();
        assert!(k.verify(&t).is_some());
        assert!(
            keys("another-secret-another-secret-xx")
                .verify(&t)
                .is_none()
        );
    }

    #[test]
    fn an_expired_token_is_refused() {
        let k = keys("0123456789abcdef0123456789abcdef");
        let (t, _) = k
            .issue(
                Uuid::now_v7(),
                Uuid::now_v7(),
                1,
                Utc::now() - chrono::Duration::hours(2),
            )
            .unwrap();
        assert!(k.verify(&t).is_none());
    }

    #[test]
    fn a_token_whose_session_version_was_edited_is_refused() {
        use base64::Engine;
        use base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let k = keys("0123456789abcdef0123456789abcdef");
        let (t, _) = k
            .issue(Uuid::now_v7(), Uuid::now_v7(), 1, Utc::now())
            .unwrap();
        assert_eq!(k.verify(&t).unwrap().sv, 1);
        let parts: Vec<&str> = t.split('.').collect();
        let mut claims: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
        claims["sv"] = serde_json::json!(99);
        let forged = format!(
            "{}.{}.{}",
            parts[0],
            URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims).unwrap()),
            parts[2]
        );
        assert!(k.verify(&forged).is_none());
    }

    #[test]
    fn after_rotation_old_tokens_verify_new_ones_use_the_new_secret_and_unknown_ones_fail() {
        let old = keys("0123456789abcdef0123456789abcdef");
        let (old_token, _) = old
            .issue(Uuid::now_v7(), Uuid::now_v7(), 1, Utc::now())
            .unwrap();
        let rotated = keys("fedcba9876543210fedcba9876543210").with_previous(Some(
            &SecretString::from("0123456789abcdef0123456789abcdef".to_owned()),
        ));
        assert!(rotated.verify(&old_token).is_some(), "grace period");
        let (new_token, _) = rotated
            .issue(Uuid::now_v7(), Uuid::now_v7(), 1, Utc::now())
            .unwrap();
        assert!(rotated.verify(&new_token).is_some());
        assert!(
            old.verify(&new_token).is_none(),
            "signed with the new secret"
        );
        let stranger = keys("another-secret-another-secret-xx");
        let (unknown, _) = stranger
            .issue(Uuid::now_v7(), Uuid::now_v7(), 1, Utc::now())
            .unwrap();
        assert!(rotated.verify(&unknown).is_none());
        // Once the previous secret is dropped, its tokens end.
        let after_grace = keys("fedcba9876543210fedcba9876543210");
        assert!(after_grace.verify(&old_token).is_none());
    }

    #[test]
    fn an_unsigned_token_is_refused() {
        let k = keys("0123456789abcdef0123456789abcdef");
        // {"alg":"none"} header with a valid-looking payload and no signature.
        let t = "eyJhbGciOiJub25lIn0.eyJzdWIiOiIwIn0.";
        assert!(k.verify(t).is_none());
    }
}
