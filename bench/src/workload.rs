//! Customer commands through the real write path: load (cache or log), decide, encrypt the
//! personal fields, append through the group-commit appender. Creates take the API's path for
//! a fresh id (`CommandBus::execute_new`: no read of the log before deciding).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::Utc;
use egec_commands::handler::CommandBus;
use egec_domain::aggregate::CustomerAggregate;
use egec_domain::customer::{
    CreateCustomer, CustomerChanges, CustomerCommand, CustomerCreated, CustomerEvent,
    CustomerStatus, CustomerUpdated, UpdateCustomer,
};
use egec_domain::event::Metadata;
use egec_domain::values::{Country, Email, Notes, PassportNumber, PersonName, PhoneE164, Source};
use egec_domain::{CustomerId, Personal, Role, UserId};
use hdrhistogram::Histogram;
use uuid::Uuid;

use crate::batch_sizes::{BatchSizes, BatchStats};
use crate::cpu::{CpuUse, Snapshot};
use crate::rng::SplitMix;

/// Share of commands (in percent) that update a customer the client created earlier; the
/// rest create new customers. Creates dominate, as in the CRM's intake-heavy days.
const UPDATE_PERCENT: usize = 20;

/// How many of its own customers each client remembers for updates. Small enough that all
/// clients' customers together stay in the aggregate cache, so updates load from the cache.
const REMEMBERED_PER_CLIENT: usize = 256;

/// Values that are costly to validate (phone numbers go through libphonenumber), parsed once
/// up front: the benchmark measures the write path, not request parsing.
pub struct Samples {
    phones: Vec<PhoneE164>,
    agents: Vec<UserId>,
    country: Country,
    source: Source,
}

impl Samples {
    pub fn new() -> anyhow::Result<Self> {
        // 020 7946 0xxx is the UK's range reserved for drama, so no real person is named.
        let phones = (0..100)
            .filter_map(|i| PhoneE164::parse(&format!("+44 20 7946 0{i:03}"), None).ok())
            .collect::<Vec<_>>();
        anyhow::ensure!(!phones.is_empty(), "no sample phone number validates");
        Ok(Self {
            phones,
            agents: (0..8).map(|_| UserId::from_uuid(Uuid::now_v7())).collect(),
            country: Country::parse("United Kingdom")?,
            source: Source::parse("education fair")?,
        })
    }

    fn phone(&self, n: u64) -> PhoneE164 {
        self.phones[(n % self.phones.len() as u64) as usize].clone()
    }

    fn agent(&self, n: u64) -> UserId {
        self.agents[(n % self.agents.len() as u64) as usize]
    }

    /// Metadata as an API request would carry it: an actor, and the IP address and user agent
    /// that the codec encrypts under the month's retention key.
    pub fn metadata(&self, n: u64) -> Metadata {
        Metadata {
            actor_id: Some(self.agent(n)),
            actor_role: Some(Role::Agent),
            ip: Some(Personal::Known(format!("203.0.113.{}", n % 250 + 1))),
            user_agent: Some(Personal::Known(
                "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0".into(),
            )),
            correlation_id: Uuid::now_v7(),
            causation_id: None,
            batch_id: None,
            occurred_at: Utc::now(),
        }
    }

    fn notes(n: u64) -> anyhow::Result<Notes> {
        Ok(Notes::parse(&format!(
            "Follow-up #{n}: called about the foundation programme, asked for the fee schedule \
             and accommodation options; prefers e-mail, available after 5 pm on weekdays."
        ))?)
    }

    fn email(tag: &str, n: u64) -> anyhow::Result<Email> {
        Ok(Email::parse(&format!("{tag}.{n}@example.com"))?)
    }

