//! The docker-compose cluster of `docker/` as the container chaos tests drive it: the same
//! compose file and `docker/local.sh` users run, under a project name and port of the test's
//! own, reached from the host through the load balancer (127.0.0.1) and, for the admin API,
//! at the nodes' addresses on the project's network.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use serde_json::Value;
use tokio::process::Command;

/// Whether this machine can run containers (`docker info` answers).
pub fn docker_available() -> bool {
    std::process::Command::new("docker")
        .arg("info")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// One compose project of the test.
#[derive(Debug)]
pub struct Compose {
    pub project: String,
    /// Host port of the load balancer (on 127.0.0.1).
    pub port: u16,
    pub token: String,
    repo: PathBuf,
    client: reqwest::Client,
    /// Services' addresses as last looked up (a restarted container may get another).
    ips: std::sync::Mutex<std::collections::HashMap<String, String>>,
}

impl Compose {
    /// A project named `project` on a free host port, with a fresh admin token. Nothing runs
    /// until [`Compose::up`].
    pub fn new(project: &str) -> anyhow::Result<Self> {
        // reqwest is built without a default TLS provider.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let mut random = [0u8; 16];
        std::io::Read::read_exact(&mut std::fs::File::open("/dev/urandom")?, &mut random)?;
        let token: String = random.iter().map(|b| format!("{b:02x}")).collect();
        Ok(Self {
            project: project.to_owned(),
            port,
            token,
            repo: PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".."),
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(5))
                .build()?,
            ips: std::sync::Mutex::default(),
        })
    }

    fn script(&self) -> Command {
        let mut c = Command::new(self.repo.join("docker/local.sh"));
        c.env("COMPOSE_PROJECT_NAME", &self.project)
            .env("EVENTGATE_PORT", self.port.to_string())
            .env("EVENTGATE_ADMIN_TOKEN", &self.token)
            .env("EVENTGATE_ALLOW_PRIVATE_CALLBACKS", "true")
            .env(
                "EVENTGATE_PUBLIC_URL",
                format!("http://127.0.0.1:{}", self.port),
            )
            .kill_on_drop(true);
        c
    }

    async fn run(mut command: Command, what: &str) -> anyhow::Result<String> {
        let out = command.output().await.with_context(|| what.to_owned())?;
        if !out.status.success() {
            bail!(
                "{what}: {}\n{}\n{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// `docker/local.sh <args>` for this project.
    pub async fn local(&self, args: &[&str]) -> anyhow::Result<String> {
        let mut c = self.script();
        c.args(args);
        Self::run(c, &format!("docker/local.sh {}", args.join(" "))).await
    }

    /// A docker-compose command for this project.
    pub async fn compose(&self, args: &[&str]) -> anyhow::Result<String> {
        let mut c = self.script();
        c.arg("compose").args(args);
        Self::run(c, &format!("docker-compose {}", args.join(" "))).await
    }

    /// A `docker` command.
    pub async fn docker(&self, args: &[&str]) -> anyhow::Result<String> {
        let mut c = Command::new("docker");
        c.args(args).kill_on_drop(true);
        Self::run(c, &format!("docker {}", args.join(" "))).await
    }

    /// Builds what is missing and starts the cluster; returns once it has three voters.
    pub async fn up(&self) -> anyhow::Result<()> {
        self.local(&["up"]).await.map(|_| ())
    }

    /// Removes the project's containers and volumes.
    pub async fn purge(&self) -> anyhow::Result<()> {
        self.local(&["purge"]).await.map(|_| ())
    }

    /// The container of `service`.
    pub async fn container(&self, service: &str) -> anyhow::Result<String> {
        let id = self.compose(&["ps", "-q", service]).await?;
        let id = id.trim();
        anyhow::ensure!(!id.is_empty(), "no container for {service}");
        Ok(id.to_owned())
    }

    /// Docker's view of `service`'s health check (`healthy`, `starting`, `unhealthy`).
    pub async fn health(&self, service: &str) -> anyhow::Result<String> {
        let id = self.container(service).await?;
        let out = self
            .docker(&["inspect", "-f", "{{.State.Health.Status}}", &id])
            .await?;
        Ok(out.trim().to_owned())
    }

    /// The project's network.
    pub fn network(&self) -> String {
        format!("{}_default", self.project)
    }

    /// `service`'s address on the project's network.
    pub async fn ip(&self, service: &str) -> anyhow::Result<String> {
        let id = self.container(service).await?;
        let template = format!(
            "{{{{(index .NetworkSettings.Networks \"{}\").IPAddress}}}}",
            self.network()
        );
        let ip = self.docker(&["inspect", "-f", &template, &id]).await?;
        Ok(ip.trim().to_owned())
    }

    /// The host's address on the project's network: containers reach the test's servers
    /// there.
    pub async fn gateway(&self) -> anyhow::Result<String> {
        let gw = self
            .docker(&[
                "network",
                "inspect",
                "-f",
                "{{(index .IPAM.Config 0).Gateway}}",
                &self.network(),
            ])
            .await?;
        Ok(gw.trim().to_owned())
    }

    /// The load balancer's base URL.
    pub fn lb(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// `GET /admin<path>` of `service`, with the token.
    pub async fn admin(&self, service: &str, path: &str) -> anyhow::Result<Value> {
        let ip = self.ip(service).await?;
        let r = self
            .client
            .get(format!("http://{ip}:8080/admin{path}"))
            .bearer_auth(&self.token)
            .send()
            .await?;
        anyhow::ensure!(r.status().is_success(), "{service} {path}: {}", r.status());
        Ok(r.json().await?)
    }

    /// Sends `method path` to `service`'s admin API (not behind the load balancer) with
    /// `body` (JSON, or raw bytes when it is a string); answers status and JSON.
    pub async fn admin_call(
        &self,
        service: &str,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<(u16, Value)> {
        let ip = self.ip(service).await?;
        let mut r = self
            .client
            .request(method, format!("http://{ip}:8080/admin{path}"))
            .bearer_auth(&self.token);
        r = match body {
            Some(Value::String(raw)) => r.body(raw),
            Some(json) => r.json(&json),
            None => r,
        };
        let r = r.send().await?;
        let status = r.status().as_u16();
        Ok((status, r.json().await.unwrap_or(Value::Null)))
    }

    /// `service`'s own view of Raft (`/admin/cluster/node`: no fan-out to the others, so it
    /// answers at once even with members down), if it answers within 150 ms. Its address is
    /// looked up once and again only when it does not answer.
    pub async fn node_view(&self, service: &str) -> Option<Value> {
        for fresh in [false, true] {
            let cached = self.ips.lock().unwrap().get(service).cloned();
            let ip = match cached {
                Some(ip) if !fresh => ip,
                _ => {
                    let ip = self.ip(service).await.ok()?;
                    self.ips
                        .lock()
                        .unwrap()
                        .insert(service.to_owned(), ip.clone());
                    ip
                }
            };
            let answer = self
                .client
                .get(format!("http://{ip}:8080/admin/cluster/node"))
                .bearer_auth(&self.token)
                .timeout(Duration::from_millis(150))
                .send()
                .await;
            if let Ok(r) = answer {
                if r.status().is_success() {
                    return r.json().await.ok();
                }
            }
        }
        None
    }

    /// `service`'s view of the cluster, if it answers.
    pub async fn status(&self, service: &str) -> Option<Value> {
        self.admin(service, "/cluster/status").await.ok()
    }
}
