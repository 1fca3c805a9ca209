//! The `eventgate` binary's answers to bad input: configuration errors name the file, the key and
//! the reason and exit 2; other failures exit 1 with a message naming what failed.

use std::path::Path;
use std::process::{Command, Output};

fn eventgate(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_eventgate"));
    cmd.args(args).env("NO_COLOR", "1");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run eventgate")
}

fn serve_with(config: &str) -> (Output, tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("eventgate.toml");
    std::fs::write(&path, config).unwrap();
    let path_s = path.display().to_string();
    let out = eventgate(&["serve", "--config", &path_s], &[]);
    (out, dir, path_s)
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn wrong_type_names_file_key_and_reason() {
    let (out, _dir, path) = serve_with("[http]\nlisten = 8080\n");
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains(&path), "{err}");
    assert!(err.contains("http.listen"), "{err}");
    assert!(err.contains("invalid type"), "{err}");
}

#[test]
fn unknown_key_is_named() {
    let (out, _dir, path) = serve_with("[cluster]\nseedz = [\"a:1\"]\n");
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains(&path) && err.contains("seedz"), "{err}");
}

#[test]
fn invalid_address_is_explained() {
    let (out, _dir, _) = serve_with("[cluster]\nlisten = \"localhost\"\n");
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("cluster.listen") && err.contains("localhost"),
        "{err}"
    );
}

#[test]
fn toml_syntax_error_names_the_file() {
    let (out, _dir, path) = serve_with("node_id = [\n");
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains(&path), "{err}");
}

#[test]
fn inconsistent_raft_timing_is_refused() {
    let (out, _dir, _) = serve_with("[raft]\nheartbeat_interval = \"1s\"\n");
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("raft.heartbeat_interval"), "{err}");
}

#[test]
fn missing_config_file_is_reported() {
    let out = eventgate(&["serve", "--config", "/nonexistent/eventgate.toml"], &[]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("/nonexistent/eventgate.toml"), "{err}");
}

#[test]
fn bad_environment_override_names_the_key() {
    let out = eventgate(&["serve"], &[("EVENTGATE_NODE_ID", "abc")]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("node_id"), "{err}");
}

#[test]
fn certs_issue_without_a_ca_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display().to_string();
    let out = eventgate(&["certs", "issue", "node1", "--dir", &d], &[]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains(&format!("{d}/ca.pem")), "{err}");
}

#[test]
fn certs_init_then_issue_writes_files_and_refuses_to_overwrite() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display().to_string();
    assert!(eventgate(&["certs", "init", "--dir", &d], &[])
        .status
        .success());
    let issued = eventgate(
        &["certs", "issue", "n1", "--dir", &d, "--san", "10.0.0.7"],
        &[],
    );
    assert!(issued.status.success(), "{}", stderr(&issued));
    for f in ["ca.pem", "ca.key", "n1.pem", "n1.key"] {
        assert!(Path::new(&d).join(f).is_file(), "{f}");
    }
    let again = eventgate(&["certs", "init", "--dir", &d], &[]);
    assert_eq!(again.status.code(), Some(1));
    assert!(stderr(&again).contains("refusing to overwrite"));
}

#[test]
fn cluster_status_against_nothing_fails_clearly() {
    let out = eventgate(&["cluster", "status", "--node", "http://127.0.0.1:1"], &[]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("127.0.0.1:1"), "{err}");
}

#[test]
fn bad_api_management_config_names_the_field() {
    let (out, _dir, _) = serve_with(
        "[apis.shop]\nchannels = { orders = \"orders\" }\n[applications.a]\nsubscriptions = { shop = \"gold\" }\n",
    );
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    // `subscriptions` is the older name of `access`: still read, reported by the new name.
    assert!(err.contains("applications.a.access.shop"), "{err}");
    assert!(err.contains("no plan `gold`"), "{err}");
    let (out, _dir, _) = serve_with("[applications.a]\napi_key_hashes = [\"abc\"]\n");
    assert!(stderr(&out).contains("applications.a.api_key_hashes[0]"));
    let (out, _dir, _) = serve_with(
        "[auth.jwt]\nissuer = [\"i\"]\naudience = [\"a\"]\nalgorithms = [\"HS256\"]\nsecret = \"short\"\n",
    );
    assert!(stderr(&out).contains("auth.jwt.secret"), "{}", stderr(&out));
}

#[test]
fn keys_generate_prints_a_key_and_its_hash() {
    let out = eventgate(&["keys", "generate"], &[]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .unwrap_or_else(|| panic!("{text}"))
            .trim()
            .to_owned()
    };
    let key = field("key:");
    assert!(key.starts_with("egk_"));
    assert_eq!(field("sha256:"), eventgate::auth::sha256_hex(&key));
}

