//! A test environment per backend: a fresh log, a vault and codec, an appender, and helpers
//! that append domain events through the real codec (so personal fields are encrypted in
//! the log exactly as in production).

#![allow(dead_code)]

/// Runs each listed test body once per backend, as `sqlite::<name>` and `postgres::<name>`.
#[allow(unused_macros)]
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::common::Env::sqlite().await).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::common::Env::postgres().await).await;
                }
            )*
        }
    };
}

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use egec_commands::appender::Appender;
use egec_commands::codec::Codec;
use egec_commands::crypto::Key;
use egec_commands::master_key::MasterKey;
use egec_commands::store::open::Stores;
use egec_commands::store::postgres::PgLog;
use egec_commands::store::sqlite::SqliteLog;
use egec_commands::store::{AppendOutcome, AppendRequest, ExpectedVersion, NewEvent};
use egec_commands::testing::{PgDropGuard, fresh_postgres, fresh_sqlite_dir};
use egec_commands::vault::Vault;
use egec_domain::customer::{CustomerChanges, CustomerCreated, CustomerEvent, CustomerStatus};
use egec_domain::event::{DomainEvent, Metadata};
use egec_domain::personal::Personal;
use egec_domain::user::{LoginEvent, PasswordHash, UserEvent, login_stream_id};
use egec_domain::values::{Country, Email, PassportNumber, PersonName, PhoneE164, Source};
use egec_domain::{CustomerId, Role, UserId};
use egec_projections::fold::{apply_customer, apply_user};
use egec_projections::{
    CustomerRow, ProjectionRunner, ReadModels, RunnerHandle, RunnerOptions, UserRow,
};
use uuid::Uuid;

pub const WAIT: Duration = Duration::from_secs(20);

pub struct Env {
    pub backend: &'static str,
    pub stores: Stores,
    pub codec: Arc<Codec>,
    pub appender: Appender,
    pub data_dir: PathBuf,
    pub pool: Option<deadpool_postgres::Pool>,
    clock: AtomicI64,
    _dir: Option<tempfile::TempDir>,
    _pg: Option<PgDropGuard>,
}

/// A customer to create.
#[derive(Debug, Clone)]
pub struct NewCustomer {
    pub name: String,
    pub email: Option<String>,
    pub phone: Option<String>,
    pub passport: Option<String>,
    pub status: CustomerStatus,
    pub agents: Vec<UserId>,
}

impl NewCustomer {
    pub fn named(name: &str) -> Self {
        Self {
            name: name.into(),
            email: None,
            phone: None,
            passport: None,
            status: CustomerStatus::New,
            agents: vec![],
        }
    }
}

/// A customer with every field set, numbered `n` (valid phone and passport numbers).
pub fn sample_customer(n: u32) -> NewCustomer {
    NewCustomer {
        name: format!("Customer {n}"),
        email: Some(format!("customer{n}@example.com")),
        phone: Some(format!("+20101{:07}", n % 10_000_000)),
        passport: Some(format!("P{:07}", n % 10_000_000)),
        status: CustomerStatus::ALL[(n % 6) as usize],
        agents: vec![agent((n % 3) as u128)],
    }
}

/// Batches of a few events and a cache of a few rows, so that small logs go through many
/// batches, cache flushes and reloads.
pub fn tiny() -> RunnerOptions {
    RunnerOptions {
        live_batch: 3,
        rebuild_batch: 7,
        rebuild_cache_rows: 5,
        fresh_rebuild_min: i64::MAX,
        ..RunnerOptions::default()
    }
}

pub fn agent(n: u128) -> UserId {
    UserId::from_uuid(Uuid::from_u128(0xA9E0_0000 + n))
}

impl Env {
    pub async fn sqlite() -> Env {
        let dir = fresh_sqlite_dir();
        let log = SqliteLog::open_async(dir.path())
            .await
            .expect("open sqlite log");
        Self::with(
            "sqlite",
            Stores::from_sqlite(log),
            dir.path().to_path_buf(),
            None,
            Some(dir),
            None,
        )
    }

