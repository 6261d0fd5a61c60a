//! The customer slice of API.md: create, get, list, patch with If-Match, history, time travel,
//! masking, row-level visibility, and the error contract.

mod support;

use egec_domain::Role;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use support::{TestApp, json_of};

fn jane() -> Value {
    json!({
        "name": "Jane Doe",
        "email": "Jane.Doe@Example.com",
        "phone": "020 7946 0958",
        "passport_number": "ab1234589",
        "country": "Germany",
        "source": "website",
        "notes": "Wants a master's in CS"
    })
}

async fn create(app: &TestApp, token: &str, body: Value) -> Value {
    let r = app.post("/api/customers", Some(token), body).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let etag = r.headers()["etag"].to_str().unwrap().to_owned();
    let v = json_of(r).await;
    assert_eq!(etag, format!("\"{}\"", v["version"]));
    v
}

both_backends!(
    a_created_customer_reads_back_normalised_with_its_etag,
    |app: TestApp| async move {
        let (_, admin) = app.as_role(Role::Admin).await;
        let c = create(&app, &admin, jane()).await;
        assert_eq!(c["email"], "jane.doe@example.com");
        assert_eq!(c["phone"], "+442079460958");
        assert_eq!(
            c["passport_number"], "AB1234589",
            "admins see passports unmasked"
        );
        assert_eq!(c["status"], "new");
        assert_eq!(c["version"], 1);
        assert_eq!(c["deleted"], false);
        let id = c["id"].as_str().unwrap();
        let r = app.get(&format!("/api/customers/{id}"), Some(&admin)).await;
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.headers()["etag"], "\"1\"");
        let got = json_of(r).await;
        assert_eq!(
            got, c,
            "read-your-writes: the read model already has the write"
        );
    }
);

both_backends!(
    passport_numbers_are_masked_for_every_role_but_superadmin_and_admin,
    |app: TestApp| async move {
        let (_, admin) = app.as_role(Role::Admin).await;
        let c = create(&app, &admin, jane()).await;
        let id = c["id"].as_str().unwrap();
        for (role, expected) in [
            (Role::Superadmin, "AB1234589"),
            (Role::Admin, "AB1234589"),
            (Role::Superagent, "AB****89"),
            (Role::Auditor, "AB****89"),
        ] {
            let (_, token) = app.as_role(role).await;
            let one = json_of(app.get(&format!("/api/customers/{id}"), Some(&token)).await).await;
            assert_eq!(one["passport_number"], expected, "{role} get");
            let list = json_of(app.get("/api/customers", Some(&token)).await).await;
            assert_eq!(list["items"][0]["passport_number"], expected, "{role} list");
            let hist = json_of(
                app.get(&format!("/api/customers/{id}/history"), Some(&token))
                    .await,
            )
            .await;
            assert_eq!(
                hist["items"][0]["changes"]["passport_number"]["to"], expected,
                "{role} history"
            );
        }
    }
);

both_backends!(
    invalid_fields_are_all_named_in_one_422_and_nothing_is_stored,
    |app: TestApp| async move {
        let (_, admin) = app.as_role(Role::Admin).await;
        let before = app.running.state.log.head().await.unwrap().position;
        let r = app
        .post("/api/customers", Some(&admin), json!({ "email": "not-an-email", "phone": "12", "passport_number": "!!", "status": "vip" }))
        .await;
        assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
        let body = json_of(r).await;
        assert_eq!(body["error"]["code"], "validation_failed");
        for f in ["name", "email", "phone", "passport_number", "status"] {
            assert!(
                body["error"]["fields"][f].is_string(),
                "{f} not reported: {body}"
            );
        }
        assert_eq!(app.running.state.log.head().await.unwrap().position, before);
    }
);

