//! Input validation on `POST /api/customers` (and `PATCH`): every rule refused with 422
//! `validation_failed` naming the field, every problem of a request reported at once, and the
//! valid forms accepted and normalised.

mod support;

use egec_api::config::Config;
use egec_domain::Role;
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::collections::HashMap;
use support::{Backend, TestApp, json_of};

async fn create(app: &TestApp, token: &str, body: Value) -> reqwest::Response {
    app.post("/api/customers", Some(token), body).await
}

/// The `fields` of a 422, after checking the status, code and JSON content type.
async fn refused(r: reqwest::Response) -> serde_json::Map<String, Value> {
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(r.headers()["content-type"], "application/json");
    let body = json_of(r).await;
    assert_eq!(body["error"]["code"], "validation_failed");
    body["error"]["fields"].as_object().expect("fields").clone()
}

/// Creates `{name: "Valid Name", <field>: value}` and answers the problem named for `field`.
async fn problem(app: &TestApp, token: &str, field: &str, value: &str) -> String {
    let mut body = json!({ "name": "Valid Name" });
    body[field] = json!(value);
    let fields = refused(create(app, token, body).await).await;
    assert_eq!(fields.len(), 1, "{field}={value:?}: {fields:?}");
    fields[field].as_str().expect("problem").to_owned()
}

async fn accepted(app: &TestApp, token: &str, field: &str, value: &str) -> Value {
    let mut body = json!({ "name": "Valid Name" });
    body[field] = json!(value);
    let r = create(app, token, body).await;
    assert_eq!(r.status(), StatusCode::CREATED, "{field}={value:?}");
    json_of(r).await
}

both_backends!(
    every_invalid_field_of_a_request_is_named_at_once,
    |app: TestApp| async move {
        let (_, admin) = app.as_role(Role::Admin).await;
        let r = create(
            &app,
            &admin,
            json!({
                "name": "Jane\u{202E}Doe",
                "email": "jane@mailinator.com",
                "phone": "12",
                "passport_number": "A1",
                "country": "Ger\u{0}many",
                "source": "x".repeat(101),
                "notes": "bell \u{7}",
                "status": "promoted"
            }),
        )
        .await;
        let fields = refused(r).await;
        let mut names: Vec<&str> = fields.keys().map(String::as_str).collect();
        names.sort_unstable();
        assert_eq!(
            names,
            [
                "country",
                "email",
                "name",
                "notes",
                "passport_number",
                "phone",
                "source",
                "status"
            ]
        );
        // Messages never echo the input.
        for v in fields.values() {
            let v = v.as_str().unwrap();
            assert!(!v.contains("mailinator") && !v.contains("Jane"), "{v}");
        }
    }
);

both_backends!(
    valid_values_are_accepted_and_normalised,
    |app: TestApp| async move {
        let (_, admin) = app.as_role(Role::Admin).await;
        let r = create(
            &app,
            &admin,
            json!({
                "name": "  محمد علي  ",
                "email": " Jane.Doe@Example.COM ",
                "phone": "020 7946 0958",
                "passport_number": "ab 123 4589",
                "notes": "line one\nline two\ttabbed",
            }),
        )
        .await;
        assert_eq!(r.status(), StatusCode::CREATED);
        assert_eq!(r.headers()["content-type"], "application/json");
        let c = json_of(r).await;
        assert_eq!(c["name"], "محمد علي");
        assert_eq!(c["email"], "jane.doe@example.com");
        assert_eq!(
            c["phone"], "+442079460958",
            "national form under the GB default"
        );
        assert_eq!(c["passport_number"], "AB1234589");
        assert_eq!(c["notes"], "line one\nline two\ttabbed");
    }
);

