//! Customer lifecycle beyond create and edit: soft delete, agent assignment, bulk edit with
//! undo, `ACCESS_DENIED` on every refusal, and history and time travel over these events.

mod support;

use egec_commands::store::ReadBound;
use egec_domain::Role;
use egec_domain::event::DomainEvent;
use egec_domain::user::LoginEvent;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use support::{TestApp, json_of};
use uuid::Uuid;

const PASSPORT: &str = "AB1234589";

async fn create(app: &TestApp, token: &str, body: Value) -> String {
    let r = app.post("/api/customers", Some(token), body).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    json_of(r).await["id"].as_str().unwrap().to_owned()
}

async fn customer(app: &TestApp, token: &str, name: &str, agents: &[Uuid]) -> String {
    create(
        app,
        token,
        json!({ "name": name, "passport_number": PASSPORT, "assigned_agent_ids": agents }),
    )
    .await
}

async fn put_agents(app: &TestApp, token: &str, id: &str, agents: Value) -> reqwest::Response {
    app.request(
        Method::PUT,
        &format!("/api/customers/{id}/agents"),
        Some(token),
        Some(json!({ "agent_ids": agents })),
    )
    .await
}

async fn get(app: &TestApp, token: &str, id: &str) -> reqwest::Response {
    app.get(&format!("/api/customers/{id}"), Some(token)).await
}

async fn bulk(app: &TestApp, token: &str, body: Value) -> reqwest::Response {
    app.post("/api/customers/bulk", Some(token), body).await
}

async fn undo(app: &TestApp, token: &str, batch: &str) -> reqwest::Response {
    app.post(
        &format!("/api/customers/bulk/{batch}/undo"),
        Some(token),
        json!({}),
    )
    .await
}

async fn history(app: &TestApp, token: &str, id: &str) -> Vec<Value> {
    let r = app
        .get(&format!("/api/customers/{id}/history"), Some(token))
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    json_of(r).await["items"].as_array().unwrap().clone()
}

async fn audit(app: &TestApp, root: &str, query: &str) -> Vec<Value> {
    let r = app
        .get(&format!("/api/audit?per_page=100&{query}"), Some(root))
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    json_of(r).await["items"].as_array().unwrap().clone()
}

both_backends!(
    a_superadmin_soft_deletes_a_customer_that_then_vanishes_for_every_other_role,
    |app: TestApp| async move {
        let (_, root) = app.as_role(Role::Superadmin).await;
        let (_, admin) = app.as_role(Role::Admin).await;
        let (_, auditor) = app.as_role(Role::Auditor).await;
        let id = customer(&app, &root, "Dora Deleted", &[]).await;
        let r = app
            .request(
                Method::DELETE,
                &format!("/api/customers/{id}"),
                Some(&admin),
                None,
            )
            .await;
        assert_eq!(r.status(), StatusCode::FORBIDDEN, "admins may not delete");
        let r = app
            .request(
                Method::DELETE,
                &format!("/api/customers/{id}"),
                Some(&root),
                None,
            )
            .await;
        assert_eq!(r.status(), StatusCode::NO_CONTENT);
        for token in [&admin, &auditor] {
            assert_eq!(get(&app, token, &id).await.status(), StatusCode::NOT_FOUND);
            let list = json_of(app.get("/api/customers", Some(token)).await).await;
            assert_eq!(list["total"], 0);
        }
        let seen = json_of(get(&app, &root, &id).await).await;
        assert_eq!(seen["deleted"], true, "the superadmin still sees it");
        let items = history(&app, &root, &id).await;
        assert_eq!(items.last().unwrap()["action"], "CUSTOMER_DELETED");
        let r = app
            .request(
                Method::DELETE,
                &format!("/api/customers/{id}"),
                Some(&root),
                None,
            )
            .await;
        assert_eq!(r.status(), StatusCode::NOT_FOUND, "deleted once");
    }
);

