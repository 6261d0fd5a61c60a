//! AES-256-GCM for personal fields and for wrapping subject keys.
//!
//! A field ciphertext is the string `enc:1:<key_version>:<base64url(nonce ‖ ciphertext)>`.
//! Its associated data binds it to the event id, the subject and the field name, so a
//! ciphertext copied into another event or field fails to decrypt instead of lying.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

/// Prefix of every encrypted field value.
pub const FIELD_PREFIX: &str = "enc:1:";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CryptoError {
    #[error("the system random number generator failed")]
    Random,
    #[error("ciphertext is malformed")]
    Malformed,
    #[error("ciphertext does not authenticate under this key")]
    Authentication,
}

/// A 256-bit key and its expanded AES-GCM state, both wiped from memory when dropped (the
/// `zeroize` features of `aes`, `ghash` and `polyval` clear the round keys and the hash key).
/// The state is expanded once per key rather than once per field: a rebuild decrypts millions
/// of fields under a few hundred thousand keys.
#[derive(Clone)]
pub struct Key {
    bytes: Zeroizing<[u8; 32]>,
    cipher: Aes256Gcm,
}

impl Key {
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        let bytes = Zeroizing::new(bytes);
        let cipher = Aes256Gcm::new(bytes.as_ref().into());
        Key { bytes, cipher }
    }

    pub fn generate() -> Result<Self, CryptoError> {
        let mut k = Zeroizing::new([0u8; 32]);
        getrandom::fill(k.as_mut()).map_err(|_| CryptoError::Random)?;
        let cipher = Aes256Gcm::new(k.as_ref().into());
        Ok(Key { bytes: k, cipher })
    }

    pub fn bytes(&self) -> &[u8; 32] {
        &self.bytes
    }

    /// Hex SHA-256 of the key: identifies it on certificates without revealing it.
    pub fn fingerprint(&self) -> String {
        hex::encode(Sha256::digest(self.bytes.as_ref()))
    }

    fn cipher(&self) -> &Aes256Gcm {
        &self.cipher
    }

    /// nonce ‖ ciphertext of `plain`, authenticated with `aad`.
    ///
    /// The 96-bit nonce is random, from rand's thread-local generator: ChaCha12 seeded from
    /// the operating system and reseeded from it every 64 KiB of output. A nonce must never
    /// repeat under one key, which a cryptographic generator gives as surely as the system's;
    /// asking the system for each one cost a system call per personal field (with the ids'
    /// calls, about 4% of all CPU in the 64-client benchmark, 2026-11-30). Keys themselves
    /// still come straight from the operating system ([`Key::generate`]).
    pub fn seal(&self, plain: &[u8], aad: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let mut nonce = [0u8; 12];
        rand::fill(&mut nonce);
        let ct = self
            .cipher()
            .encrypt(Nonce::from_slice(&nonce), Payload { msg: plain, aad })
            .map_err(|_| CryptoError::Authentication)?;
        let mut out = Vec::with_capacity(12 + ct.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ct);
        Ok(out)
    }

    pub fn open(&self, sealed: &[u8], aad: &[u8]) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
        if sealed.len() < 12 + 16 {
            return Err(CryptoError::Malformed);
        }
        let (nonce, ct) = sealed.split_at(12);
        self.cipher()
            .decrypt(Nonce::from_slice(nonce), Payload { msg: ct, aad })
            .map(Zeroizing::new)
            .map_err(|_| CryptoError::Authentication)
    }
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Key(…)")
    }
}

/// Associated data of a personal field: event id, subject and field name.
pub fn field_aad(event_id: &uuid::Uuid, subject: &str, field: &str) -> Vec<u8> {
    let mut aad = Vec::with_capacity(16 + subject.len() + field.len() + 2);
    aad.extend_from_slice(event_id.as_bytes());
    aad.extend_from_slice(subject.as_bytes());
    aad.push(0);
    aad.extend_from_slice(field.as_bytes());
    aad
}

pub fn encrypt_field(
    key: &Key,
    key_version: i32,
    plain: &str,
    aad: &[u8],
) -> Result<String, CryptoError> {
    let sealed = key.seal(plain.as_bytes(), aad)?;
    Ok(format!(
        "{FIELD_PREFIX}{key_version}:{}",
        URL_SAFE_NO_PAD.encode(sealed)
    ))
}

/// The key version a field was encrypted under, and its sealed bytes.
pub fn parse_field(value: &str) -> Result<(i32, Vec<u8>), CryptoError> {
    let rest = value
        .strip_prefix(FIELD_PREFIX)
        .ok_or(CryptoError::Malformed)?;
    let (ver, b64) = rest.split_once(':').ok_or(CryptoError::Malformed)?;
    let ver: i32 = ver.parse().map_err(|_| CryptoError::Malformed)?;
    let sealed = URL_SAFE_NO_PAD
        .decode(b64)
        .map_err(|_| CryptoError::Malformed)?;
    Ok((ver, sealed))
}

pub fn decrypt_field(key: &Key, sealed: &[u8], aad: &[u8]) -> Result<String, CryptoError> {
    let plain = key.open(sealed, aad)?;
    String::from_utf8(plain.to_vec()).map_err(|_| CryptoError::Malformed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_field_decrypts_only_with_its_own_key_event_and_field_name() {
        let k = Key::generate().unwrap();
        let other = Key::generate().unwrap();
        let ev = uuid::Uuid::now_v7();
        let aad = field_aad(&ev, "customer-1", "email");
        let ct = encrypt_field(&k, 1, "jane@example.com", &aad).unwrap();
        assert!(!ct.contains("jane"));
        let (ver, sealed) = parse_field(&ct).unwrap();
        assert_eq!(ver, 1);
        assert_eq!(
            decrypt_field(&k, &sealed, &aad).unwrap(),
            "jane@example.com"
        );
        assert_eq!(
            decrypt_field(&other, &sealed, &aad),
            Err(CryptoError::Authentication)
        );
        let moved = field_aad(&ev, "customer-1", "name");
        assert_eq!(
            decrypt_field(&k, &sealed, &moved),
            Err(CryptoError::Authentication)
        );
        let other_event = field_aad(&uuid::Uuid::now_v7(), "customer-1", "email");
        assert_eq!(
            decrypt_field(&k, &sealed, &other_event),
            Err(CryptoError::Authentication)
        );
    }

    #[test]
    fn malformed_ciphertexts_are_reported_not_panicked_on() {
        for bad in [
            "",
            "enc:1:",
            "enc:x:abc",
            "enc:1:1:!!!",
            "enc:1:1:AAAA",
            "plain text",
        ] {
            assert!(
                parse_field(bad)
                    .and_then(|(_, s)| decrypt_field(&Key::generate().unwrap(), &s, b""))
                    .is_err()
            );
        }
    }
}
