//! Follow-ups (API.md, "Customers"): create, read, list for me and per customer, the
//! open/done/overdue filter, completion, validation, visibility with the customer, the audit
//! and crypto-shredding of the notes.

mod support;

use egec_domain::aggregate::CustomerAggregate;
use egec_domain::customer::CustomerCommand;
use egec_domain::event::Metadata;
use egec_domain::{CustomerId, Role};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use support::{TestApp, json_of};
use uuid::Uuid;

const NOTE: &str = "Call back about the visa appointment";

fn in_days(days: i64) -> String {
    (chrono::Utc::now() + chrono::Duration::days(days)).to_rfc3339()
}

async fn customer(app: &TestApp, token: &str, agents: &[Uuid]) -> Uuid {
    let r = app
        .post(
            "/api/customers",
            Some(token),
            json!({ "name": "Jane Doe", "assigned_agent_ids": agents }),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    json_of(r).await["id"].as_str().unwrap().parse().unwrap()
}

async fn followup(app: &TestApp, token: &str, customer: Uuid, body: Value) -> Value {
    let r = app
        .post(
            &format!("/api/customers/{customer}/followups"),
            Some(token),
            body,
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    json_of(r).await
}

async fn list(app: &TestApp, token: &str, path: &str) -> Value {
    let r = app.get(path, Some(token)).await;
    assert_eq!(r.status(), StatusCode::OK, "{path}");
    json_of(r).await
}

fn ids(page: &Value) -> Vec<String> {
    page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_str().unwrap().to_owned())
        .collect()
}

both_backends!(
    a_follow_up_is_created_read_back_and_listed_for_me_and_for_its_customer,
    |app: TestApp| async move {
        let (agent_id, agent) = app.as_role(Role::Agent).await;
        // An agent's new customer is assigned to them.
        let c = customer(&app, &agent, &[]).await;
        let due = in_days(2);
        let f = followup(&app, &agent, c, json!({ "due_at": due, "note": NOTE })).await;
        assert_eq!(f["customer_id"], c.to_string());
        assert_eq!(f["note"], NOTE);
        assert_eq!(
            f["assigned_to"],
            agent_id.to_string(),
            "defaults to the caller"
        );
        assert_eq!(f["status"], "open");
        assert_eq!(f["completed_at"], Value::Null);
        let id = f["id"].as_str().unwrap();

        let got = list(&app, &agent, &format!("/api/followups/{id}")).await;
        assert_eq!(got, f, "the read model answers what the create answered");

        let mine = list(&app, &agent, "/api/followups?assigned_to=me&status=open").await;
        assert_eq!(ids(&mine), vec![id.to_owned()]);
        assert_eq!(mine["total"], 1);
        assert_eq!(mine["page"], 1);
        let per_customer = list(&app, &agent, &format!("/api/customers/{c}/followups")).await;
        assert_eq!(ids(&per_customer), vec![id.to_owned()]);

        // Someone else's follow-up on another customer is in neither list.
        let (_, admin) = app.as_role(Role::Admin).await;
        let other = customer(&app, &admin, &[]).await;
        followup(
            &app,
            &admin,
            other,
            json!({ "due_at": due, "note": "other" }),
        )
        .await;
        let mine = list(&app, &agent, "/api/followups?assigned_to=me").await;
        assert_eq!(ids(&mine), vec![id.to_owned()]);
        let all = list(&app, &admin, "/api/followups").await;
        assert_eq!(all["total"], 2);
        let theirs = list(
            &app,
            &admin,
            &format!("/api/followups?assigned_to={agent_id}"),
        )
        .await;
        assert_eq!(ids(&theirs), vec![id.to_owned()]);
        let by_customer = list(&app, &admin, &format!("/api/followups?customer_id={c}")).await;
        assert_eq!(ids(&by_customer), vec![id.to_owned()]);
    }
);

both_backends!(
    the_status_filter_separates_open_done_and_overdue_and_due_before_bounds_the_due_time,
    |app: TestApp| async move {
        let (_, admin) = app.as_role(Role::Admin).await;
        let c = customer(&app, &admin, &[]).await;
        let overdue = followup(
            &app,
            &admin,
            c,
            json!({ "due_at": in_days(-1), "note": "late" }),
        )
        .await;
        let open = followup(
            &app,
            &admin,
            c,
            json!({ "due_at": in_days(3), "note": "soon" }),
        )
        .await;
        let done = followup(
            &app,
            &admin,
            c,
            json!({ "due_at": in_days(1), "note": "done" }),
        )
        .await;
        assert_eq!(overdue["status"], "overdue");
        let r = app
            .post(
                &format!("/api/followups/{}/complete", done["id"].as_str().unwrap()),
                Some(&admin),
                json!({}),
            )
            .await;
        assert_eq!(r.status(), StatusCode::OK);

        let id = |v: &Value| v["id"].as_str().unwrap().to_owned();
        for (status, expected) in [("open", &open), ("done", &done), ("overdue", &overdue)] {
            let page = list(&app, &admin, &format!("/api/followups?status={status}")).await;
            assert_eq!(ids(&page), vec![id(expected)], "status={status}");
            assert_eq!(page["items"][0]["status"], status);
        }
        let all = list(&app, &admin, &format!("/api/customers/{c}/followups")).await;
        assert_eq!(
            ids(&all),
            vec![id(&overdue), id(&done), id(&open)],
            "soonest due first"
        );
        let before = urlencoding(&in_days(2));
        let page = list(&app, &admin, &format!("/api/followups?due_before={before}")).await;
        assert_eq!(ids(&page), vec![id(&overdue), id(&done)]);
        let page = list(
            &app,
            &admin,
            &format!("/api/followups?due_before={before}&status=open"),
        )
        .await;
        assert_eq!(page["total"], 0);
        let page = list(&app, &admin, "/api/followups?per_page=2&page=2").await;
        assert_eq!(ids(&page), vec![id(&open)]);
        assert_eq!(page["total"], 3);
    }
);

/// Percent-encodes the `+` of a time zone offset for a query string.
fn urlencoding(s: &str) -> String {
    s.replace('+', "%2B")
}

both_backends!(
    completing_records_who_and_when_and_completing_twice_is_a_conflict,
    |app: TestApp| async move {
        let (agent_id, agent) = app.as_role(Role::Agent).await;
        let c = customer(&app, &agent, &[]).await;
        let f = followup(
            &app,
            &agent,
            c,
            json!({ "due_at": in_days(1), "note": NOTE }),
        )
        .await;
        let path = format!("/api/followups/{}/complete", f["id"].as_str().unwrap());
        let r = app.post(&path, Some(&agent), json!({})).await;
        assert_eq!(r.status(), StatusCode::OK);
        let done = json_of(r).await;
        assert_eq!(done["status"], "done");
        assert_eq!(done["completed_by"], agent_id.to_string());
        assert!(done["completed_at"].is_string());
        let r = app.post(&path, Some(&agent), json!({})).await;
        assert_eq!(r.status(), StatusCode::CONFLICT);
        assert_eq!(json_of(r).await["error"]["code"], "conflict");
        let r = app
            .post(
                &format!("/api/followups/{}/complete", Uuid::now_v7()),
                Some(&agent),
                json!({}),
            )
            .await;
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
    }
);

both_backends!(
    each_invalid_field_is_named_in_a_422,
    |app: TestApp| async move {
        let (_, admin) = app.as_role(Role::Admin).await;
        let (other_agent, _) = app.as_role(Role::Agent).await;
        let (dataentry, _) = app.as_role(Role::Dataentry).await;
        let c = customer(&app, &admin, &[]).await;
        let path = format!("/api/customers/{c}/followups");
        let cases = [
            (json!({ "note": NOTE }), "due_at"),
            (json!({ "due_at": "tomorrow", "note": NOTE }), "due_at"),
            (json!({ "due_at": in_days(1) }), "note"),
            (json!({ "due_at": in_days(1), "note": "   " }), "note"),
            (json!({ "due_at": in_days(1), "note": "bell\u{7}" }), "note"),
            (
                json!({ "due_at": in_days(1), "note": "x".repeat(10_001) }),
                "note",
            ),
            // Not a user, an agent who cannot see the customer, a role without follow-ups.
            (
                json!({ "due_at": in_days(1), "note": NOTE, "assigned_to": Uuid::now_v7() }),
                "assigned_to",
            ),
            (
                json!({ "due_at": in_days(1), "note": NOTE, "assigned_to": other_agent }),
                "assigned_to",
            ),
            (
                json!({ "due_at": in_days(1), "note": NOTE, "assigned_to": dataentry }),
                "assigned_to",
            ),
        ];
        for (body, field) in cases {
            let r = app.post(&path, Some(&admin), body.clone()).await;
            assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY, "{body}");
            let e = json_of(r).await;
            assert_eq!(e["error"]["code"], "validation_failed");
            assert!(e["error"]["fields"][field].is_string(), "{field} in {e}");
        }
        // Every problem at once.
        let r = app
            .post(&path, Some(&admin), json!({ "due_at": "x", "note": "" }))
            .await;
        let e = json_of(r).await;
        assert!(e["error"]["fields"]["due_at"].is_string());
        assert!(e["error"]["fields"]["note"].is_string());
        // Unknown fields are a malformed request.
        let r = app
            .post(
                &path,
                Some(&admin),
                json!({ "due_at": in_days(1), "note": NOTE, "x": 1 }),
            )
            .await;
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
        for q in [
            "status=closed",
            "assigned_to=someone",
            "due_before=soon",
            "per_page=0",
        ] {
            let r = app.get(&format!("/api/followups?{q}"), Some(&admin)).await;
            assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY, "{q}");
        }
        // An agent assigned to the customer but deactivated cannot be given it.
        let (gone, _) = app.as_role(Role::Agent).await;
        let r = app
            .patch(
                &format!("/api/users/{gone}"),
                Some(&admin),
                json!({ "active": false }),
            )
            .await;
        assert_eq!(r.status(), StatusCode::OK);
        let c_gone = customer(&app, &admin, &[gone]).await;
        let r = app
            .post(
                &format!("/api/customers/{c_gone}/followups"),
                Some(&admin),
                json!({ "due_at": in_days(1), "note": NOTE, "assigned_to": gone }),
            )
            .await;
        assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
        assert!(json_of(r).await["error"]["fields"]["assigned_to"].is_string());
        // A valid assignee: an agent assigned to the customer.
        let c2 = customer(&app, &admin, &[other_agent]).await;
        let f = followup(
            &app,
            &admin,
            c2,
            json!({ "due_at": in_days(1), "note": NOTE, "assigned_to": other_agent }),
        )
        .await;
        assert_eq!(f["assigned_to"], other_agent.to_string());
    }
);

