//! The subject-key vault: per-subject data keys, wrapped by the master key, cached unwrapped
//! in memory (bounded), destroyed on erasure and never re-created afterwards.

use crate::crypto::{CryptoError, Key};
use crate::master_key::MasterKey;
use crate::store::{KeyTable, StoreError, SubjectKeys, WrappedKey};
use lru::LruCache;
use parking_lot::Mutex;
use std::num::NonZeroUsize;
use std::sync::Arc;

/// What the vault holds for a subject, unwrapped.
#[derive(Clone, Debug)]
pub enum SubjectKey {
    /// Live keys by version (index 0 = version 1).
    Live(Arc<Vec<Key>>),
    /// Erased: every field under it reads `[ERASED]`.
    Erased,
    /// Never had a key (nothing was ever encrypted for it).
    Missing,
}

#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Crypto(#[from] CryptoError),
    #[error("subject key was wrapped by master key {0}, which this process does not have")]
    UnknownKek(String),
    #[error("subject was erased; its key is never re-created")]
    Erased,
}

/// The first key of a subject that has none yet, generated and wrapped locally so that it can
/// be stored in the same transaction as the first events encrypted under it (see
/// [`crate::store::AppendRequest::new_keys`]). It is not cached until that append succeeded:
/// if the append is refused, the key never existed.
pub struct PendingKey {
    pub subject: String,
    pub key: Key,
    pub wrapped: WrappedKey,
}

impl std::fmt::Debug for PendingKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PendingKey")
            .field("subject", &self.subject)
            .field("fingerprint", &self.wrapped.fingerprint)
            .finish()
    }
}

/// How long a cached live key is trusted before the key table is asked again. Another node
/// may destroy a key (an erasure); it tells the others at once over NATS when it can, and this
/// bounds how long a node that missed the signal can still decrypt with the destroyed key.
pub const KEY_CACHE_TTL: std::time::Duration = std::time::Duration::from_secs(30);

/// The unwrapped keys, least recently used evicted first. A live key expires after
/// [`KEY_CACHE_TTL`]; an erased one never does (a destroyed key is never re-created).
struct KeyCache {
    entries: LruCache<String, (SubjectKey, std::time::Instant)>,
    ttl: std::time::Duration,
}

impl KeyCache {
    fn fresh(ttl: std::time::Duration, entry: &(SubjectKey, std::time::Instant)) -> bool {
        matches!(entry.0, SubjectKey::Erased) || entry.1.elapsed() < ttl
    }

    fn get(&mut self, subject: &str) -> Option<SubjectKey> {
        let ttl = self.ttl;
        match self.entries.get(subject) {
            Some(e) if Self::fresh(ttl, e) => Some(e.0.clone()),
            Some(_) => {
                self.entries.pop(subject);
                None
            }
            None => None,
        }
    }

    fn contains(&self, subject: &str) -> bool {
        self.entries
            .peek(subject)
            .is_some_and(|e| Self::fresh(self.ttl, e))
    }

    fn is_erased(&self, subject: &str) -> bool {
        matches!(self.entries.peek(subject), Some((SubjectKey::Erased, _)))
    }

    fn put(&mut self, subject: String, key: SubjectKey) {
        self.entries.put(subject, (key, std::time::Instant::now()));
    }

    fn pop(&mut self, subject: &str) {
        self.entries.pop(subject);
    }

    fn subjects(&self) -> Vec<String> {
        self.entries.iter().map(|(s, _)| s.clone()).collect()
    }
}

pub struct Vault {
    table: Arc<dyn KeyTable>,
    master: MasterKey,
    /// Former master keys still accepted for unwrapping while a rotation is under way.
    previous: Vec<MasterKey>,
    cache: Mutex<KeyCache>,
}

fn wrap_aad(subject: &str, version: i32) -> Vec<u8> {
    let mut aad = subject.as_bytes().to_vec();
    aad.push(0);
    aad.extend_from_slice(&version.to_be_bytes());
    aad
}

impl Vault {
    pub fn new(table: Arc<dyn KeyTable>, master: MasterKey, cache_size: usize) -> Self {
        let cap = NonZeroUsize::new(cache_size.max(1)).unwrap_or(NonZeroUsize::MIN);
        Self {
            table,
            master,
            previous: Vec::new(),
            cache: Mutex::new(KeyCache {
                entries: LruCache::new(cap),
                ttl: KEY_CACHE_TTL,
            }),
        }
    }

    /// Another lifetime for cached live keys than [`KEY_CACHE_TTL`] (tests).
    pub fn with_cache_ttl(self, ttl: std::time::Duration) -> Self {
        self.cache.lock().ttl = ttl;
        self
    }

    pub fn with_previous(mut self, previous: Vec<MasterKey>) -> Self {
        self.previous = previous;
        self
    }

    pub fn master(&self) -> &MasterKey {
        &self.master
    }

    pub fn wrap(&self, subject: &str, version: i32, key: &Key) -> Result<WrappedKey, CryptoError> {
        Ok(WrappedKey {
            key_version: version,
            kek_id: self.master.id().to_owned(),
            wrapped: self
                .master
                .key()
                .seal(key.bytes(), &wrap_aad(subject, version))?,
            fingerprint: key.fingerprint(),
        })
    }

    pub fn unwrap_key(&self, subject: &str, w: &WrappedKey) -> Result<Key, VaultError> {
        let kek = std::iter::once(&self.master)
            .chain(self.previous.iter())
            .find(|m| m.id() == w.kek_id)
            .ok_or_else(|| VaultError::UnknownKek(w.kek_id.clone()))?;
        let plain = kek
            .key()
            .open(&w.wrapped, &wrap_aad(subject, w.key_version))?;
        let bytes: [u8; 32] = plain
            .as_slice()
            .try_into()
            .map_err(|_| CryptoError::Malformed)?;
        Ok(Key::from_bytes(bytes))
    }

