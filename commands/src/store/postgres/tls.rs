//! How a PostgreSQL connection is secured: the URL's `sslmode` and `sslrootcert`, read here
//! because tokio-postgres knows only some of libpq's modes, and the rustls configuration
//! they lead to.

use std::path::PathBuf;
use std::sync::Arc;

use crate::store::StoreError;

/// How to secure the connection, decided from the URL's `sslmode`.
///
/// tokio-postgres knows only `disable`, `prefer` and `require`, so `verify-ca` and
/// `verify-full` are taken out of the URL here and replaced by `require`. Every mode that
/// asks for TLS verifies the server certificate and its host name with rustls against the
/// Mozilla roots (webpki-roots), or against the PEM file named by `sslrootcert` if given:
/// this is stricter than libpq's `require` and `verify-ca`, on purpose, since an unverified
/// TLS connection protects against nothing but a passive eavesdropper.
pub enum TlsChoice {
    /// No TLS (`sslmode` absent, `disable`, `allow` or `prefer`).
    None,
    /// TLS with this client configuration.
    Rustls(Box<rustls::ClientConfig>),
}

impl TlsChoice {
    /// Splits the TLS options off a connection string (URL or `key=value` form) and returns
    /// the string tokio-postgres will accept together with the TLS choice.
    pub fn from_url(url: &str) -> Result<(String, TlsChoice), StoreError> {
        let (rest, opts) = take_tls_options(url)?;
        let choice = match opts.mode.as_deref() {
            None | Some("disable" | "allow" | "prefer") => TlsChoice::None,
            Some("require" | "verify-ca" | "verify-full") => {
                TlsChoice::Rustls(Box::new(rustls_config(opts.root_cert)?))
            }
            Some(other) => {
                return Err(StoreError::Config(format!(
                    "unsupported sslmode `{other}` (use disable, prefer, require, verify-ca or \
                     verify-full)"
                )));
            }
        };
        Ok((rest, choice))
    }
}

#[derive(Debug, Default, PartialEq, Eq)]
struct TlsOptions {
    mode: Option<String>,
    root_cert: Option<PathBuf>,
}

/// Removes `sslmode` and `sslrootcert` from the connection string and puts back an `sslmode`
/// tokio-postgres understands.
fn take_tls_options(url: &str) -> Result<(String, TlsOptions), StoreError> {
    let mut opts = TlsOptions::default();
    let is_url = url.starts_with("postgres://") || url.starts_with("postgresql://");
    let (base, params, sep): (&str, Vec<&str>, &str) = if is_url {
        match url.split_once('?') {
            Some((base, query)) => (base, query.split('&').collect(), "&"),
            None => (url, Vec::new(), "&"),
        }
    } else {
        ("", url.split_whitespace().collect(), " ")
    };
    let mut kept: Vec<String> = Vec::new();
    for param in params {
        match param.split_once('=') {
            Some(("sslmode", v)) => opts.mode = Some(percent_decode(v)?),
            Some(("sslrootcert", v)) => opts.root_cert = Some(PathBuf::from(percent_decode(v)?)),
            _ if param.is_empty() => {}
            _ => kept.push(param.to_owned()),
        }
    }
    let pg_mode = match opts.mode.as_deref() {
        None => None,
        Some("disable") => Some("disable"),
        // With no TLS connector, `prefer` and `allow` can only ever connect in clear text.
        Some("allow" | "prefer") => Some("disable"),
        Some(_) => Some("require"),
    };
    if let Some(mode) = pg_mode {
        kept.push(format!("sslmode={mode}"));
    }
    let rest = if is_url {
        if kept.is_empty() {
            base.to_owned()
        } else {
            format!("{base}?{}", kept.join(sep))
        }
    } else {
        kept.join(sep)
    };
    Ok((rest, opts))
}

fn percent_decode(s: &str) -> Result<String, StoreError> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| StoreError::Config("bad percent-encoding in the URL".into()))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| StoreError::Config("URL parameter is not UTF-8".into()))
}

fn rustls_config(root_cert: Option<PathBuf>) -> Result<rustls::ClientConfig, StoreError> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;

    let mut roots = rustls::RootCertStore::empty();
    match root_cert {
        // Like libpq: a named root file replaces the default trust store.
        Some(path) => {
            let certs = CertificateDer::pem_file_iter(&path)
                .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
                .map_err(|e| {
                    StoreError::Config(format!("cannot read sslrootcert {}: {e}", path.display()))
                })?;
            let (added, _ignored) = roots.add_parsable_certificates(certs);
            if added == 0 {
                return Err(StoreError::Config(format!(
                    "sslrootcert {} holds no usable certificate",
                    path.display()
                )));
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| StoreError::Config(format!("TLS setup: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verify_full_becomes_require_and_turns_tls_on() {
        let (rest, opts) = take_tls_options(
            "postgres://u@db.example.com/egec?sslmode=verify-full&application_name=x",
        )
        .expect("parses");
        assert_eq!(
            rest,
            "postgres://u@db.example.com/egec?application_name=x&sslmode=require"
        );
        assert_eq!(opts.mode.as_deref(), Some("verify-full"));
        let (_, choice) = TlsChoice::from_url("postgres://u@h/egec?sslmode=verify-ca").expect("ok");
        assert!(matches!(choice, TlsChoice::Rustls(_)));
    }

    #[test]
    fn no_sslmode_means_no_tls_and_an_untouched_url() {
        let (rest, choice) = TlsChoice::from_url("postgres://u@h:5432/egec").expect("ok");
        assert_eq!(rest, "postgres://u@h:5432/egec");
        assert!(matches!(choice, TlsChoice::None));
    }

    #[test]
    fn key_value_connection_strings_are_understood() {
        let (rest, opts) =
            take_tls_options("host=h user=u sslmode=verify-full sslrootcert=/tmp/ca.pem")
                .expect("parses");
        assert_eq!(rest, "host=h user=u sslmode=require");
        assert_eq!(opts.root_cert, Some(PathBuf::from("/tmp/ca.pem")));
    }

    #[test]
    fn an_unknown_sslmode_is_refused() {
        assert!(TlsChoice::from_url("postgres://u@h/egec?sslmode=sometimes").is_err());
    }

    #[test]
    fn a_missing_root_certificate_file_is_a_configuration_error() {
        let err = TlsChoice::from_url(
            "postgres://u@h/egec?sslmode=verify-full&sslrootcert=%2Fnonexistent%2Fca.pem",
        )
        .err()
        .expect("must fail");
        assert!(err.to_string().contains("/nonexistent/ca.pem"), "{err}");
    }
}
