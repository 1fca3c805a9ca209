//! What each subcommand does, with its exit code: 0 on success, 2 for a configuration or usage
//! error, 1 for anything else.

use std::process::ExitCode;
use std::time::Duration;

use eventgate_raft_store::control::ClusterStatus;
use eventgate_raft_store::tls;
use tokio_util::sync::CancellationToken;

use crate::cli::{AdminTarget, CertsCommand, ClusterCommand, ServeArgs};
use crate::config::{self, CliOverrides, LogFormat};
use crate::node::{self, Listeners};

fn init_tracing(format: LogFormat, level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(format!("{level},openraft=warn,sled=warn"))
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
}

/// `eventgate serve`.
pub fn serve(args: ServeArgs) -> ExitCode {
    let overrides = CliOverrides {
        node_id: args.node_id,
        data_dir: args.data_dir,
        http_listen: args.http_listen,
        cluster_listen: args.cluster_listen,
        join: args.join,
        log_format: args.log_format,
    };
    let env: Vec<(String, String)> = std::env::vars().collect();
    let config = match config::load(args.config.as_deref(), &env, &overrides) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("eventgate: {e}");
            return ExitCode::from(2);
        }
    };
    init_tracing(config.log_format, &config.log_level);
    if config.dev_profile {
        tracing::warn!(
            "no config file: running the development profile (single node on loopback, self-made cluster CA); do not expose it"
        );
    }
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("eventgate: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(async move {
        let shutdown = CancellationToken::new();
        let listeners = Listeners::bind(&config).await?;
        let handle = node::start(config, listeners, shutdown.clone()).await?;
        tokio::spawn(stop_on_signal(shutdown));
        handle.wait().await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "node failed");
            eprintln!("eventgate: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn stop_on_signal(shutdown: CancellationToken) {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot listen for SIGTERM");
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: shutting down"),
        () = shutdown.cancelled() => return,
    }
    shutdown.cancel();
}

fn admin_client() -> reqwest::Client {
    eventgate_raft_store::install_crypto_provider();
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("an HTTP client with default settings builds")
}

async fn admin_call(
    target: &AdminTarget,
    method: reqwest::Method,
    path: &str,
    body: Option<serde_json::Value>,
) -> Result<serde_json::Value, String> {
    let url = format!("{}{path}", target.node.trim_end_matches('/'));
    let mut request = admin_client().request(method, &url);
    if let Some(token) = &target.token {
        request = request.bearer_auth(token);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.map_err(|e| format!("{url}: {e}"))?;
    let status = response.status();
    let value: serde_json::Value = response
        .json()
        .await
        .map_err(|e| format!("{url}: unreadable answer: {e}"))?;
    if status.is_success() {
        Ok(value)
    } else {
        let detail = value["detail"].as_str().unwrap_or("no detail");
        Err(format!("{url}: {status}: {detail}"))
    }
}

fn print_status(status: &ClusterStatus) {
    println!(
        "leader: {}   term: {}   leader last log index: {}   (answered by node {})",
        status.leader.map_or("none".to_owned(), |l| l.to_string()),
        status.term,
        status
            .leader_last_log_index
            .map_or("-".to_owned(), |i| i.to_string()),
        status.node_id
    );
    println!(
        "{:<6} {:<8} {:<10} {:<22} {:<22} {:>9} {:>7}  REACHABLE",
        "ID", "ROLE", "STATE", "CLUSTER ADDR", "HTTP ADDR", "APPLIED", "LAG"
    );
    let dash = || "-".to_owned();
    for m in &status.members {
        println!(
            "{:<6} {:<8} {:<10} {:<22} {:<22} {:>9} {:>7}  {}",
            m.id,
            m.role,
            m.state.clone().unwrap_or_else(dash),
            m.raft_addr,
            m.http_addr,
            m.applied_index.map_or_else(dash, |i| i.to_string()),
            m.lag.map_or_else(dash, |i| i.to_string()),
            if m.reachable { "yes" } else { "no" }
        );
    }
}

/// `eventgate cluster …`.
pub fn cluster(command: ClusterCommand) -> ExitCode {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("eventgate: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result: Result<(), String> = rt.block_on(async move {
        match command {
            ClusterCommand::Status { target, json } => {
                let value =
                    admin_call(&target, reqwest::Method::GET, "/admin/cluster/status", None)
                        .await?;
                if json {
                    println!(
                        "{}",
                        serde_json::to_string_pretty(&value).unwrap_or_default()
                    );
                } else {
                    let status: ClusterStatus = serde_json::from_value(value)
                        .map_err(|e| format!("unexpected status document: {e}"))?;
                    print_status(&status);
                }
                Ok(())
            }
            ClusterCommand::Leave { target, node_id } => {
                let body = serde_json::json!({ "node_id": node_id });
                let value = admin_call(
                    &target,
                    reqwest::Method::POST,
                    "/admin/cluster/leave",
                    Some(body),
                )
                .await?;
                println!("node {} left the cluster", value["left"]);
                Ok(())
            }
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("eventgate: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `eventgate certs …`.
pub fn certs(command: CertsCommand) -> ExitCode {
    let result = match command {
        CertsCommand::Init { dir } => tls::generate_ca()
            .and_then(|ca| tls::write_pair(&dir, "ca", &ca))
            .map(|()| {
                println!(
                    "cluster CA written to {0}/ca.pem and {0}/ca.key; keep ca.key secret",
                    dir.display()
                );
            }),
        CertsCommand::Issue { name, dir, sans } => tls::read_pair(&dir, "ca")
            .and_then(|ca| tls::issue_node_cert(&ca, &name, &sans))
            .and_then(|pair| tls::write_pair(&dir, &name, &pair))
            .map(|()| {
                println!(
                    "node certificate written to {0}/{1}.pem and {0}/{1}.key",
                    dir.display(),
                    name
                );
            }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("eventgate: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `eventgate asyncapi export`.
pub fn asyncapi(command: crate::cli::AsyncapiCommand) -> ExitCode {
    let crate::cli::AsyncapiCommand::Export { config, format } = command;
    let env: Vec<(String, String)> = std::env::vars().collect();
    let config = match config::load(config.as_deref(), &env, &CliOverrides::default()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("eventgate: {e}");
            return ExitCode::from(2);
        }
    };
    let public_url = config
        .public_url
        .clone()
        .unwrap_or_else(|| format!("http://{}", config.http_advertise));
    let document = crate::asyncapi::document(&config, &public_url);
    let text = if format == "yaml" {
        crate::asyncapi::to_yaml(&document)
    } else {
        format!("{:#}\n", document)
    };
    print!("{text}");
    ExitCode::SUCCESS
}