both_backends!(
    only_active_agents_and_superagents_can_be_assigned,
    |app: TestApp| async move {
        let (_, root) = app.as_role(Role::Superadmin).await;
        let (agent, _) = app.as_role(Role::Agent).await;
        let (superagent, _) = app.as_role(Role::Superagent).await;
        let (admin, _) = app.as_role(Role::Admin).await;
        let (gone, _) = app.as_role(Role::Agent).await;
        let r = app
            .patch(
                &format!("/api/users/{gone}"),
                Some(&root),
                json!({ "active": false }),
            )
            .await;
        assert_eq!(r.status(), StatusCode::OK);
        let id = customer(&app, &root, "Ada Assigned", &[]).await;
        for wrong in [json!([admin]), json!([gone]), json!([Uuid::now_v7()])] {
            let r = put_agents(&app, &root, &id, json!([agent, wrong[0]])).await;
            assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
            let body = json_of(r).await;
            assert_eq!(body["error"]["code"], "validation_failed");
            let msg = body["error"]["fields"]["agent_ids"].as_str().unwrap();
            assert!(msg.contains(wrong[0].as_str().unwrap()), "{msg}");
        }
        assert_eq!(
            json_of(get(&app, &root, &id).await).await["version"],
            1,
            "refused assignments change nothing"
        );
        let r = put_agents(&app, &root, &id, json!([agent, superagent])).await;
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.headers()["etag"], "\"2\"");
        let c = json_of(r).await;
        assert_eq!(c["assigned_agent_ids"], json!([agent, superagent]));
        let items = history(&app, &root, &id).await;
        let last = items.last().unwrap();
        assert_eq!(last["action"], "CUSTOMER_AGENTS_ASSIGNED");
        assert_eq!(
            last["changes"]["assigned_agent_ids"],
            json!({ "from": [], "to": [agent, superagent] })
        );
        let r = app
            .request(
                Method::PUT,
                &format!("/api/customers/{id}/agents"),
                Some(&root),
                Some(json!({ "agents": [] })),
            )
            .await;
        assert!(r.status().is_client_error(), "the body names agent_ids");
    }
);

both_backends!(
    an_agent_unassigned_loses_sight_of_the_customer_at_once,
    |app: TestApp| async move {
        let (_, root) = app.as_role(Role::Superadmin).await;
        let (agent, agent_token) = app.as_role(Role::Agent).await;
        let (other, _) = app.as_role(Role::Agent).await;
        let id = customer(&app, &root, "Una Unassigned", &[agent]).await;
        assert_eq!(get(&app, &agent_token, &id).await.status(), StatusCode::OK);
        let r = put_agents(&app, &root, &id, json!([other])).await;
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(
            get(&app, &agent_token, &id).await.status(),
            StatusCode::NOT_FOUND
        );
        let r = put_agents(&app, &agent_token, &id, json!([agent])).await;
        assert_eq!(
            r.status(),
            StatusCode::NOT_FOUND,
            "nor may they assign themselves back"
        );
    }
);

both_backends!(
    an_agent_cannot_see_edit_or_find_by_search_a_customer_not_assigned_to_them,
    |app: TestApp| async move {
        let (_, root) = app.as_role(Role::Superadmin).await;
        let (agent, token) = app.as_role(Role::Agent).await;
        let (other, _) = app.as_role(Role::Agent).await;
        let hidden = customer(&app, &root, "Hortense Hiddenname", &[other]).await;
        customer(&app, &root, "Mina Mine", &[agent]).await;
        assert_eq!(
            get(&app, &token, &hidden).await.status(),
            StatusCode::NOT_FOUND
        );
        let r = app
            .patch(
                &format!("/api/customers/{hidden}"),
                Some(&token),
                json!({ "notes": "sneaky" }),
            )
            .await;
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
        let r = app
            .get(&format!("/api/customers/{hidden}/history"), Some(&token))
            .await;
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
        let r = put_agents(&app, &token, &hidden, json!([agent])).await;
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
        let found = json_of(
            app.get("/api/customers?q=Hortense%20Hiddenname", Some(&token))
                .await,
        )
        .await;
        assert_eq!(found["total"], 0, "{found}");
        assert_eq!(found["items"], json!([]));
        let found = json_of(
            app.get("/api/customers?q=Hortense%20Hiddenname", Some(&root))
                .await,
        )
        .await;
        assert_eq!(found["total"], 1, "the search itself works");
        let mine = json_of(app.get("/api/customers", Some(&token)).await).await;
        assert_eq!(mine["total"], 1);
        assert_eq!(mine["items"][0]["name"], "Mina Mine");
    }
);

