//! Stream fan-out: N SSE (or WebSocket) clients on one topic, messages published at a fixed
//! open-loop rate; delivered messages/s, loss, publish→receive latency (HdrHistogram) and the
//! server's CPU and RSS (from /proc), for eventgate and, in the same run with the same client,
//! the practical ceiling (`bare-broadcast`: axum + `tokio::sync::broadcast`) and Pushpin (when
//! installed; `message_rate=0`). Then idle connections, for memory per connection.
//!
//! `cargo build --release -p eventgate -p eventgate-bench && target/release/stream-fanout`
//! (`--help` for the knobs; `--servers eventgate,bare` to leave Pushpin out).
//!
//! `--broker kafka`: eventgate on a tansu process (Kafka protocol), published through the
//! webhook receiver. `--broker mqtt --servers eventgate,mosquitto`: messages published into
//! Mosquitto by an MQTT client (QoS 1), fanned out by eventgate (SSE/WS) and, side by side, by
//! Mosquitto's own WebSocket listener to MQTT-over-WebSocket clients; server CPU includes the
//! broker in both.

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clap::Parser;
use eventgate_bench::{cpu_seconds, free_port, latency_histogram, wait_ready, GatewayProcess};
use hdrhistogram::Histogram;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

#[derive(Debug, Parser)]
struct Args {
    /// Streaming clients in the fan-out scenarios.
    #[arg(long, default_value_t = 1000)]
    clients: usize,
    /// Publishes per second (each of `--batch` messages), for every server: the cost per
    /// delivery depends on the rate (batching), so servers are compared at the same one. 40 is
    /// where Pushpin and Mosquitto's WebSocket listener still keep up with 1000 clients.
    #[arg(long, default_value_t = 40)]
    rate: u64,
    /// Seconds of publishing per scenario.
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// Messages per publish in the batched scenario.
    #[arg(long, default_value_t = 10)]
    batch: usize,
    /// Idle connections for the memory scenario (0 to skip).
    #[arg(long, default_value_t = 10_000)]
    idle: usize,
    /// Another rate for Pushpin only (it saturates far below the others). Its ratios to
    /// servers at another rate are then not printed: they would not compare the same work.
    #[arg(long)]
    pushpin_rate: Option<u64>,
    /// Another rate for Mosquitto's WebSocket listener only (as `--pushpin-rate`).
    #[arg(long)]
    mosquitto_rate: Option<u64>,
    /// Servers to measure, of eventgate, bare, pushpin, mosquitto.
    #[arg(long, value_delimiter = ',', default_value = "eventgate,bare,pushpin")]
    servers: Vec<String>,
    /// `sse` or `ws` for the fan-out scenarios.
    #[arg(long, default_value = "sse")]
    protocol: String,
    /// The broker under eventgate: embedded, kafka (a tansu process) or mqtt (Mosquitto).
    #[arg(long, default_value = "embedded")]
    broker: String,
}

/// A server under test: where clients connect and how to publish.
struct Server {
    name: &'static str,
    base: String,
    stream_path: String,
    ws_path: Option<String>,
    /// Processes whose CPU and RSS are the server's.
    pids: Vec<u32>,
    publish: Publisher,
    _guards: Vec<Box<dyn std::any::Any>>,
}

enum Publisher {
    /// One POST per message to `/webhook-receiver` (a batch is that many concurrent POSTs).
    Eventgate(String),
    /// One POST of newline-separated messages.
    Bare(String),
    /// Pushpin's HTTP publish API, one item per message.
    Pushpin(String),
    /// QoS 1 publishes into the MQTT broker, one per message.
    Mqtt(rumqttc::AsyncClient),
}

impl Publisher {
    fn duplicate(&self) -> Self {
        match self {
            Publisher::Eventgate(u) => Publisher::Eventgate(u.clone()),
            Publisher::Bare(u) => Publisher::Bare(u.clone()),
            Publisher::Pushpin(u) => Publisher::Pushpin(u.clone()),
            Publisher::Mqtt(c) => Publisher::Mqtt(c.clone()),
        }
    }
}

struct Figures {
    rate: u64,
    delivered: u64,
    expected: u64,
    cpu: f64,
    p50_ms: f64,
    p99_ms: f64,
    rss_mb: f64,
}