    /// A create command with all five personal fields filled in.
    pub fn create(&self, id: CustomerId, n: u64) -> anyhow::Result<CreateCustomer> {
        Ok(CreateCustomer {
            customer_id: id,
            name: PersonName::parse(&format!("Amira Haddad {n}"))?,
            email: Some(Self::email("amira", n)?),
            phone: Some(self.phone(n)),
            passport_number: Some(PassportNumber::parse(&format!("A{:08}", n % 100_000_000))?),
            country: Some(self.country.clone()),
            source: Some(self.source.clone()),
            status: None,
            notes: Some(Self::notes(n)?),
            assigned_agent_ids: vec![self.agent(n)],
        })
    }

    /// An update that always changes something (so it appends an event): a new e-mail
    /// address and new notes, both personal fields.
    pub fn update(n: u64) -> anyhow::Result<UpdateCustomer> {
        Ok(UpdateCustomer {
            email: Some(Some(Self::email("amira.h", n)?)),
            notes: Some(Some(Self::notes(n)?)),
            ..UpdateCustomer::default()
        })
    }

    /// The event a create command decides, built directly (for seeding the log quickly).
    pub fn created_event(&self, id: CustomerId, n: u64) -> anyhow::Result<CustomerEvent> {
        let c = self.create(id, n)?;
        Ok(CustomerEvent::Created(CustomerCreated {
            customer_id: id,
            name: Personal::Known(c.name),
            email: c.email.map(Personal::Known),
            phone: c.phone.map(Personal::Known),
            passport_number: c.passport_number.map(Personal::Known),
            country: c.country,
            source: c.source,
            status: CustomerStatus::New,
            notes: c.notes.map(Personal::Known),
            assigned_agent_ids: c.assigned_agent_ids,
            at: Utc::now(),
        }))
    }

    /// The event an update command decides, built directly (for seeding the log quickly).
    pub fn updated_event(id: CustomerId, n: u64) -> anyhow::Result<CustomerEvent> {
        Ok(CustomerEvent::Updated(CustomerUpdated {
            customer_id: id,
            changes: CustomerChanges {
                email: Some(Some(Personal::Known(Self::email("amira.h", n)?))),
                notes: Some(Some(Personal::Known(Self::notes(n)?))),
                ..CustomerChanges::default()
            },
            at: Utc::now(),
        }))
    }
}

/// One run: how many clients, for how long.
#[derive(Debug, Clone, Copy)]
pub struct RunConfig {
    pub clients: usize,
    pub warmup: Duration,
    pub measure: Duration,
}

/// What one run measured.
pub struct RunResult {
    pub clients: usize,
    /// Commands completed inside the measured window.
    pub commands: u64,
    pub creates: u64,
    pub updates: u64,
    pub errors: u64,
    pub first_error: Option<String>,
    pub seconds: f64,
    /// Command latency in microseconds.
    pub latency: Histogram<u64>,
    pub batches: BatchStats,
    /// Where the machine's CPU went in the window (`database` names the PostgreSQL backends
    /// that count as the store's; empty for SQLite).
    pub cpu: CpuUse,
}

impl RunResult {
    pub fn per_second(&self) -> f64 {
        self.commands as f64 / self.seconds
    }

    pub fn p50_ms(&self) -> f64 {
        self.latency.value_at_quantile(0.50) as f64 / 1000.0
    }

    pub fn p99_ms(&self) -> f64 {
        self.latency.value_at_quantile(0.99) as f64 / 1000.0
    }
}

struct Tally {
    commands: u64,
    creates: u64,
    updates: u64,
    errors: u64,
    first_error: Option<String>,
    latency: Histogram<u64>,
}

fn new_latency_histogram() -> anyhow::Result<Histogram<u64>> {
    // 1 µs to 60 s with three significant digits: any command slower than a minute is a
    // hung benchmark, not a data point.
    Ok(Histogram::new_with_bounds(1, 60_000_000, 3)?)
}