both_backends!(
    an_agent_opening_an_unassigned_customer_gets_404_and_the_audit_log_shows_the_denial,
    |app: TestApp| async move {
        let (_, root) = app.as_role(Role::Superadmin).await;
        let (agent, token) = app.as_role(Role::Agent).await;
        let id = customer(&app, &root, "Quentin Quiet", &[]).await;
        assert_eq!(get(&app, &token, &id).await.status(), StatusCode::NOT_FOUND);
        let missing = Uuid::now_v7();
        assert_eq!(
            get(&app, &token, &missing.to_string()).await.status(),
            StatusCode::NOT_FOUND,
            "a missing customer answers the same"
        );
        let items = audit(&app, &root, "action=ACCESS_DENIED").await;
        let mine: Vec<&Value> = items
            .iter()
            .filter(|i| i["actor"]["id"] == json!(agent))
            .collect();
        assert_eq!(
            mine.len(),
            1,
            "only the hidden customer is a denial: {items:?}"
        );
        let d = mine[0]["description"].as_str().unwrap();
        assert!(d.contains("reason=not_visible"), "{d}");
        assert!(d.contains(&id), "{d}");
        assert_eq!(mine[0]["actor"]["role"], "agent");
        // The stored event names the customer and the refused permission.
        let stream = egec_domain::security::security_stream_id(chrono::Utc::now());
        let events = app
            .running
            .state
            .bus
            .stream_events(&stream, ReadBound::None)
            .await
            .unwrap();
        let found = events.iter().any(|e| {
            matches!(&e.event, DomainEvent::Login(LoginEvent::AccessDenied {
                user_id, customer_id: Some(c), action: Some(a), ..
            }) if user_id.as_uuid() == agent
                && c.as_uuid().to_string() == id
                && a.name() == "customers:view")
        });
        assert!(found, "the denial names the customer and the action");
    }
);

both_backends!(
    a_dataentry_user_listing_customers_gets_403_and_it_is_recorded,
    |app: TestApp| async move {
        let (_, root) = app.as_role(Role::Superadmin).await;
        let (clerk, token) = app.as_role(Role::Dataentry).await;
        let r = app.get("/api/customers", Some(&token)).await;
        assert_eq!(r.status(), StatusCode::FORBIDDEN);
        assert_eq!(json_of(r).await["error"]["code"], "forbidden");
        let items = audit(&app, &root, "action=ACCESS_DENIED").await;
        let mine: Vec<&Value> = items
            .iter()
            .filter(|i| i["actor"]["id"] == json!(clerk))
            .collect();
        assert_eq!(mine.len(), 1, "{items:?}");
        let d = mine[0]["description"].as_str().unwrap();
        assert!(d.contains("reason=forbidden"), "{d}");
        assert!(d.contains("action=customers:view"), "{d}");
        assert!(d.contains("path=/api/customers"), "{d}");
    }
);

both_backends!(
    a_bulk_edit_changes_each_customer_with_one_event_carrying_the_batch_id,
    |app: TestApp| async move {
        let (_, root) = app.as_role(Role::Superadmin).await;
        let (_, admin) = app.as_role(Role::Admin).await;
        let (agent, _) = app.as_role(Role::Agent).await;
        let a = customer(&app, &root, "Bea Bulk", &[]).await;
        let b = customer(&app, &root, "Bo Bulk", &[]).await;
        let r = bulk(
            &app,
            &admin,
            json!({ "ids": [a, b, a], "set": { "status": "contacted", "assigned_agent_ids": [agent] } }),
        )
        .await;
        assert_eq!(r.status(), StatusCode::OK);
        let res = json_of(r).await;
        assert_eq!(res["updated"], 2);
        let batch = res["batch_id"].as_str().unwrap().to_owned();
        for id in [&a, &b] {
            let c = json_of(get(&app, &admin, id).await).await;
            assert_eq!(c["status"], "contacted");
            assert_eq!(c["assigned_agent_ids"], json!([agent]));
            let cid = egec_domain::CustomerId::from_uuid(id.parse().unwrap());
            let events = app
                .running
                .state
                .bus
                .stream_events(&cid.stream_id(), ReadBound::None)
                .await
                .unwrap();
            let batch_events: Vec<_> = events
                .iter()
                .filter(|e| e.metadata.batch_id.map(|b| b.to_string()) == Some(batch.clone()))
                .collect();
            assert_eq!(batch_events.len(), 1, "one event per customer");
            assert_eq!(batch_events[0].event.action(), "CUSTOMER_BULK_EDITED");
        }
        let items = audit(&app, &root, "action=BULK_EDIT_APPLIED").await;
        assert_eq!(items.len(), 1);
        assert_eq!(items[0]["entity_id"], json!(batch));
        let r = bulk(
            &app,
            &admin,
            json!({ "ids": [a], "set": { "status": "contacted" } }),
        )
        .await;
        assert_eq!(json_of(r).await["updated"], 0, "nothing left to change");
    }
);