fn descendants(pid: u32) -> Vec<u32> {
    let mut out = vec![pid];
    let mut i = 0;
    while i < out.len() {
        let p = out[i];
        if let Ok(tasks) = std::fs::read_dir(format!("/proc/{p}/task")) {
            for t in tasks.flatten() {
                let children =
                    std::fs::read_to_string(t.path().join("children")).unwrap_or_default();
                out.extend(
                    children
                        .split_whitespace()
                        .filter_map(|c| c.parse::<u32>().ok()),
                );
            }
        }
        i += 1;
    }
    out
}

fn total_cpu(pids: &[u32]) -> f64 {
    pids.iter().map(|p| cpu_seconds(*p)).sum()
}

fn total_rss_kb(pids: &[u32]) -> u64 {
    pids.iter()
        .map(|p| eventgate_chaos_tests::rss_kib(*p))
        .sum()
}

/// Opens a raw HTTP/1.1 streaming request (SSE, or a WebSocket upgrade) and answers the socket
/// once the response head has arrived.
async fn open_stream(addr: &str, path: &str, ws: bool) -> anyhow::Result<(TcpStream, Vec<u8>)> {
    if path == MQTT_WS_PATH {
        return open_mqtt_ws(addr).await;
    }
    let mut socket = TcpStream::connect(addr).await?;
    socket.set_nodelay(true)?;
    let request = if ws {
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
    } else {
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n\r\n")
    };
    socket.write_all(request.as_bytes()).await?;
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = socket.read(&mut buf).await?;
        anyhow::ensure!(n > 0, "closed before the response head");
        head.extend_from_slice(&buf[..n]);
        if let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") {
            let status_ok = head.starts_with(b"HTTP/1.1 200") || head.starts_with(b"HTTP/1.1 101");
            anyhow::ensure!(status_ok, "{}", String::from_utf8_lossy(&head[..end]));
            let rest = head.split_off(end + 4);
            return Ok((socket, rest));
        }
    }
}

/// The path of Mosquitto's WebSocket listener (`mqtt` subprotocol).
const MQTT_WS_PATH: &str = "/mqtt";

/// One client→server WebSocket frame (binary, masked with a fixed key: a load client).
fn ws_frame(payload: &[u8]) -> Vec<u8> {
    let mask = [0x12u8, 0x34, 0x56, 0x78];
    let mut frame = vec![0x82u8, 0x80 | payload.len() as u8];
    frame.extend_from_slice(&mask);
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    frame
}

/// An MQTT 3.1.1 subscriber of `bench` (QoS 0) over Mosquitto's WebSocket listener: the
/// upgrade, then CONNECT and SUBSCRIBE each in a frame; what follows are PUBLISH frames whose
/// payloads carry the markers.
async fn open_mqtt_ws(addr: &str) -> anyhow::Result<(TcpStream, Vec<u8>)> {
    let mut socket = TcpStream::connect(addr).await?;
    socket.set_nodelay(true)?;
    let request = format!("GET {MQTT_WS_PATH} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: mqtt\r\n\r\n");
    socket.write_all(request.as_bytes()).await?;
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    let rest = loop {
        let n = socket.read(&mut buf).await?;
        anyhow::ensure!(n > 0, "closed before the response head");
        head.extend_from_slice(&buf[..n]);
        if let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") {
            anyhow::ensure!(
                head.starts_with(b"HTTP/1.1 101"),
                "{}",
                String::from_utf8_lossy(&head[..end])
            );
            break head.split_off(end + 4);
        }
    };
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let id = format!("b{}", NEXT.fetch_add(1, Ordering::Relaxed));
    // CONNECT: protocol "MQTT" level 4, clean session, keep-alive off, client id.
    let mut connect = vec![0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, 0x02, 0x00, 0x00];
    connect.extend_from_slice(&(id.len() as u16).to_be_bytes());
    connect.extend_from_slice(id.as_bytes());
    let mut packet = vec![0x10, connect.len() as u8];
    packet.extend(connect);
    socket.write_all(&ws_frame(&packet)).await?;
    // SUBSCRIBE: packet id 1, `bench` at QoS 0.
    let subscribe = [
        0x82, 0x0a, 0x00, 0x01, 0x00, 0x05, b'b', b'e', b'n', b'c', b'h', 0x00,
    ];
    socket.write_all(&ws_frame(&subscribe)).await?;
    Ok((socket, rest))
}

