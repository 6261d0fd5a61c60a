//! GDPR: the export of everything held on one customer, and provable erasure — the
//! certificate, idempotence, who may erase, and `[ERASED]` on every read path, after a full
//! rebuild of the read models too, and in no file of the embedded store.

mod support;

use egec_domain::Role;
use egec_projections::ProjectionKind;
use reqwest::StatusCode;
use serde_json::{Value, json};
use support::{Backend, TestApp, json_of};
use uuid::Uuid;

/// The personal values of the customer the erasure tests create, as the API stores them.
const NAME: &str = "Ottilie Quarrendon";
const EMAIL: &str = "ottilie.quarrendon@example.com";
const PHONE: &str = "+442079460958";
const PASSPORT: &str = "QX7654321";
const NOTES: &str = "prefers calls after the harvest festival";
/// Values the customer had before later updates: old versions must go too.
const OLD_NAME: &str = "Ottilie Quarrendon-Vane";
const OLD_EMAIL: &str = "o.vane@example.com";
const OLD_NOTES: &str = "first met at the cider fair";
const FOLLOWUP_NOTE: &str = "ask about the orchard scholarship";
const FILE_NAME: &str = "quarrendon-passport-scan.png";

const SECRETS: [&str; 10] = [
    NAME,
    EMAIL,
    PHONE,
    PASSPORT,
    NOTES,
    OLD_NAME,
    OLD_EMAIL,
    OLD_NOTES,
    FOLLOWUP_NOTE,
    FILE_NAME,
];

fn png() -> Vec<u8> {
    let mut v = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR".to_vec();
    v.extend((0..2_000).map(|i| (i * 31 % 251) as u8));
    v
}

/// A superadmin and their token: the only role that may erase.
async fn root(app: &TestApp) -> (Uuid, String) {
    app.as_role(Role::Superadmin).await
}