    pub async fn postgres() -> Env {
        let (url, guard) = fresh_postgres().await;
        let log = PgLog::connect(&url, 12)
            .await
            .expect("connect postgres log");
        let pool = log.pool();
        let dir = fresh_sqlite_dir();
        Self::with(
            "postgres",
            Stores::from_postgres(log),
            dir.path().to_path_buf(),
            Some(pool),
            Some(dir),
            Some(guard),
        )
    }

    fn with(
        backend: &'static str,
        stores: Stores,
        data_dir: PathBuf,
        pool: Option<deadpool_postgres::Pool>,
        dir: Option<tempfile::TempDir>,
        pg: Option<PgDropGuard>,
    ) -> Env {
        let master = MasterKey::from_key(Key::generate().expect("key"));
        let vault = Vault::new(Arc::clone(&stores.keys), master, 100_000);
        let codec = Arc::new(Codec::new(Arc::new(vault)));
        let appender = Appender::spawn(Arc::clone(&stores.log), 512);
        Env {
            backend,
            stores,
            codec,
            appender,
            data_dir,
            pool,
            clock: AtomicI64::new(0),
            _dir: dir,
            _pg: pg,
        }
    }

    pub async fn read_models(&self) -> ReadModels {
        ReadModels::open(&self.stores, &self.data_dir)
            .await
            .expect("open read models")
    }

    pub async fn start(&self) -> RunnerHandle {
        ProjectionRunner::start(
            &self.stores,
            &self.data_dir,
            Arc::clone(&self.codec),
            self.appender.subscribe_head(),
        )
        .await
        .expect("start runner")
    }

    /// A runner with other tuning than the default.
    pub async fn start_with(&self, options: RunnerOptions) -> RunnerHandle {
        ProjectionRunner::spawn_with(
            self.read_models().await,
            Arc::clone(&self.stores.log),
            Arc::clone(&self.codec),
            self.appender.subscribe_head(),
            options,
        )
    }

    /// A runner on read models opened separately (another "process" on the same storage).
    pub async fn start_another(&self) -> RunnerHandle {
        ProjectionRunner::spawn(
            self.read_models().await,
            Arc::clone(&self.stores.log),
            Arc::clone(&self.codec),
            self.appender.subscribe_head(),
        )
    }

    /// A strictly increasing clock, one second per tick, so list order is predictable.
    pub fn now(&self) -> DateTime<Utc> {
        let tick = self.clock.fetch_add(1, Ordering::SeqCst);
        Utc.timestamp_opt(1_750_000_000 + tick, 0)
            .single()
            .expect("valid time")
    }

    pub async fn encode(&self, subject: &str, event: &DomainEvent, at: DateTime<Utc>) -> NewEvent {
        let meta = Metadata::system(Uuid::now_v7(), at);
        self.codec
            .encode(subject, Uuid::now_v7(), event, &meta)
            .await
            .expect("encode")
    }

    pub async fn append(&self, stream_id: String, events: Vec<NewEvent>) -> AppendOutcome {
        self.appender
            .append(AppendRequest {
                new_keys: vec![],
                stream_id,
                expected: ExpectedVersion::Any,
                command_id: Uuid::now_v7(),
                events,
            })
            .await
            .expect("append")
    }

    pub fn created_event(&self, id: CustomerId, c: &NewCustomer, at: DateTime<Utc>) -> DomainEvent {
        DomainEvent::Customer(CustomerEvent::Created(CustomerCreated {
            customer_id: id,
            name: Personal::Known(PersonName::parse(&c.name).expect("name")),
            email: c
                .email
                .as_deref()
                .map(|e| Personal::Known(Email::parse(e).expect("email"))),
            phone: c
                .phone
                .as_deref()
                .map(|p| Personal::Known(PhoneE164::parse(p, None).expect("phone"))),
            passport_number: c
                .passport
                .as_deref()
                .map(|p| Personal::Known(PassportNumber::parse(p).expect("passport"))),
            country: Some(Country::parse("Germany").expect("country")),
            source: Some(Source::parse("fair").expect("source")),
            status: c.status,
            notes: None,
            assigned_agent_ids: c.agents.clone(),
            at,
        }))
    }