both_backends!(
    a_bulk_edit_with_bad_input_names_every_problem_and_changes_nothing,
    |app: TestApp| async move {
        let (_, root) = app.as_role(Role::Superadmin).await;
        let (_, admin) = app.as_role(Role::Admin).await;
        let (_, superagent) = app.as_role(Role::Superagent).await;
        let ok = customer(&app, &root, "Olga Open", &[]).await;
        let done = customer(&app, &root, "Ezra Enrolled", &[]).await;
        let r = app
            .patch(
                &format!("/api/customers/{done}"),
                Some(&root),
                json!({ "status": "enrolled" }),
            )
            .await;
        assert_eq!(r.status(), StatusCode::OK);
        let unknown = Uuid::now_v7();
        let r = bulk(
            &app,
            &admin,
            json!({ "ids": [ok, done, unknown], "set": { "status": "contacted" } }),
        )
        .await;
        assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
        let fields = json_of(r).await["error"]["fields"].clone();
        assert_eq!(
            fields[format!("ids[{done}]")],
            "status cannot move from enrolled to contacted"
        );
        assert_eq!(fields[format!("ids[{unknown}]")], "no such customer");
        assert!(fields.get(format!("ids[{ok}]")).is_none(), "{fields}");
        assert_eq!(
            json_of(get(&app, &root, &ok).await).await["status"],
            "new",
            "bad input changes nothing"
        );
        for (body, field) in [
            (
                json!({ "ids": [ok], "set": { "status": "later" } }),
                "set.status",
            ),
            (json!({ "ids": [ok], "set": {} }), "set"),
            (json!({ "ids": [], "set": { "status": "lost" } }), "ids"),
            (
                json!({ "ids": [ok], "set": { "assigned_agent_ids": [Uuid::now_v7()] } }),
                "set.assigned_agent_ids",
            ),
        ] {
            let r = bulk(&app, &admin, body).await;
            assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
            assert!(
                json_of(r).await["error"]["fields"].get(field).is_some(),
                "{field}"
            );
        }
        let many: Vec<Uuid> = (0..1001).map(|_| Uuid::now_v7()).collect();
        let r = bulk(
            &app,
            &admin,
            json!({ "ids": many, "set": { "status": "lost" } }),
        )
        .await;
        assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
        assert!(json_of(r).await["error"]["fields"]["ids"].is_string());
        let r = bulk(
            &app,
            &superagent,
            json!({ "ids": [ok], "set": { "status": "lost" } }),
        )
        .await;
        assert_eq!(r.status(), StatusCode::FORBIDDEN);
        assert_eq!(json_of(get(&app, &root, &ok).await).await["version"], 1);
    }
);

