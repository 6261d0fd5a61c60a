//! Attachments: real type by magic bytes, size limits, encryption under the customer's key,
//! row-level visibility, and erasure making the content unrecoverable.

mod support;

use egec_domain::event::Metadata;
use egec_domain::{CustomerId, Role};
use reqwest::StatusCode;
use serde_json::{Value, json};
use support::{Backend, TestApp, json_of, multipart_body};
use uuid::Uuid;

const MIB: usize = 1024 * 1024;

/// Content that starts with a type's magic bytes, then `len - magic` bytes of a pattern.
fn file(magic: &[u8], len: usize) -> Vec<u8> {
    let mut v = magic.to_vec();
    v.extend((0..len.saturating_sub(magic.len())).map(|i| (i * 31 % 251) as u8));
    v
}

fn png() -> Vec<u8> {
    file(b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR", 2_000)
}

fn jpeg() -> Vec<u8> {
    file(b"\xFF\xD8\xFF\xE0\0\x10JFIF\0", 3_000)
}

fn pdf() -> Vec<u8> {
    let mut v = b"%PDF-1.7\n% Passport scan of Jane Attachperson\n".to_vec();
    v.extend(file(b"", 4_000));
    v
}

fn exe() -> Vec<u8> {
    file(b"MZ\x90\0\x03\0\0\0\x04\0\0\0\xFF\xFF", 1_000)
}

async fn customer(app: &TestApp, token: &str, agents: &[Uuid]) -> Uuid {
    let r = app
        .post(
            "/api/customers",
            Some(token),
            json!({ "name": "Jane Attachperson", "assigned_agent_ids": agents }),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    json_of(r).await["id"].as_str().unwrap().parse().unwrap()
}

fn upload_path(id: Uuid) -> String {
    format!("/api/customers/{id}/attachments")
}

async fn upload_ok(app: &TestApp, token: &str, id: Uuid, name: &str, bytes: &[u8]) -> Value {
    let r = app
        .upload(
            &upload_path(id),
            Some(token),
            name,
            "application/octet-stream",
            bytes,
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED, "upload of {name}");
    json_of(r).await
}

async fn error_code(r: reqwest::Response) -> (StatusCode, String) {
    let status = r.status();
    let body = json_of(r).await;
    (
        status,
        body["error"]["code"].as_str().unwrap_or("").to_owned(),
    )
}

/// Every stored attachment ciphertext (nonce ‖ ciphertext), straight from the database.
async fn raw_blobs(app: &TestApp) -> Vec<Vec<u8>> {
    match app.backend {
        Backend::Sqlite => {
            let conn = rusqlite::Connection::open(app.data_dir.join("egec.db")).unwrap();
            let mut stmt = conn
                .prepare("SELECT nonce, ciphertext FROM attachment_blobs")
                .unwrap();
            stmt.query_map([], |r| {
                let mut sealed = r.get::<_, Vec<u8>>(0)?;
                sealed.extend(r.get::<_, Vec<u8>>(1)?);
                Ok(sealed)
            })
            .unwrap()
            .map(Result::unwrap)
            .collect()
        }
        Backend::Postgres => {
            let (client, conn) =
                tokio_postgres::connect(app.database_url.as_ref().unwrap(), tokio_postgres::NoTls)
                    .await
                    .unwrap();
            tokio::spawn(conn);
            client
                .query("SELECT nonce || ciphertext FROM egec.attachment_blobs", &[])
                .await
                .unwrap()
                .iter()
                .map(|r| r.get::<_, Vec<u8>>(0))
                .collect()
        }
    }
}

/// Every stored event payload, as the database returns it.
async fn raw_payloads(app: &TestApp) -> Vec<String> {
    match app.backend {
        Backend::Sqlite => {
            let conn = rusqlite::Connection::open(app.data_dir.join("egec.db")).unwrap();
            let mut stmt = conn.prepare("SELECT payload FROM events").unwrap();
            stmt.query_map([], |r| r.get::<_, String>(0))
                .unwrap()
                .map(Result::unwrap)
                .collect()
        }
        Backend::Postgres => {
            let (client, conn) =
                tokio_postgres::connect(app.database_url.as_ref().unwrap(), tokio_postgres::NoTls)
                    .await
                    .unwrap();
            tokio::spawn(conn);
            client
                .query("SELECT payload::text FROM egec.events", &[])
                .await
                .unwrap()
                .iter()
                .map(|r| r.get::<_, String>(0))
                .collect()
        }
    }
}

/// How many key versions the subject still has in the key table.
async fn subject_key_count(app: &TestApp, subject: &str) -> i64 {
    match app.backend {
        Backend::Sqlite => {
            let conn = rusqlite::Connection::open(app.data_dir.join("egec.db")).unwrap();
            conn.query_row(
                "SELECT count(*) FROM subject_keys WHERE subject = ?1",
                [subject],
                |r| r.get(0),
            )
            .unwrap()
        }
        Backend::Postgres => {
            let (client, conn) =
                tokio_postgres::connect(app.database_url.as_ref().unwrap(), tokio_postgres::NoTls)
                    .await
                    .unwrap();
            tokio::spawn(conn);
            client
                .query_one(
                    "SELECT count(*) FROM egec.subject_keys WHERE subject = $1",
                    &[&subject],
                )
                .await
                .unwrap()
                .get(0)
        }
    }
}

both_backends!(
    png_jpeg_and_pdf_files_are_accepted_and_download_byte_identical,
    |app: TestApp| async move {
        let (_, admin) = app.as_role(Role::Admin).await;
        let id = customer(&app, &admin, &[]).await;
        for (name, bytes, mime) in [
            ("photo.png", png(), "image/png"),
            ("photo.jpg", jpeg(), "image/jpeg"),
            ("Jane passport.pdf", pdf(), "application/pdf"),
        ] {
            let a = upload_ok(&app, &admin, id, name, &bytes).await;
            assert_eq!(a["file_name"], name);
            assert_eq!(a["content_type"], mime);
            assert_eq!(a["size"], bytes.len());
            let r = app
                .get(
                    &format!("/api/attachments/{}", a["id"].as_str().unwrap()),
                    Some(&admin),
                )
                .await;
            assert_eq!(r.status(), StatusCode::OK);
            let h = r.headers().clone();
            assert_eq!(h["content-type"], mime);
            assert_eq!(h["x-content-type-options"], "nosniff");
            let disposition = h["content-disposition"].to_str().unwrap();
            assert!(
                disposition.starts_with("attachment; filename=\""),
                "{disposition}"
            );
            assert_eq!(r.bytes().await.unwrap().as_ref(), bytes.as_slice());
        }
        let list = json_of(app.get(&upload_path(id), Some(&admin)).await).await;
        let items = list["items"].as_array().unwrap();
        assert_eq!(items.len(), 3);
        assert_eq!(items[2]["file_name"], "Jane passport.pdf");
        assert_eq!(items[2]["content_type"], "application/pdf");
    }
);

both_backends!(
    a_file_whose_name_or_declared_type_lies_about_its_content_is_refused_or_typed_by_its_bytes,
    |app: TestApp| async move {
        let (_, admin) = app.as_role(Role::Admin).await;
        let id = customer(&app, &admin, &[]).await;
        let html = b"<!DOCTYPE html><html><script>alert(1)</script></html>".to_vec();
        for (name, bytes) in [
            ("photo.jpg", exe()),
            ("photo.jpg", html.clone()),
            ("scan.pdf", b"GIF89a\x01\0\x01\0\x80\0\0".to_vec()),
            ("empty.png", Vec::new()),
        ] {
            let r = app
                .upload(&upload_path(id), Some(&admin), name, "image/jpeg", &bytes)
                .await;
            assert_eq!(
                error_code(r).await,
                (
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "unsupported_media_type".to_owned()
                ),
                "{name} with {} bytes",
                bytes.len()
            );
        }
        // A real PNG declared as a PDF named .pdf is stored as what it is.
        let r = app
            .upload(
                &upload_path(id),
                Some(&admin),
                "report.pdf",
                "application/pdf",
                &png(),
            )
            .await;
        assert_eq!(r.status(), StatusCode::CREATED);
        let a = json_of(r).await;
        assert_eq!(a["content_type"], "image/png");
        let r = app
            .get(
                &format!("/api/attachments/{}", a["id"].as_str().unwrap()),
                Some(&admin),
            )
            .await;
        assert_eq!(r.headers()["content-type"], "image/png");
        // Nothing refused was stored.
        assert_eq!(raw_blobs(&app).await.len(), 1);
    }
);

both_backends!(
    a_file_over_5_mib_is_refused_with_413_and_one_of_exactly_5_mib_is_accepted,
    |app: TestApp| async move {
        let (_, admin) = app.as_role(Role::Admin).await;
        let id = customer(&app, &admin, &[]).await;
        let too_big = file(b"%PDF-1.7\n", 5 * MIB + 1);
        let r = app
            .upload(
                &upload_path(id),
                Some(&admin),
                "big.pdf",
                "application/pdf",
                &too_big,
            )
            .await;
        assert_eq!(
            error_code(r).await,
            (
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large".to_owned()
            )
        );
        let exactly = file(b"%PDF-1.7\n", 5 * MIB);
        let a = upload_ok(&app, &admin, id, "limit.pdf", &exactly).await;
        assert_eq!(a["size"], 5 * MIB);
        let r = app
            .get(
                &format!("/api/attachments/{}", a["id"].as_str().unwrap()),
                Some(&admin),
            )
            .await;
        assert_eq!(r.bytes().await.unwrap().len(), 5 * MIB);
    }
);

both_backends!(
    an_upload_body_over_10_mib_is_refused_with_413_although_json_bodies_stop_at_100_kib,
    |app: TestApp| async move {
        let (_, admin) = app.as_role(Role::Admin).await;
        let id = customer(&app, &admin, &[]).await;
        // Padding before the file pushes the body past the route's 10 MiB limit.
        let padding = vec![b'x'; 10 * MIB];
        let small = png();
        let (ct, body) = multipart_body(&[
            ("padding", None, "text/plain", &padding),
            ("file", Some("photo.png"), "image/png", &small),
        ]);
        let r = app
            .upload_raw(&upload_path(id), Some(&admin), &ct, body)
            .await;
        assert_eq!(
            error_code(r).await,
            (
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large".to_owned()
            )
        );
        // A 2 MiB file is above the JSON limit and still fine on this route.
        upload_ok(&app, &admin, id, "two.pdf", &file(b"%PDF-1.7\n", 2 * MIB)).await;
    }
);

both_backends!(
    an_upload_without_a_file_field_or_not_multipart_is_refused,
    |app: TestApp| async move {
        let (_, admin) = app.as_role(Role::Admin).await;
        let id = customer(&app, &admin, &[]).await;
        let (ct, body) = multipart_body(&[("other", None, "text/plain", b"hello")]);
        let r = app
            .upload_raw(&upload_path(id), Some(&admin), &ct, body)
            .await;
        assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(
            json_of(r).await["error"]["fields"]["file"],
            "a file is required"
        );
        let r = app
            .post(&upload_path(id), Some(&admin), json!({ "file": "x" }))
            .await;
        assert_eq!(
            error_code(r).await,
            (StatusCode::BAD_REQUEST, "bad_request".to_owned())
        );
        let r = app
            .upload(
                &format!("/api/customers/{}/attachments", Uuid::now_v7()),
                Some(&admin),
                "photo.png",
                "image/png",
                &png(),
            )
            .await;
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
    }
);

both_backends!(
    an_agent_can_neither_see_attach_to_list_nor_download_from_a_customer_not_assigned_to_them,
    |app: TestApp| async move {
        let (_, admin) = app.as_role(Role::Admin).await;
        let (agent_id, agent) = app.as_role(Role::Agent).await;
        let mine = customer(&app, &admin, &[agent_id]).await;
        let other = customer(&app, &admin, &[]).await;
        let theirs = upload_ok(&app, &admin, other, "other.png", &png()).await;
        let theirs_id = theirs["id"].as_str().unwrap();

        let r = app
            .upload(
                &upload_path(other),
                Some(&agent),
                "x.png",
                "image/png",
                &png(),
            )
            .await;
        assert_eq!(
            error_code(r).await,
            (StatusCode::NOT_FOUND, "not_found".to_owned())
        );
        let r = app.get(&upload_path(other), Some(&agent)).await;
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
        let r = app
            .get(&format!("/api/attachments/{theirs_id}"), Some(&agent))
            .await;
        assert_eq!(
            error_code(r).await,
            (StatusCode::NOT_FOUND, "not_found".to_owned())
        );
        // An unknown attachment id looks exactly the same.
        let r = app
            .get(
                &format!("/api/attachments/{}", Uuid::now_v7()),
                Some(&agent),
            )
            .await;
        assert_eq!(r.status(), StatusCode::NOT_FOUND);

        // Their own customer works end to end.
        let a = upload_ok(&app, &agent, mine, "mine.jpg", &jpeg()).await;
        let r = app
            .get(
                &format!("/api/attachments/{}", a["id"].as_str().unwrap()),
                Some(&agent),
            )
            .await;
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.bytes().await.unwrap().as_ref(), jpeg().as_slice());
        let list = json_of(app.get(&upload_path(mine), Some(&agent)).await).await;
        assert_eq!(list["items"].as_array().unwrap().len(), 1);

        // Reading is not editing: the auditor lists and downloads but never uploads.
        let (_, auditor) = app.as_role(Role::Auditor).await;
        let r = app
            .upload(
                &upload_path(other),
                Some(&auditor),
                "x.png",
                "image/png",
                &png(),
            )
            .await;
        assert_eq!(
            error_code(r).await,
            (StatusCode::FORBIDDEN, "forbidden".to_owned())
        );
        let r = app
            .get(&format!("/api/attachments/{theirs_id}"), Some(&auditor))
            .await;
        assert_eq!(r.status(), StatusCode::OK);
    }
);

both_backends!(
    contents_are_encrypted_at_rest_and_erasing_the_customer_makes_them_unrecoverable,
    |app: TestApp| async move {
        let (_, admin) = app.as_role(Role::Admin).await;
        let id = customer(&app, &admin, &[]).await;
        let content = pdf();
        let a = upload_ok(&app, &admin, id, "Jane Attachperson passport.pdf", &content).await;
        let download = format!("/api/attachments/{}", a["id"].as_str().unwrap());
        assert_eq!(
            app.get(&download, Some(&admin)).await.status(),
            StatusCode::OK
        );

        // At rest: neither the content nor the file name in clear, anywhere.
        let blobs = raw_blobs(&app).await;
        assert_eq!(blobs.len(), 1);
        let needle = b"Jane Attachperson";
        assert!(!blobs[0].windows(needle.len()).any(|w| w == needle));
        assert!(!blobs[0].windows(8).any(|w| w == &content[..8]));
        let payloads = raw_payloads(&app).await;
        assert!(
            payloads.iter().any(|p| p.contains("\"application/pdf\"")),
            "the event's facts stay readable"
        );
        assert!(
            payloads.iter().all(|p| !p.contains("passport.pdf")),
            "the file name is encrypted in the log"
        );

        let s = &app.running.state;
        let meta = Metadata::system(Uuid::now_v7(), chrono::Utc::now());
        let customer_id = CustomerId::from_uuid(id);
        let erasure = egec_commands::erase::erase_customer(&s.bus, customer_id, "art. 17", &meta)
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

        // The sealed bytes are still there, but the only key that opens them is gone.
        assert_eq!(raw_blobs(&app).await, blobs);
        assert_eq!(subject_key_count(&app, &customer_id.subject()).await, 0);
        let r = app.get(&download, Some(&admin)).await;
        assert_eq!(
            error_code(r).await,
            (StatusCode::NOT_FOUND, "not_found".to_owned())
        );
        let list = json_of(app.get(&upload_path(id), Some(&admin)).await).await;
        assert_eq!(list["items"][0]["file_name"], "[ERASED]");
        assert_eq!(list["items"][0]["size"], content.len());
        // And nothing new can be attached.
        let r = app
            .upload(
                &upload_path(id),
                Some(&admin),
                "again.png",
                "image/png",
                &png(),
            )
            .await;
        assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    }
);

both_backends!(
    an_attachment_appears_in_history_and_audit_without_its_file_name,
    |app: TestApp| async move {
        let (_, superadmin) = app.as_role(Role::Superadmin).await;
        let id = customer(&app, &superadmin, &[]).await;
        let before = json_of(
            app.get(&format!("/api/customers/{id}"), Some(&superadmin))
                .await,
        )
        .await["version"]
            .as_i64()
            .unwrap();
        upload_ok(&app, &superadmin, id, "Jane Attachperson CV.pdf", &pdf()).await;
        let after = app
            .get(&format!("/api/customers/{id}"), Some(&superadmin))
            .await;
        assert_eq!(
            after.headers()["etag"],
            format!("\"{}\"", before + 1).as_str()
        );

        let history = json_of(
            app.get(&format!("/api/customers/{id}/history"), Some(&superadmin))
                .await,
        )
        .await;
        let last = history["items"].as_array().unwrap().last().unwrap().clone();
        assert_eq!(last["action"], "ATTACHMENT_ADDED");
        assert_eq!(last["version"], before + 1);
        let added = &last["changes"]["attachments"]["to"];
        assert_eq!(added["file_name"], "Jane Attachperson CV.pdf");
        assert_eq!(added["content_type"], "application/pdf");

        let audit = json_of(
            app.get(
                &format!("/api/audit?entity_id={id}&action=ATTACHMENT_ADDED"),
                Some(&superadmin),
            )
            .await,
        )
        .await;
        let items = audit["items"].as_array().unwrap();
        assert_eq!(items.len(), 1, "{audit}");
        assert_eq!(items[0]["entity_type"], "customer");
        let description = items[0]["description"].as_str().unwrap();
        assert!(description.contains("application/pdf"), "{description}");
        assert!(!description.contains("Attachperson"), "{description}");
    }
);

both_backends!(
    a_retried_upload_with_the_same_idempotency_key_attaches_the_file_once,
    |app: TestApp| async move {
        let (_, admin) = app.as_role(Role::Admin).await;
        let id = customer(&app, &admin, &[]).await;
        let key = Uuid::now_v7().to_string();
        let mut ids = Vec::new();
        for _ in 0..2 {
            let (ct, body) = multipart_body(&[("file", Some("a.png"), "image/png", &png())]);
            let r = app
                .client
                .post(format!("{}{}", app.base, upload_path(id)))
                .bearer_auth(&admin)
                .header("content-type", ct)
                .header("idempotency-key", &key)
                .body(body)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), StatusCode::CREATED);
            ids.push(json_of(r).await["id"].clone());
        }
        assert_eq!(ids[0], ids[1]);
        let list = json_of(app.get(&upload_path(id), Some(&admin)).await).await;
        assert_eq!(list["items"].as_array().unwrap().len(), 1);
        let r = app
            .get(
                &format!("/api/attachments/{}", ids[0].as_str().unwrap()),
                Some(&admin),
            )
            .await;
        assert_eq!(r.bytes().await.unwrap().as_ref(), png().as_slice());
    }
);

