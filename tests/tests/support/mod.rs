//! Spawns the real application on port 0 with a fresh store, and talks to it over HTTP.

#![allow(dead_code)]

pub mod own_server;

use egec_api::app::Running;
use egec_api::config::Config;
use egec_domain::Role;
use egec_domain::event::Metadata;
use reqwest::{Client, Method, Response, StatusCode};
use secrecy::SecretString;
use serde_json::{Value, json};
use std::collections::HashMap;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Keeps the store alive (temp dir or database) for as long as the test holds it.
pub enum StoreGuard {
    Sqlite(tempfile::TempDir),
    Postgres(egec_commands::testing::PgDropGuard, tempfile::TempDir),
}

pub struct TestApp {
    pub base: String,
    pub running: Running,
    pub client: Client,
    pub backend: Backend,
    pub database_url: Option<String>,
    pub data_dir: std::path::PathBuf,
    pub _store: StoreGuard,
    /// The configuration the app was started with.
    pub env: HashMap<String, String>,
}

pub const PASSWORD: &str = "violet tractor harbour 1987 spoon";

/// The token signing secret of every test app (tests that forge tokens need it).
pub const JWT_SECRET: &str = "test-secret-test-secret-test-secret!";

/// As a value in `spawn_with`'s extra settings: leave the variable unset (its default).
pub const UNSET: &str = "<unset>";

impl TestApp {
    pub async fn spawn(backend: Backend) -> TestApp {
        Self::spawn_with(backend, &[]).await
    }

    /// Spawns with extra configuration (e.g. short session timeouts).
    pub async fn spawn_with(backend: Backend, extra: &[(&str, &str)]) -> TestApp {
        Self::spawn_inner(backend, None, extra).await
    }

    /// Spawns on a PostgreSQL database the test prepared (and connects with the URL given,
    /// e.g. as another login role); the guard drops the database with the app.
    pub async fn spawn_on_postgres(
        url: String,
        guard: egec_commands::testing::PgDropGuard,
        extra: &[(&str, &str)],
    ) -> TestApp {
        Self::spawn_inner(Backend::Postgres, Some((url, guard)), extra).await
    }

    async fn spawn_inner(
        backend: Backend,
        mut database: Option<(String, egec_commands::testing::PgDropGuard)>,
        extra: &[(&str, &str)],
    ) -> TestApp {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut env: HashMap<String, String> = HashMap::new();
        env.insert("EGEC_LISTEN".into(), "127.0.0.1:0".into());
        env.insert("EGEC_DATA_DIR".into(), dir.path().display().to_string());
        env.insert("EGEC_JWT_SECRET".into(), JWT_SECRET.into());
        env.insert("EGEC_MASTER_KEY".into(), "11".repeat(32));
        env.insert("EGEC_PHONE_DEFAULT_REGION".into(), "GB".into());
        env.insert("EGEC_DB_POOL_SIZE".into(), "8".into());
        // Rate limits out of the way of tests that log in many times from one address; the
        // rate-limit tests set their own (production defaults are strict, see rate_limit).
        for key in [
            "EGEC_RATE_LIMIT_API_PER_MINUTE",
            "EGEC_RATE_LIMIT_LOGIN_IP_PER_MINUTE",
            "EGEC_RATE_LIMIT_LOGIN_ACCOUNT_PER_MINUTE",
        ] {
            env.insert(key.into(), "1000000".into());
        }
        // The suites that use superadmin and admin tokens directly run without the default
        // two-factor requirement; tests of the requirement pass `EGEC_MFA_REQUIRED_ROLES`
        // (e.g. `superadmin,admin`, the default) through `spawn_with`.
        env.insert("EGEC_MFA_REQUIRED_ROLES".into(), String::new());
        for (k, v) in extra {
            env.insert((*k).to_owned(), (*v).to_owned());
        }
        env.retain(|_, v| v != UNSET);
        let data_dir = dir.path().to_path_buf();
        let (guard, url) = match backend {
            Backend::Sqlite => (StoreGuard::Sqlite(dir), None),
            Backend::Postgres => {
                let (url, guard) = match database.take() {
                    Some(given) => given,
                    None => egec_commands::testing::fresh_postgres().await,
                };
                env.insert("DATABASE_URL".into(), url.clone());
                (StoreGuard::Postgres(guard, dir), Some(url))
            }
        };
        let config = Config::from_source(&env).expect("test config is valid");
        let started_with = env.clone();
        let running = egec_api::app::start(config).await.expect("app starts");
        TestApp {
            base: format!("http://{}", running.addr),
            running,
            client: Client::new(),
            backend,
            database_url: url,
            data_dir,
            _store: guard,
            env: started_with,
        }
    }

    /// A second node on the same PostgreSQL database (same secrets, its own data
    /// directory and caches), as another `egec serve` process would be.
    pub async fn second_node(&self) -> (TestApp2, tempfile::TempDir) {
        assert_eq!(
            self.backend,
            Backend::Postgres,
            "nodes share a PostgreSQL store"
        );
        let dir = tempfile::tempdir().expect("temp dir");
        let mut env = self.env.clone();
        env.insert("EGEC_DATA_DIR".into(), dir.path().display().to_string());
        let config = Config::from_source(&env).expect("test config is valid");
        let running = egec_api::app::start(config)
            .await
            .expect("second node starts");
        (
            TestApp2 {
                base: format!("http://{}", running.addr),
                running,
            },
            dir,
        )
    }

    /// Waits until every projection has applied the whole log.
    pub async fn caught_up(&self) {
        let head = self
            .running
            .state
            .log
            .head()
            .await
            .expect("log head")
            .position;
        assert!(
            self.running
                .state
                .runner
                .wait_for(head, std::time::Duration::from_secs(10))
                .await,
            "the projections caught up with the log"
        );
    }

