//! CNCF Distribution (the Debian package `docker-registry`) on a loopback port over a
//! temporary directory, without auth: the peer registry replication tests copy to and from.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tempfile::TempDir;

/// Where the Debian package installs the registry.
pub const DISTRIBUTION: &str = "/usr/bin/docker-registry";

/// A running Distribution, killed when dropped.
#[derive(Debug)]
pub struct Distribution {
    child: Child,
    pub url: String,
    pub port: u16,
    log: PathBuf,
    _dir: TempDir,
}

impl Drop for Distribution {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Distribution {
    /// Starts one on a free port.
    pub async fn start() -> Self {
        Self::start_on(free_port()).await
    }

    /// Starts one on `port` (a port a test reserved, to bring a remote up late).
    pub async fn start_on(port: u16) -> Self {
        assert!(
            Path::new(DISTRIBUTION).exists(),
            "{DISTRIBUTION} is missing: install the Debian package docker-registry (CNCF \
             Distribution) to run this test"
        );
        let dir = tempfile::tempdir().expect("a temporary directory");
        let root = dir.path().join("storage");
        let config = dir.path().join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\n\
                 log:\n  level: warn\n\
                 storage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n\
                 http:\n  addr: 127.0.0.1:{port}\n",
                root.display()
            ),
        )
        .expect("the configuration is written");
        let log = dir.path().join("registry.log");
        let log_file = std::fs::File::create(&log).expect("a log file");
        let child = Command::new(DISTRIBUTION)
            .arg("serve")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().expect("the log file twice"))
            .stderr(log_file)
            .spawn()
            .unwrap_or_else(|e| panic!("{DISTRIBUTION} does not start: {e}"));
        let mut registry = Self {
            child,
            url: format!("http://127.0.0.1:{port}"),
            port,
            log,
            _dir: dir,
        };
        registry.wait_until_ready().await;
        registry
    }

    /// Polls `GET /v2/` until it answers 200, for up to 30 s.
    async fn wait_until_ready(&mut self) {
        let client = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(2))
            .build()
            .expect("a client");
        for _ in 0..300 {
            if let Some(status) = self.child.try_wait().expect("the process can be polled") {
                panic!(
                    "{DISTRIBUTION} exited with {status}: {}",
                    std::fs::read_to_string(&self.log).unwrap_or_default()
                );
            }
            let answer = client.get(format!("{}/v2/", self.url)).send().await;
            if answer.is_ok_and(|response| response.status().is_success()) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!(
            "{DISTRIBUTION} did not answer GET /v2/ within 30 s: {}",
            std::fs::read_to_string(&self.log).unwrap_or_default()
        );
    }
}

/// A loopback port nothing listens on (right now).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("a loopback port")
        .local_addr()
        .expect("an address")
        .port()
}