both_backends!(
    an_agent_not_assigned_to_the_customer_gets_404_and_never_sees_its_follow_ups,
    |app: TestApp| async move {
        let (_, admin) = app.as_role(Role::Admin).await;
        let (a, agent_a) = app.as_role(Role::Agent).await;
        let (_, agent_b) = app.as_role(Role::Agent).await;
        let c = customer(&app, &admin, &[a]).await;
        let f = followup(
            &app,
            &agent_a,
            c,
            json!({ "due_at": in_days(-1), "note": NOTE }),
        )
        .await;
        let id = f["id"].as_str().unwrap();

        let hidden = [
            (
                Method::POST,
                format!("/api/customers/{c}/followups"),
                Some(json!({ "due_at": in_days(1), "note": NOTE })),
            ),
            (Method::GET, format!("/api/customers/{c}/followups"), None),
            (Method::GET, format!("/api/followups/{id}"), None),
            (
                Method::POST,
                format!("/api/followups/{id}/complete"),
                Some(json!({})),
            ),
        ];
        for (m, path, body) in hidden {
            let r = app.request(m.clone(), &path, Some(&agent_b), body).await;
            assert_eq!(r.status(), StatusCode::NOT_FOUND, "{m} {path}");
        }
        for q in [
            "",
            "?status=overdue",
            &format!("?customer_id={c}"),
            &format!("?assigned_to={a}"),
        ] {
            let page = list(&app, &agent_b, &format!("/api/followups{q}")).await;
            assert_eq!(page["total"], 0, "{q}");
            assert!(ids(&page).is_empty());
        }
        // The assigned agent still sees it, untouched by the attempts.
        let page = list(&app, &agent_a, "/api/followups?status=overdue").await;
        assert_eq!(ids(&page), vec![id.to_owned()]);
    }
);