both_backends!(
    undoing_a_batch_restores_each_field_unless_it_changed_since_and_runs_only_once,
    |app: TestApp| async move {
        let (_, root) = app.as_role(Role::Superadmin).await;
        let (_, admin) = app.as_role(Role::Admin).await;
        let (first, _) = app.as_role(Role::Agent).await;
        let (second, _) = app.as_role(Role::Agent).await;
        let untouched = customer(&app, &root, "Uma Untouched", &[first]).await;
        let touched = customer(&app, &root, "Theo Touched", &[first]).await;
        let r = bulk(
            &app,
            &admin,
            json!({ "ids": [untouched, touched], "set": { "status": "enrolled", "assigned_agent_ids": [second] } }),
        )
        .await;
        assert_eq!(r.status(), StatusCode::OK);
        let batch = json_of(r).await["batch_id"].as_str().unwrap().to_owned();
        // After the batch, someone reassigns one of the customers by hand.
        let r = put_agents(&app, &root, &touched, json!([first, second])).await;
        assert_eq!(r.status(), StatusCode::OK);

        let r = undo(&app, &admin, &batch).await;
        assert_eq!(r.status(), StatusCode::OK);
        let res = json_of(r).await;
        assert_eq!(res["restored"], 2);
        assert_eq!(res["skipped"], 1);
        assert_eq!(
            res["details"],
            json!([{ "id": touched, "field": "assigned_agent_ids", "reason": "changed_since" }])
        );
        let u = json_of(get(&app, &root, &untouched).await).await;
        assert_eq!(
            u["status"], "new",
            "enrolled is final, but an undo restores"
        );
        assert_eq!(u["assigned_agent_ids"], json!([first]));
        let t = json_of(get(&app, &root, &touched).await).await;
        assert_eq!(t["status"], "new");
        assert_eq!(
            t["assigned_agent_ids"],
            json!([first, second]),
            "the later change is kept"
        );
        let last = history(&app, &root, &untouched).await.pop().unwrap();
        assert_eq!(last["action"], "CUSTOMER_BULK_EDIT_REVERTED");
        assert_eq!(
            last["changes"]["status"],
            json!({ "from": "enrolled", "to": "new" })
        );

        // The restoring events carry the undo's batch id and are caused by the batch.
        let cid = egec_domain::CustomerId::from_uuid(untouched.parse().unwrap());
        let events = app
            .running
            .state
            .bus
            .stream_events(&cid.stream_id(), ReadBound::None)
            .await
            .unwrap();
        let revert = events.last().unwrap();
        assert_eq!(
            revert.metadata.causation_id.map(|c| c.to_string()),
            Some(batch.clone())
        );
        assert_eq!(
            revert.metadata.batch_id.map(|b| b.to_string()),
            res["undo_batch_id"].as_str().map(str::to_owned)
        );

        let r = undo(&app, &admin, &batch).await;
        assert_eq!(r.status(), StatusCode::CONFLICT);
        assert_eq!(json_of(r).await["error"]["code"], "conflict");
        let r = undo(&app, &admin, &Uuid::now_v7().to_string()).await;
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
        let (_, superagent) = app.as_role(Role::Superagent).await;
        let r = undo(&app, &superagent, &batch).await;
        assert_eq!(r.status(), StatusCode::FORBIDDEN);
    }
);

both_backends!(
    history_shows_assignment_bulk_and_undo_with_passports_masked_and_time_travel_still_works,
    |app: TestApp| async move {
        let (_, root) = app.as_role(Role::Superadmin).await;
        let (agent, agent_token) = app.as_role(Role::Agent).await;
        let (superagent, superagent_token) = app.as_role(Role::Superagent).await;
        let id = customer(&app, &root, "Hilda History", &[agent]).await;
        let r = app
            .patch(
                &format!("/api/customers/{id}"),
                Some(&root),
                json!({ "passport_number": "CD7654321" }),
            )
            .await;
        assert_eq!(r.status(), StatusCode::OK);
        let r = put_agents(&app, &root, &id, json!([agent, superagent])).await;
        assert_eq!(r.status(), StatusCode::OK);
        let r = bulk(
            &app,
            &root,
            json!({ "ids": [id], "set": { "status": "qualified" } }),
        )
        .await;
        let batch = json_of(r).await["batch_id"].as_str().unwrap().to_owned();
        let r = undo(&app, &root, &batch).await;
        assert_eq!(r.status(), StatusCode::OK);
        let after_undo = chrono::Utc::now();

        for token in [&agent_token, &superagent_token] {
            let items = history(&app, token, &id).await;
            let actions: Vec<&str> = items
                .iter()
                .map(|i| i["action"].as_str().unwrap())
                .collect();
            assert_eq!(
                actions,
                [
                    "CUSTOMER_CREATED",
                    "CUSTOMER_UPDATED",
                    "CUSTOMER_AGENTS_ASSIGNED",
                    "CUSTOMER_BULK_EDITED",
                    "CUSTOMER_BULK_EDIT_REVERTED"
                ]
            );
            let text = serde_json::to_string(&items).unwrap();
            assert!(
                !text.contains(PASSPORT) && !text.contains("CD7654321"),
                "{text}"
            );
            assert_eq!(
                items[1]["changes"]["passport_number"],
                json!({ "from": "AB****89", "to": "CD****21" })
            );
            assert_eq!(
                items[2]["changes"]["assigned_agent_ids"],
                json!({ "from": [agent], "to": [agent, superagent] })
            );
            assert_eq!(
                items[3]["changes"]["status"],
                json!({ "from": "new", "to": "qualified" })
            );
        }
        let admin_view = history(&app, &root, &id).await;
        assert_eq!(
            admin_view[1]["changes"]["passport_number"]["to"],
            "CD7654321"
        );

        let at = |q: String| {
            let app = &app;
            let root = &root;
            let id = &id;
            async move {
                json_of(
                    app.get(&format!("/api/customers/{id}?{q}"), Some(root))
                        .await,
                )
                .await
            }
        };
        let v3 = at("version=3".into()).await;
        assert_eq!(v3["assigned_agent_ids"], json!([agent, superagent]));
        assert_eq!(v3["status"], "new");
        let v4 = at("version=4".into()).await;
        assert_eq!(v4["status"], "qualified");
        assert_eq!(v4["version"], 4);
        let now = at(format!(
            "as_of={}",
            after_undo
                .to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
                .replace('+', "%2B")
        ))
        .await;
        assert_eq!(now["status"], "new", "after the undo");
        assert_eq!(now["version"], 5);
    }
);

