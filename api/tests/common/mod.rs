//! Drives the real `egec` binary: configuration through the environment, a fresh store per
//! test, the server as a child process that can be killed.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const PASSWORD: &str = "quiet lantern orchard 2291 moss";

pub struct Store {
    pub dir: tempfile::TempDir,
    pub database_url: Option<String>,
    _pg: Option<egec_commands::testing::PgDropGuard>,
}

impl Store {
    pub async fn sqlite() -> Store {
        Store {
            dir: tempfile::tempdir().unwrap(),
            database_url: None,
            _pg: None,
        }
    }

    pub async fn postgres() -> Store {
        let (url, guard) = egec_commands::testing::fresh_postgres().await;
        Store {
            dir: tempfile::tempdir().unwrap(),
            database_url: Some(url),
            _pg: Some(guard),
        }
    }

    pub fn egec(&self) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_egec"));
        c.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("EGEC_DATA_DIR", self.dir.path())
            .env("EGEC_MASTER_KEY", "22".repeat(32))
            .env("EGEC_JWT_SECRET", "cli-test-secret-cli-test-secret-xx")
            .env("RUST_LOG", "warn")
            // These tests act as a superadmin without enrolling in two-factor authentication.
            .env("EGEC_MFA_REQUIRED_ROLES", "")
            .current_dir(self.dir.path());
        if let Some(url) = &self.database_url {
            c.env("DATABASE_URL", url);
        }
        c
    }

    pub fn run(&self, args: &[&str], stdin: Option<&str>) -> Output {
        let mut child = self
            .egec()
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("egec starts");
        if let Some(input) = stdin {
            child
                .stdin
                .take()
                .unwrap()
                .write_all(input.as_bytes())
                .unwrap();
        }
        drop(child.stdin.take());
        child.wait_with_output().unwrap()
    }

    pub fn create_user(&self, email: &str, role: &str) -> String {
        let out = self.run(
            &[
                "user",
                "create",
                "--email",
                email,
                "--name",
                "Cli User",
                "--role",
                role,
                "--password-stdin",
            ],
            Some(PASSWORD),
        );
        assert!(
            out.status.success(),
            "user create failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    }

    /// Starts `egec serve` on a free port and waits until it listens.
    pub fn serve(&self) -> Server {
        self.serve_with(&[])
    }

    /// [`Store::serve`] with extra environment variables.
    pub fn serve_with(&self, env: &[(&str, &str)]) -> Server {
        let mut command = self.egec();
        // Rate limits out of the way, as `tests/support` does for the in-process apps: the
        // servers here carry write loads and read back everything they acknowledged, from one
        // user (on a fast machine the leader handover test acknowledged 688 writes and met
        // 429 reading them back). Rate limits have tests of their own; a caller's `env` can
        // still set them.
        for key in [
            "EGEC_RATE_LIMIT_API_PER_MINUTE",
            "EGEC_RATE_LIMIT_LOGIN_IP_PER_MINUTE",
            "EGEC_RATE_LIMIT_LOGIN_ACCOUNT_PER_MINUTE",
        ] {
            command.env(key, "1000000");
        }
        command.envs(env.iter().copied());
        let mut child = command
            .args(["serve", "--listen", "127.0.0.1:0"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("serve starts");
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(addr) = line.strip_prefix("egec listening on ") {
                    let _ = tx.send(addr.to_owned());
                }
            }
        });
        let base = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("server announces its address");
        Server { child, base }
    }
}

pub struct Server {
    pub child: Child,
    pub base: String,
}

impl Server {
    /// SIGKILL: no shutdown code runs, as in a power cut of the process.
    pub fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    pub async fn wait_ready(&self, client: &reqwest::Client) {
        let start = Instant::now();
        loop {
            if let Ok(r) = client.get(format!("{}/readyz", self.base)).send().await
                && r.status() == 200
            {
                return;
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "server never became ready"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub async fn login(client: &reqwest::Client, base: &str, email: &str) -> String {
    let r: serde_json::Value = client
        .post(format!("{base}/api/auth/login"))
        .json(&serde_json::json!({ "email": email, "password": PASSWORD }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    r["token"].as_str().expect("login token").to_owned()
}
