//! Rebuild speed: fill a fresh log with customer events quickly, then time a full read,
//! decrypt, decode and fold of it, the work every projection rebuild and replay does.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, bail};
use async_trait::async_trait;
use egec_commands::codec::Codec;
use egec_commands::master_key::MasterKey;
use egec_commands::store::open::Stores;
use egec_commands::store::{
    AppendRequest, EventLog, ExpectedVersion, KeyTable, RecordedEvent, StoreError, SubjectKeys,
    WrappedKey,
};
use egec_commands::vault::Vault;
use egec_domain::CustomerId;
use egec_domain::customer::{CustomerState, evolve};
use egec_domain::event::DomainEvent;
use parking_lot::Mutex;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use uuid::Uuid;

use crate::setup::WriteSide;
use crate::workload::Samples;

/// Requests per `append_batch` call while seeding: large transactions, like a busy appender.
const SEED_BATCH: usize = 5_000;

/// Encoded batches allowed to wait for the database while seeding: enough to keep both
/// cores busy (encoding on one, the database on the other), bounded to cap memory.
const SEED_IN_FLIGHT: usize = 3;

/// Events per `read_all` page during the rebuild.
pub const PAGE: usize = 5_000;

/// How the log was filled.
pub struct SeedReport {
    pub events: u64,
    pub customers: u64,
    /// Time to copy the seeded subject keys into the key table.
    pub key_seconds: f64,
    pub append_seconds: f64,
}

/// Subject keys held in memory while seeding, then copied into the real key table in one
/// bulk insert. Creating 100,000 keys one transaction at a time through the store would take
/// minutes and measure nothing this benchmark reports; the rows copied are exactly what
/// `KeyTable::create` would have written.
#[derive(Default)]
pub struct MemKeys(Mutex<HashMap<String, Vec<WrappedKey>>>);

#[async_trait]
impl KeyTable for MemKeys {
    async fn load(&self, subject: &str) -> Result<SubjectKeys, StoreError> {
        Ok(match self.0.lock().get(subject) {
            Some(keys) => SubjectKeys::Active(keys.clone()),
            None => SubjectKeys::None,
        })
    }

    async fn create(&self, subject: &str, key: WrappedKey) -> Result<SubjectKeys, StoreError> {
        let mut map = self.0.lock();
        let keys = map.entry(subject.to_owned()).or_insert_with(|| vec![key]);
        Ok(SubjectKeys::Active(keys.clone()))
    }

    async fn destroy(&self, subject: &str) -> Result<Vec<String>, StoreError> {
        let gone = self.0.lock().remove(subject).unwrap_or_default();
        Ok(gone.into_iter().map(|k| k.fingerprint).collect())
    }

    async fn all_keys(&self) -> Result<Vec<(String, WrappedKey)>, StoreError> {
        Ok(self
            .0
            .lock()
            .iter()
            .flat_map(|(s, keys)| keys.iter().map(|k| (s.clone(), k.clone())))
            .collect())
    }

    async fn rewrap(&self, _subject: &str, _key: WrappedKey) -> Result<(), StoreError> {
        Ok(())
    }
}

/// Rows per statement when copying the seeded keys into PostgreSQL.
const KEY_COPY_CHUNK: usize = 10_000;

