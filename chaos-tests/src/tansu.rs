//! A separate Kafka-protocol broker process for end-to-end tests: `tansu` (an Apache Kafka
//! compatible broker in Rust, from crates.io) with in-memory storage on a loopback port.
//!
//! `.ci/run` installs it once into `~/.cache/eventgate-ci/tansu` (`cargo install tansu --locked
//! --features dynostore`); `EVENTGATE_TANSU` names another binary.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// Where the tansu binary is: `EVENTGATE_TANSU`, the `.ci/run` cache, or `tansu` on the PATH.
pub fn tansu_bin() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("EVENTGATE_TANSU") {
        return Some(PathBuf::from(path));
    }
    if let Some(home) = std::env::var_os("HOME") {
        let cached = PathBuf::from(home).join(".cache/eventgate-ci/tansu/bin/tansu");
        if cached.is_file() {
            return Some(cached);
        }
    }
    let on_path = Command::new("sh")
        .args(["-c", "command -v tansu"])
        .output()
        .ok()
        .filter(|o| o.status.success())?;
    Some(PathBuf::from(
        String::from_utf8_lossy(&on_path.stdout).trim(),
    ))
}

/// A running tansu broker, killed on drop.
#[derive(Debug)]
pub struct Tansu {
    child: Child,
    pub bootstrap: String,
}

impl Tansu {
    /// The broker's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Starts tansu on a free port of 127.0.0.1 and waits (bounded) until it accepts
    /// connections.
    pub async fn start() -> anyhow::Result<Self> {
        let bin = tansu_bin().ok_or_else(|| {
            anyhow::anyhow!(
                "no tansu binary: run .ci/run (which installs it), or `cargo install tansu --locked --features dynostore`, or set EVENTGATE_TANSU"
            )
        })?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let url = format!("tcp://127.0.0.1:{port}");
        let child = Command::new(&bin)
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
            ])
            .args(["--storage-engine", "memory://tansu/"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| anyhow::anyhow!("{}: {e}", bin.display()))?;
        let broker = Self {
            child,
            bootstrap: format!("127.0.0.1:{port}"),
        };
        crate::wait::until(
            "tansu to accept connections",
            Duration::from_secs(20),
            Duration::from_millis(20),
            || async {
                tokio::net::TcpStream::connect(("127.0.0.1", port))
                    .await
                    .ok()
            },
        )
        .await?;
        Ok(broker)
    }

    /// SIGKILLs the broker.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Tansu {
    fn drop(&mut self) {
        self.kill();
    }
}
