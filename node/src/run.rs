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

/// Libraries whose debug output is about their own internals: they stay at `warn` (rdkafka at
/// `info`) unless `RUST_LOG` names them, so `RUST_LOG=debug` shows eventgate's debugging, not
/// sled's page cache.
///
/// openraft's own report of a membership change it refused ("already undergoing a
/// configuration change", logged as an error whenever two nodes join at once) is off: the
/// caller gets the error, and ours retries and logs that at `info`.
const QUIET_LIBRARIES: [(&str, &str); 10] = [
    ("sled", "warn"),
    ("openraft", "warn"),
    ("openraft::raft::impl_raft_blocking_write", "off"),
    ("quinn", "warn"),
    ("quinn_proto", "warn"),
    ("rustls", "warn"),
    ("h2", "warn"),
    ("hyper", "warn"),
    ("hyper_util", "warn"),
    ("rdkafka", "info"),
];

/// The log filter: `RUST_LOG` when set, else `level`; either way with [`QUIET_LIBRARIES`] at
/// their levels unless the filter names them.
fn log_filter(rust_log: Option<&str>, level: &str) -> tracing_subscriber::EnvFilter {
    let base = rust_log.unwrap_or(level);
    let mut directives = base.to_owned();
    for (library, quiet) in QUIET_LIBRARIES {
        let named = base
            .split(',')
            .any(|d| d.trim().split(['=', '[']).next() == Some(library));
        if !named {
            directives.push_str(&format!(",{library}={quiet}"));
        }
    }
    tracing_subscriber::EnvFilter::try_new(&directives).unwrap_or_else(|e| {
        eprintln!("RUST_LOG `{base}` is not a valid filter ({e}); logging at `{level}`");
        tracing_subscriber::EnvFilter::new(level)
    })
}

/// Logging, and trace export when configured (see [`crate::telemetry`]); answers the trace
/// provider to flush at exit.
fn init_tracing(
    format: LogFormat,
    level: &str,
    tracing_settings: &crate::telemetry::TracingSettings,
    node_id: u64,
) -> Option<opentelemetry_sdk::trace::SdkTracerProvider> {
    use std::io::IsTerminal;
    use tracing_subscriber::prelude::*;
    let rust_log = std::env::var("RUST_LOG")
        .ok()
        .filter(|v| !v.trim().is_empty());
    let filter = log_filter(rust_log.as_deref(), level);
    let provider = if crate::telemetry::enabled(tracing_settings) {
        match crate::telemetry::provider(tracing_settings, node_id) {
            Ok(p) => Some(p),
            Err(e) => {
                eprintln!("eventgate: traces are not exported: {e}");
                None
            }
        }
    } else {
        None
    };
    // Colour only for a person at a terminal: a file or a log collector gets plain text.
    let ansi = std::io::stderr().is_terminal();
    let output = match format {
        // One flat object per line: the event's fields next to `timestamp`, `level`, `target`
        // (`fields.*` nesting makes every log query longer).
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_ansi(false)
            .with_writer(std::io::stderr)
            .boxed(),
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_ansi(ansi)
            .with_writer(std::io::stderr)
            .boxed(),
    };
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(output.with_filter(QuietRepeats::default()))
        .try_init();
    provider
}

/// Lets through at most one event per [`QuietRepeats::EVERY`] from each of openraft's
/// per-attempt warnings and errors: a dead peer makes replication and elections fail every
/// few milliseconds, each failure logged, burying everything else. The first of a run is
/// kept, so the condition is still seen; `eventgate cluster status` tells the rest.
#[derive(Debug, Default)]
struct QuietRepeats {
    last: std::sync::Mutex<
        std::collections::HashMap<tracing::callsite::Identifier, tokio::time::Instant>,
    >,
}

impl QuietRepeats {
    const EVERY: Duration = Duration::from_secs(30);

    fn noisy(meta: &tracing::Metadata<'_>) -> bool {
        meta.is_event()
            && *meta.level() <= tracing::Level::WARN
            && [
                "openraft::replication",
                "openraft::core::raft_core",
                "openraft::engine",
                "openraft::network",
            ]
            .iter()
            .any(|t| meta.target().starts_with(t))
    }
}

impl<S> tracing_subscriber::layer::Filter<S> for QuietRepeats {
    fn enabled(
        &self,
        meta: &tracing::Metadata<'_>,
        _: &tracing_subscriber::layer::Context<'_, S>,
    ) -> bool {
        if !Self::noisy(meta) {
            return true;
        }
        let now = tokio::time::Instant::now();
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        match last.get(&meta.callsite()) {
            Some(at) if now.duration_since(*at) < Self::EVERY => false,
            _ => {
                last.insert(meta.callsite(), now);
                true
            }
        }
    }

