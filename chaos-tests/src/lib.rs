//! # eventgate-chaos-tests
//!
//! Clusters of real `eventgate` processes on loopback addresses, and the faults to throw at
//! them: SIGKILL, SIGTERM, restart on the same data directory. Tests live in `tests/`:
//! `tests/process/` drives processes, `tests/inprocess/` drives Raft nodes over the in-process
//! fault router of `eventgate-raft-store`.
//!
//! Every node of a [`ProcessCluster`] gets its own loopback address (127.0.0.x) and free ports,
//! its own data directory in a temporary directory, and a certificate from a cluster CA made with
//! `eventgate certs`. Waits poll with deadlines ([`wait::until`]).
//!
//! [`compose::Compose`] drives the docker-compose cluster of `docker/` (containers behind a
//! load balancer) for `tests/containers.rs`, which `.ci/run` runs when Docker is available.

pub mod compose;
pub mod inprocess;
pub mod mosquitto;
pub mod sse;
pub mod subscriber;
pub mod tansu;
pub mod wait;

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use anyhow::{bail, Context};
use serde_json::Value;
use tokio::time::Instant;

/// Resident memory of process `pid` in KiB, from `/proc` (0 when it is gone).
pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// The full path of program `name` on the PATH, if it is there.
pub fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

/// What a WebSub test callback answers to a verification `GET`: the `hub.challenge` of its
/// query (empty when absent).
pub fn websub_challenge(query: Option<&str>) -> String {
    form_urlencoded::parse(query.unwrap_or_default().as_bytes())
        .find(|(k, _)| k == "hub.challenge")
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

/// Path of the `eventgate` binary: `$EVENTGATE_BIN`, or `target/<profile>/eventgate` next to
/// the running test or binary (built by `cargo test --workspace`).
pub fn eventgate_bin() -> PathBuf {
    if let Some(path) = std::env::var_os("EVENTGATE_BIN") {
        return PathBuf::from(path);
    }
    // A test runs from target/<profile>/deps/, a binary from target/<profile>/.
    let exe = std::env::current_exe().expect("own executable path");
    let dir = exe.parent().expect("executable in a directory");
    let beside = dir.join("eventgate");
    if beside.is_file() {
        return beside;
    }
    dir.parent().unwrap_or(dir).join("eventgate")
}

/// Initialises test logging once.
pub fn init_logging() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,openraft=warn".into()),
        )
        .with_test_writer()
        .try_init();
}

static NEXT_HOST: AtomicU32 = AtomicU32::new(0);

/// One process cluster at a time per test binary: the machines this runs on have two cores,
/// and several clusters electing at once would measure the scheduler, not eventgate.
static CLUSTER_PERMITS: std::sync::LazyLock<std::sync::Arc<tokio::sync::Semaphore>> =
    std::sync::LazyLock::new(|| std::sync::Arc::new(tokio::sync::Semaphore::new(1)));

/// A loopback address not used by another cluster of this test process: 127.<pid-derived>.x.y.
fn next_loopback_ip() -> String {
    let n = NEXT_HOST.fetch_add(1, Ordering::Relaxed);
    let pid = std::process::id();
    format!(
        "127.{}.{}.{}",
        1 + pid % 250,
        1 + (n / 250) % 250,
        1 + n % 250
    )
}

fn free_ports(ip: &str) -> anyhow::Result<(u16, u16)> {
    let tcp = TcpListener::bind((ip, 0)).with_context(|| format!("bind tcp on {ip}"))?;
    let http_port = tcp.local_addr()?.port();
    let udp = UdpSocket::bind((ip, 0)).with_context(|| format!("bind udp on {ip}"))?;
    let cluster_port = udp.local_addr()?.port();
    Ok((http_port, cluster_port))
}