/// Reads a stream, finding `M<seq>:<micros>;` markers (in SSE data lines or WebSocket
/// payloads alike), until `stop`; counts them and records their latency.
async fn reader(
    mut socket: TcpStream,
    mut pending: Vec<u8>,
    epoch: Instant,
    delivered: Arc<AtomicU64>,
    latencies: Arc<Mutex<Histogram<u64>>>,
    stop: tokio_util::sync::CancellationToken,
) {
    let mut h = latency_histogram();
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        // Parse complete markers in `pending`.
        let mut consumed = 0;
        let mut i = 0;
        while let Some(pos) = pending[i..].iter().position(|b| *b == b'M') {
            let start = i + pos;
            let Some(end) = pending[start..].iter().position(|b| *b == b';') else {
                break;
            };
            let marker = &pending[start + 1..start + end];
            if let Some((_, micros)) = std::str::from_utf8(marker)
                .ok()
                .and_then(|m| m.split_once(':'))
            {
                if let Ok(sent) = micros.parse::<u64>() {
                    let now = epoch.elapsed().as_micros() as u64;
                    h.record(now.saturating_sub(sent).max(1)).ok();
                    delivered.fetch_add(1, Ordering::Relaxed);
                }
            }
            i = start + end + 1;
            consumed = i;
        }
        pending.drain(..consumed.max(pending.len().saturating_sub(64).min(consumed)));
        if pending.len() > 1 << 20 {
            pending.clear();
        }
        tokio::select! {
            () = stop.cancelled() => break,
            n = socket.read(&mut buf) => match n {
                Ok(0) | Err(_) => break,
                Ok(n) => pending.extend_from_slice(&buf[..n]),
            }
        }
    }
    latencies.lock().unwrap().add(&h).ok();
}

async fn publish_once(
    client: &reqwest::Client,
    publisher: &Publisher,
    seqs: std::ops::Range<u64>,
    epoch: Instant,
) {
    let marker = |seq: u64| format!("M{seq}:{};", epoch.elapsed().as_micros());
    match publisher {
        Publisher::Eventgate(url) => {
            let sends: Vec<_> = seqs
                .map(|seq| {
                    client
                        .post(url)
                        .header("content-type", "text/plain")
                        .body(marker(seq))
                        .send()
                })
                .collect();
            for r in futures_util::future::join_all(sends).await {
                if !r.is_ok_and(|r| r.status() == 202) {
                    eprintln!("publish failed");
                }
            }
        }
        Publisher::Bare(url) => {
            let body: String = seqs.map(|s| format!("{}\n", marker(s))).collect();
            let _ = client.post(url).body(body).send().await;
        }
        Publisher::Mqtt(client) => {
            for seq in seqs {
                if client
                    .publish("bench", rumqttc::QoS::AtLeastOnce, false, marker(seq))
                    .await
                    .is_err()
                {
                    eprintln!("mqtt publish failed");
                }
            }
        }
        Publisher::Pushpin(url) => {
            // One item carrying the publish's events, as the bare server gets one body.
            let content: String = seqs.map(|s| format!("data: {}\n\n", marker(s))).collect();
            let item = serde_json::json!({
                "channel": "bench",
                "formats": { "http-stream": { "content": content } }
            });
            let _ = client
                .post(url)
                .json(&serde_json::json!({ "items": [item] }))
                .send()
                .await;
        }
    }
}