    fn callsite_enabled(
        &self,
        meta: &'static tracing::Metadata<'static>,
    ) -> tracing::subscriber::Interest {
        if Self::noisy(meta) {
            tracing::subscriber::Interest::sometimes()
        } else {
            tracing::subscriber::Interest::always()
        }
    }
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
    let traces = init_tracing(
        config.log_format,
        &config.log_level,
        &config.tracing,
        config.node_id,
    );
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
    if let Some(provider) = traces {
        // The last spans go out before the process does.
        if let Err(e) = provider.shutdown() {
            eprintln!("eventgate: last spans not exported: {e}");
        }
    }
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
    admin_send(target, method, path, |request| match body {
        Some(body) => request.json(&body),
        None => request,
    })
    .await
}

/// Sends an admin request made by `build`; a problem answer becomes its detail (with the
/// pointer or field it names).
async fn admin_send(
    target: &AdminTarget,
    method: reqwest::Method,
    path: &str,
    build: impl FnOnce(reqwest::RequestBuilder) -> reqwest::RequestBuilder,
) -> Result<serde_json::Value, String> {
    let url = format!("{}{path}", target.node.trim_end_matches('/'));
    let mut request = admin_client().request(method, &url);
    if let Some(token) = &target.token {
        request = request.bearer_auth(token);
    }
    let response = build(request).send().await.map_err(|e| {
        // The whole chain: "error sending request" alone does not say the node is not there.
        let mut text = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(cause) = source {
            text.push_str(&format!(": {cause}"));
            source = cause.source();
        }
        format!("{url}: {text}")
    })?;
    let status = response.status();
    let bytes = response
        .bytes()
        .await
        .map_err(|e| format!("{url}: unreadable answer: {e}"))?;
    let value: serde_json::Value = if bytes.is_empty() {
        serde_json::Value::Null
    } else {
        serde_json::from_slice(&bytes).map_err(|e| format!("{url}: unreadable answer: {e}"))?
    };
    if status.is_success() {
        Ok(value)
    } else {
        let detail = value["detail"].as_str().unwrap_or("no detail");
        let at = match (value["pointer"].as_str(), value["field"].as_str()) {
            (Some(p), _) if !p.is_empty() => format!(" (at {p})"),
            (_, Some(f)) => format!(" (field {f})"),
            _ => String::new(),
        };
        let hint = if status == reqwest::StatusCode::UNAUTHORIZED {
            if target.token.is_some() {
                " — the admin token given (--token / EVENTGATE_ADMIN_TOKEN) is not the node's"
            } else {
                " — give the node's admin token with --token or EVENTGATE_ADMIN_TOKEN"
            }
        } else {
            ""
        };
        Err(format!("{url}: {status}: {detail}{at}{hint}"))
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
    let voters = status.members.iter().filter(|m| m.role == "voter").count();
    println!(
        "voters: {voters}   learners: {}",
        status.members.len() - voters
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
/// `eventgate probe`: 0 when the URL answers 2xx, else 1 with the reason on stderr.
pub fn probe(args: crate::cli::ProbeArgs) -> ExitCode {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build();
    let outcome = rt.map_err(|e| e.to_string()).and_then(|rt| {
        rt.block_on(async {
            eventgate_raft_store::install_crypto_provider();
            let client = reqwest::Client::builder()
                .timeout(args.timeout)
                .build()
                .map_err(|e| e.to_string())?;
            let response = client
                .get(&args.url)
                .send()
                .await
                .map_err(|e| format!("{}: {e}", args.url))?;
            let status = response.status();
            if status.is_success() {
                Ok(())
            } else {
                let body = response.text().await.unwrap_or_default();
                Err(format!("{}: {status} {}", args.url, body.trim()))
            }
        })
    });
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("eventgate probe: {e}");
            ExitCode::FAILURE
        }
    }
}

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
            ClusterCommand::Status {
                target,
                json,
                wait_voters,
                wait_timeout,
            } => {
                let deadline = tokio::time::Instant::now() + wait_timeout;
                let value = loop {
                    let answer =
                        admin_call(&target, reqwest::Method::GET, "/admin/cluster/status", None)
                            .await;
                    let Some(want) = wait_voters else {
                        break answer?;
                    };
                    // Waiting: a node not answering yet, or too few voters, is tried again.
                    let seen = match &answer {
                        Ok(v) => {
                            let voters = v["members"]
                                .as_array()
                                .map_or(0, |m| m.iter().filter(|m| m["role"] == "voter").count());
                            if voters >= want && !v["leader"].is_null() {
                                break answer?;
                            }
                            format!("{voters} voters")
                        }
                        Err(e) => e.clone(),
                    };
                    if tokio::time::Instant::now() >= deadline {
                        return Err(format!(
                            "not {want} voters with a leader within {}: {seen}",
                            humantime::format_duration(wait_timeout)
                        ));
                    }
                    tokio::time::sleep(Duration::from_millis(250)).await;
                };
                // A table unless JSON is asked for, piped or not: what this command always
                // printed, and what scripts written against it read.
                let output = match (json, target.output) {
                    (true, _) | (false, crate::output::OutputFormat::Json) => {
                        crate::output::OutputFormat::Json
                    }
                    _ => crate::output::OutputFormat::Table,
                };
                if output == crate::output::OutputFormat::Json {
                    print!("{}", output.render(&value, 0));
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

/// `eventgate config check`.
pub fn config_check(command: crate::cli::ConfigCommand) -> ExitCode {
    let crate::cli::ConfigCommand::Check { config, quiet } = command;
    let env: Vec<(String, String)> = std::env::vars().collect();
    match config::effective(config.as_deref(), &env, &CliOverrides::default()) {
        Ok((_, shown)) => {
            if !quiet {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&shown).unwrap_or_default()
                );
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("eventgate: {e}");
            ExitCode::from(2)
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

/// Runs one admin-API command on a current-thread runtime and prints its answer as `output`
/// asks.
fn admin_command(
    output: crate::output::OutputFormat,
    work: impl std::future::Future<Output = Result<serde_json::Value, String>>,
) -> ExitCode {
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
    match rt.block_on(work) {
        Ok(value) => {
            print!("{}", output.render(&value, crate::output::now_ms()));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("eventgate: {e}");
            ExitCode::FAILURE
        }
    }
}

fn read_document(file: &std::path::Path) -> Result<serde_json::Value, String> {
    let text = if file.as_os_str() == "-" {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)
            .map_err(|e| format!("standard input: {e}"))?;
        text
    } else {
        std::fs::read_to_string(file).map_err(|e| format!("{}: {e}", file.display()))?
    };
    serde_json::from_str(&text).map_err(|e| format!("{}: not JSON: {e}", file.display()))
}

/// `eventgate apis …`.
pub fn apis(command: crate::cli::ApisCommand) -> ExitCode {
    match command {
        crate::cli::ApisCommand::Entity(command) => entity("apis", command),
        crate::cli::ApisCommand::Import {
            file,
            name,
            base_path,
            topics,
            validate_messages,
            target,
        } => import_api(file, name, base_path, topics, validate_messages, target),
        crate::cli::ApisCommand::Lifecycle {
            name,
            state,
            sunset,
            target,
        } => admin_command(target.output, async move {
            let mut body = serde_json::json!({ "state": state });
            if let Some(sunset) = sunset {
                body["sunset"] = serde_json::Value::String(sunset);
            }
            admin_call(
                &target,
                reqwest::Method::PUT,
                &format!("/admin/apis/{name}/lifecycle"),
                Some(body),
            )
            .await
        }),
    }
}

/// `eventgate apis import`: the document as it is (JSON or YAML), the options as the query.
fn import_api(
    file: std::path::PathBuf,
    name: Option<String>,
    base_path: Option<String>,
    topics: Vec<String>,
    validate_messages: Option<bool>,
    target: crate::cli::AdminTarget,
) -> ExitCode {
    admin_command(target.output, async move {
        let bytes = if file.as_os_str() == "-" {
            let mut bytes = Vec::new();
            std::io::Read::read_to_end(&mut std::io::stdin(), &mut bytes)
                .map_err(|e| format!("standard input: {e}"))?;
            bytes
        } else {
            std::fs::read(&file).map_err(|e| format!("{}: {e}", file.display()))?
        };
        let mut query = form_urlencoded::Serializer::new(String::new());
        if let Some(n) = &name {
            query.append_pair("name", n);
        }
        if let Some(b) = &base_path {
            query.append_pair("base_path", b);
        }
        if let Some(v) = validate_messages {
            query.append_pair("validate_messages", if v { "true" } else { "false" });
        }
        for mapping in &topics {
            let (channel, topic) = mapping
                .split_once('=')
                .ok_or_else(|| format!("--topic {mapping}: give CHANNEL=TOPIC"))?;
            query.append_pair(&format!("topic.{channel}"), topic);
        }
        let query = query.finish();
        let path = if query.is_empty() {
            "/admin/apis/import".to_owned()
        } else {
            format!("/admin/apis/import?{query}")
        };
        admin_send(&target, reqwest::Method::POST, &path, |r| {
            r.header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
                .body(bytes)
        })
        .await
    })
}

/// `eventgate secrets …`.
pub fn secrets(command: crate::cli::SecretsCommand) -> ExitCode {
    use crate::cli::SecretsCommand as S;
    use reqwest::Method;
    let (target, method, path, body) = match command {
        S::Create {
            app,
            overlap,
            target,
        } => (
            target,
            Method::POST,
            format!("/admin/applications/{app}/client-secrets"),
            overlap.map(|o| serde_json::json!({ "overlap": o })),
        ),
        S::List { app, target } => (
            target,
            Method::GET,
            format!("/admin/applications/{app}/client-secrets"),
            None,
        ),
        S::Revoke { app, id, target } => (
            target,
            Method::DELETE,
            format!("/admin/applications/{app}/client-secrets/{id}"),
            None,
        ),
    };
    admin_command(target.output, async move {
        admin_call(&target, method, &path, body).await
    })
}

/// `eventgate webhooks …`.
pub fn webhooks(command: crate::cli::WebhooksCommand) -> ExitCode {
    use crate::cli::WebhooksCommand as W;
    use reqwest::Method;
    let (target, method, path, body) = match command {
        W::List { target } => (target, Method::GET, "/admin/subscriptions".to_owned(), None),
        W::Show { id, target } => (
            target,
            Method::GET,
            format!("/admin/subscriptions/{id}"),
            None,
        ),
        W::Replay {
            id,
            partition,
            from_offset,
            to_offset,
            since,
            until,
            max,
            target,
        } => {
            let mut body = serde_json::json!({ "partition": partition });
            for (key, value) in [
                ("from_offset", from_offset.map(serde_json::Value::from)),
                ("to_offset", to_offset.map(serde_json::Value::from)),
                ("since", since.map(serde_json::Value::from)),
                ("until", until.map(serde_json::Value::from)),
                ("max", max.map(serde_json::Value::from)),
            ] {
                if let Some(value) = value {
                    body[key] = value;
                }
            }
            (
                target,
                Method::POST,
                format!("/admin/subscriptions/{id}/replay"),
                Some(body),
            )
        }
        W::RotateSecret {
            id,
            secret,
            overlap,
            target,
        } => {
            let mut body = serde_json::json!({});
            if let Some(secret) = secret {
                body["secret"] = secret.into();
            }
            if let Some(overlap) = overlap {
                body["overlap"] = overlap.into();
            }
            (
                target,
                Method::POST,
                format!("/admin/subscriptions/{id}/secret"),
                Some(body),
            )
        }
        W::Attempts {
            id,
            outcome,
            status,
            message_id,
            since,
            until,
            limit,
            target,
        } => {
            let mut query = form_urlencoded::Serializer::new(String::new());
            for (key, value) in [
                ("outcome", outcome),
                ("status", status.map(|s| s.to_string())),
                ("message_id", message_id),
                ("since", since),
                ("until", until),
                ("limit", limit.map(|l| l.to_string())),
            ] {
                if let Some(value) = value {
                    query.append_pair(key, &value);
                }
            }
            let query = query.finish();
            let id = form_urlencoded::byte_serialize(id.as_bytes()).collect::<String>();
            (
                target,
                Method::GET,
                format!("/admin/subscriptions/{id}/attempts?{query}"),
                None,
            )
        }
        W::Endpoints { target } => (target, Method::GET, "/admin/endpoints".to_owned(), None),
        W::ResumeEndpoint { origin, target } => (
            target,
            Method::POST,
            "/admin/endpoints/resume".to_owned(),
            Some(serde_json::json!({ "origin": origin })),
        ),
        W::Enable { id, target } => (
            target,
            Method::POST,
            format!("/admin/subscriptions/{id}/enable"),
            None,
        ),
    };
    admin_command(target.output, async move {
        admin_call(&target, method, &path, body).await
    })
}

/// `eventgate signing-keys …`.
pub fn signing_keys(command: crate::cli::SigningKeysCommand) -> ExitCode {
    use crate::cli::SigningKeysCommand as K;
    let (target, method, path) = match command {
        K::List { target } => (target, reqwest::Method::GET, "/admin/oauth2/keys"),
        K::Rotate { target } => (target, reqwest::Method::POST, "/admin/oauth2/keys/rotate"),
    };
    admin_command(target.output, async move {
        admin_call(&target, method, path, None).await
    })
}

/// `eventgate apis|plans|apps …`: `kind` is the admin API's collection.
pub fn entity(kind: &'static str, command: crate::cli::EntityCommand) -> ExitCode {
    use crate::cli::EntityCommand as E;
    use reqwest::Method;
    let (target, method, path, body) = match command {
        E::List { target } => (target, Method::GET, format!("/admin/{kind}"), None),
        E::Get { name, target } => (target, Method::GET, format!("/admin/{kind}/{name}"), None),
        E::Put { name, file, target } => (
            target,
            Method::PUT,
            format!("/admin/{kind}/{name}"),
            match read_document(&file) {
                Ok(document) => Some(document),
                Err(e) => {
                    eprintln!("eventgate: {e}");
                    return ExitCode::FAILURE;
                }
            },
        ),
        E::Delete { name, target } => (
            target,
            Method::DELETE,
            format!("/admin/{kind}/{name}"),
            None,
        ),
    };
    admin_command(target.output, async move {
        admin_call(&target, method, &path, body).await
    })
}

/// `eventgate keys …`.
pub fn keys(command: crate::cli::KeysCommand) -> ExitCode {
    use crate::cli::KeysCommand as K;
    use reqwest::Method;
    let (target, method, path, body) = match command {
        K::Generate => {
            let (key, hash) = crate::auth::generate_key();
            println!("key:    {key}");
            println!("sha256: {hash}");
            println!("(give the key to the application; put the sha256 in its api_key_hashes)");
            return ExitCode::SUCCESS;
        }
        // A rotation is a creation whose overlap defaults to 24 h.
        K::Create {
            app,
            expires_in,
            overlap,
            target,
        }
        | K::Rotate {
            app,
            expires_in,
            overlap,
            target,
        } => (
            target,
            Method::POST,
            format!("/admin/applications/{app}/keys"),
            Some(serde_json::json!({ "expires_in": expires_in, "overlap": overlap })),
        ),
        K::List { app, target } => (
            target,
            Method::GET,
            format!("/admin/applications/{app}/keys"),
            None,
        ),
        K::Revoke {
            app,
            key_id,
            target,
        } => (
            target,
            Method::DELETE,
            format!("/admin/applications/{app}/keys/{key_id}"),
            None,
        ),
    };
    admin_command(target.output, async move {
        admin_call(&target, method, &path, body).await
    })
}

/// `eventgate access …` (alias `subscriptions`).
pub fn access(command: crate::cli::AccessCommand) -> ExitCode {
    use crate::cli::AccessCommand as A;
    use reqwest::Method;
    let base = |app: &str| format!("/admin/applications/{app}/access");
    let (target, method, path, body) = match command {
        A::List { app, target } => (target, Method::GET, base(&app), None),
        A::Add {
            app,
            api,
            plan,
            target,
        } => (
            target,
            Method::PUT,
            format!("{}/{api}", base(&app)),
            Some(serde_json::json!({ "plan": plan })),
        ),
        A::Approve { app, api, target } => (
            target,
            Method::POST,
            format!("{}/{api}/approve", base(&app)),
            None,
        ),
        A::Reject { app, api, target } => (
            target,
            Method::POST,
            format!("{}/{api}/reject", base(&app)),
            None,
        ),
        A::Remove { app, api, target } => (
            target,
            Method::DELETE,
            format!("{}/{api}", base(&app)),
            None,
        ),
    };
    admin_command(target.output, async move {
        admin_call(&target, method, &path, body).await
    })
}

#[cfg(test)]
mod tests {
    use super::log_filter;

    #[test]
    fn rust_log_debug_keeps_the_libraries_quiet_unless_it_names_them() {
        let filter = log_filter(Some("debug"), "info").to_string();
        assert!(filter.contains("sled=warn"), "{filter}");
        assert!(filter.contains("h2=warn"), "{filter}");
        assert!(
            filter.contains("openraft::raft::impl_raft_blocking_write=off"),
            "{filter}"
        );
        let filter = log_filter(Some("debug,sled=trace"), "info").to_string();
        assert!(filter.contains("sled=trace"), "{filter}");
        assert!(!filter.contains("sled=warn"), "{filter}");
        let filter = log_filter(None, "warn").to_string();
        assert!(filter.contains("openraft=warn"), "{filter}");
    }
}
