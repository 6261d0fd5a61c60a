//! Throwaway databases and the write side (vault, codec, appender, command bus) on top of them.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use egec_commands::appender::Appender;
use egec_commands::codec::Codec;
use egec_commands::crypto::Key;
use egec_commands::handler::CommandBus;
use egec_commands::master_key::MasterKey;
use egec_commands::store::open::{Stores, open};
use egec_commands::vault::Vault;
use tokio_postgres::NoTls;
use tokio_postgres::config::Host;

/// Refuses any PostgreSQL URL that does not point at this machine: the benchmark creates
/// and drops databases and floods them with writes, which must never happen to a shared or
/// remote server by accident.
pub fn ensure_local(url: &str) -> anyhow::Result<()> {
    let config: tokio_postgres::Config = url.parse().context("invalid PostgreSQL URL")?;
    for host in config.get_hosts() {
        match host {
            Host::Unix(_) => {}
            Host::Tcp(name) if matches!(name.as_str(), "localhost" | "127.0.0.1" | "::1") => {}
            Host::Tcp(name) => bail!("refusing to benchmark against non-local host {name}"),
        }
    }
    Ok(())
}

/// Replaces the database name of a `postgres://` URL.
fn with_database(url: &str, database: &str) -> anyhow::Result<String> {
    let Some(scheme_end) = url.find("://") else {
        bail!("the PostgreSQL admin URL must be a postgres:// URL");
    };
    let after = scheme_end + 3;
    let (without_query, query) = match url.find('?') {
        Some(q) => (&url[..q], &url[q..]),
        None => (url, ""),
    };
    let base = match without_query[after..].find('/') {
        Some(slash) => &without_query[..after + slash],
        None => without_query,
    };
    Ok(format!("{base}/{database}{query}"))
}

/// A database created for one benchmark phase. It is dropped by [`PgDatabase::drop_now`];
/// the name starts with `egec_bench_`, so one left behind by a crash is easy to find.
pub struct PgDatabase {
    admin_url: String,
    pub name: String,
    pub url: String,
}

async fn admin_connect(admin_url: &str) -> anyhow::Result<tokio_postgres::Client> {
    let (client, connection) = tokio::time::timeout(
        Duration::from_secs(10),
        tokio_postgres::connect(admin_url, NoTls),
    )
    .await
    .context("PostgreSQL did not answer within 10 s")?
    .with_context(|| format!("cannot connect to PostgreSQL at {admin_url}"))?;
    tokio::spawn(connection);
    Ok(client)
}

impl PgDatabase {
    /// Creates an empty database with a unique name.
    pub async fn create(admin_url: &str, purpose: &str) -> anyhow::Result<Self> {
        ensure_local(admin_url)?;
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() % 1_000_000_000_000)
            .unwrap_or(0);
        let name = format!("egec_bench_{purpose}_{}_{nanos}", std::process::id());
        let client = admin_connect(admin_url).await?;
        client
            .batch_execute(&format!("CREATE DATABASE \"{name}\""))
            .await
            .with_context(|| format!("cannot create database {name}"))?;
        Ok(Self {
            admin_url: admin_url.to_owned(),
            url: with_database(admin_url, &name)?,
            name,
        })
    }

    /// Drops the database, ending any connection still open on it.
    pub async fn drop_now(self) -> anyhow::Result<()> {
        let client = admin_connect(&self.admin_url).await?;
        client
            .batch_execute(&format!(
                "DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)",
                self.name
            ))
            .await
            .with_context(|| format!("cannot drop database {}", self.name))?;
        Ok(())
    }
}

/// Drops the databases this process created for `purpose` and has not dropped yet (their
/// names carry the purpose and this process's id), for a run cut short before it could drop
/// them itself.
pub async fn drop_own_databases(admin_url: &str, purpose: &str) -> anyhow::Result<()> {
    let client = admin_connect(admin_url).await?;
    let prefix = format!("egec_bench_{purpose}");
    let infix = format!("_{}_", std::process::id());
    for row in client.query("SELECT datname FROM pg_database", &[]).await? {
        let name: String = row.try_get(0)?;
        let ours = name
            .strip_prefix(&prefix)
            .is_some_and(|rest| rest.contains(&infix));
        if ours {
            client
                .batch_execute(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                .await
                .with_context(|| format!("cannot drop database {name}"))?;
        }
    }
    Ok(())
}

/// Everything a command needs, wired as the server wires it.
pub struct WriteSide {
    pub stores: Stores,
    pub bus: Arc<CommandBus>,
    pub codec: Arc<Codec>,
    pub master: MasterKey,
}

/// Opens the store (PostgreSQL when `url` is given, else SQLite in `dir`) and builds the
/// vault, codec, appender and command bus on it.
pub async fn write_side(
    url: Option<&str>,
    dir: &Path,
    pool_size: usize,
    cache_size: usize,
    max_batch: usize,
) -> anyhow::Result<WriteSide> {
    let stores = open(url, dir, pool_size)
        .await
        .context("cannot open the event store")?;
    let master = MasterKey::from_key(Key::generate()?);
    let vault = Arc::new(Vault::new(stores.keys.clone(), master.clone(), cache_size));
    let codec = Arc::new(Codec::new(vault));
    let appender = Appender::spawn(stores.log.clone(), max_batch);
    let bus = Arc::new(CommandBus::new(
        stores.log.clone(),
        appender,
        Arc::clone(&codec),
        cache_size,
    ));
    Ok(WriteSide {
        stores,
        bus,
        codec,
        master,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_local_hosts_are_accepted() {
        assert!(ensure_local("postgres://postgres@127.0.0.1:5432/postgres").is_ok());
        assert!(ensure_local("postgres://postgres@localhost/postgres").is_ok());
        assert!(ensure_local("postgres://postgres@db.example.com/postgres").is_err());
    }

    #[test]
    fn the_database_name_is_replaced() {
        assert_eq!(
            with_database("postgres://postgres@127.0.0.1:5432/postgres", "x").unwrap(),
            "postgres://postgres@127.0.0.1:5432/x"
        );
        assert_eq!(
            with_database("postgres://h?sslmode=disable", "x").unwrap(),
            "postgres://h/x?sslmode=disable"
        );
    }
}