both_backends!(
    the_auditor_reads_follow_ups_and_changes_none_and_data_entry_has_none,
    |app: TestApp| async move {
        let (_, admin) = app.as_role(Role::Admin).await;
        let (_, auditor) = app.as_role(Role::Auditor).await;
        let (_, dataentry) = app.as_role(Role::Dataentry).await;
        let c = customer(&app, &admin, &[]).await;
        let f = followup(
            &app,
            &admin,
            c,
            json!({ "due_at": in_days(1), "note": NOTE }),
        )
        .await;
        let id = f["id"].as_str().unwrap();
        assert_eq!(list(&app, &auditor, "/api/followups").await["total"], 1);
        assert_eq!(
            list(&app, &auditor, &format!("/api/followups/{id}")).await["note"],
            NOTE
        );
        let writes = [
            (
                format!("/api/customers/{c}/followups"),
                json!({ "due_at": in_days(1), "note": NOTE }),
            ),
            (format!("/api/followups/{id}/complete"), json!({})),
        ];
        for (path, body) in writes {
            let r = app.post(&path, Some(&auditor), body.clone()).await;
            assert_eq!(r.status(), StatusCode::FORBIDDEN, "auditor {path}");
            let r = app.post(&path, Some(&dataentry), body).await;
            assert_eq!(r.status(), StatusCode::FORBIDDEN, "dataentry {path}");
        }
        for path in ["/api/followups".to_owned(), format!("/api/followups/{id}")] {
            let r = app.get(&path, Some(&dataentry)).await;
            assert_eq!(r.status(), StatusCode::FORBIDDEN, "dataentry {path}");
        }
        assert_eq!(
            list(&app, &admin, &format!("/api/followups/{id}")).await["status"],
            "open"
        );
    }
);