both_backends!(
    malformed_bodies_unknown_fields_and_oversized_bodies_are_refused,
    |app: TestApp| async move {
        let (_, admin) = app.as_role(Role::Admin).await;
        let r = app
            .post(
                "/api/customers",
                Some(&admin),
                json!({ "name": "X", "favourite_colour": "blue" }),
            )
            .await;
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
        assert_eq!(json_of(r).await["error"]["code"], "bad_request");
        let r = app
            .post("/api/customers", Some(&admin), json!({ "name": 42 }))
            .await;
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
        let r = app
            .client
            .post(format!("{}/api/customers", app.base))
            .bearer_auth(&admin)
            .header("content-type", "application/json")
            .body("{not json")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
        let big = json!({ "name": "Big", "notes": "x".repeat(101 * 1024) });
        let r = app.post("/api/customers", Some(&admin), big).await;
        assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(json_of(r).await["error"]["code"], "payload_too_large");
    }
);

both_backends!(
    a_patch_with_a_stale_if_match_is_a_version_conflict,
    |app: TestApp| async move {
        let (_, admin) = app.as_role(Role::Admin).await;
        let c = create(&app, &admin, jane()).await;
        let path = format!("/api/customers/{}", c["id"].as_str().unwrap());
        let ok = app
            .client
            .patch(format!("{}{path}", app.base))
            .bearer_auth(&admin)
            .header("if-match", "\"1\"")
            .json(&json!({ "status": "contacted" }))
            .send()
            .await
            .unwrap();
        assert_eq!(ok.status(), StatusCode::OK);
        assert_eq!(ok.headers()["etag"], "\"2\"");
        let stale = app
            .client
            .patch(format!("{}{path}", app.base))
            .bearer_auth(&admin)
            .header("if-match", "\"1\"")
            .json(&json!({ "name": "Someone Else" }))
            .send()
            .await
            .unwrap();
        assert_eq!(stale.status(), StatusCode::CONFLICT);
        assert_eq!(json_of(stale).await["error"]["code"], "version_conflict");
        let now = json_of(app.get(&path, Some(&admin)).await).await;
        assert_eq!(now["name"], "Jane Doe", "the refused patch changed nothing");
        assert_eq!(now["status"], "contacted");
    }
);

both_backends!(
    an_illegal_status_transition_is_refused_with_422,
    |app: TestApp| async move {
        let (_, admin) = app.as_role(Role::Admin).await;
        let c = create(&app, &admin, json!({ "name": "A", "status": "applied" })).await;
        let path = format!("/api/customers/{}", c["id"].as_str().unwrap());
        let r = app
            .patch(&path, Some(&admin), json!({ "status": "contacted" }))
            .await;
        assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
        assert!(json_of(r).await["error"]["fields"]["status"].is_string());
    }
);

both_backends!(
    history_lists_each_change_with_actor_and_field_diffs,
    |app: TestApp| async move {
        let (admin_id, admin) = app.as_role(Role::Admin).await;
        let c = create(&app, &admin, jane()).await;
        let path = format!("/api/customers/{}", c["id"].as_str().unwrap());
        app.patch(
            &path,
            Some(&admin),
            json!({ "status": "contacted", "email": null, "country": "France" }),
        )
        .await;
        let h = json_of(app.get(&format!("{path}/history"), Some(&admin)).await).await;
        let items = h["items"].as_array().unwrap();
        assert_eq!(items.len(), 2);
        assert_eq!(items[0]["action"], "CUSTOMER_CREATED");
        assert_eq!(items[0]["version"], 1);
        assert_eq!(
            items[0]["changes"]["name"],
            json!({ "from": null, "to": "Jane Doe" })
        );
        assert_eq!(items[1]["action"], "CUSTOMER_UPDATED");
        assert_eq!(
            items[1]["actor"],
            json!({ "id": admin_id, "role": "admin" })
        );
        assert_eq!(
            items[1]["changes"],
            json!({
                "status": { "from": "new", "to": "contacted" },
                "email": { "from": "jane.doe@example.com", "to": null },
                "country": { "from": "Germany", "to": "France" }
            })
        );
        assert!(items[1]["position"].as_i64().unwrap() > items[0]["position"].as_i64().unwrap());
    }
);