both_backends!(
    emails_must_be_well_formed_and_not_from_a_disposable_domain,
    |app: TestApp| async move {
        let (_, admin) = app.as_role(Role::Admin).await;
        for bad in [
            "jane",
            "jane@",
            "@example.com",
            "jane@example",
            "ja ne@example.com",
            "a..b@example.com",
        ] {
            let p = problem(&app, &admin, "email", bad).await;
            assert!(p.starts_with("email"), "{bad:?}: {p}");
        }
        for disposable in [
            "jane@mailinator.com",
            "jane@10minutemail.com",
            "jane@GuerrillaMail.com",
            "jane@inbox.yopmail.com",
        ] {
            assert_eq!(
                problem(&app, &admin, "email", disposable).await,
                "disposable email domains are not accepted",
                "{disposable}"
            );
        }
        for good in [
            "jane@example.com",
            "jane+tag@sub.example.co.uk",
            "j@mailinator.com.example.org",
        ] {
            accepted(&app, &admin, "email", good).await;
        }
        // PATCH goes through the same rule.
        let c = accepted(&app, &admin, "email", "jane@example.com").await;
        let r = app
            .patch(
                &format!("/api/customers/{}", c["id"].as_str().unwrap()),
                Some(&admin),
                json!({ "email": "jane@trashmail.com" }),
            )
            .await;
        assert_eq!(
            refused(r).await["email"],
            "disposable email domains are not accepted"
        );
    }
);

both_backends!(
    phones_must_be_valid_numbers_and_come_back_in_e164,
    |app: TestApp| async move {
        let (_, admin) = app.as_role(Role::Admin).await;
        for bad in [
            "12",
            "+44 20",
            "phone me",
            "+44 20 7946 095X",
            "+999 123 4567",
            "+44 20 7946 0958 1234 5678",
        ] {
            let p = problem(&app, &admin, "phone", bad).await;
            assert!(p.starts_with("phone"), "{bad:?}: {p}");
        }
        for (input, e164) in [
            ("+44 20 7946 0958", "+442079460958"),
            ("020 7946 0958", "+442079460958"),
            ("+20 10 1234 5678", "+201012345678"),
            ("+1 (202) 555-0143", "+12025550143"),
        ] {
            assert_eq!(accepted(&app, &admin, "phone", input).await["phone"], e164);
        }
    }
);

both_backends!(
    the_default_phone_region_comes_from_configuration,
    env = [("EGEC_PHONE_DEFAULT_REGION", "EG")],
    |app: TestApp| async move {
        let (_, admin) = app.as_role(Role::Admin).await;
        assert_eq!(
            accepted(&app, &admin, "phone", "010 1234 5678").await["phone"],
            "+201012345678"
        );
        // A British national number is not a valid Egyptian one.
        problem(&app, &admin, "phone", "020 7946 0958").await;
    }
);

both_backends!(
    passport_numbers_must_be_6_to_12_letters_and_digits,
    |app: TestApp| async move {
        let (_, admin) = app.as_role(Role::Admin).await;
        for bad in [
            "A1234",
            "AB-123456",
            "ABCDEFGH",
            "A12345678901234",
            "AB12345\u{0}",
        ] {
            let p = problem(&app, &admin, "passport_number", bad).await;
            assert!(p.starts_with("passport number"), "{bad:?}: {p}");
        }
        for (input, stored) in [("x1234567", "X1234567"), ("AB 12 34 589", "AB1234589")] {
            assert_eq!(
                accepted(&app, &admin, "passport_number", input).await["passport_number"],
                stored
            );
        }
    }
);

both_backends!(
    names_refuse_control_bidirectional_and_invisible_characters_and_excess_length,
    |app: TestApp| async move {
        let (_, admin) = app.as_role(Role::Admin).await;
        let long = "x".repeat(201);
        for (bad, why) in [
            ("Jane\u{0}Doe", "name contains control characters"),
            ("Jane\nDoe", "name contains control characters"),
            ("Jane\u{9b}Doe", "name contains control characters"),
            (
                "Jane\u{202E}eoD",
                "name contains bidirectional control characters",
            ),
            (
                "Jane\u{2067}Doe",
                "name contains bidirectional control characters",
            ),
            ("Ja\u{200B}ne", "name contains invisible characters"),
            ("\u{FEFF}Jane", "name contains invisible characters"),
            ("   ", "name is empty"),
            (long.as_str(), "name is too long"),
        ] {
            let fields = refused(create(&app, &admin, json!({ "name": bad })).await).await;
            assert_eq!(fields["name"], why, "{bad:?}");
        }
        let fields = refused(create(&app, &admin, json!({ "email": "a@example.com" })).await).await;
        assert_eq!(fields["name"], "name is required");
        for good in [
            "Zoë O'Brien-Łukasiewicz",
            "李小龙",
            "Ахмед",
            &"é".repeat(200),
        ] {
            let r = create(&app, &admin, json!({ "name": good })).await;
            assert_eq!(r.status(), StatusCode::CREATED, "{good:?}");
        }
    }
);

