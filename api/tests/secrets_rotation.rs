//! Secret rotation (SECRETS_ROTATION.md), over the real binary.
//!
//! JWT: after a rotation with `EGEC_JWT_SECRET_PREVIOUS`, tokens issued before keep working
//! until they expire while a token signed with an unknown secret is refused.
//! Master key: after `egec keys rotate-master` every customer and user still decrypts with
//! only the new key configured, the log is untouched, and the old key alone opens nothing.

mod common;

use common::{Server, Store, login};
use serde_json::{Value, json};
use std::io::{BufRead, BufReader};
use std::process::Stdio;

/// `egec serve` with extra environment (common::Store::serve takes none).
fn serve_with(store: &Store, env: &[(&str, &str)]) -> Server {
    let mut cmd = store.egec();
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd
        .args(["serve", "--listen", "127.0.0.1:0"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("serve starts");
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(addr) = line.strip_prefix("egec listening on ") {
                let _ = tx.send(addr.to_owned());
            }
        }
    });
    let base = rx
        .recv_timeout(std::time::Duration::from_secs(60))
        .expect("server announces its address");
    Server { child, base }
}

const OLD_JWT: &str = "old-jwt-secret-0123456789abcdef0123456789";
const NEW_JWT: &str = "new-jwt-secret-fedcba9876543210fedcba9876";

async fn me(client: &reqwest::Client, server: &Server, token: &str) -> u16 {
    client
        .get(format!("{}/api/auth/me", server.base))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test]
async fn a_token_of_the_previous_jwt_secret_keeps_working_after_rotation_and_a_strangers_does_not()
{
    let store = Store::sqlite().await;
    store.create_user("agent@egec.example", "agent");
    let client = reqwest::Client::new();
    // Before the rotation: signed with the old secret.
    let before = serve_with(&store, &[("EGEC_JWT_SECRET", OLD_JWT)]);
    before.wait_ready(&client).await;
    let old_token = login(&client, &before.base, "agent@egec.example").await;
    before.kill();
    // Another deployment's token, for the same user and claims shape.
    let stranger = serve_with(
        &store,
        &[(
            "EGEC_JWT_SECRET",
            "a-stranger-secret-0000000000000000000000",
        )],
    );
    stranger.wait_ready(&client).await;
    let strangers_token = login(&client, &stranger.base, "agent@egec.example").await;
    stranger.kill();

    // Rotated: new secret, old one kept for the grace period.
    let during = serve_with(
        &store,
        &[
            ("EGEC_JWT_SECRET", NEW_JWT),
            ("EGEC_JWT_SECRET_PREVIOUS", OLD_JWT),
        ],
    );
    during.wait_ready(&client).await;
    assert_eq!(me(&client, &during, &old_token).await, 200, "grace period");
    assert_eq!(me(&client, &during, &strangers_token).await, 401);
    let new_token = login(&client, &during.base, "agent@egec.example").await;
    assert_eq!(me(&client, &during, &new_token).await, 200);
    during.kill();

    // Grace period over: the previous secret is removed, its tokens end; new ones live on.
    let after = serve_with(&store, &[("EGEC_JWT_SECRET", NEW_JWT)]);
    after.wait_ready(&client).await;
    assert_eq!(me(&client, &after, &old_token).await, 401);
    assert_eq!(me(&client, &after, &new_token).await, 200);
}

const OLD: &str = "2222222222222222222222222222222222222222222222222222222222222222";
const NEW: &str = "9f8e7d6c5b4a39281706f5e4d3c2b1a0ffeeddccbbaa99887766554433221100";

fn history(store: &Store, master: &str, stream: &str) -> std::process::Output {
    store
        .egec()
        .env("EGEC_MASTER_KEY", master)
        .args(["replay", "history", stream])
        .output()
        .unwrap()
}

/// `egec keys <command>`: `rotate-master`, or its short name `rotate`.
fn rotate(store: &Store, command: &str) -> Value {
    let out = store
        .egec()
        .env("EGEC_MASTER_KEY", NEW)
        .env("EGEC_MASTER_KEY_PREVIOUS", OLD)
        .args(["keys", command])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn verify(store: &Store, master: &str) -> Value {
    let out = store
        .egec()
        .env("EGEC_MASTER_KEY", master)
        .args(["replay", "verify"])
        .output()
        .unwrap();
    assert!(out.status.success());
    serde_json::from_slice(&out.stdout).unwrap()
}

async fn rotation_keeps_every_customer_readable_under_the_new_key_only(store: Store) {
    let admin = store.create_user("admin@egec.example", "admin");
    let server = store.serve();
    let client = reqwest::Client::new();
    server.wait_ready(&client).await;
    let token = login(&client, &server.base, "admin@egec.example").await;
    let mut customers = Vec::new();
    for name in ["Jane Doe", "Omar Haddad"] {
        let r: Value = client
            .post(format!("{}/api/customers", server.base))
            .bearer_auth(&token)
            .json(&json!({ "name": name, "email": "x@example.com", "source": "website" }))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        customers.push((r["id"].as_str().unwrap().to_owned(), name));
    }
    server.kill();
    let before = verify(&store, OLD);

    let report = rotate(&store, "rotate-master");
    assert_eq!(report["already_current"], 0, "{report}");
    assert!(report["rewrapped"].as_u64().unwrap() >= 3, "{report}");
    // Run again (an interrupted rotation is simply run again): nothing left to do.
    let again = rotate(&store, "rotate");
    assert_eq!(again["rewrapped"], 0);
    assert_eq!(again["already_current"], report["rewrapped"]);

    // The log itself is untouched: same chain, same head.
    assert_eq!(verify(&store, NEW), before);
    for (id, name) in &customers {
        let out = history(&store, NEW, &format!("customer-{id}"));
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let first: Value =
            serde_json::from_str(String::from_utf8_lossy(&out.stdout).lines().next().unwrap())
                .unwrap();
        assert_eq!(
            first["personal"]["name"], *name,
            "decrypts under the new key"
        );
    }
    let out = history(&store, NEW, &format!("user-{admin}"));
    assert!(String::from_utf8_lossy(&out.stdout).contains("admin@egec.example"));
    // The old key alone opens nothing any more.
    let (id, name) = &customers[0];
    let out = history(&store, OLD, &format!("customer-{id}"));
    assert!(!String::from_utf8_lossy(&out.stdout).contains(name));
}

#[tokio::test]
async fn rotation_keeps_every_customer_readable_under_the_new_key_only_on_sqlite() {
    rotation_keeps_every_customer_readable_under_the_new_key_only(Store::sqlite().await).await;
}

#[tokio::test]
async fn rotation_keeps_every_customer_readable_under_the_new_key_only_on_postgres() {
    rotation_keeps_every_customer_readable_under_the_new_key_only(Store::postgres().await).await;
}