both_backends!(
    a_customer_reads_as_it_was_at_a_version_or_a_time,
    |app: TestApp| async move {
        let (_, admin) = app.as_role(Role::Admin).await;
        let c = create(&app, &admin, jane()).await;
        let path = format!("/api/customers/{}", c["id"].as_str().unwrap());
        let after_create = chrono::Utc::now();
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        app.patch(&path, Some(&admin), json!({ "name": "Jane Smith" }))
            .await;
        let v1 = json_of(app.get(&format!("{path}?version=1"), Some(&admin)).await).await;
        assert_eq!(v1["name"], "Jane Doe");
        assert_eq!(v1["version"], 1);
        let as_of = after_create.to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
        let then = app
            .get(
                &format!("{path}?as_of={}", as_of.replace('+', "%2B")),
                Some(&admin),
            )
            .await;
        assert_eq!(then.status(), StatusCode::OK);
        assert_eq!(json_of(then).await["name"], "Jane Doe");
        let now = json_of(app.get(&path, Some(&admin)).await).await;
        assert_eq!(now["name"], "Jane Smith");
        let before_birth = app
            .get(&format!("{path}?as_of=2000-01-01T00:00:00Z"), Some(&admin))
            .await;
        assert_eq!(before_birth.status(), StatusCode::NOT_FOUND);
        let bad = app
            .get(&format!("{path}?as_of=yesterday"), Some(&admin))
            .await;
        assert_eq!(bad.status(), StatusCode::UNPROCESSABLE_ENTITY);
    }
);

both_backends!(
    the_list_searches_filters_and_pages,
    |app: TestApp| async move {
        let (_, admin) = app.as_role(Role::Admin).await;
        for i in 0..7 {
            create(&app, &admin, json!({ "name": format!("Student {i}"), "email": format!("s{i}@uni.example"), "status": if i % 2 == 0 { "new" } else { "contacted" } })).await;
        }
        create(
            &app,
            &admin,
            json!({ "name": "Zed Other", "email": "zed@else.example" }),
        )
        .await;
        let all = json_of(
            app.get("/api/customers?per_page=3&page=1", Some(&admin))
                .await,
        )
        .await;
        assert_eq!(all["total"], 8);
        assert_eq!(all["items"].as_array().unwrap().len(), 3);
        assert_eq!(all["page"], 1);
        let last = json_of(
            app.get("/api/customers?per_page=3&page=3", Some(&admin))
                .await,
        )
        .await;
        assert_eq!(last["items"].as_array().unwrap().len(), 2);
        let search = json_of(app.get("/api/customers?q=UNI.example", Some(&admin)).await).await;
        assert_eq!(search["total"], 7);
        let contacted = json_of(
            app.get("/api/customers?q=student&status=contacted", Some(&admin))
                .await,
        )
        .await;
        assert_eq!(contacted["total"], 3);
        let bad = app.get("/api/customers?per_page=1000", Some(&admin)).await;
        assert_eq!(bad.status(), StatusCode::UNPROCESSABLE_ENTITY);
    }
);