both_backends!(
    a_deleted_customer_takes_no_attachment_and_hides_its_files_from_everyone_but_the_superadmin,
    |app: TestApp| async move {
        let (_, superadmin) = app.as_role(Role::Superadmin).await;
        let (_, admin) = app.as_role(Role::Admin).await;
        let id = customer(&app, &admin, &[]).await;
        let a = upload_ok(&app, &admin, id, "before.png", &png()).await;
        let download = format!("/api/attachments/{}", a["id"].as_str().unwrap());

        let s = &app.running.state;
        let customer_id = CustomerId::from_uuid(id);
        let meta = Metadata::system(Uuid::now_v7(), chrono::Utc::now());
        let done = s
            .bus
            .execute::<egec_domain::aggregate::CustomerAggregate>(
                &customer_id.stream_id(),
                &customer_id.subject(),
                None,
                Uuid::now_v7(),
                &meta,
                egec_domain::customer::CustomerCommand::Delete,
            )
            .await
            .unwrap();
        s.wait_for_write(done.position).await;

        for token in [&superadmin, &admin] {
            let r = app
                .upload(
                    &upload_path(id),
                    Some(token),
                    "after.png",
                    "image/png",
                    &png(),
                )
                .await;
            assert_eq!(r.status(), StatusCode::NOT_FOUND);
        }
        assert_eq!(
            app.get(&download, Some(&admin)).await.status(),
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            app.get(&download, Some(&superadmin)).await.status(),
            StatusCode::OK
        );
        assert_eq!(
            raw_blobs(&app).await.len(),
            1,
            "no blob stored for a refused upload"
        );
    }
);
