//! Crash safety: SIGKILL the server in the middle of a write load, restart it on the same
//! store, and find every write that had been answered 2xx, with projections that agree with
//! the log.

mod common;

use common::{Store, login};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

async fn every_acknowledged_write_survives_a_sigkill(store: Store) {
    store.create_user("boss@egec.example", "superadmin");
    let client = reqwest::Client::new();
    let server = store.serve();
    let token = login(&client, &server.base, "boss@egec.example").await;

    let acknowledged: Arc<Mutex<HashMap<String, String>>> = Arc::default();
    let mut writers = Vec::new();
    for w in 0..8 {
        let (client, base, token, acknowledged) = (
            client.clone(),
            server.base.clone(),
            token.clone(),
            acknowledged.clone(),
        );
        writers.push(tokio::spawn(async move {
            // Bounded: each writer stops at its first failure (the server is gone) or after
            // a fixed number of writes.
            for i in 0..10_000 {
                let name = format!("Crash Writer{w} Item{i}");
                let r = client
                    .post(format!("{base}/api/customers"))
                    .bearer_auth(&token)
                    .json(&json!({ "name": name, "status": "new" }))
                    .timeout(Duration::from_secs(10))
                    .send()
                    .await;
                match r {
                    Ok(r) if r.status() == 201 => {
                        let v: Value = r.json().await.unwrap_or(Value::Null);
                        if let Some(id) = v["id"].as_str() {
                            acknowledged.lock().unwrap().insert(id.to_owned(), name);
                        }
                    }
                    _ => return,
                }
            }
        }));
    }
    // Let the load run, then kill the server while requests are in flight.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let before_kill = acknowledged.lock().unwrap().len();
    server.kill();
    for w in writers {
        w.await.unwrap();
    }
    let acknowledged = acknowledged.lock().unwrap().clone();
    assert!(
        before_kill > 20,
        "the load ran before the kill ({before_kill} writes)"
    );

    let server = store.serve();
    server.wait_ready(&client).await;
    let token = login(&client, &server.base, "boss@egec.example").await;
    for (id, name) in &acknowledged {
        let r = client
            .get(format!("{}/api/customers/{id}", server.base))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "acknowledged customer {id} lost");
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["name"], name.as_str());
    }
    // The read model holds exactly what the log holds: every customer the list shows reads
    // the same from the projection and from a replay of its stream.
    let mut page = 1;
    let mut listed = 0;
    loop {
        let list: Value = client
            .get(format!(
                "{}/api/customers?per_page=100&page={page}",
                server.base
            ))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let items = list["items"].as_array().unwrap().clone();
        for item in &items {
            let id = item["id"].as_str().unwrap();
            let replayed: Value = client
                .get(format!(
                    "{}/api/customers/{id}?version={}",
                    server.base, item["version"]
                ))
                .bearer_auth(&token)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            assert_eq!(&replayed, item, "projection differs from the log for {id}");
        }
        listed += items.len();
        if items.len() < 100 {
            assert_eq!(list["total"].as_u64().unwrap() as usize, listed);
            break;
        }
        page += 1;
    }
    assert!(
        listed >= acknowledged.len(),
        "{listed} listed < {} acknowledged",
        acknowledged.len()
    );
    // The chain is whole after the crash.
    drop(server);
    let out = store.run(&["replay", "verify"], None);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_acknowledged_write_survives_a_sigkill_on_sqlite() {
    every_acknowledged_write_survives_a_sigkill(Store::sqlite().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_acknowledged_write_survives_a_sigkill_on_postgres() {
    every_acknowledged_write_survives_a_sigkill(Store::postgres().await).await;
}