    /// The stored request that creates a customer (for appending several in one batch).
    pub async fn create_request(&self, c: &NewCustomer) -> (CustomerId, AppendRequest) {
        let id = CustomerId::from_uuid(Uuid::now_v7());
        let at = self.now();
        let event = self.created_event(id, c, at);
        let stored = self.encode(&id.subject(), &event, at).await;
        (
            id,
            AppendRequest {
                new_keys: vec![],
                stream_id: id.stream_id(),
                expected: ExpectedVersion::Exact(0),
                command_id: Uuid::now_v7(),
                events: vec![stored],
            },
        )
    }

    pub async fn create(&self, c: &NewCustomer) -> (CustomerId, i64) {
        let (id, request) = self.create_request(c).await;
        let out = self.appender.append(request).await.expect("append");
        (id, out.last_position)
    }

    /// Creates `sample_customer(n)` for every `n` in `range`, 16 commands at a time (so the
    /// appender batches them), and answers the ids in no particular order.
    pub async fn create_many(self: &Arc<Self>, range: std::ops::Range<u32>) -> Vec<CustomerId> {
        let mut tasks = tokio::task::JoinSet::new();
        let next = Arc::new(std::sync::atomic::AtomicU32::new(range.start));
        for _ in 0..16 {
            let env = Arc::clone(self);
            let next = Arc::clone(&next);
            let end = range.end;
            tasks.spawn(async move {
                let mut ids = Vec::new();
                loop {
                    let n = next.fetch_add(1, Ordering::SeqCst);
                    if n >= end {
                        return ids;
                    }
                    ids.push(env.create(&sample_customer(n)).await.0);
                }
            });
        }
        let mut ids = Vec::new();
        while let Some(part) = tasks.join_next().await {
            ids.extend(part.expect("create task"));
        }
        ids
    }

    pub async fn update(&self, id: CustomerId, changes: CustomerChanges) -> i64 {
        let at = self.now();
        let event = DomainEvent::Customer(CustomerEvent::Updated(
            egec_domain::customer::CustomerUpdated {
                customer_id: id,
                changes,
                at,
            },
        ));
        let stored = self.encode(&id.subject(), &event, at).await;
        self.append(id.stream_id(), vec![stored])
            .await
            .last_position
    }

    pub async fn set_status(&self, id: CustomerId, status: CustomerStatus) -> i64 {
        self.update(
            id,
            CustomerChanges {
                status: Some(status),
                ..Default::default()
            },
        )
        .await
    }

    pub async fn rename(&self, id: CustomerId, name: &str) -> i64 {
        self.update(
            id,
            CustomerChanges {
                name: Some(Personal::Known(PersonName::parse(name).expect("name"))),
                ..Default::default()
            },
        )
        .await
    }

    pub async fn delete(&self, id: CustomerId) -> i64 {
        let at = self.now();
        let event = DomainEvent::Customer(CustomerEvent::Deleted {
            customer_id: id,
            at,
        });
        let stored = self.encode(&id.subject(), &event, at).await;
        self.append(id.stream_id(), vec![stored])
            .await
            .last_position
    }

    /// Appends the erasure event and destroys the customer's key, as the erasure command does.
    pub async fn erase(&self, id: CustomerId) -> i64 {
        let at = self.now();
        let event = DomainEvent::Customer(CustomerEvent::Erased {
            customer_id: id,
            reason: "art. 17 request".into(),
            at,
        });
        let stored = self.encode(&id.subject(), &event, at).await;
        let pos = self
            .append(id.stream_id(), vec![stored])
            .await
            .last_position;
        self.codec
            .vault()
            .destroy(&id.subject())
            .await
            .expect("destroy key");
        pos
    }

    pub async fn create_user(&self, email: &str, name: &str, role: Role) -> (UserId, i64) {
        let id = UserId::from_uuid(Uuid::now_v7());
        let at = self.now();
        let event = DomainEvent::User(UserEvent::Created {
            user_id: id,
            email: Personal::Known(Email::parse(email).expect("email")),
            name: Personal::Known(PersonName::parse(name).expect("name")),
            role,
            password_hash: Personal::Known(
                PasswordHash::parse("$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA").expect("hash"),
            ),
            at,
        });
        let stored = self.encode(&id.subject(), &event, at).await;
        (
            id,
            self.append(id.stream_id(), vec![stored])
                .await
                .last_position,
        )
    }

