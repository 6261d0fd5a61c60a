//! The `egec` command line. Every subcommand chooses storage the same way: `DATABASE_URL`
//! (PostgreSQL) or else the embedded store in `--data-dir`.

use crate::config::Config;
use crate::state::open_core;
use clap::{Parser, Subcommand};
use egec_domain::Role;
use egec_domain::event::Metadata;
use secrecy::SecretString;
use std::io::{IsTerminal, Read};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "egec",
    version,
    about = "Egec CRM: an event-sourced CRM backend"
)]
#[command(
    after_help = "Configuration comes from the environment and a .env file: EGEC_ENV, DATABASE_URL, EGEC_DATA_DIR, EGEC_LISTEN, EGEC_MASTER_KEY, EGEC_JWT_SECRET, EGEC_DB_POOL_SIZE, EGEC_PHONE_DEFAULT_REGION, EGEC_TOKEN_TTL_SECONDS, EGEC_RETENTION_MONTHS, RUST_LOG. See README.md."
)]
pub struct Cli {
    /// Directory of the embedded store (ignored when DATABASE_URL is set).
    #[arg(long, global = true, env = "EGEC_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Migrate, then serve the API.
    Serve {
        #[arg(long, env = "EGEC_LISTEN")]
        listen: Option<SocketAddr>,
    },
    /// Create or update the storage schema, then exit.
    Migrate,
    /// Manage staff users.
    User {
        #[command(subcommand)]
        command: UserCommand,
    },
    /// Rebuild, verify and inspect the log.
    Replay {
        #[command(subcommand)]
        command: ReplayCommand,
    },
    /// Manage encryption keys.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Read the audit log.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Expire old security metadata (IP addresses, user agents).
    Retention {
        #[command(subcommand)]
        command: RetentionCommand,
    },
}

