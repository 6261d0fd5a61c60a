//! API keys: issued by a superadmin, shown once, stored hashed, scoped, expiring, revocable,
//! rotated with a grace period, accepted in the `X-API-Key` header only.

mod support;

use egec_domain::Role;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::time::Duration;
use support::{TestApp, json_of};

async fn with_key(app: &TestApp, method: Method, path: &str, key: &str) -> reqwest::Response {
    app.client
        .request(method, format!("{}{}", app.base, path))
        .header("x-api-key", key)
        .send()
        .await
        .expect("request sent")
}

async fn issue(app: &TestApp, token: &str, body: Value) -> Value {
    let r = app.post("/api/api-keys", Some(token), body).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    json_of(r).await
}

async fn delete(app: &TestApp, path: &str, token: &str) -> StatusCode {
    app.request(Method::DELETE, path, Some(token), None)
        .await
        .status()
}

both_backends!(
    a_key_is_shown_once_works_within_its_scopes_only_and_is_listed_without_its_secret,
    |app: TestApp| async move {
        let (_, root) = app.as_role(Role::Superadmin).await;
        let created = issue(
            &app,
            &root,
            json!({ "name": "Website form", "permissions": ["customers:view", "customers:create"] }),
        )
        .await;
        let key = created["key"].as_str().expect("key shown").to_owned();
        assert!(key.starts_with("egec_") && key.len() >= 48, "{key}");
        assert_eq!(created["name"], "Website form");
        assert_eq!(
            created["permissions"],
            json!(["customers:create", "customers:view"])
        );
        assert_eq!(created["expires_at"], Value::Null);

        // In scope.
        let r = with_key(&app, Method::GET, "/api/customers", &key).await;
        assert_eq!(r.status(), StatusCode::OK);
        let r = app
            .client
            .post(format!("{}/api/customers", app.base))
            .header("x-api-key", &key)
            .json(&json!({ "name": "Keyed Customer" }))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::CREATED);
        // Out of scope: 403, not 401.
        let r = with_key(&app, Method::GET, "/api/users", &key).await;
        assert_eq!(r.status(), StatusCode::FORBIDDEN);
        assert_eq!(json_of(r).await["error"]["code"], "forbidden");
        // A key has no session: the session endpoints refuse it.
        for path in ["/api/auth/me", "/api/auth/logout", "/api/auth/logout-all"] {
            let method = if path.ends_with("me") {
                Method::GET
            } else {
                Method::POST
            };
            let r = with_key(&app, method, path, &key).await;
            assert_eq!(r.status(), StatusCode::FORBIDDEN, "{path}");
        }
        // A key never manages keys, whatever its scopes.
        let r = with_key(&app, Method::GET, "/api/api-keys", &key).await;
        assert_eq!(r.status(), StatusCode::FORBIDDEN);
        // Every one of those refusals is in the audit log, with the key as the actor.
        let r = app
            .get("/api/audit?action=ACCESS_DENIED&per_page=100", Some(&root))
            .await;
        let denials = json_of(r).await["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|i| i["actor"]["id"] == created["id"])
            .count();
        assert_eq!(denials, 5, "users, three session endpoints, api-keys");
        // A wrong key and a bearer-style key are not accepted.
        let r = with_key(&app, Method::GET, "/api/customers", &format!("{key}x")).await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        let r = app.get("/api/customers", Some(&key)).await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);

        // Listed without the secret or its hash.
        let r = app.get("/api/api-keys", Some(&root)).await;
        assert_eq!(r.status(), StatusCode::OK);
        let text = r.text().await.unwrap();
        assert!(!text.contains(&key), "the secret is listed");
        assert!(!text.contains(&key[12..]), "part of the secret is listed");
        let listed: Value = serde_json::from_str(&text).unwrap();
        let item = &listed["items"][0];
        assert_eq!(item["id"], created["id"]);
        assert_eq!(item["prefix"], key[..12]);
        assert_eq!(item["revoked"], false);
        assert!(item.get("key").is_none() && item.get("secret_hash").is_none());

        // The last-used time arrives (recorded in the background, at most once a minute).
        let mut used = Value::Null;
        for _ in 0..50 {
            let listed = json_of(app.get("/api/api-keys", Some(&root)).await).await;
            used = listed["items"][0]["last_used_at"].clone();
            if !used.is_null() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(used.is_string(), "last_used_at never set");

        // Neither the secret nor its hash is in the log in clear... the hash is, by design;
        // the secret never is.
        let events = app.running.state.log.read_all(0, 10_000).await.unwrap();
        for e in &events {
            assert!(!e.payload.to_string().contains(&key));
            assert!(!e.metadata.to_string().contains(&key));
        }
        assert!(events.iter().any(|e| e.event_type == "ApiKeyIssued"));

        // The audit names the key as the actor of what it did, and shows the issue.
        let id = created["id"].as_str().unwrap();
        let head = app.running.state.log.head().await.unwrap().position;
        app.running
            .state
            .runner
            .wait_for(head, Duration::from_secs(10))
            .await;
        let r = app
            .get(
                &format!("/api/audit?actor_id={id}&action=CUSTOMER_CREATED"),
                Some(&root),
            )
            .await;
        let by_key = json_of(r).await;
        assert_eq!(by_key["total"], 1);
        assert_eq!(by_key["items"][0]["actor"]["id"], id);
        assert_eq!(by_key["items"][0]["actor"]["role"], Value::Null);
        let r = app
            .get(
                &format!("/api/audit?entity_id={id}&action=API_KEY_ISSUED"),
                Some(&root),
            )
            .await;
        let issued = json_of(r).await;
        assert_eq!(issued["total"], 1);
        let description = issued["items"][0]["description"].as_str().unwrap();
        assert!(description.contains("customers:view"), "{description}");
        assert!(!description.contains(&key[12..]));
    }
);