    /// Appends a user event (a change after creation) to the user's stream.
    pub async fn user_event(&self, event: UserEvent) -> i64 {
        let id = event.user_id();
        let at = self.now();
        let stored = self
            .encode(&id.subject(), &DomainEvent::User(event), at)
            .await;
        self.append(id.stream_id(), vec![stored])
            .await
            .last_position
    }

    /// Appends a logout of one session to the user's login stream.
    pub async fn logout(&self, user: UserId, session: Uuid) -> i64 {
        let at = self.now();
        let event = DomainEvent::Login(LoginEvent::LoggedOut {
            user_id: user,
            session_id: session,
            at,
        });
        let stored = self.encode(&user.subject(), &event, at).await;
        self.append(login_stream_id(user, at), vec![stored])
            .await
            .last_position
    }

    /// The customers and users the whole log folds to, computed in memory with the pure
    /// folds: the oracle every stored read model must equal.
    pub async fn expected(&self) -> (Vec<CustomerRow>, Vec<UserRow>) {
        let mut customers: std::collections::BTreeMap<Uuid, CustomerRow> = Default::default();
        let mut users: std::collections::BTreeMap<Uuid, UserRow> = Default::default();
        let mut pos = 0;
        loop {
            let batch = self
                .stores
                .log
                .read_all(pos, 5_000)
                .await
                .expect("read log");
            let Some(last) = batch.last().map(|r| r.global_position) else {
                break;
            };
            for rec in &batch {
                let env = self.codec.decode(rec).await.expect("decode");
                match &env.event {
                    DomainEvent::Customer(e) => {
                        let id = e.customer_id().as_uuid();
                        let row = customers.remove(&id);
                        if let Some(r) = apply_customer(row, e, env.stream_version, env.position) {
                            customers.insert(id, r);
                        }
                    }
                    DomainEvent::User(e) => {
                        let id = e.user_id().as_uuid();
                        let row = users.remove(&id);
                        if let Some(r) = apply_user(row, e, env.stream_version, env.position) {
                            users.insert(id, r);
                        }
                    }
                    DomainEvent::Login(_)
                    | DomainEvent::ApiKey(_)
                    | DomainEvent::Followup(_)
                    | DomainEvent::Bulk(_)
                    | DomainEvent::Export(_)
                    | DomainEvent::Gdpr(_) => {}
                }
            }
            pos = last;
        }
        let mut users: Vec<UserRow> = users.into_values().collect();
        users.sort_by_key(|u| (u.created_at, u.id));
        (customers.into_values().collect(), users)
    }

    pub async fn head(&self) -> i64 {
        self.stores.log.head().await.expect("head").position
    }

    /// Makes every write of a customer named `name` fail inside the read-model database.
    pub async fn sabotage_customer_writes(&self, name: &str) {
        match &self.pool {
            Some(pool) => {
                let conn = pool.get().await.expect("pg conn");
                conn.batch_execute(&format!(
                    "CREATE FUNCTION crm.sabotage() RETURNS trigger LANGUAGE plpgsql AS $$ \
                     BEGIN IF NEW.name = '{name}' THEN RAISE EXCEPTION 'injected failure'; END IF; \
                     RETURN NEW; END $$; \
                     CREATE TRIGGER sabotage BEFORE INSERT OR UPDATE ON crm.customers \
                     FOR EACH ROW EXECUTE FUNCTION crm.sabotage();"
                ))
                .await
                .expect("create trigger");
            }
            None => {
                let conn = rusqlite::Connection::open(self.data_dir.join("read.db")).expect("open");
                conn.execute_batch(&format!(
                    "CREATE TRIGGER sabotage BEFORE INSERT ON customers WHEN NEW.name = '{name}' \
                     BEGIN SELECT RAISE(ABORT, 'injected failure'); END;"
                ))
                .expect("create trigger");
            }
        }
    }

    pub async fn repair_customer_writes(&self) {
        match &self.pool {
            Some(pool) => {
                let conn = pool.get().await.expect("pg conn");
                conn.batch_execute(
                    "DROP TRIGGER sabotage ON crm.customers; DROP FUNCTION crm.sabotage();",
                )
                .await
                .expect("drop trigger");
            }
            None => {
                let conn = rusqlite::Connection::open(self.data_dir.join("read.db")).expect("open");
                conn.execute_batch("DROP TRIGGER sabotage")
                    .expect("drop trigger");
            }
        }
    }
}
