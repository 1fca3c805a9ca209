//! The Prometheus side of operating eventgate (issue 20): `promtool` checks and unit-tests the
//! alert rules shipped under `docker/prometheus/`; a real Prometheus (Debian's `prometheus`,
//! which `.ci/run` installs) scrapes a running node, loads the rules, and every query of the
//! Grafana dashboard under `docker/grafana/` returns data.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::start;
use serde_json::Value;

const DOCKER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../docker");

fn promtool(args: &[&str]) -> std::process::Output {
    Command::new("promtool")
        .args(args)
        .current_dir(format!("{DOCKER}/prometheus"))
        .output()
        .expect("promtool (Debian: apt-get install prometheus; .ci/run installs it)")
}

#[test]
fn the_alert_rules_pass_promtools_check_and_unit_tests() {
    for args in [
        ["check", "rules", "alerts.yml"],
        ["test", "rules", "alerts.test.yml"],
    ] {
        let out = promtool(&args);
        assert!(
            out.status.success(),
            "promtool {}:\n{}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// A Prometheus process, killed on drop.
struct Prometheus(Child);

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn query(client: &reqwest::Client, base: &str, expr: &str) -> Value {
    client
        .get(format!("{base}/api/v1/query"))
        .query(&[("query", expr)])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_real_prometheus_scrapes_a_node_and_every_dashboard_query_has_data() {
    let node = start("[topics]\nnames = [\"orders\"]\n").await;
    common::websub::publish(&node, "orders", "application/json", b"{}".to_vec()).await;
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let target = node.base.trim_start_matches("http://");
    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - {DOCKER}/prometheus/alerts.yml\nscrape_configs:\n  - job_name: eventgate\n    static_configs:\n      - targets: [\"{target}\"]\n"
        ),
    )
    .unwrap();
    let _prometheus = Prometheus(
        Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus (Debian: apt-get install prometheus; .ci/run installs it)"),
    );
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    // Until a few scrapes are in (each 1 s): rate() needs two samples in its window.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(r) = client
            .get(format!("{base}/api/v1/query"))
            .query(&[("query", "count_over_time(eventgate_build_info[1m])")])
            .send()
            .await
        {
            if let Ok(v) = r.json::<Value>().await {
                let samples = v["data"]["result"][0]["value"][1]
                    .as_str()
                    .and_then(|s| s.parse::<f64>().ok())
                    .unwrap_or(0.0);
                if samples >= 4.0 {
                    break;
                }
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "Prometheus never scraped the node"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let up = query(&client, &base, "up").await;
    assert_eq!(up["data"]["result"][0]["value"][1], "1", "{up}");
    // The rules load in Prometheus itself.
    let rules: Value = client
        .get(format!("{base}/api/v1/rules"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let loaded = rules["data"]["groups"][0]["rules"]
        .as_array()
        .map_or(0, Vec::len);
    assert!(loaded >= 12, "{rules}");

    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(format!("{DOCKER}/grafana/eventgate-dashboard.json")).unwrap(),
    )
    .unwrap();
    let mut checked = 0;
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap();
            let answer = query(&client, &base, expr).await;
            assert_eq!(answer["status"], "success", "{expr}: {answer}");
            let result = answer["data"]["result"].as_array().unwrap();
            assert!(
                !result.is_empty(),
                "panel `{}`: `{expr}` returned no data",
                panel["title"]
            );
            checked += 1;
        }
    }
    assert!(checked >= 17, "{checked}");
    node.stop().await;
}
