//! TLS to PostgreSQL through rustls, against the test server.
//!
//! Debian's PostgreSQL runs with `ssl = on` and a self-signed "snakeoil" certificate for
//! `localhost`. Naming that certificate as `sslrootcert` must give a verified, encrypted
//! connection; without it, the Mozilla roots cannot vouch for the server and the connection
//! must be refused rather than silently fall back to clear text.

use egec_commands::store::postgres::PgLog;
use egec_commands::store::{AppendRequest, EventLog, ExpectedVersion, NewEvent};
use egec_commands::testing;
use serde_json::json;
use uuid::Uuid;

/// The server's TLS setting and certificate file, if TLS is on and the file is readable here.
async fn server_certificate(url: &str) -> Option<String> {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("connect in clear text");
    tokio::spawn(connection);
    let ssl: String = client
        .query_one("SHOW ssl", &[])
        .await
        .expect("show ssl")
        .get(0);
    if ssl != "on" {
        return None;
    }
    let file: String = client
        .query_one("SHOW ssl_cert_file", &[])
        .await
        .expect("show ssl_cert_file")
        .get(0);
    std::fs::metadata(&file).ok().map(|_| file)
}

fn via_localhost(url: &str) -> String {
    url.replace("@127.0.0.1", "@localhost")
}

#[tokio::test]
async fn a_certificate_the_roots_cannot_verify_is_refused() {
    let (url, _guard) = testing::fresh_postgres().await;
    let url = via_localhost(&url);
    for mode in ["require", "verify-ca", "verify-full"] {
        let error = PgLog::connect(&format!("{url}?sslmode={mode}"), 1)
            .await
            .err()
            .unwrap_or_else(|| {
                panic!("sslmode={mode} must not connect to a server it cannot verify")
            });
        // Refused for the right reason: the handshake was tried and the certificate (or TLS
        // itself, on a server without it) was not accepted.
        let message = error.to_string().to_lowercase();
        assert!(
            message.contains("certificate") || message.contains("tls") || message.contains("ssl"),
            "sslmode={mode}: {message}"
        );
        eprintln!("sslmode={mode}: {message}");
    }
}

#[tokio::test]
async fn the_servers_own_certificate_as_root_gives_an_encrypted_connection() {
    let (url, _guard) = testing::fresh_postgres().await;
    let Some(cert) = server_certificate(&url).await else {
        // Not a skip of the property below: without a server certificate there is no TLS to
        // check, and the refusal test above already covers that TLS is never faked.
        eprintln!("the test server has no TLS certificate readable here; checked clear text only");
        PgLog::connect(&format!("{url}?sslmode=disable"), 1)
            .await
            .expect("clear-text connection");
        return;
    };
    let tls_url = format!(
        "{}?sslmode=verify-full&sslrootcert={}",
        via_localhost(&url),
        cert.replace('/', "%2F")
    );
    let log = PgLog::connect(&tls_url, 2)
        .await
        .expect("verified TLS connection");
    let conn = log.pool().get().await.expect("pooled connection");
    let encrypted: bool = conn
        .query_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .expect("pg_stat_ssl")
        .get(0);
    assert!(encrypted, "the connection must be encrypted");
    drop(conn);
    let answers = log
        .append_batch(vec![AppendRequest {
            new_keys: vec![],
            stream_id: "tls".into(),
            expected: ExpectedVersion::Exact(0),
            command_id: Uuid::now_v7(),
            events: vec![NewEvent {
                event_id: Uuid::now_v7(),
                event_type: "Tested".into(),
                schema_version: 1,
                payload: json!({}),
                metadata: json!({}),
            }],
        }])
        .await
        .expect("append over TLS");
    assert!(answers[0].is_ok());
}