async fn fanout(server: &Server, args: &Args, batch: usize, ws: bool) -> anyhow::Result<Figures> {
    let rate = rate_of(args, server.name);
    let addr = server.base.trim_start_matches("http://").to_owned();
    let path = if ws {
        server
            .ws_path
            .clone()
            .ok_or_else(|| anyhow::anyhow!("no websocket"))?
    } else {
        server.stream_path.clone()
    };
    let epoch = Instant::now();
    let delivered = Arc::new(AtomicU64::new(0));
    let latencies = Arc::new(Mutex::new(latency_histogram()));
    let stop = tokio_util::sync::CancellationToken::new();
    let mut readers = Vec::new();
    for _ in 0..args.clients {
        let (socket, rest) = open_stream(&addr, &path, ws).await?;
        readers.push(tokio::spawn(reader(
            socket,
            rest,
            epoch,
            delivered.clone(),
            latencies.clone(),
            stop.clone(),
        )));
    }
    // Let every subscription settle (Pushpin subscribes to its channel asynchronously).
    tokio::time::sleep(Duration::from_millis(500)).await;
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(64)
        .build()?;
    let cpu_before = total_cpu(&server.pids);
    let started = Instant::now();
    let publishes = rate * args.seconds;
    let mut seq = 0u64;
    let mut inflight = Vec::new();
    for n in 0..publishes {
        tokio::time::sleep_until(started + Duration::from_micros(n * 1_000_000 / rate)).await;
        let range = seq..seq + batch as u64;
        seq += batch as u64;
        let client = client.clone();
        let publisher = server.publish.duplicate();
        inflight.push(tokio::spawn(async move {
            publish_once(&client, &publisher, range, epoch).await;
        }));
    }
    for t in inflight {
        let _ = t.await;
    }
    let expected = seq * args.clients as u64;
    // Drain: until everything arrived or nothing moved for a second.
    let mut last = delivered.load(Ordering::Relaxed);
    let drain_deadline = Instant::now() + Duration::from_secs(10);
    while last < expected && Instant::now() < drain_deadline {
        tokio::time::sleep(Duration::from_millis(1000)).await;
        let now = delivered.load(Ordering::Relaxed);
        if now == last {
            break;
        }
        last = now;
    }
    let cpu = total_cpu(&server.pids) - cpu_before;
    let rss_mb = total_rss_kb(&server.pids) as f64 / 1024.0;
    stop.cancel();
    for r in readers {
        let _ = r.await;
    }
    let h = latencies.lock().unwrap();
    Ok(Figures {
        rate,
        delivered: delivered.load(Ordering::Relaxed),
        expected,
        cpu,
        p50_ms: h.value_at_quantile(0.5) as f64 / 1000.0,
        p99_ms: h.value_at_quantile(0.99) as f64 / 1000.0,
        rss_mb,
    })
}

/// Server RSS per idle connection, in KB.
async fn idle(server: &Server, n: usize, ws: bool) -> anyhow::Result<f64> {
    let addr = server.base.trim_start_matches("http://").to_owned();
    let path = if ws {
        server
            .ws_path
            .clone()
            .ok_or_else(|| anyhow::anyhow!("no websocket"))?
    } else {
        server.stream_path.clone()
    };
    // Warm up (allocator arenas, the topic's consumption), then measure.
    let mut warm = Vec::new();
    for _ in 0..100 {
        warm.push(open_stream(&addr, &path, ws).await?);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = total_rss_kb(&server.pids);
    let mut held = Vec::with_capacity(n);
    for _ in 0..n {
        held.push(open_stream(&addr, &path, ws).await?);
    }
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let after = total_rss_kb(&server.pids);
    drop(held);
    drop(warm);
    Ok((after.saturating_sub(before)) as f64 * 1.024 / n as f64)
}

fn sibling(name: &str) -> std::path::PathBuf {
    let mut p = std::env::current_exe().expect("current exe");
    p.set_file_name(name);
    p
}

struct Killed(Child);
impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// SIGKILLs processes (Pushpin's runner leaves its services running when it is killed).
struct KillAll(Vec<u32>);
impl Drop for KillAll {
    fn drop(&mut self) {
        for pid in &self.0 {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
        }
    }
}

/// Waits (bounded) until Pushpin's fixed local ports are free (a previous instance is gone).
async fn wait_pushpin_ports_free() -> anyhow::Result<()> {
    for _ in 0..100 {
        let free = [5560u16, 5562, 5563]
            .iter()
            .all(|p| std::net::TcpListener::bind(("127.0.0.1", *p)).is_ok());
        if free {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    anyhow::bail!("pushpin's ports 5560-5563 are taken")
}

/// A broker process under eventgate (or serving clients itself).
enum BrokerProcess {
    Embedded,
    Kafka(eventgate_chaos_tests::tansu::Tansu),
    /// Mosquitto, and the directory it keeps its data in (removed after it).
    Mqtt {
        broker: eventgate_chaos_tests::mosquitto::Mosquitto,
        _dir: tempfile::TempDir,
    },
}

impl BrokerProcess {
    async fn start(kind: &str) -> anyhow::Result<Self> {
        Ok(match kind {
            "embedded" => Self::Embedded,
            "kafka" => Self::Kafka(eventgate_chaos_tests::tansu::Tansu::start().await?),
            "mqtt" => {
                let dir = tempfile::tempdir()?;
                let m = eventgate_chaos_tests::mosquitto::Mosquitto::start(dir.path()).await?;
                Self::Mqtt {
                    broker: m,
                    _dir: dir,
                }
            }
            other => anyhow::bail!("unknown broker {other}"),
        })
    }

    fn toml(&self) -> String {
        match self {
            Self::Embedded => String::new(),
            Self::Kafka(t) => format!(
                "[broker]\nkind = \"kafka\"\n[broker.kafka]\nbootstrap_servers = \"{}\"\n",
                t.bootstrap
            ),
            Self::Mqtt { broker: m, .. } => format!(
                "[broker]\nkind = \"mqtt\"\n[broker.mqtt]\naddress = \"{}\"\ncontent_type = \"text/plain\"\n",
                m.address()
            ),
        }
    }

    fn pids(&self) -> Vec<u32> {
        match self {
            Self::Embedded => Vec::new(),
            Self::Kafka(t) => vec![t.pid()],
            Self::Mqtt { broker: m, .. } => m.pid().into_iter().collect(),
        }
    }
}

/// An MQTT publisher (QoS 1) into Mosquitto, its event loop polled in a task.
async fn mqtt_publisher(port: u16) -> anyhow::Result<Publisher> {
    let mut options = rumqttc::MqttOptions::new("bench-publisher", "127.0.0.1", port);
    options.set_keep_alive(Duration::from_secs(30));
    options.set_inflight(1000);
    let (client, mut events) = rumqttc::AsyncClient::new(options, 10_000);
    let mut network = rumqttc::NetworkOptions::new();
    network.set_tcp_nodelay(true);
    events.set_network_options(network);
    let (ready, connected) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let mut ready = Some(ready);
        while let Ok(event) = events.poll().await {
            if let rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(_)) = event {
                if let Some(r) = ready.take() {
                    let _ = r.send(());
                }
            }
        }
    });
    tokio::time::timeout(Duration::from_secs(10), connected).await??;
    Ok(Publisher::Mqtt(client))
}