both_backends!(
    the_audit_shows_follow_ups_created_and_completed_without_their_notes,
    |app: TestApp| async move {
        let (_, admin) = app.as_role(Role::Admin).await;
        let c = customer(&app, &admin, &[]).await;
        let f = followup(
            &app,
            &admin,
            c,
            json!({ "due_at": in_days(1), "note": NOTE }),
        )
        .await;
        let id = f["id"].as_str().unwrap();
        let r = app
            .post(
                &format!("/api/followups/{id}/complete"),
                Some(&admin),
                json!({}),
            )
            .await;
        assert_eq!(r.status(), StatusCode::OK);
        for action in ["FOLLOWUP_CREATED", "FOLLOWUP_COMPLETED"] {
            let page = list(&app, &admin, &format!("/api/audit?action={action}")).await;
            let items = page["items"].as_array().unwrap();
            assert_eq!(items.len(), 1, "{action}");
            assert_eq!(items[0]["entity_type"], "followup");
            assert_eq!(items[0]["entity_id"], id);
            assert!(
                !page.to_string().contains("visa"),
                "{action}: the note shows"
            );
        }
    }
);

/// The erased customer's follow-ups read `[ERASED]` by id and in the lists; the other
/// customer's follow-up keeps its note.
async fn check_erased(app: &TestApp, admin: &str, c: Uuid, erased: &[&Value], kept: &Value) {
    for f in erased {
        let id = f["id"].as_str().unwrap();
        let got = list(app, admin, &format!("/api/followups/{id}")).await;
        assert_eq!(got["note"], "[ERASED]");
    }
    let page = list(app, admin, &format!("/api/customers/{c}/followups")).await;
    assert_eq!(page["total"], erased.len());
    let text = list(app, admin, "/api/followups").await.to_string();
    assert!(
        !text.contains("visa") && !text.contains("second note"),
        "{text}"
    );
    let id = kept["id"].as_str().unwrap();
    let got = list(app, admin, &format!("/api/followups/{id}")).await;
    assert_eq!(got["note"], "kept");
}

