//! A private `redis-server` on an ephemeral loopback port, for tests that take
//! Redis away and bring it back (the shared one at 127.0.0.1:6379 is never
//! stopped: other tests use it), paused (SIGSTOP) for a Redis that answers
//! nothing. No persistence; killed on drop.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{free_port, print_log_if_panicking};

pub struct RedisServer {
    port: u16,
    child: Option<Child>,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl RedisServer {
    /// Starts `redis-server` (from `PATH`) and waits until it answers PING.
    pub async fn start() -> Self {
        let dir = tempfile::tempdir().expect("create a temporary directory");
        let mut server = Self {
            port: free_port(),
            child: None,
            log: dir.path().join("redis.log"),
            _dir: dir,
        };
        server.restart().await;
        server
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kills the server (its data is gone with it).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // A paused server dies of SIGKILL all the same; CONT first lets
            // it go cleanly when it was only stopped.
            let _ = Command::new("kill")
                .args(["-CONT", &child.id().to_string()])
                .status();
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Freezes the server (SIGSTOP): connections stay open and new ones are
    /// accepted by the kernel, but nothing is answered — a slow Redis, not a
    /// gone one.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// Lets a paused server run again (SIGCONT); it answers what queued up.
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        let child = self.child.as_ref().expect("redis-server is running");
        let status = Command::new("kill")
            .args([signal, &child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill {signal} redis-server");
    }

    /// Starts it again on the same port and waits until it answers PING.
    pub async fn restart(&mut self) {
        self.stop();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("open redis.log");
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &self.port.to_string()])
            .args(["--save", "", "--appendonly", "no", "--protected-mode", "no"])
            .current_dir(self._dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone the log handle"))
            .stderr(log)
            .spawn()
            .expect("spawn redis-server (is it installed?)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if self.ping().await {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "redis-server never answered PING"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn ping(&self) -> bool {
        let Ok(client) = redis::Client::open(self.url()) else {
            return false;
        };
        let Ok(mut connection) = client.get_multiplexed_async_connection().await else {
            return false;
        };
        redis::cmd("PING")
            .query_async::<String>(&mut connection)
            .await
            .is_ok()
    }

    /// A connection to it.
    pub async fn connection(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(self.url())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .expect("connect to the private redis-server")
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
        print_log_if_panicking("redis-server", &self.log);
    }
}