async fn start_eventgate(broker: &str) -> anyhow::Result<Server> {
    let broker = BrokerProcess::start(broker).await?;
    let port = free_port();
    let gw = GatewayProcess::start(
        port,
        &format!(
            "{}[topics]\nauto_create = true\nnames = [\"bench\"]\n[streams]\nmax_connections = 30000\n",
            broker.toml()
        ),
    )
    .await?;
    let base = gw.base.clone();
    let mut pids = vec![gw.pid()];
    pids.extend(broker.pids());
    let publish = match &broker {
        BrokerProcess::Mqtt { broker: m, .. } => mqtt_publisher(m.port).await?,
        _ => Publisher::Eventgate(format!("{base}/webhook-receiver?topic=bench")),
    };
    Ok(Server {
        name: "eventgate",
        pids,
        publish,
        base,
        stream_path: "/sse/bench".into(),
        ws_path: Some("/ws/bench".into()),
        _guards: vec![Box::new(gw), Box::new(broker)],
    })
}

/// Mosquitto's own WebSocket listener serving MQTT-over-WebSocket subscribers.
async fn start_mosquitto() -> anyhow::Result<Server> {
    let broker = BrokerProcess::start("mqtt").await?;
    let BrokerProcess::Mqtt { broker: m, .. } = &broker else {
        unreachable!("an mqtt broker")
    };
    let publish = mqtt_publisher(m.port).await?;
    Ok(Server {
        name: "mosquitto-ws",
        base: format!("http://127.0.0.1:{}", m.ws_port),
        stream_path: MQTT_WS_PATH.into(),
        ws_path: Some(MQTT_WS_PATH.into()),
        pids: broker.pids(),
        publish,
        _guards: vec![Box::new(broker)],
    })
}