both_backends!(
    a_revoked_key_is_refused_on_the_next_request_and_an_expired_one_once_its_time_passes,
    |app: TestApp| async move {
        let (_, root) = app.as_role(Role::Superadmin).await;
        let k = issue(
            &app,
            &root,
            json!({ "name": "Revoke me", "permissions": ["customers:view"] }),
        )
        .await;
        let key = k["key"].as_str().unwrap();
        let id = k["id"].as_str().unwrap();
        assert_eq!(
            with_key(&app, Method::GET, "/api/customers", key)
                .await
                .status(),
            StatusCode::OK
        );
        assert_eq!(
            delete(&app, &format!("/api/api-keys/{id}"), &root).await,
            StatusCode::NO_CONTENT
        );
        let r = with_key(&app, Method::GET, "/api/customers", key).await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(json_of(r).await["error"]["code"], "unauthorized");
        // Revoking again is harmless; an unknown key is 404.
        assert_eq!(
            delete(&app, &format!("/api/api-keys/{id}"), &root).await,
            StatusCode::NO_CONTENT
        );
        assert_eq!(
            delete(
                &app,
                &format!("/api/api-keys/{}", uuid::Uuid::now_v7()),
                &root
            )
            .await,
            StatusCode::NOT_FOUND
        );
        let listed = json_of(app.get("/api/api-keys", Some(&root)).await).await;
        assert_eq!(listed["items"][0]["revoked"], true);
        // A revoked key cannot be rotated back to life.
        let r = app
            .post(
                &format!("/api/api-keys/{id}/rotate"),
                Some(&root),
                json!({}),
            )
            .await;
        assert_eq!(r.status(), StatusCode::CONFLICT);

        // Expiry.
        let soon = chrono::Utc::now() + chrono::Duration::seconds(2);
        let k = issue(
            &app,
            &root,
            json!({ "name": "Short-lived", "permissions": ["customers:view"],
                    "expires_at": soon.to_rfc3339() }),
        )
        .await;
        let key = k["key"].as_str().unwrap();
        assert!(k["expires_at"].is_string());
        assert_eq!(
            with_key(&app, Method::GET, "/api/customers", key)
                .await
                .status(),
            StatusCode::OK
        );
        tokio::time::sleep(Duration::from_millis(2_300)).await;
        assert_eq!(
            with_key(&app, Method::GET, "/api/customers", key)
                .await
                .status(),
            StatusCode::UNAUTHORIZED
        );
    }
);

both_backends!(
    after_a_rotation_the_old_key_works_within_the_grace_period_and_not_after_it,
    |app: TestApp| async move {
        let (_, root) = app.as_role(Role::Superadmin).await;
        let k = issue(
            &app,
            &root,
            json!({ "name": "Rotate me", "permissions": ["customers:view"] }),
        )
        .await;
        let old = k["key"].as_str().unwrap().to_owned();
        let id = k["id"].as_str().unwrap();
        let r = app
            .post(
                &format!("/api/api-keys/{id}/rotate"),
                Some(&root),
                json!({ "grace_seconds": 2 }),
            )
            .await;
        assert_eq!(r.status(), StatusCode::CREATED);
        let rotated = json_of(r).await;
        let new = rotated["key"].as_str().unwrap().to_owned();
        assert_ne!(new, old);
        assert_eq!(rotated["id"], k["id"]);
        assert_eq!(rotated["permissions"], json!(["customers:view"]));
        assert_eq!(
            with_key(&app, Method::GET, "/api/customers", &old)
                .await
                .status(),
            StatusCode::OK,
            "the old key works within the grace period"
        );
        assert_eq!(
            with_key(&app, Method::GET, "/api/customers", &new)
                .await
                .status(),
            StatusCode::OK
        );
        tokio::time::sleep(Duration::from_millis(2_300)).await;
        assert_eq!(
            with_key(&app, Method::GET, "/api/customers", &old)
                .await
                .status(),
            StatusCode::UNAUTHORIZED,
            "the old key is refused after the grace period"
        );
        assert_eq!(
            with_key(&app, Method::GET, "/api/customers", &new)
                .await
                .status(),
            StatusCode::OK
        );
        // Out-of-range grace periods and unknown keys.
        let r = app
            .post(
                &format!("/api/api-keys/{id}/rotate"),
                Some(&root),
                json!({ "grace_seconds": -1 }),
            )
            .await;
        assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
        let r = app
            .post(
                &format!("/api/api-keys/{}/rotate", uuid::Uuid::now_v7()),
                Some(&root),
                json!({}),
            )
            .await;
        assert_eq!(r.status(), StatusCode::NOT_FOUND);

        // The api_keys read model rebuilds from the log to the same rows.
        let read = app.running.state.read().clone();
        let before = read.list_api_keys().await.unwrap();
        assert_eq!(before.len(), 1);
        assert!(before[0].previous_hash.is_some() && before[0].last_used_at.is_some());
        app.running
            .state
            .runner
            .rebuild("api_keys", |_, _| {})
            .await
            .expect("rebuild");
        assert_eq!(read.list_api_keys().await.unwrap(), before);
    }
);

