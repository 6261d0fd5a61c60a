//! `egec serve` with `RUST_LOG=trace`, black-box: requests carrying distinctive personal
//! values go through the real binary, and its whole standard error holds none of them.

mod common;

use common::{PASSWORD, Store};
use serde_json::json;
use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

async fn serve_at_trace_level_logs_nothing_personal(store: Store, tag: &str) {
    let admin_email = format!("hygiene.admin.{tag}@example.com");
    store.create_user(&admin_email, "superadmin");
    let mut child = store
        .egec()
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env("RUST_LOG", "trace")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("serve starts");
    let stderr = child.stderr.take().unwrap();
    let log = Arc::new(Mutex::new(String::new()));
    let (tx, rx) = std::sync::mpsc::channel();
    let reader = {
        let log = Arc::clone(&log);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(addr) = line.strip_prefix("egec listening on ") {
                    let _ = tx.send(addr.to_owned());
                }
                let mut l = log.lock().unwrap();
                l.push_str(&line);
                l.push('\n');
            }
        })
    };
    let base = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("server announces its address");
    let client = reqwest::Client::builder()
        .user_agent(format!("HygieneCli/{tag}"))
        .build()
        .unwrap();
    let token = common::login(&client, &base, &admin_email).await;
    let name = format!("Ottoline Varga{tag}");
    let email = format!("ottoline.{tag}@example.com");
    let passport = format!("OV{}", 48_213_000 + tag.len());
    let r = client
        .post(format!("{base}/api/customers"))
        .bearer_auth(&token)
        .json(&json!({
            "name": name, "email": email, "phone": "+44 20 7946 0381",
            "passport_number": passport, "notes": format!("Owes money to {tag}"),
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let r = client
        .get(format!("{base}/api/customers?q={email}"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = client
        .post(format!("{base}/api/customers"))
        .bearer_auth(&token)
        .json(&json!({ "name": name, "email": format!("broken-{tag}-address") }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422);
    let unknown = format!("stranger.{tag}@example.net");
    let r = client
        .post(format!("{base}/api/auth/login"))
        .json(&json!({ "email": unknown, "password": PASSWORD }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    child.kill().unwrap();
    child.wait().unwrap();
    reader.join().unwrap();
    let log = log.lock().unwrap().clone();
    // The capture holds the server's own lines, so its silence about values means something.
    assert!(log.contains("serving"), "{log}");
    assert!(log.lines().count() > 3, "{log}");
    for value in [
        admin_email.as_str(),
        &name,
        &email,
        &passport,
        "+442079460381",
        "7946 0381",
        &unknown,
        &format!("broken-{tag}-address"),
        &format!("Owes money to {tag}"),
        &format!("HygieneCli/{tag}"),
    ] {
        assert!(
            !log.to_lowercase().contains(&value.to_lowercase()),
            "stderr holds {value:?}"
        );
    }
}

#[tokio::test]
async fn serve_at_trace_level_logs_nothing_personal_on_sqlite() {
    serve_at_trace_level_logs_nothing_personal(Store::sqlite().await, "sqlitecli").await;
}

#[tokio::test]
async fn serve_at_trace_level_logs_nothing_personal_on_postgres() {
    serve_at_trace_level_logs_nothing_personal(Store::postgres().await, "pgcli").await;
}