both_backends!(
    audit_descriptions_never_show_a_passport_number,
    |app: TestApp| async move {
        let (_, root) = app.as_role(Role::Superadmin).await;
        let (agent, _) = app.as_role(Role::Agent).await;
        let id = customer(&app, &root, "Pia Passport", &[]).await;
        let r = app
            .patch(
                &format!("/api/customers/{id}"),
                Some(&root),
                json!({ "passport_number": "ZX9988776" }),
            )
            .await;
        assert_eq!(r.status(), StatusCode::OK);
        put_agents(&app, &root, &id, json!([agent])).await;
        let r = bulk(
            &app,
            &root,
            json!({ "ids": [id], "set": { "status": "lost" } }),
        )
        .await;
        let batch = json_of(r).await["batch_id"].as_str().unwrap().to_owned();
        undo(&app, &root, &batch).await;
        let r = app
            .request(
                Method::DELETE,
                &format!("/api/customers/{id}"),
                Some(&root),
                None,
            )
            .await;
        assert_eq!(r.status(), StatusCode::NO_CONTENT);
        let items = audit(&app, &root, &format!("entity_id={id}")).await;
        assert_eq!(items.len(), 6, "{items:?}");
        let text = serde_json::to_string(&items).unwrap();
        assert!(!text.contains(PASSPORT), "{text}");
        assert!(!text.contains("ZX9988776"), "{text}");
        let r = app.get("/api/audit/export.csv", Some(&root)).await;
        let csv = r.text().await.unwrap();
        assert!(csv.contains("CUSTOMER_BULK_EDIT_REVERTED"));
        assert!(!csv.contains(PASSPORT) && !csv.contains("ZX9988776"));
    }
);

both_backends!(
    a_delete_or_an_assignment_with_a_stale_if_match_is_a_version_conflict,
    |app: TestApp| async move {
        let (_, root) = app.as_role(Role::Superadmin).await;
        let (agent, _) = app.as_role(Role::Agent).await;
        let id = customer(&app, &root, "Vera Version", &[]).await;
        let r = app
            .patch(
                &format!("/api/customers/{id}"),
                Some(&root),
                json!({ "status": "contacted" }),
            )
            .await;
        assert_eq!(r.status(), StatusCode::OK);
        let client = reqwest::Client::new();
        let base = format!("http://{}", app.running.addr);
        let r = client
            .put(format!("{base}/api/customers/{id}/agents"))
            .bearer_auth(&root)
            .header("If-Match", "\"1\"")
            .json(&json!({ "agent_ids": [agent] }))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::CONFLICT);
        assert_eq!(json_of(r).await["error"]["code"], "version_conflict");
        let r = client
            .delete(format!("{base}/api/customers/{id}"))
            .bearer_auth(&root)
            .header("If-Match", "\"1\"")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::CONFLICT);
        let r = client
            .put(format!("{base}/api/customers/{id}/agents"))
            .bearer_auth(&root)
            .header("If-Match", "\"2\"")
            .json(&json!({ "agent_ids": [agent] }))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.headers()["etag"], "\"3\"");
    }
);