both_backends!(
    a_key_in_the_query_string_is_refused_even_when_valid,
    |app: TestApp| async move {
        let (_, root) = app.as_role(Role::Superadmin).await;
        let k = issue(
            &app,
            &root,
            json!({ "name": "Leaky", "permissions": ["customers:view"] }),
        )
        .await;
        let key = k["key"].as_str().unwrap();
        for q in ["api_key", "key", "apikey"] {
            let r = app.get(&format!("/api/customers?{q}={key}"), None).await;
            assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "?{q}=");
            // Not even with the header as well, nor with a valid session token.
            let r = with_key(&app, Method::GET, &format!("/api/customers?{q}={key}"), key).await;
            assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "?{q}= with header");
            let r = app
                .get(&format!("/api/customers?{q}={key}"), Some(&root))
                .await;
            assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "?{q}= with token");
        }
    }
);

both_backends!(
    only_a_superadmin_manages_keys_and_bad_requests_are_named,
    |app: TestApp| async move {
        let (_, root) = app.as_role(Role::Superadmin).await;
        let k = issue(
            &app,
            &root,
            json!({ "name": "Someone's", "permissions": ["audit:view"] }),
        )
        .await;
        let id = k["id"].as_str().unwrap();
        for role in [Role::Admin, Role::Auditor, Role::Agent] {
            let (_, token) = app.as_role(role).await;
            let body = json!({ "name": "Mine", "permissions": ["customers:view"] });
            assert_eq!(
                app.post("/api/api-keys", Some(&token), body).await.status(),
                StatusCode::FORBIDDEN,
                "{role} issues"
            );
            assert_eq!(
                app.get("/api/api-keys", Some(&token)).await.status(),
                StatusCode::FORBIDDEN,
                "{role} lists"
            );
            assert_eq!(
                delete(&app, &format!("/api/api-keys/{id}"), &token).await,
                StatusCode::FORBIDDEN,
                "{role} revokes"
            );
            assert_eq!(
                app.post(
                    &format!("/api/api-keys/{id}/rotate"),
                    Some(&token),
                    json!({})
                )
                .await
                .status(),
                StatusCode::FORBIDDEN,
                "{role} rotates"
            );
        }
        assert_eq!(
            app.get("/api/api-keys", None).await.status(),
            StatusCode::UNAUTHORIZED
        );
        // A retried issue (same Idempotency-Key) issues nothing new and shows no secret.
        let idem = uuid::Uuid::now_v7().to_string();
        let send = || {
            app.client
                .post(format!("{}/api/api-keys", app.base))
                .bearer_auth(&root)
                .header("idempotency-key", &idem)
                .json(&json!({ "name": "Retried", "permissions": ["customers:view"] }))
                .send()
        };
        assert_eq!(send().await.unwrap().status(), StatusCode::CREATED);
        let again = send().await.unwrap();
        assert_eq!(again.status(), StatusCode::CONFLICT);
        assert!(!json_of(again).await.to_string().contains("egec_"));
        let listed = json_of(app.get("/api/api-keys", Some(&root)).await).await;
        assert_eq!(
            listed["items"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|k| k["name"] == "Retried")
                .count(),
            1
        );
        for (body, field) in [
            (
                json!({ "name": "x", "permissions": ["customers:fly"] }),
                "permissions",
            ),
            (json!({ "name": "x", "permissions": [] }), "permissions"),
            (
                json!({ "name": "x", "permissions": ["api_keys:manage"] }),
                "permissions",
            ),
            (
                json!({ "name": "", "permissions": ["customers:view"] }),
                "name",
            ),
            (
                json!({ "name": "x", "permissions": ["customers:view"], "expires_at": "tomorrow" }),
                "expires_at",
            ),
            (
                json!({ "name": "x", "permissions": ["customers:view"],
                        "expires_at": "2001-01-01T00:00:00Z" }),
                "expires_at",
            ),
        ] {
            let r = app.post("/api/api-keys", Some(&root), body.clone()).await;
            assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY, "{body}");
            let e = json_of(r).await;
            assert_eq!(e["error"]["code"], "validation_failed");
            assert!(e["error"]["fields"][field].is_string(), "{body}: {e}");
        }
    }
);