both_backends!(
    an_agent_sees_only_customers_assigned_to_them,
    |app: TestApp| async move {
        let (_, admin) = app.as_role(Role::Admin).await;
        let (agent_id, agent) = app.as_role(Role::Agent).await;
        let mine = create(
            &app,
            &admin,
            json!({ "name": "Mine", "assigned_agent_ids": [agent_id] }),
        )
        .await;
        let theirs = create(&app, &admin, json!({ "name": "Not Mine Secret" })).await;
        let own = create(&app, &agent, json!({ "name": "Created By Agent" })).await;
        assert_eq!(own["assigned_agent_ids"], json!([agent_id]));
        let list = json_of(app.get("/api/customers", Some(&agent)).await).await;
        let names: Vec<&str> = list["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        assert_eq!(list["total"], 2);
        assert!(names.contains(&"Mine") && names.contains(&"Created By Agent"));
        let search = json_of(app.get("/api/customers?q=secret", Some(&agent)).await).await;
        assert_eq!(
            search["total"], 0,
            "search must not discover an unassigned customer"
        );
        let hidden = format!("/api/customers/{}", theirs["id"].as_str().unwrap());
        for r in [
            app.get(&hidden, Some(&agent)).await,
            app.get(&format!("{hidden}/history"), Some(&agent)).await,
            app.patch(&hidden, Some(&agent), json!({ "name": "Hijack" }))
                .await,
        ] {
            assert_eq!(r.status(), StatusCode::NOT_FOUND);
            assert_eq!(json_of(r).await["error"]["code"], "not_found");
        }
        let ok = app
            .get(
                &format!("/api/customers/{}", mine["id"].as_str().unwrap()),
                Some(&agent),
            )
            .await;
        assert_eq!(ok.status(), StatusCode::OK);
    }
);

both_backends!(
    roles_get_the_customer_matrix_statuses,
    |app: TestApp| async move {
        let (_, admin) = app.as_role(Role::Admin).await;
        let c = create(&app, &admin, jane()).await;
        let path = format!("/api/customers/{}", c["id"].as_str().unwrap());
        let (_, dataentry) = app.as_role(Role::Dataentry).await;
        let (_, auditor) = app.as_role(Role::Auditor).await;
        assert_eq!(
            app.post(
                "/api/customers",
                Some(&dataentry),
                json!({ "name": "Walk In" })
            )
            .await
            .status(),
            StatusCode::CREATED
        );
        assert_eq!(
            app.get("/api/customers", Some(&dataentry)).await.status(),
            StatusCode::FORBIDDEN
        );
        assert_eq!(
            app.get(&path, Some(&auditor)).await.status(),
            StatusCode::OK
        );
        assert_eq!(
            app.request(
                Method::PATCH,
                &path,
                Some(&auditor),
                Some(json!({ "name": "No" }))
            )
            .await
            .status(),
            StatusCode::FORBIDDEN
        );
        assert_eq!(
            app.post("/api/customers", Some(&auditor), json!({ "name": "No" }))
                .await
                .status(),
            StatusCode::FORBIDDEN
        );
    }
);

both_backends!(
    a_repeated_idempotency_key_applies_the_command_once,
    |app: TestApp| async move {
        let (_, admin) = app.as_role(Role::Admin).await;
        let c = create(&app, &admin, jane()).await;
        let path = format!("/api/customers/{}", c["id"].as_str().unwrap());
        let key = uuid::Uuid::now_v7().to_string();
        // The second body differs so that, without idempotency, it would visibly apply too.
        for name in ["Retry One", "Retry Two"] {
            let r = app
                .client
                .patch(format!("{}{path}", app.base))
                .bearer_auth(&admin)
                .header("idempotency-key", &key)
                .json(&json!({ "name": name }))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), StatusCode::OK);
        }
        let h = json_of(app.get(&format!("{path}/history"), Some(&admin)).await).await;
        assert_eq!(h["items"].as_array().unwrap().len(), 2);
        assert_eq!(
            json_of(app.get(&path, Some(&admin)).await).await["name"],
            "Retry One"
        );
    }
);

both_backends!(
    a_retried_create_with_the_same_idempotency_key_returns_the_same_customer,
    |app: TestApp| async move {
        let (_, admin) = app.as_role(Role::Admin).await;
        let key = uuid::Uuid::now_v7().to_string();
        let mut ids = Vec::new();
        for _ in 0..2 {
            let r = app
                .client
                .post(format!("{}/api/customers", app.base))
                .bearer_auth(&admin)
                .header("idempotency-key", &key)
                .json(&json!({ "name": "Retried Create" }))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), StatusCode::CREATED);
            ids.push(json_of(r).await["id"].clone());
        }
        assert_eq!(ids[0], ids[1]);
        let list = json_of(app.get("/api/customers?q=retried", Some(&admin)).await).await;
        assert_eq!(list["total"], 1);
    }
);