#[test]
fn management_commands_against_nothing_fail_clearly() {
    let out = eventgate(&["apps", "list", "--node", "http://127.0.0.1:9"], &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("http://127.0.0.1:9/admin/applications"),
        "{}",
        stderr(&out)
    );
}

/// A development node as a process of its own, ready; answers it, its directory and its HTTP
/// port.
async fn serve_process() -> (std::process::Child, tempfile::TempDir, u16) {
    let free = || {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    };
    let (http, cluster) = (free(), free());
    let dir = tempfile::tempdir().unwrap();
    let node = Command::new(env!("CARGO_BIN_EXE_eventgate"))
        .args(["serve", "--data-dir"])
        .arg(dir.path())
        .args(["--http-listen", &format!("127.0.0.1:{http}")])
        .args(["--cluster-listen", &format!("127.0.0.1:{cluster}")])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let ready = format!("http://127.0.0.1:{http}/readyz");
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    while eventgate(&["probe", &ready], &[]).status.code() != Some(0) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the node never became ready"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    (node, dir, http)
}

/// `eventgate apis import` sends the document as it is: a refusal prints the JSON pointer,
/// success the API; `eventgate secrets create` prints the secret once, `signing-keys rotate`
/// the new key's id.
#[tokio::test]
async fn import_secrets_and_signing_keys_from_the_command_line() {
    let (mut node, _dir, http) = serve_process().await;
    let url = format!("http://127.0.0.1:{http}");
    let fixture = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/import/lamps-kafka-3.0.yaml"
    );
    let out = eventgate(&["apis", "import", fixture, "--node", &url], &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("(at /channels/brightnessMeasured/address)"),
        "{}",
        stderr(&out)
    );
    let out = eventgate(
        &[
            "apis",
            "import",
            fixture,
            "--node",
            &url,
            "--topic",
            "brightnessMeasured=lamps.brightness",
            "--topic",
            "lampDim=lamps.dim",
            "--validate-messages",
            "true",
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("smart-lamps-kafka-api"), "{stdout}");
    assert!(stdout.contains("scramSha256"), "the warnings: {stdout}");

    let _ = rustls::crypto::ring::default_provider().install_default();
    let r = reqwest::Client::new()
        .put(format!("{url}/admin/applications/lamps"))
        .json(&serde_json::json!({ "permissions": [] }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let out = eventgate(
        &[
            "secrets",
            "create",
            "lamps",
            "--overlap",
            "0s",
            "--node",
            &url,
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("egcs_"));
    let out = eventgate(&["secrets", "list", "lamps", "--node", &url], &[]);
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("egcs_"),
        "never shown again"
    );
    let out = eventgate(&["signing-keys", "rotate", "--node", &url], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("kid"));

    // `-o`: piped, the default is the JSON document; `-o table` gives columns with the id
    // first and times as dates with their age; `-o json` the document again.
    let out = eventgate(&["keys", "create", "lamps", "--node", &url], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let auto = eventgate(&["keys", "list", "lamps", "--node", &url], &[]);
    let doc: serde_json::Value = serde_json::from_slice(&auto.stdout).unwrap();
    let key_id = doc["keys"][0]["id"].as_str().unwrap().to_owned();
    let table = eventgate(
        &["keys", "list", "lamps", "-o", "table", "--node", &url],
        &[],
    );
    assert_eq!(table.status.code(), Some(0), "{}", stderr(&table));
    let text = String::from_utf8_lossy(&table.stdout);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "KEYS:", "{text}");
    assert!(lines[1].starts_with("ID "), "{text}");
    assert!(lines[1].contains("CREATED_AT_MS"), "{text}");
    assert!(lines[2].starts_with(&key_id), "{text}");
    assert!(
        lines[2].contains("Z (now)") || lines[2].contains("s ago)"),
        "a date with its age: {text}"
    );
    let json = eventgate(
        &["keys", "list", "lamps", "-o", "json", "--node", &url],
        &[],
    );
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&json.stdout).unwrap(),
        doc
    );
    let out = eventgate(
        &["keys", "list", "lamps", "-o", "yaml", "--node", &url],
        &[],
    );
    assert_eq!(out.status.code(), Some(2), "a usage error");
    let _ = node.kill();
    let _ = node.wait();
}

