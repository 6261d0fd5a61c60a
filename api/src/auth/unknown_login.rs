//! Failed logins for emails no active account has.
//!
//! They are recorded like any failure (audit action `LOGIN_FAILED`) on a stream keyed by an
//! HMAC-SHA-256 of the normalised email, so attempts against one address can be counted
//! without the address appearing in a stream id or a fact. The address itself is kept as a
//! personal field under the month's retention key (`retention-YYYYMM`, as IP addresses are),
//! so it disappears with that key.
//!
//! The HMAC key is derived from the token secret. Rotating that secret starts new streams
//! for the same addresses; nothing else depends on the key.

use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretString};
use sha2::Sha256;

/// Emails are stored at most this long (the longest valid address is 254 characters).
const MAX_EMAIL: usize = 320;

pub struct AccountKeys {
    /// HMAC-SHA-256 already keyed; cloned for each use.
    keyed: Hmac<Sha256>,
}

impl AccountKeys {
    pub fn new(token_secret: &SecretString) -> anyhow::Result<Self> {
        let mut derive =
            <Hmac<Sha256> as Mac>::new_from_slice(token_secret.expose_secret().as_bytes())
                .map_err(|_| anyhow::anyhow!("HMAC key"))?;
        derive.update(b"egec unknown-account login key v1");
        let key = derive.finalize().into_bytes();
        let keyed =
            <Hmac<Sha256> as Mac>::new_from_slice(&key).map_err(|_| anyhow::anyhow!("HMAC key"))?;
        Ok(Self { keyed })
    }

    /// The stream key of an email: 128 bits of HMAC in hex.
    pub fn account_key(&self, email: &str) -> String {
        let mut mac = self.keyed.clone();
        mac.update(normalise(email).as_bytes());
        hex::encode(&mac.finalize().into_bytes()[..16])
    }
}

/// The email as given, trimmed, lower-cased and bounded: what is stored and hashed.
pub fn normalise(email: &str) -> String {
    email
        .trim()
        .to_lowercase()
        .chars()
        .take(MAX_EMAIL)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_ignores_case_and_surrounding_space_and_depends_on_the_secret() {
        let a = AccountKeys::new(&SecretString::from("a".repeat(32))).unwrap();
        let b = AccountKeys::new(&SecretString::from("b".repeat(32))).unwrap();
        let k = a.account_key("Nobody@Egec.example ");
        assert_eq!(k, a.account_key("nobody@egec.example"));
        assert_eq!(k.len(), 32);
        assert!(!k.contains("nobody"));
        assert_ne!(k, b.account_key("nobody@egec.example"));
        assert_ne!(k, a.account_key("somebody@egec.example"));
    }
}
