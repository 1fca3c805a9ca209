//! What operators see (issue 20): every metric family from the start (an `increase()` alert
//! must see the first event), build and process metrics, request durations per route template,
//! request ids; access logs as flat JSON lines without colour codes when stderr is a file;
//! `RUST_LOG=debug` without sled's internals; CORS preflight of the webhook receiver for
//! browsers; 415 for a body of the wrong media type.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::start;
use serde_json::Value;

fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[tokio::test]
async fn every_family_is_there_from_the_start_with_build_process_and_http_metrics() {
    let node = start("").await;
    assert_eq!(node.get_status("/healthz").await, 200);
    let text = node.metrics().await;
    for series in [
        "eventgate_rate_limited_total{kind=\"publish\"}",
        "eventgate_rate_limited_total{kind=\"deliveries\"}",
        "eventgate_auth_rejections_total{outcome=\"unauthorized\",entrypoint=\"webhook\"}",
        "eventgate_auth_rejections_total{outcome=\"forbidden\",entrypoint=\"websub\"}",
        "eventgate_broker_probe_failures_total{broker=\"embedded\"}",
    ] {
        assert_eq!(sample(&text, series), Some(0.0), "{series} in\n{text}");
    }
    let version = env!("CARGO_PKG_VERSION");
    assert_eq!(
        sample(
            &text,
            &format!("eventgate_build_info{{version=\"{version}\"}}")
        ),
        Some(1.0),
        "{text}"
    );
    assert!(
        sample(&text, "process_resident_memory_bytes").unwrap() > 1e6,
        "{text}"
    );
    assert!(sample(&text, "process_open_fds").unwrap() >= 3.0);
    assert!(sample(&text, "process_max_fds").unwrap() >= 3.0);
    assert!(sample(&text, "process_cpu_seconds_total").is_some());
    assert!(sample(&text, "process_start_time_seconds").unwrap() > 1.7e9);
    // Requests by route template, not by path.
    let _ = node.get_status("/admin/subscriptions/abc").await;
    let text = node.metrics().await;
    let count = |route: &str, status: &str| {
        sample(
            &text,
            &format!(
                "eventgate_http_request_duration_seconds_count{{route=\"{route}\",method=\"GET\",status=\"{status}\"}}"
            ),
        )
    };
    assert!(count("/healthz", "2xx").unwrap() >= 1.0, "{text}");
    assert_eq!(
        count("/admin/subscriptions/{id}", "4xx"),
        Some(1.0),
        "{text}"
    );
    assert!(!text.contains("route=\"/admin/subscriptions/abc\""));
    assert_eq!(text.matches("# EOF").count(), 1);
    assert!(text.trim_end().ends_with("# EOF"));
    node.stop().await;
}

#[tokio::test]
async fn request_ids_cors_preflight_and_unsupported_media_types() {
    let node = start("[streams]\nallowed_origins = [\"https://app.example\"]\n").await;
    // A request id is answered; a usable one of the client's is kept, anything else replaced.
    let r = node
        .client
        .get(format!("{}/healthz", node.base))
        .send()
        .await
        .unwrap();
    let id = r.headers()["x-request-id"].to_str().unwrap().to_owned();
    assert_eq!(id.len(), 16, "{id}");
    for (sent, kept) in [("trace-42.a_b", true), ("bad id with spaces", false)] {
        let r = node
            .client
            .get(format!("{}/healthz", node.base))
            .header("x-request-id", sent)
            .send()
            .await
            .unwrap();
        assert_eq!(r.headers()["x-request-id"] == sent, kept, "{sent}");
    }

    // A browser on an allowed origin may publish; on another it gets no CORS grant.
    let preflight = |origin: &'static str| {
        node.client
            .request(
                reqwest::Method::OPTIONS,
                format!("{}/webhook-receiver?topic=orders", node.base),
            )
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header(
                "access-control-request-headers",
                "content-type,idempotency-key",
            )
            .send()
    };
    let r = preflight("https://app.example").await.unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    let h = r.headers();
    assert_eq!(h["access-control-allow-origin"], "https://app.example");
    assert!(h["access-control-allow-methods"]
        .to_str()
        .unwrap()
        .contains("POST"));
    let allowed = h["access-control-allow-headers"].to_str().unwrap();
    assert!(
        allowed.contains("content-type") && allowed.contains("idempotency-key"),
        "{allowed}"
    );
    let r = preflight("https://evil.example").await.unwrap();
    assert!(r.headers().get("access-control-allow-origin").is_none());

    // The wrong media type is 415, with its problem type.
    let r = node
        .client
        .post(format!("{}/hub", node.base))
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 415);
    let problem: Value = r.json().await.unwrap();
    assert!(
        problem["type"]
            .as_str()
            .unwrap()
            .ends_with("unsupported-media-type"),
        "{problem}"
    );
    let r = node
        .client
        .put(format!("{}/admin/plans/gold", node.base))
        .header("content-type", "text/plain")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 415);
    node.stop().await;
}

/// The binary's logs as a log collector sees them: stderr a pipe, JSON requested.
#[tokio::test]
async fn access_logs_are_flat_json_lines_without_colour_and_debug_is_not_sled() {
    let free = || {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    };
    let (http, cluster) = (free(), free());
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("stderr.log");
    let mut node = Command::new(env!("CARGO_BIN_EXE_eventgate"))
        .args(["serve", "--data-dir"])
        .arg(dir.path())
        .args(["--http-listen", &format!("127.0.0.1:{http}")])
        .args(["--cluster-listen", &format!("127.0.0.1:{cluster}")])
        .args(["--log-format", "json"])
        .env("RUST_LOG", "debug")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let client = reqwest::Client::new();
    let url = format!("http://127.0.0.1:{http}/readyz");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(r) = client.get(&url).send().await {
            if r.status() == 200 {
                break;
            }
        }
        assert!(tokio::time::Instant::now() < deadline, "never ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let r = client
        .get(format!(
            "http://127.0.0.1:{http}/topics/nothing?access_token=secret"
        ))
        .header("x-request-id", "probe-1")
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    // The line is written as the answer goes out; wait for it (bounded).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let line = loop {
        let text = std::fs::read_to_string(&log).unwrap();
        if let Some(line) = text.lines().find(|l| l.contains("probe-1")) {
            break line.to_owned();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no access line:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let _ = node.kill();
    let _ = node.wait();
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(!text.contains('\u{1b}'), "ANSI codes in a file");
    let access: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(access["target"], "eventgate::access", "{line}");
    assert_eq!(
        access["request_id"], "probe-1",
        "flat, not under `fields`: {line}"
    );
    assert_eq!(access["route"], "/topics/{name}");
    assert_eq!(access["path"], "/topics/nothing");
    assert_eq!(access["status"], status);
    assert_eq!(access["method"], "GET");
    assert!(access["latency_ms"].as_f64().is_some());
    assert!(access["client"].as_str().unwrap().starts_with("127.0.0.1:"));
    assert!(!line.contains("secret"), "the query is not logged: {line}");
    for l in text.lines() {
        let v: Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"));
        let target = v["target"].as_str().unwrap_or_default();
        assert!(
            !(target.starts_with("sled") && v["level"] == "DEBUG"),
            "sled's debug output under RUST_LOG=debug: {l}"
        );
    }
    // (Which directives `RUST_LOG=debug` becomes is unit-tested in `run.rs`.)
}