/// `eventgate webhooks`: the subscriptions, one of them, a replay refused with the field named
/// (its range is past what the topic holds), and a secret rotation printing the new secret once.
#[tokio::test]
async fn webhooks_from_the_command_line() {
    let (mut node, _dir, http) = serve_process().await;
    let url = format!("http://127.0.0.1:{http}");
    let _ = rustls::crypto::ring::default_provider().install_default();
    let r = reqwest::Client::new()
        .put(format!("{url}/admin/subscriptions/sub-1"))
        .json(&serde_json::json!({
            "topic": "demo", "callback": "http://127.0.0.1:9/cb", "lease_seconds": 600,
            "secret": "first", "state": "active"
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let out = eventgate(&["webhooks", "list", "--node", &url], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("sub-1"));
    let out = eventgate(&["webhooks", "show", "sub-1", "--node", &url], &[]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("\"signing\""));
    let out = eventgate(
        &[
            "webhooks",
            "replay",
            "sub-1",
            "--partition",
            "3",
            "--from-offset",
            "0",
            "--node",
            &url,
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("partition"), "{}", stderr(&out));
    let out = eventgate(
        &[
            "webhooks",
            "rotate-secret",
            "sub-1",
            "--overlap",
            "1h",
            "--node",
            &url,
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("whsec_"), "{stdout}");
    assert!(stdout.contains("previous_secret_until_ms"), "{stdout}");
    let _ = node.kill();
    let _ = node.wait();
}

/// `eventgate probe` (the container health check): 0 when the URL answers 2xx, 1 with the URL
/// and the answer otherwise, against a real node.
#[tokio::test]
async fn probe_answers_by_exit_code() {
    let out = eventgate(&["probe", "http://127.0.0.1:1/readyz"], &[]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("127.0.0.1:1"), "{}", stderr(&out));

    let (mut node, _dir, http) = serve_process().await;
    let out = eventgate(&["probe", &format!("http://127.0.0.1:{http}/nope")], &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("404"), "{}", stderr(&out));
    let _ = node.kill();
    let _ = node.wait();
}

/// `cluster status --wait-voters N` waits for N voters and a leader (the README's one-machine
/// cluster waits on it), and says what it saw when they do not come in time.
#[tokio::test]
async fn cluster_status_waits_for_voters() {
    let (mut node, _dir, http) = serve_process().await;
    let url = format!("http://127.0.0.1:{http}");
    let out = eventgate(
        &["cluster", "status", "--node", &url, "--wait-voters", "1"],
        &[],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let out = eventgate(
        &[
            "cluster",
            "status",
            "--node",
            &url,
            "--wait-voters",
            "2",
            "--wait-timeout",
            "1s",
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("not 2 voters"), "{}", stderr(&out));
    let out = eventgate(
        &["cluster", "status", "--node", &url, "--wait-timeout", "90x"],
        &[],
    );
    assert_eq!(
        out.status.code(),
        Some(2),
        "a bad duration is a usage error"
    );
    assert!(stderr(&out).contains("--wait-timeout"), "{}", stderr(&out));
    let _ = node.kill();
    let _ = node.wait();
}

/// The commented example configuration at the top of the repository is a valid one.
#[test]
fn the_example_configuration_is_valid() {
    let path = std::path::Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../eventgate.example.toml"
    ));
    let config =
        eventgate::config::load(Some(path), &[], &eventgate::config::CliOverrides::default());
    assert!(config.is_ok(), "{:?}", config.err());
}

/// Durations are checked before anything is sent; a node that is not there is named with the
/// cause; completion scripts are printed for the usual shells.
#[test]
fn durations_connection_errors_and_completions() {
    let out = eventgate(&["keys", "create", "app1", "--expires-in", "90x"], &[]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("--expires-in") && stderr(&out).contains("90x"),
        "{}",
        stderr(&out)
    );
    let out = eventgate(
        &["keys", "list", "app1", "--node", "http://127.0.0.1:1"],
        &[],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).to_lowercase().contains("connect"),
        "the cause is shown: {}",
        stderr(&out)
    );
    for shell in ["bash", "zsh", "fish"] {
        let out = eventgate(&["completions", shell], &[]);
        assert_eq!(out.status.code(), Some(0), "{shell}");
        let script = String::from_utf8_lossy(&out.stdout);
        assert!(
            script.contains("webhooks") && script.contains("eventgate"),
            "{shell}"
        );
    }
}

/// `config check` prints the effective configuration with its secrets redacted, and names the
/// key of a bad one.
#[test]
fn config_check_prints_the_effective_configuration_without_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("eventgate.toml");
    std::fs::write(
        &path,
        "[admin]\ntoken = \"a-very-secret-admin-token\"\n[topics]\nnames = [\"orders\"]\n",
    )
    .unwrap();
    let path_s = path.display().to_string();
    let out = eventgate(&["config", "check", "--config", &path_s], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let shown: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(shown["admin"]["token"], "<redacted>");
    assert_eq!(shown["topics"]["names"][0], "orders");
    assert_eq!(
        shown["websub"]["breaker"]["failure_run"], 10,
        "defaults filled in"
    );
    assert!(!String::from_utf8_lossy(&out.stdout).contains("a-very-secret"));
    std::fs::write(&path, "[websub.breaker]\nfailure_ratio = 2.0\n").unwrap();
    let out = eventgate(&["config", "check", "--config", &path_s], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("websub.breaker.failure_ratio"),
        "{}",
        stderr(&out)
    );
}
