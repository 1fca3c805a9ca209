use std::process::{Command, Stdio};
use std::time::Duration;

use eventgate_chaos_tests::{init_logging, run_ok, wait, ClusterOptions, ProcessCluster};
use tracing::info;

/// A node whose certificate comes from another CA cannot join: the cluster refuses it with a
/// clear log line, and the outsider gives up after its join timeout and exits 1.
#[tokio::test]
async fn node_with_certificate_from_another_ca_is_refused() -> anyhow::Result<()> {
    init_logging();
    let cluster = ProcessCluster::start(ClusterOptions {
        nodes: 1,
        ..Default::default()
    })
    .await?;
    let bin = cluster.bin().to_owned();
    let dir = cluster.dir.path().join("outsider");
    let certs = dir.join("certs");
    let certs_s = certs.display().to_string();
    run_ok(&bin, &["certs", "init", "--dir", &certs_s])?;
    run_ok(&bin, &["certs", "issue", "outsider", "--dir", &certs_s])?;
    let seed = cluster.nodes[&1].cluster;
    let config = format!(
        r#"node_id = 9
data_dir = "{data}"
[http]
listen = "127.0.0.1:0"
[cluster]
listen = "127.0.0.1:0"
seeds = ["{seed}"]
join_timeout = "3s"
[tls]
ca_cert = "{certs_s}/ca.pem"
cert = "{certs_s}/outsider.pem"
key = "{certs_s}/outsider.key"
"#,
        data = dir.join("data").display(),
    );
    let config_path = dir.join("outsider.toml");
    std::fs::write(&config_path, config)?;
    info!("--- start a node with a certificate from another CA");
    let out = tokio::time::timeout(
        Duration::from_secs(30),
        tokio::task::spawn_blocking(move || {
            Command::new(bin)
                .args(["serve", "--config"])
                .arg(config_path)
                .env("NO_COLOR", "1")
                .stdin(Stdio::null())
                .output()
        }),
    )
    .await???;
    let outsider_log = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{outsider_log}");
    assert!(
        outsider_log.contains("could not join the cluster"),
        "{outsider_log}"
    );
    let line = "refused cluster connection: peer certificate is not issued by this cluster's CA";
    wait::until(
        "the member to log the refusal",
        Duration::from_secs(5),
        Duration::from_millis(50),
        || async { cluster.nodes[&1].log_text().contains(line).then_some(()) },
    )
    .await?;
    // The member is unharmed and still alone.
    let status = cluster.node_status(1).await.expect("node 1 answers");
    assert_eq!(status["voters"], serde_json::json!([1]));
    Ok(())
}
