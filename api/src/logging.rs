//! What the process logs: `RUST_LOG` (or a default level), with the targets of our
//! dependencies that print values from requests or rows held below a level where they would.
//!
//! Nothing of ours logs personal data at any level (handlers log ids and positions, errors
//! name fields and constraints, never values; see `domain::masking` for the hint a message
//! may show). Dependencies are another matter, so whatever `RUST_LOG` asks for:
//! - `tokio_postgres` logs every statement's parameters at `debug` ("executing statement …
//!   with parameters: [...]"): the read models' rows, names, emails and passports in clear;
//! - `axum::rejection` logs at `trace` the text of a refused extractor, which may quote the
//!   request's values.

use tracing_subscriber::EnvFilter;
use tracing_subscriber::filter::Directive;

/// Targets capped whatever `RUST_LOG` says, and the most they may log.
const CAPS: &[&str] = &[
    "tokio_postgres=info",
    "tokio_postgres::query=info",
    "tokio_postgres::prepare=info",
    "axum::rejection=off",
];

/// `RUST_LOG` if set and valid, else `default`, with [`CAPS`] applied on top (a directive
/// for the same target replaces the operator's).
pub fn filter(default: &str) -> EnvFilter {
    let base = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    capped(base)
}

/// The filter of an explicit directive string (tests), with [`CAPS`] applied.
pub fn filter_from(directives: &str) -> EnvFilter {
    capped(EnvFilter::new(directives))
}

fn capped(mut f: EnvFilter) -> EnvFilter {
    for cap in CAPS {
        if let Ok(d) = cap.parse::<Directive>() {
            f = f.add_directive(d);
        }
    }
    f
}