/// Writes the seeded keys into the store's key table (the table of the log's migration).
async fn copy_keys(stores: &Stores, keys: Vec<(String, WrappedKey)>) -> anyhow::Result<()> {
    if let Some(pg) = &stores.postgres {
        let conn = pg.pool().get().await?;
        for chunk in keys.chunks(KEY_COPY_CHUNK) {
            let subjects: Vec<&str> = chunk.iter().map(|(s, _)| s.as_str()).collect();
            let versions: Vec<i32> = chunk.iter().map(|(_, k)| k.key_version).collect();
            let keks: Vec<&str> = chunk.iter().map(|(_, k)| k.kek_id.as_str()).collect();
            let wrapped: Vec<&[u8]> = chunk.iter().map(|(_, k)| k.wrapped.as_slice()).collect();
            let prints: Vec<&str> = chunk.iter().map(|(_, k)| k.fingerprint.as_str()).collect();
            conn.execute(
                "INSERT INTO egec.subject_keys (subject, key_version, kek_id, wrapped, \
                 fingerprint) SELECT * FROM unnest($1::text[], $2::int4[], $3::text[], \
                 $4::bytea[], $5::text[])",
                &[&subjects, &versions, &keks, &wrapped, &prints],
            )
            .await?;
        }
        return Ok(());
    }
    let Some(sqlite) = &stores.sqlite else {
        bail!("the store is neither PostgreSQL nor SQLite");
    };
    let path = sqlite.path().to_path_buf();
    tokio::task::spawn_blocking(move || {
        let mut conn = rusqlite::Connection::open(path)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        let tx = conn.transaction()?;
        {
            let mut stmt = tx.prepare(
                "INSERT INTO subject_keys (subject, key_version, kek_id, wrapped, fingerprint, \
                 created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?;
            let now = chrono::Utc::now().timestamp_micros();
            for (subject, k) in &keys {
                stmt.execute(rusqlite::params![
                    subject,
                    k.key_version,
                    k.kek_id,
                    k.wrapped,
                    k.fingerprint,
                    now
                ])?;
            }
        }
        tx.commit()?;
        anyhow::Ok(())
    })
    .await
    .context("the key copy panicked")?
}

/// Appends `events` customer events: `customers` creates, then update rounds over the same
/// customers (interleaved, as real traffic is), each encoded by the real codec so every row
/// carries real ciphertext. Goes straight to `EventLog::append_batch` in big batches.
pub async fn seed(
    ws: &WriteSide,
    samples: &Arc<Samples>,
    events: u64,
    customers: u64,
) -> anyhow::Result<SeedReport> {
    let customers = customers.clamp(1, events.max(1));
    let ids: Arc<Vec<CustomerId>> = Arc::new(
        (0..customers)
            .map(|_| CustomerId::from_uuid(Uuid::now_v7()))
            .collect(),
    );
    let mem_keys = Arc::new(MemKeys::default());
    let cache = usize::try_from(customers)?.saturating_add(1024);
    let vault = Vault::new(mem_keys.clone(), ws.master.clone(), cache);
    let codec = Arc::new(Codec::new(Arc::new(vault)));

    // Batches are encoded on spawned tasks (both cores) and appended strictly in order, since
    // every update expects the version its predecessor left.
    let started = Instant::now();
    let (tx, mut rx) =
        mpsc::channel::<JoinHandle<anyhow::Result<Vec<AppendRequest>>>>(SEED_IN_FLIGHT);
    let spawner = {
        let ids = Arc::clone(&ids);
        let codec = Arc::clone(&codec);
        let samples = Arc::clone(samples);
        tokio::spawn(async move {
            let mut first = 0_u64;
            while first < events {
                let last = (first + SEED_BATCH as u64).min(events);
                let handle = tokio::spawn(encode_batch(
                    Arc::clone(&codec),
                    Arc::clone(&samples),
                    Arc::clone(&ids),
                    first..last,
                ));
                if tx.send(handle).await.is_err() {
                    break;
                }
                first = last;
            }
        })
    };
    let mut appended = 0_u64;
    while let Some(handle) = rx.recv().await {
        let batch = handle.await.context("an encoding task panicked")??;
        let answers = ws.stores.log.append_batch(batch).await?;
        for answer in answers {
            if let Err(c) = answer {
                bail!("seeding hit a version conflict: {c}");
            }
            appended += 1;
        }
    }
    spawner.await.context("the batch spawner panicked")?;
    let append_seconds = started.elapsed().as_secs_f64();

    let started = Instant::now();
    copy_keys(&ws.stores, mem_keys.all_keys().await?).await?;
    Ok(SeedReport {
        events: appended,
        customers,
        key_seconds: started.elapsed().as_secs_f64(),
        append_seconds,
    })
}

/// Encodes the events with global indices `range`: index `i` is event number `i / customers`
/// of customer `i % customers`.
async fn encode_batch(
    codec: Arc<Codec>,
    samples: Arc<Samples>,
    ids: Arc<Vec<CustomerId>>,
    range: std::ops::Range<u64>,
) -> anyhow::Result<Vec<AppendRequest>> {
    let customers = ids.len() as u64;
    let mut batch = Vec::with_capacity((range.end - range.start) as usize);
    for i in range {
        let round = i / customers;
        let id = ids[(i % customers) as usize];
        let event = if round == 0 {
            samples.created_event(id, i)?
        } else {
            Samples::updated_event(id, i)?
        };
        let meta = samples.metadata(i);
        let stored = codec
            .encode(
                &id.subject(),
                Uuid::now_v7(),
                &DomainEvent::Customer(event),
                &meta,
            )
            .await?;
        batch.push(AppendRequest {
            new_keys: vec![],
            stream_id: id.stream_id(),
            expected: ExpectedVersion::Exact(i64::try_from(round)?),
            command_id: Uuid::now_v7(),
            events: vec![stored],
        });
    }
    Ok(batch)
}

/// What a timed pass over the log measured.
pub struct PassReport {
    pub events: u64,
    pub seconds: f64,
    /// Customers folded (zero for the read-only pass).
    pub customers: usize,
}

impl PassReport {
    pub fn per_second(&self) -> f64 {
        self.events as f64 / self.seconds
    }
}

/// Reads the whole log in pages on its own task, one page ahead of the consumer, so the
/// database read overlaps with decoding as a projection rebuild would overlap them.
fn page_reader(log: Arc<dyn EventLog>) -> mpsc::Receiver<anyhow::Result<Vec<RecordedEvent>>> {
    let (tx, rx) = mpsc::channel(2);
    tokio::spawn(async move {
        let mut after = 0_i64;
        // Ends at the log's end: nothing appends while the benchmark reads.
        loop {
            let page = log.read_all(after, PAGE).await.map_err(anyhow::Error::from);
            let last = match &page {
                Ok(events) => events.last().map(|e| e.global_position),
                Err(_) => None,
            };
            let failed = page.is_err();
            if tx.send(page).await.is_err() || failed {
                break;
            }
            match last {
                Some(position) => after = position,
                None => break,
            }
        }
    });
    rx
}

/// A codec over the store's real key table with an empty cache, as after a restart.
pub fn cold_codec(stores: &Stores, master: &MasterKey, key_cache: usize) -> Codec {
    Codec::new(Arc::new(Vault::new(
        stores.keys.clone(),
        master.clone(),
        key_cache,
    )))
}

/// The full rebuild: every event read, decrypted, decoded and folded into per-customer state.
/// With a fresh codec the subject keys are loaded from the key table, one query per page for
/// the keys the page needs, as after a restart; run again with the same codec, the keys come
/// from its cache.
pub async fn rebuild(stores: &Stores, codec: &Codec) -> anyhow::Result<PassReport> {
    let started = Instant::now();
    let mut pages = page_reader(stores.log.clone());
    let mut states: HashMap<String, CustomerState> = HashMap::new();
    let mut events = 0_u64;
    while let Some(page) = pages.recv().await {
        let page = page?;
        if page.is_empty() {
            break;
        }
        // Keys are preloaded with one query per page, as the projections' decoding does.
        for envelope in codec.decode_batch(&page).await {
            let envelope = envelope?;
            if let DomainEvent::Customer(e) = envelope.event {
                let slot = states.entry(envelope.stream_id).or_default();
                *slot = evolve(std::mem::take(slot), &e);
            }
            events += 1;
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    // A rebuild that folded nothing would be a fast lie; make sure the state is real.
    let present = states
        .values()
        .filter(|s| s.customer().is_some_and(|c| c.name.known().is_some()))
        .count();
    if present != states.len() {
        bail!(
            "rebuild folded {} customers but only {present} have a decrypted name",
            states.len()
        );
    }
    Ok(PassReport {
        events,
        seconds,
        customers: states.len(),
    })
}

/// Only the paged read, without decoding: how much of the rebuild time is the database.
pub async fn read_only(stores: &Stores) -> anyhow::Result<PassReport> {
    let started = Instant::now();
    let mut pages = page_reader(stores.log.clone());
    let mut events = 0_u64;
    while let Some(page) = pages.recv().await {
        let page = page?;
        if page.is_empty() {
            break;
        }
        events += page.len() as u64;
    }
    Ok(PassReport {
        events,
        seconds: started.elapsed().as_secs_f64(),
        customers: 0,
    })
}