async fn start_bare() -> anyhow::Result<Server> {
    let port = free_port();
    let child = Command::new(sibling("bare-broadcast"))
        .arg(port.to_string())
        .stdin(Stdio::null())
        .spawn()?;
    let guard = Killed(child);
    let base = format!("http://127.0.0.1:{port}");
    wait_ready(&format!("{base}/readyz")).await?;
    Ok(Server {
        name: "bare axum+broadcast",
        pids: vec![guard.0.id()],
        publish: Publisher::Bare(format!("{base}/publish")),
        base,
        stream_path: "/sse/bench".into(),
        ws_path: Some("/ws/bench".into()),
        _guards: vec![Box::new(guard)],
    })
}

async fn start_pushpin() -> anyhow::Result<Server> {
    anyhow::ensure!(
        eventgate_chaos_tests::find_program("pushpin").is_some(),
        "pushpin is not installed (apt-get install pushpin)"
    );
    // The origin: answers GRIP "hold this stream on channel bench".
    let origin_port = free_port();
    let origin = axum::Router::new().route(
        "/sse/bench",
        axum::routing::get(|| async {
            (
                [
                    ("content-type", "text/event-stream"),
                    ("grip-hold", "stream"),
                    ("grip-channel", "bench"),
                ],
                "",
            )
        }),
    );
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", origin_port)).await?;
    tokio::spawn(async move { axum::serve(listener, origin).await });
    wait_pushpin_ports_free().await?;
    let dir = tempfile::tempdir()?;
    let http_port = free_port();
    let publish_port = free_port();
    let template = std::fs::read_to_string("/etc/pushpin/pushpin.conf")?;
    let mut conf = String::new();
    for line in template.lines() {
        let key = line.split('=').next().unwrap_or("");
        let line = match key {
            "rundir" => format!("rundir={}", dir.path().join("run").display()),
            "logdir" => format!("logdir={}", dir.path().join("log").display()),
            "http_port" => format!("http_port={http_port}"),
            "push_in_http_port" => format!("push_in_http_port={publish_port}"),
            "message_rate" => "message_rate=0".to_owned(),
            "client_maxconn" => "client_maxconn=30000".to_owned(),
            "routesfile" => format!("routesfile={}", dir.path().join("routes").display()),
            "include" => line.replace("{libdir}", "/usr/lib/pushpin"),
            _ => line.to_owned(),
        };
        conf.push_str(&line);
        conf.push('\n');
        if line == "[proxy]" {
            // Pushpin reaches origins through zurl; ours runs in the temporary directory.
            for (key, name) in [
                ("zurl_out_specs", "zurl-in"),
                ("zurl_out_stream_specs", "zurl-in-stream"),
                ("zurl_in_specs", "zurl-out"),
            ] {
                conf.push_str(&format!(
                    "{key}=ipc://{}/{name}\n",
                    dir.path().join("run").display()
                ));
            }
        }
    }
    // zurl refuses loopback origins by default; this one is on loopback.
    let zurl_conf: String = std::fs::read_to_string("/etc/zurl.conf")?
        .lines()
        .map(|l| {
            let l = l.replace(
                "/var/run/zurl",
                &dir.path().join("run").display().to_string(),
            );
            if l.starts_with("deny=") {
                "deny=".to_owned()
            } else {
                l
            }
        })
        .map(|l| l + "\n")
        .collect();
    let zurl_path = dir.path().join("zurl.conf");
    std::fs::write(&zurl_path, zurl_conf)?;
    std::fs::create_dir_all(dir.path().join("run"))?;
    std::fs::create_dir_all(dir.path().join("log"))?;
    std::fs::write(
        dir.path().join("routes"),
        format!("* 127.0.0.1:{origin_port}\n"),
    )?;
    let conf_path = dir.path().join("pushpin.conf");
    std::fs::write(&conf_path, conf)?;
    let child = Command::new("pushpin")
        .arg("--config")
        .arg(&conf_path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let guard = Killed(child);
    let zurl = Killed(
        Command::new("zurl")
            .arg(format!("--config={}", zurl_path.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?,
    );
    let base = format!("http://127.0.0.1:{http_port}");
    // Ready when a stream opens through it.
    let mut ready = false;
    for _ in 0..200 {
        let attempt = tokio::time::timeout(
            Duration::from_secs(2),
            open_stream(base.trim_start_matches("http://"), "/sse/bench", false),
        )
        .await;
        if matches!(attempt, Ok(Ok(_))) {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    anyhow::ensure!(
        ready,
        "pushpin did not start (logs in {})",
        dir.path().display()
    );
    let mut pids = descendants(guard.0.id());
    pids.push(zurl.0.id());
    Ok(Server {
        name: "pushpin",
        pids: pids.clone(),
        publish: Publisher::Pushpin(format!("http://127.0.0.1:{publish_port}/publish/")),
        base,
        stream_path: "/sse/bench".into(),
        ws_path: None,
        _guards: vec![
            Box::new(KillAll(pids.clone())),
            Box::new(guard),
            Box::new(zurl),
            Box::new(dir),
        ],
    })
}

async fn start(name: &str, broker: &str) -> anyhow::Result<Server> {
    match name {
        "eventgate" => start_eventgate(broker).await,
        "mosquitto" => start_mosquitto().await,
        "bare" => start_bare().await,
        "pushpin" => start_pushpin().await,
        other => anyhow::bail!("unknown server {other}"),
    }
}

/// The publish rate `server` is measured at.
fn rate_of(args: &Args, server: &str) -> u64 {
    match server {
        "pushpin" => args.pushpin_rate.unwrap_or(args.rate),
        "mosquitto-ws" => args.mosquitto_rate.unwrap_or(args.rate),
        _ => args.rate,
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    eventgate_raft_store::install_crypto_provider();
    let args = Args::parse();
    let ws = args.protocol == "ws";
    println!(
        "stream fan-out: {} {} clients, {} publishes/s for {} s; batched = {} messages per publish; broker {}",
        args.clients, args.protocol, args.rate, args.seconds, args.batch, args.broker
    );
    let mut table: BTreeMap<(usize, &'static str), (f64, f64)> = BTreeMap::new();
    for name in &args.servers {
        let server = match start(name, &args.broker).await {
            Ok(s) => s,
            Err(e) => {
                println!("{name}: not measured: {e}");
                continue;
            }
        };
        for batch in [1, args.batch] {
            if ws && server.ws_path.is_none() {
                continue;
            }
            let f = fanout(&server, &args, batch, ws).await?;
            let per_cpu = f.delivered as f64 / f.cpu.max(1e-9);
            println!(
                "{:<22} batch={:<3} rate={:<4} delivered {:>9}/{:<9} (loss {:.3}%)  server cpu {:>6.2} s  {:>9.0} deliveries/cpu-s  p50 {:>7.2} ms  p99 {:>7.2} ms  rss {:>6.1} MB",
                server.name,
                batch,
                f.rate,
                f.delivered,
                f.expected,
                100.0 * (f.expected.saturating_sub(f.delivered)) as f64 / f.expected.max(1) as f64,
                f.cpu,
                per_cpu,
                f.p50_ms,
                f.p99_ms,
                f.rss_mb
            );
            table.insert((batch, server.name), (per_cpu, f.p99_ms));
        }
        let has_ws = server.ws_path.is_some();
        drop(server);
        if args.idle > 0 {
            // Each on a fresh server: freed memory is kept by allocators and would be reused.
            let sse = idle(&start(name, &args.broker).await?, args.idle, false).await?;
            let ws_kb = if has_ws {
                format!(
                    "{:.1} KB",
                    idle(&start(name, &args.broker).await?, args.idle, true).await?
                )
            } else {
                "-".to_owned()
            };
            println!(
                "{:<22} idle: {} connections: {:.1} KB per SSE, {} per WebSocket",
                name, args.idle, sse, ws_kb
            );
        }
    }
    for batch in [1, args.batch] {
        let Some((eg, eg_p99)) = table.get(&(batch, "eventgate")).copied() else {
            continue;
        };
        for (other, (per_cpu, p99)) in table.range((batch, "")..(batch + 1, "")) {
            if other.1 != "eventgate" && rate_of(&args, other.1) != args.rate {
                println!(
                    "batch={batch}: eventgate / {}: not compared (measured at {}/s, eventgate at {}/s: not the same work)",
                    other.1,
                    rate_of(&args, other.1),
                    args.rate
                );
            } else if other.1 != "eventgate" {
                println!(
                    "batch={batch}: eventgate / {}: {:.2}x deliveries per server cpu-s, p99 {:.2}x",
                    other.1,
                    eg / per_cpu,
                    eg_p99 / p99.max(1e-9)
                );
            }
        }
    }
    Ok(())
}
