//! The key-encryption key (KEK) that wraps every subject key.

use crate::crypto::{CryptoError, Key};
use secrecy::{ExposeSecret, SecretString};
use std::path::Path;

/// The master key and its id. The id is derived from the key itself, so a rotated key gets
/// a new id without any bookkeeping and a wrong key is detected before anything decrypts.
#[derive(Clone)]
pub struct MasterKey {
    key: Key,
    id: String,
}

#[derive(Debug, thiserror::Error)]
pub enum MasterKeyError {
    #[error("EGEC_MASTER_KEY must be exactly 64 hexadecimal characters")]
    BadFormat,
    #[error("cannot read or write the generated master key file {path}: {source}")]
    File {
        path: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Crypto(#[from] CryptoError),
}

impl MasterKey {
    /// Parses the 64-hex-character form used by `EGEC_MASTER_KEY`.
    pub fn from_hex(hex_key: &SecretString) -> Result<Self, MasterKeyError> {
        let s = hex_key.expose_secret().trim();
        if s.len() != 64 {
            return Err(MasterKeyError::BadFormat);
        }
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(s, &mut bytes).map_err(|_| MasterKeyError::BadFormat)?;
        Ok(Self::from_key(Key::from_bytes(bytes)))
    }

    pub fn from_key(key: Key) -> Self {
        let id = format!("kek-{}", &key.fingerprint()[..16]);
        Self { key, id }
    }

    /// Development only: reads `<dir>/master.key`, creating it (mode 0600) on first use.
    pub fn load_or_generate(dir: &Path) -> Result<(Self, bool), MasterKeyError> {
        let path = dir.join("master.key");
        let file_err = |source| MasterKeyError::File {
            path: path.display().to_string(),
            source,
        };
        match std::fs::read_to_string(&path) {
            Ok(s) => Ok((Self::from_hex(&SecretString::from(s))?, false)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                std::fs::create_dir_all(dir).map_err(file_err)?;
                let key = Key::generate()?;
                let hex_key = zeroize::Zeroizing::new(hex::encode(key.bytes()));
                write_private(&path, hex_key.as_bytes()).map_err(file_err)?;
                Ok((Self::from_key(key), true))
            }
            Err(e) => Err(file_err(e)),
        }
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn key(&self) -> &Key {
        &self.key
    }
}

/// Writes a secret file readable only by its owner, failing if it already exists (so two
/// processes starting at once cannot each write a different key).
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_master_key_is_private_and_loads_back_identically() {
        let dir = std::env::temp_dir().join(format!("egec-mk-{}", uuid::Uuid::now_v7()));
        let (a, created) = MasterKey::load_or_generate(&dir).unwrap();
        assert!(created);
        let (b, created) = MasterKey::load_or_generate(&dir).unwrap();
        assert!(!created);
        assert_eq!(a.id(), b.id());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.join("master.key"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_master_key_must_be_64_hex_characters() {
        assert!(MasterKey::from_hex(&SecretString::from("abc")).is_err());
        assert!(MasterKey::from_hex(&SecretString::from("z".repeat(64))).is_err());
        assert!(MasterKey::from_hex(&SecretString::from("ab".repeat(32))).is_ok());
    }
}