/// A customer with every personal field, updated so that older values exist, with an agent,
/// a follow-up and an attachment. Answers its id.
async fn rich_customer(app: &TestApp, token: &str, agent: Uuid) -> Uuid {
    let r = app
        .post(
            "/api/customers",
            Some(token),
            json!({
                "name": OLD_NAME, "email": OLD_EMAIL, "phone": PHONE,
                "passport_number": PASSPORT, "country": "Germany", "source": "website",
                "notes": OLD_NOTES, "status": "new"
            }),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let id: Uuid = json_of(r).await["id"].as_str().unwrap().parse().unwrap();
    let path = format!("/api/customers/{id}");
    for body in [
        json!({ "name": NAME, "status": "contacted" }),
        json!({ "email": EMAIL, "notes": NOTES }),
        json!({ "status": "qualified" }),
    ] {
        let r = app.patch(&path, Some(token), body).await;
        assert_eq!(r.status(), StatusCode::OK);
    }
    let r = app
        .request(
            reqwest::Method::PUT,
            &format!("{path}/agents"),
            Some(token),
            Some(json!({ "agent_ids": [agent] })),
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let r = app
        .post(
            &format!("{path}/followups"),
            Some(token),
            json!({ "due_at": "2030-01-01T09:00:00Z", "note": FOLLOWUP_NOTE, "assigned_to": agent }),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED, "{}", json_of(r).await);
    let r = app
        .upload(
            &format!("{path}/attachments"),
            Some(token),
            FILE_NAME,
            "image/png",
            &png(),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    id
}

fn actions(items: &Value) -> Vec<String> {
    items
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["action"].as_str().unwrap().to_owned())
        .collect()
}

fn assert_no_secret(v: &Value, ctx: &str) {
    let text = v.to_string();
    for s in SECRETS {
        assert!(!text.contains(s), "{ctx}: {s:?} is still readable");
    }
}

async fn erase(app: &TestApp, token: &str, id: Uuid, reason: &str) -> reqwest::Response {
    app.post(
        &format!("/api/gdpr/customers/{id}/erase"),
        Some(token),
        json!({ "reason": reason }),
    )
    .await
}

both_backends!(
    a_gdpr_export_holds_the_record_followups_attachments_and_full_history_and_is_audited,
    |app: TestApp| async move {
        let (root_id, root) = root(&app).await;
        let (agent, _) = app.as_role(Role::Agent).await;
        let (admin_id, admin) = app.as_role(Role::Admin).await;
        let id = rich_customer(&app, &root, agent).await;

        let r = app
            .get(&format!("/api/gdpr/customers/{id}/export"), Some(&admin))
            .await;
        assert_eq!(r.status(), StatusCode::OK);
        let doc = json_of(r).await;
        assert_eq!(doc["customer_id"], id.to_string());
        // The current record, unmasked: it is the data subject's own copy.
        let c = &doc["customer"];
        assert_eq!(c["name"], NAME);
        assert_eq!(c["email"], EMAIL);
        assert_eq!(c["phone"], PHONE);
        assert_eq!(c["passport_number"], PASSPORT);
        assert_eq!(c["notes"], NOTES);
        assert_eq!(c["country"], "Germany");
        assert_eq!(c["source"], "website");
        assert_eq!(c["status"], "qualified");
        assert_eq!(c["assigned_agent_ids"], json!([agent]));
        // Its follow-ups and attachments.
        assert_eq!(doc["followups"].as_array().unwrap().len(), 1);
        assert_eq!(doc["followups"][0]["note"], FOLLOWUP_NOTE);
        assert_eq!(doc["followups"][0]["assigned_to"], agent.to_string());
        assert_eq!(doc["attachments"].as_array().unwrap().len(), 1);
        assert_eq!(doc["attachments"][0]["file_name"], FILE_NAME);
        assert_eq!(doc["attachments"][0]["content_type"], "image/png");
        // The full history, with actors, times and field changes, old values included.
        let history = &doc["history"];
        assert_eq!(
            actions(history),
            [
                "CUSTOMER_CREATED",
                "CUSTOMER_UPDATED",
                "CUSTOMER_UPDATED",
                "CUSTOMER_UPDATED",
                "CUSTOMER_AGENTS_ASSIGNED",
                "ATTACHMENT_ADDED",
            ]
        );
        for item in history.as_array().unwrap() {
            assert_eq!(item["actor"]["id"], root_id.to_string());
            assert_eq!(item["actor"]["role"], "superadmin");
            assert!(item["occurred_at"].is_string());
        }
        assert_eq!(history[0]["changes"]["passport_number"]["to"], PASSPORT);
        assert_eq!(history[1]["changes"]["name"]["from"], OLD_NAME);
        assert_eq!(history[1]["changes"]["name"]["to"], NAME);
        assert_eq!(history[2]["changes"]["email"]["from"], OLD_EMAIL);
        assert_eq!(history[2]["changes"]["notes"]["from"], OLD_NOTES);
        assert_eq!(
            history[5]["changes"]["attachments"]["to"]["file_name"],
            FILE_NAME
        );
        let fh = &doc["followup_history"];
        assert_eq!(actions(fh), ["FOLLOWUP_CREATED"]);
        assert_eq!(fh[0]["details"]["note"], FOLLOWUP_NOTE);
        assert_eq!(fh[0]["actor"]["id"], root_id.to_string());

        // The export is in the audit log: who, which customer, and nothing personal.
        let audit = json_of(
            app.get(
                &format!("/api/audit?action=GDPR_EXPORTED&entity_id={id}"),
                Some(&admin),
            )
            .await,
        )
        .await;
        assert_eq!(audit["total"], 1, "{audit}");
        let row = &audit["items"][0];
        assert_eq!(row["entity_type"], "customer");
        assert_eq!(row["actor"]["id"], admin_id.to_string());
        assert_eq!(row["actor"]["role"], "admin");
        assert_no_secret(row, "audit row of the export");
    }
);

/// Every read path of the customer, checked for `[ERASED]` and for the facts that remain.
async fn check_erased_everywhere(app: &TestApp, token: &str, id: Uuid, agent: Uuid, ctx: &str) {
    let path = format!("/api/customers/{id}");
    let erased_fields = |v: &Value, what: &str| {
        for f in ["name", "email", "phone", "passport_number", "notes"] {
            assert_eq!(v[f], "[ERASED]", "{ctx} {what}: {f}");
        }
        assert_no_secret(v, &format!("{ctx} {what}"));
    };
    let now = json_of(app.get(&path, Some(token)).await).await;
    erased_fields(&now, "get");
    // Non-personal facts remain.
    assert_eq!(now["status"], "qualified", "{ctx}");
    assert_eq!(now["country"], "Germany", "{ctx}");
    assert_eq!(now["assigned_agent_ids"], json!([agent]), "{ctx}");
    erased_fields(
        &json_of(app.get(&format!("{path}?version=1"), Some(token)).await).await,
        "version=1",
    );
    for q in ["Quarrendon", "ottilie", "harvest"] {
        let found = json_of(app.get(&format!("/api/customers?q={q}"), Some(token)).await).await;
        assert_eq!(found["total"], 0, "{ctx}: found by {q}");
    }
    let list = json_of(app.get("/api/customers?per_page=100", Some(token)).await).await;
    assert_no_secret(&list, &format!("{ctx} list"));

    let history = json_of(app.get(&format!("{path}/history"), Some(token)).await).await;
    assert_no_secret(&history, &format!("{ctx} history"));
    let items = history["items"].as_array().unwrap();
    assert_eq!(items[0]["changes"]["name"]["to"], "[ERASED]", "{ctx}");
    // The status history and the assignment stay readable.
    assert_eq!(
        items[1]["changes"]["status"],
        json!({ "from": "new", "to": "contacted" }),
        "{ctx}"
    );
    assert_eq!(
        items[3]["changes"]["status"],
        json!({ "from": "contacted", "to": "qualified" }),
        "{ctx}"
    );
    assert_eq!(items[4]["action"], "CUSTOMER_AGENTS_ASSIGNED", "{ctx}");
    assert_eq!(items.last().unwrap()["action"], "CUSTOMER_ERASED", "{ctx}");

    let followups = json_of(app.get(&format!("{path}/followups"), Some(token)).await).await;
    assert_eq!(followups["items"][0]["note"], "[ERASED]", "{ctx}");
    let attachments = json_of(app.get(&format!("{path}/attachments"), Some(token)).await).await;
    assert_eq!(attachments["items"][0]["file_name"], "[ERASED]", "{ctx}");
    let attachment = attachments["items"][0]["id"].as_str().unwrap();
    assert_eq!(
        app.get(&format!("/api/attachments/{attachment}"), Some(token))
            .await
            .status(),
        StatusCode::NOT_FOUND,
        "{ctx}: the attachment cannot be opened"
    );

    let audit = json_of(
        app.get(
            &format!("/api/audit?entity_id={id}&per_page=100"),
            Some(token),
        )
        .await,
    )
    .await;
    assert!(audit["total"].as_u64().unwrap() >= 7, "{ctx}: {audit}");
    assert_no_secret(&audit, &format!("{ctx} audit"));
    let csv = app
        .get(
            &format!("/api/audit/export.csv?entity_id={id}"),
            Some(token),
        )
        .await
        .text()
        .await
        .unwrap();
    assert!(csv.contains("CUSTOMER_ERASED"), "{ctx}");
    for s in SECRETS {
        assert!(!csv.contains(s), "{ctx}: audit CSV shows {s:?}");
    }

    // The customers CSV export: the row is there, with its facts, and nothing of the person.
    let customers_csv = app
        .get("/api/customers/export.csv", Some(token))
        .await
        .text()
        .await
        .unwrap();
    let row = customers_csv
        .lines()
        .find(|l| l.contains(&id.to_string()))
        .unwrap_or_else(|| panic!("{ctx}: customer missing from the CSV export"));
    assert!(
        row.contains("[ERASED]") && row.contains("Germany"),
        "{ctx}: {row}"
    );
    for s in SECRETS {
        assert!(
            !customers_csv.contains(s),
            "{ctx}: customer CSV shows {s:?}"
        );
    }

    let export = json_of(
        app.get(&format!("/api/gdpr/customers/{id}/export"), Some(token))
            .await,
    )
    .await;
    erased_fields(&export["customer"], "GDPR export");
    assert_eq!(export["followups"][0]["note"], "[ERASED]", "{ctx}");
    assert_eq!(export["attachments"][0]["file_name"], "[ERASED]", "{ctx}");
    assert_eq!(
        export["followup_history"][0]["details"]["note"], "[ERASED]",
        "{ctx}"
    );
    assert_eq!(export["customer"]["status"], "qualified", "{ctx}");
}

both_backends!(
    an_erased_customer_reads_erased_on_every_path_even_after_every_projection_is_rebuilt,
    |app: TestApp| async move {
        let (root_id, root) = root(&app).await;
        let (agent, _) = app.as_role(Role::Agent).await;
        let id = rich_customer(&app, &root, agent).await;

        let r = erase(&app, &root, id, "art. 17 request of 2026-11-29").await;
        assert_eq!(r.status(), StatusCode::OK);
        let body = json_of(r).await;
        let cert = &body["certificate"];
        assert_eq!(cert["customer_id"], id.to_string());
        assert_eq!(cert["erased_at"], body["erased_at"]);
        assert_eq!(cert["actor"]["id"], root_id.to_string());
        assert_eq!(cert["actor"]["role"], "superadmin");
        assert_eq!(cert["reason"], "art. 17 request of 2026-11-29");
        // One key version existed; its fingerprint is named.
        let fingerprints = cert["destroyed_key_fingerprints"].as_array().unwrap();
        assert_eq!(fingerprints.len(), 1);
        assert!(!fingerprints[0].as_str().unwrap().is_empty());
        // The erasure position is the erasure event's, and the chain head commits to it.
        let history = json_of(
            app.get(&format!("/api/customers/{id}/history"), Some(&root))
                .await,
        )
        .await;
        let last = history["items"].as_array().unwrap().last().unwrap().clone();
        assert_eq!(last["action"], "CUSTOMER_ERASED");
        assert_eq!(cert["erasure_position"], last["position"]);
        let head = &cert["hash_chain_head"];
        assert!(head["position"].as_i64().unwrap() >= last["position"].as_i64().unwrap());
        let hash = head["hash"].as_str().unwrap();
        assert_eq!(hash.len(), 64);
        assert!(hash.bytes().all(|b| b.is_ascii_hexdigit()));
        let verify = json_of(app.get("/api/audit/verify", Some(&root)).await).await;
        assert_eq!(verify["ok"], true, "{verify}");

        check_erased_everywhere(&app, &root, id, agent, "live").await;

        // Replay: every read model rebuilt from the log, which can no longer decrypt.
        let s = &app.running.state;
        for kind in ProjectionKind::ALL {
            s.runner.rebuild(kind.name(), |_, _| {}).await.unwrap();
        }
        check_erased_everywhere(&app, &root, id, agent, "rebuilt").await;
        let lines = egec_replay::history(
            &s.bus,
            &egec_domain::CustomerId::from_uuid(id).stream_id(),
            None,
        )
        .await
        .unwrap();
        assert_eq!(lines.len(), 7);
        for l in &lines {
            for sec in SECRETS {
                assert!(!l.contains(sec), "replay history shows {sec:?}");
            }
        }
    }
);

both_backends!(
    erasing_twice_answers_the_first_erasures_certificate_and_appends_nothing,
    |app: TestApp| async move {
        let (_, root) = root(&app).await;
        let (agent, _) = app.as_role(Role::Agent).await;
        let id = rich_customer(&app, &root, agent).await;
        let (_, other_root) = app.as_role(Role::Superadmin).await;
        let first = json_of(erase(&app, &root, id, "art. 17").await).await;
        let r = erase(&app, &other_root, id, "asked again").await;
        assert_eq!(r.status(), StatusCode::OK);
        let second = json_of(r).await;
        assert_eq!(second["erased_at"], first["erased_at"]);
        let (a, b) = (&first["certificate"], &second["certificate"]);
        for f in [
            "customer_id",
            "erased_at",
            "actor",
            "reason",
            "erasure_position",
        ] {
            assert_eq!(a[f], b[f], "{f}");
        }
        // Nothing was appended: the chain head is where the first answer left it.
        assert_eq!(a["hash_chain_head"], b["hash_chain_head"]);
        // The keys were gone already; this call destroyed none.
        assert_eq!(b["destroyed_key_fingerprints"], json!([]));
        let history = json_of(
            app.get(&format!("/api/customers/{id}/history"), Some(&root))
                .await,
        )
        .await;
        let erased = actions(&history["items"])
            .iter()
            .filter(|a| *a == "CUSTOMER_ERASED")
            .count();
        assert_eq!(erased, 1);
    }
);

both_backends!(
    only_a_superadmin_may_erase_and_an_admins_attempt_is_refused_and_recorded,
    |app: TestApp| async move {
        let (_, root) = root(&app).await;
        let (admin_id, admin) = app.as_role(Role::Admin).await;
        let (_, auditor) = app.as_role(Role::Auditor).await;
        let (agent, _) = app.as_role(Role::Agent).await;
        let id = rich_customer(&app, &root, agent).await;

        let r = erase(&app, &admin, id, "art. 17").await;
        assert_eq!(r.status(), StatusCode::FORBIDDEN);
        assert_eq!(json_of(r).await["error"]["code"], "forbidden");
        let c = json_of(app.get(&format!("/api/customers/{id}"), Some(&root)).await).await;
        assert_eq!(c["name"], NAME, "nothing was erased");
        let denied = json_of(
            app.get(
                &format!("/api/audit?action=ACCESS_DENIED&actor_id={admin_id}"),
                Some(&root),
            )
            .await,
        )
        .await;
        assert_eq!(denied["total"], 1, "{denied}");
        assert!(
            denied["items"][0]["description"]
                .as_str()
                .unwrap()
                .contains("gdpr:erase"),
            "{denied}"
        );
        // An auditor may neither export nor erase.
        let r = app
            .get(&format!("/api/gdpr/customers/{id}/export"), Some(&auditor))
            .await;
        assert_eq!(r.status(), StatusCode::FORBIDDEN);
        assert_eq!(
            erase(&app, &auditor, id, "x").await.status(),
            StatusCode::FORBIDDEN
        );
    }
);

both_backends!(
    an_erasure_needs_a_reason_and_a_customer_that_exists,
    |app: TestApp| async move {
        let (_, root) = root(&app).await;
        let (agent, _) = app.as_role(Role::Agent).await;
        let id = rich_customer(&app, &root, agent).await;
        let path = format!("/api/gdpr/customers/{id}/erase");
        for body in [json!({}), json!({ "reason": "   " })] {
            let r = app.post(&path, Some(&root), body).await;
            assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
            let e = json_of(r).await;
            assert!(e["error"]["fields"]["reason"].is_string(), "{e}");
        }
        let c = json_of(app.get(&format!("/api/customers/{id}"), Some(&root)).await).await;
        assert_eq!(c["name"], NAME, "a refused erasure erases nothing");
        let unknown = Uuid::now_v7();
        assert_eq!(
            erase(&app, &root, unknown, "art. 17").await.status(),
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            app.get(
                &format!("/api/gdpr/customers/{unknown}/export"),
                Some(&root)
            )
            .await
            .status(),
            StatusCode::NOT_FOUND
        );
    }
);

/// Every file under a directory, recursively.
fn files_under(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(d) = dirs.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let p = entry.unwrap().path();
            if p.is_dir() {
                dirs.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn after_an_erasure_no_file_of_the_embedded_store_holds_any_of_the_persons_values() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let (_, root) = root(&app).await;
    let (agent, _) = app.as_role(Role::Agent).await;
    let id = rich_customer(&app, &root, agent).await;
    // Before: the read models hold the values in clear, so the scan below can find them.
    let before: Vec<u8> = files_under(&app.data_dir)
        .iter()
        .flat_map(|p| std::fs::read(p).unwrap())
        .collect();
    for s in [NAME, EMAIL, PHONE, PASSPORT, NOTES, FOLLOWUP_NOTE] {
        assert!(
            before.windows(s.len()).any(|w| w == s.as_bytes()),
            "the scan finds {s:?}, which the read models hold in clear"
        );
    }

    assert_eq!(
        erase(&app, &root, id, "art. 17").await.status(),
        StatusCode::OK
    );
    let files = files_under(&app.data_dir);
    assert!(files.iter().any(|p| p.ends_with("egec.db")));
    assert!(files.iter().any(|p| p.ends_with("read.db")));
    for path in &files {
        let bytes = std::fs::read(path).unwrap();
        for s in SECRETS {
            assert!(
                !bytes.windows(s.len()).any(|w| w == s.as_bytes()),
                "{s:?} is still in {}",
                path.display()
            );
        }
    }
}