#[derive(Subcommand)]
pub enum RetentionCommand {
    /// Destroy the monthly keys of IP addresses and user agents older than
    /// EGEC_RETENTION_MONTHS (default 24): those fields then read "[EXPIRED]"; the events
    /// stay. Prints the months as JSON. Idempotent; never touches the current month.
    Apply {
        /// List the months that would be destroyed, destroying nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

#[derive(Subcommand)]
pub enum KeysCommand {
    /// Re-wrap every subject key under EGEC_MASTER_KEY, unwrapping with it or with
    /// EGEC_MASTER_KEY_PREVIOUS; the log is not touched. Idempotent, so an interrupted
    /// rotation is resumed by running it again. Also `egec keys rotate`. See SECRETS_ROTATION.md.
    #[command(alias = "rotate")]
    RotateMaster,
}

#[derive(Subcommand)]
pub enum AuditCommand {
    /// Write the audit log as CSV to standard output, oldest first.
    Export {
        /// RFC 3339; events at or after this time.
        #[arg(long)]
        from: Option<String>,
        /// RFC 3339; events before this time.
        #[arg(long)]
        to: Option<String>,
        /// Only what this user (UUID) did: with --from and --to, "everything user X did
        /// between T1 and T2".
        #[arg(long)]
        actor: Option<String>,
        /// Only this UPPER_SNAKE action, e.g. `PASSPORT_REVEALED`.
        #[arg(long)]
        action: Option<String>,
        /// Only events about this entity type (`customer`, `user`, ...).
        #[arg(long)]
        entity_type: Option<String>,
        /// Only events about this entity (UUID), e.g. everything about one customer.
        #[arg(long)]
        entity_id: Option<String>,
    },
}

#[derive(Subcommand)]
pub enum UserCommand {
    /// Create a staff user (the way to make the first superadmin); works while a server runs.
    Create {
        #[arg(long)]
        email: String,
        #[arg(long)]
        name: String,
        #[arg(long)]
        role: String,
        /// Read the password from standard input (required: passwords never go on the command line).
        #[arg(long, required = true)]
        password_stdin: bool,
    },
}

#[derive(Subcommand)]
pub enum ReplayCommand {
    /// Rebuild read models from the log (blue/green: the live tables stay readable).
    Rebuild {
        #[arg(long)]
        projection: Option<String>,
    },
    /// Check the hash chain of the whole log; exit status 1 on tampering.
    Verify,
    /// Print a stream's events, decrypted, as JSON lines.
    History {
        stream: String,
        #[arg(long)]
        as_of: Option<String>,
    },
}

/// Logs go to stderr. The server logs at `info` by default; one-shot commands at `warn`, so
/// their own output (and the rebuild progress bar) is not buried. `RUST_LOG` overrides both.
fn init_tracing(default: &str) {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(crate::logging::filter(default))
        .with_writer(std::io::stderr)
        .try_init();
}

/// Runs the command line; the exit code follows the contract: 2 for bad configuration,
/// 1 for failure (including a tampered log), 0 for success.
pub async fn main() -> ExitCode {
    let _ = dotenvy::dotenv();
    let cli = Cli::parse();
    init_tracing(match cli.command {
        Command::Serve { .. } => "info",
        _ => "warn",
    });
    let mut config = match Config::from_env() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    if let Some(d) = cli.data_dir {
        config.data_dir = d;
    }
    match run(cli.command, config).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

async fn run(command: Command, mut config: Config) -> anyhow::Result<ExitCode> {
    match command {
        Command::Serve { listen } => {
            if let Some(l) = listen {
                config.listen = l;
            }
            let keep = config.retention_months;
            let running = crate::app::start(config).await?;
            let _retention = crate::retention_task::spawn(&running.state.bus, keep);
            eprintln!("egec listening on http://{}", running.addr);
            tokio::select! {
                r = running.task => { r??; }
                _ = tokio::signal::ctrl_c() => { tracing::info!("shutting down"); }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Migrate => {
            open_core(&config).await?;
            eprintln!("storage is migrated");
            Ok(ExitCode::SUCCESS)
        }
        Command::User {
            command:
                UserCommand::Create {
                    email,
                    name,
                    role,
                    password_stdin: _,
                },
        } => {
            let role: Role = role.parse().map_err(|e| anyhow::anyhow!("--role: {e}"))?;
            let mut password = String::new();
            std::io::stdin().read_to_string(&mut password)?;
            let password = SecretString::from(password.trim_end_matches(['\n', '\r']).to_owned());
            let core = open_core(&config).await?;
            let runner = core.runner.clone();
            // Catch the users projection up first so the duplicate-email check sees every
            // user created so far, even by a running server.
            let head = core.stores.log.head().await?.position;
            runner
                .wait_for(head, std::time::Duration::from_secs(30))
                .await;
            let passwords = crate::auth::password::Passwords::new(1)?;
            let meta = Metadata::system(uuid::Uuid::now_v7(), chrono::Utc::now());
            let (id, position) = crate::users::create_user(
                &core.bus,
                runner.read_models(),
                &passwords,
                crate::users::NewUser {
                    email: &email,
                    name: &name,
                    role,
                    password: &password,
                    policy: config.password_policy,
                },
                &meta,
            )
            .await?;
            runner
                .wait_for(position, std::time::Duration::from_secs(30))
                .await;
            println!("{id}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Replay { command } => replay(command, config).await,
        Command::Keys {
            command: KeysCommand::RotateMaster,
        } => rotate_master(config).await,
        Command::Audit {
            command:
                AuditCommand::Export {
                    from,
                    to,
                    actor,
                    action,
                    entity_type,
                    entity_id,
                },
        } => {
            let params = crate::routes::audit::AuditParams {
                from,
                to,
                action,
                entity_type,
                entity_id,
                actor_id: actor,
                page: None,
                per_page: None,
            };
            audit_export(params, config).await
        }
        Command::Retention {
            command: RetentionCommand::Apply { dry_run },
        } => retention_apply(dry_run, config).await,
    }
}

async fn retention_apply(dry_run: bool, config: Config) -> anyhow::Result<ExitCode> {
    let core = open_core(&config).await?;
    let run = egec_commands::retention::apply(
        &core.bus,
        chrono::Utc::now(),
        config.retention_months,
        dry_run,
    )
    .await?;
    println!("{}", crate::retention_task::report_json(&run));
    Ok(ExitCode::SUCCESS)
}

async fn rotate_master(config: Config) -> anyhow::Result<ExitCode> {
    use egec_commands::master_key::MasterKey;
    let new = config
        .master_key
        .as_ref()
        .ok_or_else(|| anyhow::anyhow!("EGEC_MASTER_KEY (the new master key) is required"))?;
    let new = MasterKey::from_hex(new).map_err(|_| anyhow::anyhow!("EGEC_MASTER_KEY"))?;
    let previous = match &config.master_key_previous {
        Some(k) => {
            vec![MasterKey::from_hex(k).map_err(|_| anyhow::anyhow!("EGEC_MASTER_KEY_PREVIOUS"))?]
        }
        None => Vec::new(),
    };
    let url = config
        .database_url
        .as_ref()
        .map(|u| secrecy::ExposeSecret::expose_secret(u).to_owned());
    let stores = egec_commands::store::open::open_with(
        url.as_deref(),
        &config.data_dir,
        &egec_commands::store::postgres::PgSettings {
            pool_size: 2,
            ..config.db.clone()
        },
    )
    .await?;
    let report = crate::keys::rotate_master(stores.keys.clone(), new, previous).await?;
    println!("{}", serde_json::to_string(&report)?);
    Ok(ExitCode::SUCCESS)
}

async fn audit_export(
    params: crate::routes::audit::AuditParams,
    config: Config,
) -> anyhow::Result<ExitCode> {
    use std::io::Write;
    // The API's own parsing, so the command and `GET /api/audit/export.csv` accept exactly
    // the same filters; a bad one names the flag's field.
    let (query, _, _) = crate::routes::audit::parse_query(&params).map_err(|e| match e {
        crate::error::ApiError::Validation(fields) => anyhow::anyhow!(
            "bad filter: {}",
            fields
                .iter()
                .map(|(k, v)| format!("{k}: {v}"))
                .collect::<Vec<_>>()
                .join("; ")
        ),
        other => anyhow::anyhow!("bad filter: {other}"),
    })?;
    let core = open_core(&config).await?;
    // The audit projection catches up in this process first, so the export covers every
    // event written so far, by a running server too.
    let head = core.stores.log.head().await?.position;
    anyhow::ensure!(
        core.runner
            .wait_for(head, std::time::Duration::from_secs(600))
            .await,
        "the audit projection did not catch up with the log"
    );
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let mut header = csv::Writer::from_writer(Vec::new());
    header.write_record(crate::audit::CSV_HEADER)?;
    out.write_all(
        &header
            .into_inner()
            .map_err(|e| anyhow::anyhow!("csv: {e}"))?,
    )?;
    let mut after = 0;
    while let Some((chunk, last)) = crate::audit::export_page(
        core.runner.read_models(),
        core.stores.log.as_ref(),
        core.bus.codec(),
        &query,
        after,
    )
    .await?
    {
        out.write_all(&chunk)?;
        after = last;
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

async fn replay(command: ReplayCommand, config: Config) -> anyhow::Result<ExitCode> {
    let core = open_core(&config).await?;
    match command {
        ReplayCommand::Verify => {
            let report = egec_replay::verify(core.stores.log.as_ref()).await?;
            println!("{}", serde_json::to_string(&report)?);
            Ok(if report.ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        ReplayCommand::History { stream, as_of } => {
            let as_of = match as_of {
                Some(t) => Some(
                    chrono::DateTime::parse_from_rfc3339(&t)
                        .map_err(|_| anyhow::anyhow!("--as-of must be an RFC 3339 time"))?
                        .with_timezone(&chrono::Utc),
                ),
                None => None,
            };
            for line in egec_replay::history(&core.bus, &stream, as_of).await? {
                println!("{line}");
            }
            Ok(ExitCode::SUCCESS)
        }
        ReplayCommand::Rebuild { projection } => {
            let bar = if std::io::stderr().is_terminal() {
                let b = indicatif::ProgressBar::new(0);
                b.set_style(
                    indicatif::ProgressStyle::with_template(
                        "{msg} [{bar:40}] {pos}/{len} events ({per_sec}, eta {eta})",
                    )
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
                );
                Some(b)
            } else {
                None
            };
            let names: Vec<String> = match projection {
                Some(p) => vec![p],
                None => egec_projections::ProjectionKind::ALL
                    .iter()
                    .map(|k| k.name().to_owned())
                    .collect(),
            };
            for name in names {
                if let Some(b) = &bar {
                    b.set_message(name.clone());
                    b.set_position(0);
                }
                let progress = |done: i64, head: i64| {
                    if let Some(b) = &bar {
                        b.set_length(head.max(0) as u64);
                        b.set_position(done.max(0) as u64);
                    }
                };
                let report = core.runner.rebuild(&name, progress).await?;
                if let Some(b) = &bar {
                    b.finish();
                }
                println!("{}", serde_json::to_string(&report)?);
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
