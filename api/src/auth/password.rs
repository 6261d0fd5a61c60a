//! Password hashing on a bounded blocking pool.
//!
//! argon2id with m = 19 MiB, t = 2, p = 1 (OWASP's minimum for argon2id) costs tens of
//! milliseconds of CPU. Hashing runs on low-priority threads of its own
//! ([`super::hashing_pool`]) behind a semaphore sized to the machine, so a login storm queues
//! instead of starving every other request.
//! bcrypt hashes imported from the old system still verify.

use super::hashing_pool::HashingPool;
use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{
    PasswordHash as PhcHash, PasswordHasher, PasswordVerifier, SaltString,
};
use argon2::{Algorithm, Argon2, Params, Version};
use secrecy::{ExposeSecret, SecretString};
use std::sync::Arc;
use tokio::sync::Semaphore;

#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    #[error("hashing failed: {0}")]
    Hash(String),
    #[error("hashing task failed")]
    Join,
}

/// Whether a password matched, and whether its stored hash should be upgraded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verified {
    No,
    Yes { needs_rehash: bool },
}

pub struct Passwords {
    permits: Arc<Semaphore>,
    pool: HashingPool,
    /// A real hash of a random password, verified against when the email is unknown so that
    /// unknown and known emails take the same time to refuse.
    dummy_hash: String,
}

fn argon2() -> Result<Argon2<'static>, PasswordError> {
    let params =
        Params::new(19 * 1024, 2, 1, None).map_err(|e| PasswordError::Hash(e.to_string()))?;
    Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
}

fn hash_blocking(password: &str) -> Result<String, PasswordError> {
    let salt = SaltString::generate(&mut OsRng);
    argon2()?
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| PasswordError::Hash(e.to_string()))
}

fn verify_blocking(password: &str, stored: &str) -> Verified {
    if stored.starts_with("$2") {
        return match bcrypt::verify(password, stored) {
            Ok(true) => Verified::Yes { needs_rehash: true },
            _ => Verified::No,
        };
    }
    let Ok(parsed) = PhcHash::new(stored) else {
        return Verified::No;
    };
    let Ok(a) = argon2() else {
        return Verified::No;
    };
    match a.verify_password(password.as_bytes(), &parsed) {
        Ok(()) => {
            let current = parsed.algorithm.as_str() == "argon2id"
                && parsed.params.get_decimal("m") == Some(19 * 1024)
                && parsed.params.get_decimal("t") == Some(2)
                && parsed.params.get_decimal("p") == Some(1);
            Verified::Yes {
                needs_rehash: !current,
            }
        }
        Err(_) => Verified::No,
    }
}

impl Passwords {
    pub fn new(concurrency: usize) -> Result<Self, PasswordError> {
        let mut random = [0u8; 24];
        getrandom::fill(&mut random).map_err(|e| PasswordError::Hash(e.to_string()))?;
        Ok(Self {
            permits: Arc::new(Semaphore::new(concurrency.max(1))),
            pool: HashingPool::new(concurrency.max(1))
                .map_err(|e| PasswordError::Hash(e.to_string()))?,
            dummy_hash: hash_blocking(&hex::encode(random))?,
        })
    }

    pub async fn hash(&self, password: &SecretString) -> Result<String, PasswordError> {
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| PasswordError::Join)?;
        let pw = password.clone();
        self.pool
            .run(move || hash_blocking(pw.expose_secret()))
            .await
            .map_err(|_| PasswordError::Join)?
    }

    /// Verifies against a stored hash, or against a dummy when there is none, so that the
    /// time taken does not tell whether the account exists.
    pub async fn verify(
        &self,
        password: &SecretString,
        stored: Option<&str>,
    ) -> Result<Verified, PasswordError> {
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| PasswordError::Join)?;
        let pw = password.clone();
        let (stored, real) = match stored {
            Some(s) => (s.to_owned(), true),
            None => (self.dummy_hash.clone(), false),
        };
        let v = self
            .pool
            .run(move || verify_blocking(pw.expose_secret(), &stored))
            .await
            .map_err(|_| PasswordError::Join)?;
        Ok(if real { v } else { Verified::No })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_argon2id_hash_verifies_the_right_password_only() {
        let p = Passwords::new(2).unwrap();
        let h = p
            .hash(&SecretString::from("correct horse battery staple"))
            .await
            .unwrap();
        assert!(h.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"));
        assert_eq!(
            p.verify(
                &SecretString::from("correct horse battery staple"),
                Some(&h)
            )
            .await
            .unwrap(),
            Verified::Yes {
                needs_rehash: false
            }
        );
        assert_eq!(
            p.verify(&SecretString::from("wrong"), Some(&h))
                .await
                .unwrap(),
            Verified::No
        );
        assert_eq!(
            p.verify(&SecretString::from("x"), None).await.unwrap(),
            Verified::No
        );
    }

    #[tokio::test]
    async fn a_bcrypt_hash_from_the_old_system_verifies_and_asks_for_a_rehash() {
        let p = Passwords::new(1).unwrap();
        let old = bcrypt::hash("legacy password 1", 4).unwrap();
        assert_eq!(
            p.verify(&SecretString::from("legacy password 1"), Some(&old))
                .await
                .unwrap(),
            Verified::Yes { needs_rehash: true }
        );
    }
}