both_backends!(
    erasing_the_customer_shreds_the_notes_of_its_follow_ups_on_every_read_path,
    |app: TestApp| async move {
        let (_, admin) = app.as_role(Role::Admin).await;
        let c = customer(&app, &admin, &[]).await;
        let open = followup(
            &app,
            &admin,
            c,
            json!({ "due_at": in_days(1), "note": NOTE }),
        )
        .await;
        let done = followup(
            &app,
            &admin,
            c,
            json!({ "due_at": in_days(2), "note": "second note" }),
        )
        .await;
        let r = app
            .post(
                &format!("/api/followups/{}/complete", done["id"].as_str().unwrap()),
                Some(&admin),
                json!({}),
            )
            .await;
        assert_eq!(r.status(), StatusCode::OK);
        // Another customer's follow-up keeps its note.
        let other = customer(&app, &admin, &[]).await;
        let kept = followup(
            &app,
            &admin,
            other,
            json!({ "due_at": in_days(1), "note": "kept" }),
        )
        .await;

        let s = &app.running.state;
        let meta = Metadata::system(Uuid::now_v7(), chrono::Utc::now());
        let erasure = egec_commands::erase::erase_customer(
            &s.bus,
            CustomerId::from_uuid(c),
            "art. 17",
            &meta,
        )
        .await
        .unwrap();
        assert!(
            s.runner
                .wait_for(
                    erasure.position.unwrap(),
                    std::time::Duration::from_secs(10)
                )
                .await
        );
        check_erased(&app, &admin, c, &[&open, &done], &kept).await;
        // A rebuild, which can no longer decrypt the notes, arrives at the same rows.
        s.runner.rebuild("followups", |_, _| {}).await.unwrap();
        check_erased(&app, &admin, c, &[&open, &done], &kept).await;
        // No new note can be written about an erased customer.
        let r = app
            .post(
                &format!("/api/customers/{c}/followups"),
                Some(&admin),
                json!({ "due_at": in_days(1), "note": NOTE }),
            )
            .await;
        assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    }
);

both_backends!(
    a_deleted_customers_follow_ups_are_seen_only_by_those_who_see_deleted_customers,
    |app: TestApp| async move {
        let (_, superadmin) = app.as_role(Role::Superadmin).await;
        let (_, admin) = app.as_role(Role::Admin).await;
        let c = customer(&app, &admin, &[]).await;
        let f = followup(
            &app,
            &admin,
            c,
            json!({ "due_at": in_days(1), "note": NOTE }),
        )
        .await;
        let id = f["id"].as_str().unwrap();

        let s = &app.running.state;
        let meta = Metadata::system(Uuid::now_v7(), chrono::Utc::now());
        let cid = CustomerId::from_uuid(c);
        let done = s
            .bus
            .execute::<CustomerAggregate>(
                &cid.stream_id(),
                &cid.subject(),
                None,
                Uuid::now_v7(),
                &meta,
                CustomerCommand::Delete,
            )
            .await
            .unwrap();
        s.wait_for_write(done.position).await;

        let r = app.get(&format!("/api/followups/{id}"), Some(&admin)).await;
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
        assert_eq!(list(&app, &admin, "/api/followups").await["total"], 0);
        assert_eq!(
            list(&app, &superadmin, &format!("/api/followups/{id}")).await["note"],
            NOTE
        );
        assert_eq!(list(&app, &superadmin, "/api/followups").await["total"], 1);
    }
);

both_backends!(
    reassigning_the_customer_moves_its_follow_ups_to_the_new_agent_at_once,
    |app: TestApp| async move {
        let (_, admin) = app.as_role(Role::Admin).await;
        let (first_id, first) = app.as_role(Role::Agent).await;
        let second_id = app.user("second.agent@example.com", Role::Agent).await;
        let second = app.login("second.agent@example.com").await;
        let c = customer(&app, &admin, &[first_id]).await;
        let f = followup(
            &app,
            &first,
            c,
            json!({ "due_at": in_days(1), "note": NOTE }),
        )
        .await;
        let id = f["id"].as_str().unwrap().to_owned();
        assert_eq!(
            ids(&list(&app, &first, "/api/followups").await),
            std::slice::from_ref(&id)
        );
        assert!(ids(&list(&app, &second, "/api/followups").await).is_empty());

        let r = app
            .request(
                Method::PUT,
                &format!("/api/customers/{c}/agents"),
                Some(&admin),
                Some(json!({ "agent_ids": [second_id] })),
            )
            .await;
        assert_eq!(r.status(), StatusCode::OK);

        // The very next requests see the new assignment, on the list and by id.
        assert!(ids(&list(&app, &first, "/api/followups").await).is_empty());
        let r = app.get(&format!("/api/followups/{id}"), Some(&first)).await;
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
        let r = app
            .post(
                &format!("/api/followups/{id}/complete"),
                Some(&first),
                json!({}),
            )
            .await;
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
        assert_eq!(
            ids(&list(&app, &second, "/api/followups").await),
            std::slice::from_ref(&id)
        );
        assert_eq!(
            list(&app, &second, &format!("/api/followups/{id}")).await["note"],
            NOTE
        );
    }
);