/// Options of a process cluster.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    pub nodes: u64,
    /// Extra TOML appended under `[raft]`.
    pub raft_toml: String,
    pub write_timeout: Duration,
    /// Extra TOML tables appended to every node's configuration (`[broker]`, `[topics]` …).
    pub extra_toml: String,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        Self {
            nodes: 3,
            raft_toml: String::new(),
            write_timeout: Duration::from_secs(3),
            extra_toml: String::new(),
        }
    }
}

/// One `eventgate` process of a cluster.
#[derive(Debug)]
pub struct NodeProc {
    pub id: u64,
    pub http: SocketAddr,
    pub cluster: SocketAddr,
    pub config: PathBuf,
    pub log: PathBuf,
    child: Option<Child>,
}

impl NodeProc {
    pub fn base_url(&self) -> String {
        format!("http://{}", self.http)
    }

    pub fn is_running(&mut self) -> bool {
        match &mut self.child {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Resident memory of the process in KiB (0 when it is not running).
    pub fn rss_kib(&self) -> u64 {
        self.pid().map_or(0, rss_kib)
    }

    /// The node's log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// A cluster of `eventgate` processes.
#[derive(Debug)]
pub struct ProcessCluster {
    pub dir: tempfile::TempDir,
    pub nodes: BTreeMap<u64, NodeProc>,
    bin: PathBuf,
    http: reqwest::Client,
    _permit: tokio::sync::OwnedSemaphorePermit,
}

impl ProcessCluster {
    /// Makes certificates, starts node 1 (which initializes the cluster), then the others with
    /// node 1 as their seed, and waits until every node is a voter.
    pub async fn start(options: ClusterOptions) -> anyhow::Result<Self> {
        let bin = eventgate_bin();
        if !bin.exists() {
            bail!(
                "{} not found: build it first (`cargo build -p eventgate`) or set EVENTGATE_BIN",
                bin.display()
            );
        }
        let _ = rustls::crypto::ring::default_provider().install_default();
        let permit = CLUSTER_PERMITS.clone().acquire_owned().await?;
        let dir = tempfile::tempdir()?;
        let certs = dir.path().join("certs");
        run_ok(
            &bin,
            &["certs", "init", "--dir", &certs.display().to_string()],
        )?;
        let mut cluster = Self {
            dir,
            nodes: BTreeMap::new(),
            bin,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()?,
            _permit: permit,
        };
        let mut seed = None;
        for id in 1..=options.nodes {
            let ip = next_loopback_ip();
            let (http_port, cluster_port) = free_ports(&ip)?;
            let name = format!("node{id}");
            run_ok(
                &cluster.bin,
                &[
                    "certs",
                    "issue",
                    &name,
                    "--dir",
                    &certs.display().to_string(),
                    "--san",
                    &ip,
                ],
            )?;
            let data = cluster.dir.path().join(format!("data{id}"));
            let seeds = match &seed {
                Some(s) => format!("[\"{s}\"]"),
                None => "[]".to_owned(),
            };
            let config = format!(
                r#"node_id = {id}
data_dir = "{data}"
[http]
listen = "{ip}:{http_port}"
[cluster]
listen = "{ip}:{cluster_port}"
seeds = {seeds}
write_timeout = "{write_timeout}ms"
join_timeout = "30s"
[tls]
ca_cert = "{certs}/ca.pem"
cert = "{certs}/{name}.pem"
key = "{certs}/{name}.key"
[raft]
{raft}
{extra}
"#,
                data = data.display(),
                certs = certs.display(),
                write_timeout = options.write_timeout.as_millis(),
                raft = options.raft_toml,
                extra = options.extra_toml,
            );
            let config_path = cluster.dir.path().join(format!("node{id}.toml"));
            std::fs::write(&config_path, config)?;
            let node = NodeProc {
                id,
                http: format!("{ip}:{http_port}").parse()?,
                cluster: format!("{ip}:{cluster_port}").parse()?,
                config: config_path,
                log: cluster.dir.path().join(format!("node{id}.log")),
                child: None,
            };
            cluster.nodes.insert(id, node);
            cluster.spawn(id)?;
            if seed.is_none() {
                seed = Some(format!("{ip}:{cluster_port}"));
                cluster
                    .wait_for_leader(Duration::from_secs(20), None)
                    .await?;
            }
        }
        let n = options.nodes as usize;
        for id in 1..=options.nodes {
            let what = format!("node {id} to see {n} voters");
            wait::until(
                &what,
                Duration::from_secs(60),
                Duration::from_millis(20),
                || async {
                    let status = cluster.node_status(id).await?;
                    (status["voters"].as_array()?.len() == n).then_some(())
                },
            )
            .await?;
        }
        Ok(cluster)
    }

    fn spawn(&mut self, id: u64) -> anyhow::Result<()> {
        let node = self.nodes.get_mut(&id).context("no such node")?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&node.log)?;
        let child = Command::new(&self.bin)
            .args(["serve", "--config"])
            .arg(&node.config)
            .env("RUST_LOG", "info,openraft=warn")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("spawn {}", self.bin.display()))?;
        node.child = Some(child);
        Ok(())
    }

    fn client_and_url(&self, id: u64) -> (reqwest::Client, String) {
        (self.http.clone(), self.nodes[&id].base_url())
    }

    /// Sends SIGKILL to node `id` and reaps it.
    pub fn kill(&mut self, id: u64) -> anyhow::Result<()> {
        let node = self.nodes.get_mut(&id).context("no such node")?;
        if let Some(mut child) = node.child.take() {
            child.kill()?;
            child.wait()?;
        }
        Ok(())
    }

    /// Sends SIGTERM to node `id` and waits (bounded) for it to exit; answers its exit code.
    pub async fn terminate(&mut self, id: u64, timeout: Duration) -> anyhow::Result<Option<i32>> {
        let node = self.nodes.get_mut(&id).context("no such node")?;
        let Some(mut child) = node.child.take() else {
            return Ok(None);
        };
        let pid = child.id().to_string();
        let status = Command::new("kill").args(["-TERM", &pid]).status()?;
        if !status.success() {
            bail!("kill -TERM {pid} failed");
        }
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = child.try_wait()? {
                return Ok(status.code());
            }
            if Instant::now() >= deadline {
                child.kill()?;
                child.wait()?;
                bail!("node {id} did not exit within {timeout:?} of SIGTERM");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits (bounded) for node `id` to exit by itself; answers its exit code.
    pub async fn wait_exit(&mut self, id: u64, timeout: Duration) -> anyhow::Result<Option<i32>> {
        let node = self.nodes.get_mut(&id).context("no such node")?;
        let deadline = Instant::now() + timeout;
        loop {
            match node.child.as_mut() {
                None => return Ok(None),
                Some(child) => {
                    if let Some(status) = child.try_wait()? {
                        node.child = None;
                        return Ok(status.code());
                    }
                }
            }
            if Instant::now() >= deadline {
                bail!("node {id} still running after {timeout:?}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Starts node `id` again on its data directory and addresses.
    pub fn restart(&mut self, id: u64) -> anyhow::Result<()> {
        self.spawn(id)
    }

    /// Ids of nodes whose process is running.
    pub fn running(&mut self) -> Vec<u64> {
        self.nodes
            .iter_mut()
            .filter_map(|(id, n)| n.is_running().then_some(*id))
            .collect()
    }

    /// A node's own view of Raft (`/admin/cluster/node`), if it answers.
    pub async fn node_status(&self, id: u64) -> Option<Value> {
        let (client, url) = self.client_and_url(id);
        get_json(&client, &format!("{url}/admin/cluster/node"))
            .await
            .ok()
    }

    /// Waits until the running nodes (other than `not`) agree on a leader that is running and
    /// is not `not`; answers the leader and how long it took.
    pub async fn wait_for_leader(
        &mut self,
        timeout: Duration,
        not: Option<u64>,
    ) -> anyhow::Result<(u64, Duration)> {
        let started = Instant::now();
        let deadline = started + timeout;
        loop {
            let running: Vec<u64> = self
                .running()
                .into_iter()
                .filter(|id| Some(*id) != not)
                .collect();
            let mut leaders = Vec::new();
            for id in &running {
                if let Some(s) = self.node_status(*id).await {
                    leaders.push(s["leader"].as_u64());
                }
            }
            if let Some(Some(leader)) = leaders.first() {
                let agreed =
                    leaders.len() == running.len() && leaders.iter().all(|l| *l == Some(*leader));
                if agreed && running.contains(leader) && Some(*leader) != not {
                    return Ok((*leader, started.elapsed()));
                }
            }
            if Instant::now() >= deadline {
                bail!("no agreed leader among {running:?} within {timeout:?} (saw {leaders:?})");
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Creates or replaces a subscription record through node `via`.
    pub async fn put_subscription(
        &self,
        via: u64,
        id: &str,
        topic: &str,
    ) -> anyhow::Result<reqwest::Response> {
        let (client, url) = self.client_and_url(via);
        let body = serde_json::json!({
            "topic": topic,
            "callback": format!("http://callback.test/{id}"),
            "lease_seconds": 3600,
        });
        Ok(client
            .put(format!("{url}/admin/subscriptions/{id}"))
            .json(&body)
            .send()
            .await?)
    }

    /// Ids of the subscription records node `id` has applied.
    pub async fn subscription_ids(&self, id: u64) -> anyhow::Result<Vec<String>> {
        let (client, url) = self.client_and_url(id);
        let list = get_json(&client, &format!("{url}/admin/subscriptions")).await?;
        Ok(list
            .as_array()
            .context("a list")?
            .iter()
            .filter_map(|s| s["id"].as_str().map(str::to_owned))
            .collect())
    }

    /// Waits until node `id` has applied exactly the records `expected` (sorted).
    pub async fn wait_for_records(
        &self,
        id: u64,
        expected: &[String],
        timeout: Duration,
    ) -> anyhow::Result<()> {
        let mut want = expected.to_vec();
        want.sort();
        let what = format!("node {id} to hold {} records", want.len());
        wait::until(&what, timeout, Duration::from_millis(50), || {
            let want = want.clone();
            async move {
                let mut got = self.subscription_ids(id).await.ok()?;
                got.sort();
                (got == want).then_some(())
            }
        })
        .await
    }

    /// The HTTP client of the harness.
    pub fn client(&self) -> &reqwest::Client {
        &self.http
    }

    /// Path of the `eventgate` binary in use.
    pub fn bin(&self) -> &Path {
        &self.bin
    }
}

impl Drop for ProcessCluster {
    fn drop(&mut self) {
        for node in self.nodes.values_mut() {
            if let Some(mut child) = node.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        // The logs on a panic, or always with EVENTGATE_CHAOS_LOGS set (a test returning
        // `Err` does not panic here).
        if std::thread::panicking() || std::env::var_os("EVENTGATE_CHAOS_LOGS").is_some() {
            for node in self.nodes.values() {
                eprintln!("----- log of node {} -----\n{}", node.id, node.log_text());
            }
        }
    }
}

/// GET a JSON document.
pub async fn get_json(client: &reqwest::Client, url: &str) -> anyhow::Result<Value> {
    let response = client
        .get(url)
        .timeout(Duration::from_secs(2))
        .send()
        .await?;
    if !response.status().is_success() {
        bail!("GET {url}: {}", response.status());
    }
    Ok(response.json().await?)
}

/// Runs the binary with `args` and fails unless it exits 0.
pub fn run_ok(bin: &Path, args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new(bin).args(args).output()?;
    if !out.status.success() {
        bail!(
            "{} {:?} exited {}: {}",
            bin.display(),
            args,
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