    fn unwrap_all(&self, subject: &str, keys: &[WrappedKey]) -> Result<SubjectKey, VaultError> {
        let keys = keys
            .iter()
            .map(|w| self.unwrap_key(subject, w))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(SubjectKey::Live(Arc::new(keys)))
    }

    /// What the cache holds for a subject, without asking the key table.
    pub fn cached(&self, subject: &str) -> Option<SubjectKey> {
        self.cache.lock().get(subject)
    }

    /// A fresh first key (version 1) for a subject, wrapped by the master key, stored
    /// nowhere yet.
    pub fn new_pending_key(&self, subject: &str) -> Result<PendingKey, VaultError> {
        let key = Key::generate()?;
        let wrapped = self.wrap(subject, 1, &key)?;
        Ok(PendingKey {
            subject: subject.to_owned(),
            key,
            wrapped,
        })
    }

    /// Caches a pending key once the append that stored it has committed.
    pub fn adopt(&self, pending: PendingKey) {
        self.cache.lock().put(
            pending.subject,
            SubjectKey::Live(Arc::new(vec![pending.key])),
        );
    }

    /// Loads the keys of every listed subject that is not cached yet, with one query, so that
    /// decoding a batch of events does not ask the key table once per subject.
    pub async fn preload(&self, subjects: &[String]) -> Result<(), VaultError> {
        let missing: Vec<String> = {
            let cache = self.cache.lock();
            let mut missing: Vec<String> = subjects
                .iter()
                .filter(|s| !cache.contains(s.as_str()))
                .cloned()
                .collect();
            missing.sort_unstable();
            missing.dedup();
            missing
        };
        if missing.is_empty() {
            return Ok(());
        }
        let loaded = self.table.load_many(&missing).await?;
        let mut unwrapped = Vec::with_capacity(loaded.len());
        for (subject, keys) in loaded {
            let k = match keys {
                // Not cached, like `for_read`: the key may be created any moment.
                SubjectKeys::None => continue,
                SubjectKeys::Erased => SubjectKey::Erased,
                SubjectKeys::Active(keys) => self.unwrap_all(&subject, &keys)?,
            };
            unwrapped.push((subject, k));
        }
        let mut cache = self.cache.lock();
        for (subject, k) in unwrapped {
            // A concurrent `destroy` may have cached `Erased` meanwhile; never overwrite it
            // with keys read before the erasure.
            if !cache.is_erased(&subject) {
                cache.put(subject, k);
            }
        }
        Ok(())
    }

    /// The subject's keys for reading: never creates one.
    pub async fn for_read(&self, subject: &str) -> Result<SubjectKey, VaultError> {
        if let Some(k) = self.cache.lock().get(subject) {
            return Ok(k);
        }
        let k = match self.table.load(subject).await? {
            SubjectKeys::None => return Ok(SubjectKey::Missing),
            SubjectKeys::Erased => SubjectKey::Erased,
            SubjectKeys::Active(keys) => self.unwrap_all(subject, &keys)?,
        };
        self.cache.lock().put(subject.to_owned(), k.clone());
        Ok(k)
    }

    /// The subject's current key and its version for writing, created on first use.
    pub async fn for_write(&self, subject: &str) -> Result<(i32, Key), VaultError> {
        let latest = |keys: &Arc<Vec<Key>>| -> Option<(i32, Key)> {
            keys.last().map(|k| (keys.len() as i32, k.clone()))
        };
        match self.for_read(subject).await? {
            SubjectKey::Live(keys) => latest(&keys).ok_or(VaultError::Erased),
            SubjectKey::Erased => Err(VaultError::Erased),
            SubjectKey::Missing => {
                let key = Key::generate()?;
                let wrapped = self.wrap(subject, 1, &key)?;
                // Another writer may have created the key first; the table answers with the
                // key that won, and we use that one.
                let winner = match self.table.create(subject, wrapped).await? {
                    SubjectKeys::Active(keys) => self.unwrap_all(subject, &keys)?,
                    SubjectKeys::Erased => SubjectKey::Erased,
                    SubjectKeys::None => {
                        return Err(StoreError::Corrupt("key create returned no key".into()).into());
                    }
                };
                self.cache.lock().put(subject.to_owned(), winner.clone());
                match winner {
                    SubjectKey::Live(keys) => latest(&keys).ok_or(VaultError::Erased),
                    _ => Err(VaultError::Erased),
                }
            }
        }
    }

    /// Destroys every key of the subject for good; answers the destroyed keys' fingerprints.
    pub async fn destroy(&self, subject: &str) -> Result<Vec<String>, VaultError> {
        let fingerprints = self.table.destroy(subject).await?;
        self.cache
            .lock()
            .put(subject.to_owned(), SubjectKey::Erased);
        Ok(fingerprints)
    }

    /// The subjects with a live key whose name starts with `prefix` (see
    /// [`KeyTable::live_subjects`]).
    pub async fn live_subjects(&self, prefix: &str) -> Result<Vec<String>, VaultError> {
        Ok(self.table.live_subjects(prefix).await?)
    }

    /// Drops every cached entry whose subject matches (keys another node may have destroyed).
    pub fn forget_matching(&self, matches: impl Fn(&str) -> bool) {
        let mut cache = self.cache.lock();
        let stale: Vec<String> = cache
            .subjects()
            .into_iter()
            .filter(|s| matches(s))
            .collect();
        for s in stale {
            cache.pop(&s);
        }
    }

    /// Drops a cached key (another node erased or rotated it).
    pub fn forget(&self, subject: &str) {
        self.cache.lock().pop(subject);
    }
}