    /// Creates a staff user the way `egec user create` does; answers the user id.
    pub async fn user(&self, email: &str, role: Role) -> uuid::Uuid {
        let s = &self.running.state;
        let meta = Metadata::system(uuid::Uuid::now_v7(), chrono::Utc::now());
        let (id, position) = egec_api::users::create_user(
            &s.bus,
            s.read(),
            &s.passwords,
            egec_api::users::NewUser {
                email,
                name: "Test User",
                role,
                password: &SecretString::from(PASSWORD.to_owned()),
                policy: egec_domain::password_policy::PasswordPolicy::Nist,
            },
            &meta,
        )
        .await
        .expect("user created");
        assert!(
            s.runner
                .wait_for(position, std::time::Duration::from_secs(10))
                .await
        );
        id.as_uuid()
    }

    pub async fn login(&self, email: &str) -> String {
        let r = self
            .post(
                "/api/auth/login",
                None,
                json!({ "email": email, "password": PASSWORD }),
            )
            .await;
        assert_eq!(r.status(), StatusCode::OK);
        let body: Value = r.json().await.expect("json");
        body["token"].as_str().expect("token").to_owned()
    }

    /// The status of `GET /api/auth/me` with a token: whether the token works.
    pub async fn me_status(&self, token: &str) -> StatusCode {
        self.get("/api/auth/me", Some(token)).await.status()
    }

    /// A user of the role, logged in: answers (user id, token).
    pub async fn as_role(&self, role: Role) -> (uuid::Uuid, String) {
        let email = format!(
            "{}-{}@egec.example",
            role.as_str(),
            uuid::Uuid::now_v7().simple()
        );
        let id = self.user(&email, role).await;
        (id, self.login(&email).await)
    }

    pub async fn request(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Response {
        let mut r = self
            .client
            .request(method, format!("{}{}", self.base, path));
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        if let Some(b) = body {
            r = r.json(&b);
        }
        r.send().await.expect("request sent")
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> Response {
        self.request(Method::GET, path, token, None).await
    }

    pub async fn post(&self, path: &str, token: Option<&str>, body: Value) -> Response {
        self.request(Method::POST, path, token, Some(body)).await
    }

    pub async fn patch(&self, path: &str, token: Option<&str>, body: Value) -> Response {
        self.request(Method::PATCH, path, token, Some(body)).await
    }
}

/// A second node started by [`TestApp::second_node`].
pub struct TestApp2 {
    pub base: String,
    pub running: Running,
}

pub async fn json_of(r: Response) -> Value {
    r.json().await.expect("json body")
}

/// Runs the same async test body on both backends, as two test functions; optionally with
/// extra configuration: `both_backends!(name, env = [("KEY", "value")], body)`.
#[macro_export]
macro_rules! both_backends {
    ($name:ident, env = [$(($k:expr, $v:expr)),* $(,)?], $body:expr) => {
        mod $name {
            use super::*;
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn on_sqlite() {
                let env: &[(&str, &str)] = &[$(($k, $v)),*];
                ($body)(support::TestApp::spawn_with(support::Backend::Sqlite, env).await).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn on_postgres() {
                let env: &[(&str, &str)] = &[$(($k, $v)),*];
                ($body)(support::TestApp::spawn_with(support::Backend::Postgres, env).await)
                    .await;
            }
        }
    };
    ($name:ident, $body:expr) => {
        mod $name {
            use super::*;
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn on_sqlite() {
                ($body)(support::TestApp::spawn(support::Backend::Sqlite).await).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn on_postgres() {
                ($body)(support::TestApp::spawn(support::Backend::Postgres).await).await;
            }
        }
    };
}

/// A `multipart/form-data` body with the given parts (name, file name, content type, bytes)
/// and its `Content-Type` header value, built by hand so the declared type is whatever the
/// test says (uploads must ignore it).
pub fn multipart_body(parts: &[(&str, Option<&str>, &str, &[u8])]) -> (String, Vec<u8>) {
    let boundary = format!("egec-test-{}", uuid::Uuid::now_v7().simple());
    let mut body = Vec::new();
    for (name, file_name, content_type, bytes) in parts {
        body.extend_from_slice(format!("--{boundary}\r\n").as_bytes());
        let disposition = match file_name {
            Some(f) => format!("form-data; name=\"{name}\"; filename=\"{f}\""),
            None => format!("form-data; name=\"{name}\""),
        };
        body.extend_from_slice(format!("Content-Disposition: {disposition}\r\n").as_bytes());
        body.extend_from_slice(format!("Content-Type: {content_type}\r\n\r\n").as_bytes());
        body.extend_from_slice(bytes);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

impl TestApp {
    /// Uploads one file as the multipart field `file` to `POST <path>`.
    pub async fn upload(
        &self,
        path: &str,
        token: Option<&str>,
        file_name: &str,
        declared_type: &str,
        bytes: &[u8],
    ) -> Response {
        let (content_type, body) =
            multipart_body(&[("file", Some(file_name), declared_type, bytes)]);
        self.upload_raw(path, token, &content_type, body).await
    }

    /// Sends a hand-made body with its `Content-Type` to `POST <path>`.
    pub async fn upload_raw(
        &self,
        path: &str,
        token: Option<&str>,
        content_type: &str,
        body: Vec<u8>,
    ) -> Response {
        let mut r = self
            .client
            .post(format!("{}{}", self.base, path))
            .header("content-type", content_type)
            .body(body);
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        r.send().await.expect("request sent")
    }
}