both_backends!(
    notes_keep_line_breaks_but_refuse_other_control_characters,
    |app: TestApp| async move {
        let (_, admin) = app.as_role(Role::Admin).await;
        for bad in [
            "bell \u{7}",
            "escape \u{1b}[31m red",
            "flip \u{202E}this",
            "nul\u{0}",
        ] {
            let p = problem(&app, &admin, "notes", bad).await;
            assert!(p.starts_with("notes contains"), "{bad:?}: {p}");
        }
        problem(&app, &admin, "notes", &"n".repeat(10_001)).await;
        let c = accepted(
            &app,
            &admin,
            "notes",
            "first\r\nsecond\n\tthird 👨\u{200D}👩",
        )
        .await;
        assert_eq!(c["notes"], "first\r\nsecond\n\tthird 👨\u{200D}👩");
    }
);

both_backends!(
    markup_in_free_text_is_returned_as_a_json_string_never_as_html,
    |app: TestApp| async move {
        let (_, admin) = app.as_role(Role::Admin).await;
        let markup = "<script>alert('x')</script><img src=x onerror=alert(1)>";
        let r = create(&app, &admin, json!({ "name": markup, "notes": markup })).await;
        assert_eq!(r.status(), StatusCode::CREATED);
        assert_eq!(r.headers()["content-type"], "application/json");
        assert_eq!(r.headers()["x-content-type-options"], "nosniff");
        assert!(
            r.headers()["content-security-policy"]
                .to_str()
                .unwrap()
                .contains("default-src 'none'")
        );
        let c = json_of(r).await;
        assert_eq!(c["name"], markup, "stored and returned as data");
        let r = app
            .get(
                &format!("/api/customers/{}", c["id"].as_str().unwrap()),
                Some(&admin),
            )
            .await;
        assert_eq!(r.headers()["content-type"], "application/json");
    }
);

/// Starts an app whose blocklist is extended by a file and a comma list.
async fn with_operator_blocklist(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("more-domains.txt");
    std::fs::write(&file, "# ours\nburner.example\n").unwrap();
    let file = file.display().to_string();
    let app = TestApp::spawn_with(
        backend,
        &[
            ("EGEC_DISPOSABLE_EMAIL_DOMAINS_FILE", file.as_str()),
            (
                "EGEC_DISPOSABLE_EMAIL_DOMAINS",
                "throwaway.example, spam.example",
            ),
        ],
    )
    .await;
    let (_, admin) = app.as_role(Role::Admin).await;
    for blocked in [
        "a@burner.example",
        "a@x.throwaway.example",
        "a@spam.example",
        "a@mailinator.com",
    ] {
        assert_eq!(
            problem(&app, &admin, "email", blocked).await,
            "disposable email domains are not accepted",
            "{blocked}"
        );
    }
    accepted(&app, &admin, "email", "a@example.com").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn operators_extend_the_disposable_domain_list_by_file_and_by_list_on_sqlite() {
    with_operator_blocklist(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn operators_extend_the_disposable_domain_list_by_file_and_by_list_on_postgres() {
    with_operator_blocklist(Backend::Postgres).await;
}

#[test]
fn an_unreadable_disposable_domain_file_stops_the_configuration() {
    let mut env: HashMap<String, String> = HashMap::new();
    env.insert(
        "EGEC_DISPOSABLE_EMAIL_DOMAINS_FILE".into(),
        "/nonexistent/egec/domains.txt".into(),
    );
    let Err(errors) = Config::from_source(&env) else {
        panic!("configuration accepted an unreadable file")
    };
    assert!(
        errors
            .to_string()
            .contains("EGEC_DISPOSABLE_EMAIL_DOMAINS_FILE"),
        "{errors}"
    );
}
