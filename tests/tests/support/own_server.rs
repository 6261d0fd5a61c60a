//! A server process of the test's own (NATS, NATS with JetStream, Redis) on a free port, for
//! tests that stop and restart it: `stop` kills it (SIGKILL, as a crash would), `restart`
//! starts it again on the same port (and the same JetStream store), and dropping it kills it.

use std::ffi::OsString;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct OwnServer {
    program: &'static str,
    args: Vec<OsString>,
    pub port: u16,
    child: Option<Child>,
    /// The JetStream store, kept across restarts.
    _dir: Option<tempfile::TempDir>,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

impl OwnServer {
    /// Core NATS, no JetStream.
    pub fn nats() -> OwnServer {
        let port = free_port();
        Self::start("/usr/sbin/nats-server", port, nats_args(port), None)
    }

    /// NATS with JetStream, its store in a temp dir that outlives restarts.
    pub fn nats_jetstream() -> OwnServer {
        let port = free_port();
        let dir = tempfile::tempdir().expect("temp dir");
        let mut args = nats_args(port);
        args.extend(["-js".into(), "-sd".into(), dir.path().into()]);
        Self::start("/usr/sbin/nats-server", port, args, Some(dir))
    }

    /// Redis, keeping nothing on disk.
    pub fn redis() -> OwnServer {
        let port = free_port();
        let args = [
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ]
        .map(OsString::from)
        .to_vec();
        Self::start("redis-server", port, args, None)
    }

    fn start(
        program: &'static str,
        port: u16,
        args: Vec<OsString>,
        dir: Option<tempfile::TempDir>,
    ) -> OwnServer {
        let mut server = OwnServer {
            program,
            args,
            port,
            child: None,
            _dir: dir,
        };
        server.restart();
        server
    }

    /// `scheme://127.0.0.1:<port>`.
    pub fn url(&self, scheme: &str) -> String {
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// Starts the server (again) on the same port and waits until it listens.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "{} is already running", self.program);
        let child = Command::new(self.program)
            .args(&self.args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "{} does not start ({e}): it is installed on these machines (DESIGN.md), \
                     and these tests never skip",
                    self.program
                )
            });
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(15);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "{} did not listen on port {}",
                self.program,
                self.port
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Kills the server (SIGKILL), as a crash would.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn nats_args(port: u16) -> Vec<OsString> {
    ["-a", "127.0.0.1", "-p", &port.to_string()]
        .map(OsString::from)
        .to_vec()
}

impl Drop for OwnServer {
    fn drop(&mut self) {
        self.stop();
    }
}
