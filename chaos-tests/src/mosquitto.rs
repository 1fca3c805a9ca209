//! A Mosquitto MQTT broker process for interop tests and benchmarks (Debian's `mosquitto`,
//! installed by `.ci/run`), on loopback ports with persistence in its own directory, so that
//! it can be stopped and started again with its sessions and queued messages.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::Context;

/// The mosquitto binary: `EVENTGATE_MOSQUITTO`, the PATH, or `/usr/sbin/mosquitto`.
pub fn mosquitto_bin() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("EVENTGATE_MOSQUITTO") {
        return Some(PathBuf::from(path));
    }
    crate::find_program("mosquitto").or_else(|| {
        let sbin = PathBuf::from("/usr/sbin/mosquitto");
        sbin.is_file().then_some(sbin)
    })
}

/// A running Mosquitto, killed on drop.
#[derive(Debug)]
pub struct Mosquitto {
    child: Option<Child>,
    dir: PathBuf,
    /// The MQTT (TCP) port on 127.0.0.1.
    pub port: u16,
    /// Mosquitto's own WebSocket listener on 127.0.0.1 (for side-by-side benchmarks).
    pub ws_port: u16,
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

impl Mosquitto {
    /// Starts Mosquitto with its configuration and data in `dir` and waits (bounded) until it
    /// accepts connections. No limit on queued messages per offline session: WebSub
    /// subscriptions rely on the broker holding everything until it is acknowledged.
    pub async fn start(dir: &Path) -> anyhow::Result<Self> {
        let mut broker = Self {
            child: None,
            dir: dir.to_owned(),
            port: free_port()?,
            ws_port: free_port()?,
        };
        std::fs::create_dir_all(dir)?;
        let config = format!(
            // `user root`: started as root (CI), Mosquitto would otherwise switch to its own
            // user, who cannot write our directory; ignored when not root.
            "user root\n\
             listener {port} 127.0.0.1\n\
             listener {ws} 127.0.0.1\n\
             protocol websockets\n\
             allow_anonymous true\n\
             persistence true\n\
             persistence_location {data}/\n\
             max_queued_messages 0\n\
             max_inflight_messages 100\n\
             set_tcp_nodelay true\n\
             log_dest file {data}/mosquitto.log\n\
             log_type error\n\
             log_type warning\n\
             log_type notice\n",
            port = broker.port,
            ws = broker.ws_port,
            data = dir.display(),
        );
        std::fs::write(dir.join("mosquitto.conf"), config)?;
        broker.run().await?;
        Ok(broker)
    }

    async fn run(&mut self) -> anyhow::Result<()> {
        let bin = mosquitto_bin().ok_or_else(|| {
            anyhow::anyhow!("no mosquitto binary: run .ci/run (which installs it) or `apt-get install mosquitto`, or set EVENTGATE_MOSQUITTO")
        })?;
        let child = Command::new(&bin)
            .arg("-c")
            .arg(self.dir.join("mosquitto.conf"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| bin.display().to_string())?;
        self.child = Some(child);
        let port = self.port;
        crate::wait::until(
            "mosquitto to accept connections",
            Duration::from_secs(20),
            Duration::from_millis(20),
            || async {
                tokio::net::TcpStream::connect(("127.0.0.1", port))
                    .await
                    .ok()
            },
        )
        .await?;
        Ok(())
    }

    /// The broker's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// `host:port` of the MQTT listener.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Stops the broker with SIGTERM (it saves its sessions and queued messages) and waits.
    pub fn stop(&mut self) -> anyhow::Result<()> {
        if let Some(mut child) = self.child.take() {
            let pid = child.id().to_string();
            Command::new("kill").args(["-TERM", &pid]).status()?;
            child.wait()?;
        }
        Ok(())
    }

    /// Starts the stopped broker again on the same ports and data.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.stop()?;
        self.run().await
    }

    /// Mosquitto's log, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("mosquitto.log")).unwrap_or_default()
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