/// Runs `clients` concurrent clients for warm-up plus the measured window; only commands
/// that complete inside the window count, for throughput and latency alike.
pub async fn run(
    bus: &Arc<CommandBus>,
    samples: &Arc<Samples>,
    batch_sizes: &BatchSizes,
    cfg: RunConfig,
    database: &str,
) -> anyhow::Result<RunResult> {
    let start = Instant::now();
    let window_start = start + cfg.warmup;
    let window_end = window_start + cfg.measure;

    let mut tasks = Vec::with_capacity(cfg.clients);
    for c in 0..cfg.clients {
        let bus = Arc::clone(bus);
        let samples = Arc::clone(samples);
        let seed = 0x5EED_0000 + c as u64;
        tasks.push(tokio::spawn(async move {
            client(bus, samples, seed, window_start, window_end).await
        }));
    }
    // The batch sizes are reset when the window opens, so warm-up batches do not count.
    tokio::time::sleep_until(window_start.into()).await;
    batch_sizes.reset();
    let cpu = Snapshot::take(database, &[]);
    tokio::time::sleep_until(window_end.into()).await;
    let cpu = cpu.since();
    let batches = batch_sizes.stats();

    let mut result = RunResult {
        clients: cfg.clients,
        commands: 0,
        creates: 0,
        updates: 0,
        errors: 0,
        first_error: None,
        seconds: cfg.measure.as_secs_f64(),
        latency: new_latency_histogram()?,
        batches,
        cpu,
    };
    for task in tasks {
        let t = task.await.context("a client task panicked")??;
        result.commands += t.commands;
        result.creates += t.creates;
        result.updates += t.updates;
        result.errors += t.errors;
        result.first_error = result.first_error.or(t.first_error);
        result.latency.add(&t.latency)?;
    }
    Ok(result)
}

async fn client(
    bus: Arc<CommandBus>,
    samples: Arc<Samples>,
    seed: u64,
    window_start: Instant,
    window_end: Instant,
) -> anyhow::Result<Tally> {
    let mut rng = SplitMix::new(seed);
    let mut mine: VecDeque<CustomerId> = VecDeque::with_capacity(REMEMBERED_PER_CLIENT);
    let mut tally = Tally {
        commands: 0,
        creates: 0,
        updates: 0,
        errors: 0,
        first_error: None,
        latency: new_latency_histogram()?,
    };
    // Bounded by the clock: no new command starts after the window closed.
    while Instant::now() < window_end {
        let n = rng.next_u64();
        let meta = samples.metadata(n);
        let update = !mine.is_empty() && rng.below(100) < UPDATE_PERCENT;
        let started = Instant::now();
        let outcome = if update {
            let id = mine[rng.below(mine.len())];
            let command = CustomerCommand::Update(Samples::update(n)?);
            bus.execute::<CustomerAggregate>(
                &id.stream_id(),
                &id.subject(),
                None,
                Uuid::now_v7(),
                &meta,
                command,
            )
            .await
            .map(|_| ())
        } else {
            let id = CustomerId::from_uuid(Uuid::now_v7());
            let command = CustomerCommand::Create(Box::new(samples.create(id, n)?));
            // As `POST /api/customers` does: the id was just made up, so the handler decides
            // on the empty state without reading the log (the append still checks it).
            let done = bus
                .execute_new::<CustomerAggregate>(
                    &id.stream_id(),
                    &id.subject(),
                    Uuid::now_v7(),
                    &meta,
                    command,
                )
                .await
                .map(|_| ());
            if done.is_ok() {
                if mine.len() == REMEMBERED_PER_CLIENT {
                    mine.pop_front();
                }
                mine.push_back(id);
            }
            done
        };
        let finished = Instant::now();
        if finished < window_start || finished >= window_end {
            continue;
        }
        match outcome {
            Ok(()) => {
                tally.commands += 1;
                if update {
                    tally.updates += 1;
                } else {
                    tally.creates += 1;
                }
                let micros = u64::try_from((finished - started).as_micros()).unwrap_or(u64::MAX);
                tally.latency.saturating_record(micros.max(1));
            }
            Err(e) => {
                tally.errors += 1;
                tally.first_error.get_or_insert_with(|| e.to_string());
            }
        }
    }
    Ok(tally)
}
