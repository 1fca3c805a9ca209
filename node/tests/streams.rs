//! WebSocket and SSE against a real node, with real clients: every message in order for many
//! clients, resumption by event id, slow consumers, publishing over WebSocket, the errors.

mod common;

use std::time::Duration;

use common::stream::{ws_next, ws_open};
use common::websub::publish;
use eventgate_chaos_tests::sse::Sse;
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

const WAIT: Duration = Duration::from_secs(10);

/// A node that creates topics on first use, with `extra` config.
async fn start(extra: &str) -> common::TestNode {
    common::start(&format!("{extra}\n[topics]\nauto_create = true\n")).await
}

fn ws_base(node: &common::TestNode) -> String {
    node.base.replacen("http://", "ws://", 1)
}

/// 20 WebSocket and 20 SSE clients, 300 messages: each client gets all of them, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_clients_get_every_message_in_order() {
    let node = start("").await;
    let base = node.base.clone();
    publish(&node, "fan", "text/plain", b"before".to_vec()).await;
    let mut sse = Vec::new();
    for _ in 0..20 {
        let mut s = Sse::open(&format!("{base}/sse/fan"), None).await;
        // Nothing published since: the first bytes are the stream's head, so it is live.
        assert!(tokio::time::timeout(Duration::from_millis(50), s.next())
            .await
            .is_err());
        sse.push(s);
    }
    let mut ws = Vec::new();
    for _ in 0..20 {
        ws.push(ws_open(&format!("{}/ws/fan", ws_base(&node))).await);
    }
    let total = 300;
    let publisher = {
        let client = node.client.clone();
        let base = base.clone();
        tokio::spawn(async move {
            for i in 0..total {
                let r = client
                    .post(format!("{base}/webhook-receiver?topic=fan"))
                    .header("content-type", "text/plain")
                    .body(format!("m{i}"))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 202);
            }
        })
    };
    let mut readers = Vec::new();
    for mut s in sse {
        readers.push(tokio::spawn(async move {
            for i in 0..total {
                let e = s.expect(WAIT, "sse message").await;
                assert_eq!(e.data, format!("m{i}"));
                // The id is the position after the message (offset 0 was "before").
                assert_eq!(e.id.as_deref(), Some((i + 2).to_string().as_str()));
            }
        }));
    }
    for mut w in ws {
        readers.push(tokio::spawn(async move {
            for i in 0..total {
                match ws_next(&mut w, WAIT).await {
                    Ok(Message::Text(t)) => assert_eq!(t.as_str(), format!("m{i}")),
                    other => panic!("expected text m{i}, got {other:?}"),
                }
            }
        }));
    }
    publisher.await.unwrap();
    for r in readers {
        r.await.unwrap();
    }
    node.stop().await;
}

/// A client that left resumes exactly after its last event id, with the header or the query
/// parameter, over SSE and WebSocket; `from=earliest` reads everything retained.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resumes_exactly_after_the_last_event_id() {
    let node = start("").await;
    let base = node.base.clone();
    for i in 0..10 {
        publish(&node, "resume", "text/plain", format!("m{i}").into_bytes()).await;
    }
    let mut all = Sse::open(&format!("{base}/sse/resume?from=earliest"), None).await;
    for i in 0..4 {
        assert_eq!(all.expect(WAIT, "earliest").await.data, format!("m{i}"));
    }
    let last = all.last_id.clone().unwrap();
    drop(all);
    for i in 10..15 {
        publish(&node, "resume", "text/plain", format!("m{i}").into_bytes()).await;
    }
    let mut header = Sse::open(&format!("{base}/sse/resume"), Some(&last)).await;
    let mut query = Sse::open(&format!("{base}/sse/resume?lastEventId={last}"), None).await;
    for i in 4..15 {
        assert_eq!(header.expect(WAIT, "header").await.data, format!("m{i}"));
        assert_eq!(query.expect(WAIT, "query").await.data, format!("m{i}"));
    }
    // Live after the catch-up, with no gap and no repeat at the seam.
    publish(&node, "resume", "text/plain", b"m15".to_vec()).await;
    assert_eq!(header.expect(WAIT, "live").await.data, "m15");
    assert_eq!(header.last_id.as_deref(), Some("16"));

    // WebSocket with the JSON envelope: the id travels in the envelope.
    let mut ws = ws_open(&format!(
        "{}/ws/resume?envelope=json&from=13",
        ws_base(&node)
    ))
    .await;
    for i in 13..16 {
        let Ok(Message::Text(text)) = ws_next(&mut ws, WAIT).await else {
            panic!("expected an envelope");
        };
        let doc: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(doc["type"], "message");
        assert_eq!(doc["payload"], format!("m{i}"));
        assert_eq!(doc["offset"], i);
        assert_eq!(doc["id"], (i + 1).to_string());
        assert_eq!(doc["topic"], "resume");
        assert_eq!(doc["content_type"], "text/plain");
    }
    node.stop().await;
}

/// A WebSocket client that stops reading is closed with 4008 (seen once it reads again) while
/// an SSE client on the same topic gets every message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_consumer_is_closed_and_the_others_are_not() {
    let node = start("[streams]\nring_batches = 64\nbatch_max = 2\nsend_timeout = \"30s\"\n").await;
    let base = node.base.clone();
    publish(&node, "slow", "text/plain", b"x".to_vec()).await;
    // A client with a tiny receive window that does not read.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let stream = socket.connect(node.handle().http_addr).await.unwrap();
    let (mut slow, _) =
        tokio_tungstenite::client_async(format!("{}/ws/slow", ws_base(&node)), stream)
            .await
            .unwrap();
    let mut fast = Sse::open(&format!("{base}/sse/slow"), None).await;
    // 25 MiB: far more than the ring (at most 128 messages) and the socket buffers hold.
    let payload = "p".repeat(64 * 1024);
    let total = 400;
    // The publisher stays at most 16 messages ahead of the fast reader: a reader that keeps up,
    // whatever the speed of this machine.
    let (progress, mut read) = tokio::sync::watch::channel(0usize);
    let publisher = {
        let client = node.client.clone();
        let base = base.clone();
        let payload = payload.clone();
        tokio::spawn(async move {
            for i in 0..total {
                read.wait_for(|n| n + 16 >= i).await.unwrap();
                let r = client
                    .post(format!("{base}/webhook-receiver?topic=slow"))
                    .header("content-type", "text/plain")
                    .body(format!("{i}:{payload}"))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 202);
            }
        })
    };
    for i in 0..total {
        let e = fast.expect(WAIT, "fast reader").await;
        assert!(
            e.data.starts_with(&format!("{i}:")),
            "message {i}: {:?} {}",
            e.event,
            &e.data[..e.data.len().min(80)]
        );
        progress.send_replace(i + 1);
    }
    publisher.await.unwrap();
    // Now the slow client reads: what it was sent, then the close with its code.
    let mut received = 0;
    let code = loop {
        match tokio::time::timeout(WAIT, slow.next())
            .await
            .expect("slow client: no close")
        {
            Some(Ok(Message::Text(_))) => received += 1,
            Some(Ok(Message::Close(frame))) => break frame.map(|f| u16::from(f.code)),
            Some(Ok(_)) => {}
            Some(Err(e)) => panic!("slow client: {e} after {received} messages"),
            None => panic!("slow client: closed without a close frame after {received} messages"),
        }
    };
    assert_eq!(code, Some(4008));
    assert!(
        received < total,
        "the slow client got everything ({received})"
    );
    node.stop().await;
}

/// Under drop-oldest a slow SSE client is told how much it missed and goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drop_oldest_marks_the_gap() {
    let node = start(
        "[streams]\nring_batches = 2\nbatch_max = 1\nslow_consumer = \"drop-oldest\"\nsend_timeout = \"30s\"\n",
    )
    .await;
    publish(&node, "gappy", "text/plain", b"x".to_vec()).await;
    let mut ws = ws_open(&format!("{}/ws/gappy?envelope=json", ws_base(&node))).await;
    let payload = "p".repeat(64 * 1024);
    // Publish far more than the socket buffers and the ring hold while the client does not read.
    for i in 0..300 {
        publish(
            &node,
            "gappy",
            "text/plain",
            format!("{i}:{payload}").into_bytes(),
        )
        .await;
    }
    let mut last = None;
    let mut gaps = 0u64;
    let mut seen = 0;
    loop {
        let Ok(Message::Text(text)) = ws_next(&mut ws, WAIT).await else {
            panic!("the connection should stay open under drop-oldest");
        };
        let doc: serde_json::Value = serde_json::from_str(&text).unwrap();
        match doc["type"].as_str() {
            Some("gap") => gaps += doc["missed"].as_u64().unwrap(),
            Some("message") => {
                let offset = doc["offset"].as_u64().unwrap();
                if let Some(prev) = last {
                    assert!(offset > prev, "order kept");
                }
                last = Some(offset);
                seen += 1;
                if offset == 300 {
                    break;
                }
            }
            other => panic!("unexpected frame type {other:?}"),
        }
    }
    assert!(gaps > 0, "no gap marker");
    assert_eq!(
        seen as u64 + gaps,
        300,
        "every message is either delivered or counted missing"
    );
    node.stop().await;
}

/// WebSocket frames are published to the topic (text and binary, with their content types);
/// under the envelope each publish is acknowledged with its position.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_clients_publish() {
    let node = start("").await;
    publish(&node, "chat", "text/plain", b"x".to_vec()).await;
    let mut reader = Sse::open(&format!("{}/sse/chat?envelope=json", node.base), None).await;
    let mut ws = ws_open(&format!("{}/ws/chat?envelope=json", ws_base(&node))).await;
    ws.send(Message::text("hello")).await.unwrap();
    ws.send(Message::binary(vec![0u8, 1, 2])).await.unwrap();
    let mut acks = Vec::new();
    let mut echoes = 0;
    while acks.len() < 2 || echoes < 2 {
        let Ok(Message::Text(text)) = ws_next(&mut ws, WAIT).await else {
            panic!("expected a text frame");
        };
        let doc: serde_json::Value = serde_json::from_str(&text).unwrap();
        match doc["type"].as_str() {
            Some("ack") => acks.push(doc["offset"].as_u64().unwrap()),
            Some("message") => echoes += 1,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(acks, vec![1, 2]);
    let text = reader.expect(WAIT, "text").await;
    let doc: serde_json::Value = serde_json::from_str(&text.data).unwrap();
    assert_eq!(doc["payload"], "hello");
    assert_eq!(doc["content_type"], "text/plain; charset=utf-8");
    let binary = reader.expect(WAIT, "binary").await;
    let doc: serde_json::Value = serde_json::from_str(&binary.data).unwrap();
    assert_eq!(doc["payload_base64"], "AAEC");
    node.stop().await;
}

/// Publishing can be switched off; a refused publish closes with 1008.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishing_can_be_refused() {
    let node = start("[streams]\nallow_publish = false\n").await;
    publish(&node, "ro", "text/plain", b"x".to_vec()).await;
    let mut ws = ws_open(&format!("{}/ws/ro", ws_base(&node))).await;
    ws.send(Message::text("nope")).await.unwrap();
    assert_eq!(ws_next(&mut ws, WAIT).await.unwrap_err(), Some(1008));
    node.stop().await;
}

/// Bad requests answer problem+json naming the field; nothing is left open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_are_refused_clearly() {
    let node = common::start("[topics]\nauto_create = false\nnames = [\"known\"]\n").await;
    let get = |path: String| {
        let client = node.client.clone();
        let url = format!("{}{path}", node.base);
        async move {
            let r = client.get(url).send().await.unwrap();
            let status = r.status().as_u16();
            let ct = r.headers()["content-type"].to_str().unwrap().to_owned();
            let doc: serde_json::Value = r.json().await.unwrap();
            assert_eq!(ct, "application/problem+json");
            (status, doc)
        }
    };
    let (status, doc) = get("/sse/unknown".into()).await;
    assert_eq!(
        (status, doc["type"].as_str()),
        (404, Some("https://eventgate.dev/problems/topic-not-found"))
    );
    let (status, doc) = get("/sse/known?from=yesterday".into()).await;
    assert_eq!((status, doc["field"].as_str()), (400, Some("from")));
    let (status, doc) = get("/sse/known?lastEventId=1.2".into()).await;
    assert_eq!((status, doc["field"].as_str()), (400, Some("lastEventId")));
    let (status, doc) = get("/sse/known?envelope=xml".into()).await;
    assert_eq!((status, doc["field"].as_str()), (400, Some("envelope")));
    let (status, doc) = get("/sse/bad%20name".into()).await;
    assert_eq!((status, doc["field"].as_str()), (400, Some("topic")));
    let (status, doc) = get("/ws/known".into()).await;
    assert_eq!(
        (status, doc["type"].as_str()),
        (
            426,
            Some("https://eventgate.dev/problems/websocket-upgrade-required")
        )
    );
    node.stop().await;
}

/// Stopping the node closes every stream with going-away: close code 1001, a final SSE event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_says_going_away() {
    let node = start("").await;
    publish(&node, "bye", "text/plain", b"x".to_vec()).await;
    let mut sse = Sse::open(&format!("{}/sse/bye", node.base), None).await;
    let mut ws = ws_open(&format!("{}/ws/bye", ws_base(&node))).await;
    let stopping = tokio::spawn(node.stop());
    let last = sse.expect(WAIT, "close event").await;
    assert_eq!(last.event.as_deref(), Some("close"));
    let doc: serde_json::Value = serde_json::from_str(&last.data).unwrap();
    assert_eq!(doc["code"], 1001);
    assert_eq!(doc["reason"], "going-away");
    assert_eq!(doc["id"], "1");
    // A raw WebSocket (no envelope, no ids) learns where to resume from the close reason.
    let close = loop {
        match tokio::time::timeout(WAIT, futures_util::StreamExt::next(&mut ws))
            .await
            .expect("a close frame")
        {
            Some(Ok(Message::Close(frame))) => break frame.expect("a close frame with a reason"),
            Some(Ok(_)) => {}
            other => panic!("no close frame: {other:?}"),
        }
    };
    assert_eq!(u16::from(close.code), 1001);
    assert_eq!(close.reason.as_str(), "going-away: resume=1");
    tokio::time::timeout(WAIT, stopping).await.unwrap().unwrap();
}

/// An SSE client that stops reading altogether is dropped by the gateway (hyper stops polling
/// its body, so only the connection's watchdog and kill switch can end it): the node's stream
/// count returns to zero while the client still holds its unread socket.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_sse_client_is_dropped() {
    use tokio::io::AsyncWriteExt;
    let node = start("[streams]\nheartbeat = \"500ms\"\nsend_timeout = \"1s\"\n").await;
    publish(&node, "stuck", "text/plain", b"x".to_vec()).await;
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stream = socket.connect(node.handle().http_addr).await.unwrap();
    stream
        .write_all(b"GET /sse/stuck HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let connections = || {
        let client = node.client.clone();
        let url = format!("{}/metrics", node.base);
        async move {
            let text = client.get(url).send().await.unwrap().text().await.unwrap();
            text.lines()
                .find_map(|l| l.strip_prefix("eventgate_stream_connections "))
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap()
        }
    };
    let deadline = tokio::time::Instant::now() + WAIT;
    while connections().await != 1 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the stream never opened"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Far more than the socket buffers hold, while the client reads nothing.
    let payload = "p".repeat(64 * 1024);
    for i in 0..200 {
        publish(
            &node,
            "stuck",
            "text/plain",
            format!("{i}:{payload}").into_bytes(),
        )
        .await;
    }
    let deadline = tokio::time::Instant::now() + WAIT;
    while connections().await != 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the stuck client was never dropped"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // And the connection itself is gone: after what the kernel had buffered, the client reads
    // the end of the connection, not an idle keep-alive.
    use tokio::io::AsyncReadExt;
    let mut buf = vec![0u8; 64 * 1024];
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Ok(Ok(0) | Err(_)) => break,
            Ok(Ok(_)) => {}
            Err(_) => panic!("the connection of the stuck client is still open"),
        }
    }
    node.stop().await;
}

/// A WebSocket client that answers nothing (not even the pings) is closed with 4002
/// (`ping-timeout`) 2.5 heartbeats after it was last heard, as documented: not at the next
/// ping after that (the third heartbeat).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_websocket_is_closed_after_two_and_a_half_heartbeats() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let heartbeat = Duration::from_secs(2);
    let node = start("[streams]\nheartbeat = \"2s\"\n").await;
    // The handshake by hand: a client library would answer the pings for us.
    let mut stream = tokio::net::TcpStream::connect(node.handle().http_addr)
        .await
        .unwrap();
    stream
        .write_all(
            b"GET /ws/quiet HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
              Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        )
        .await
        .unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    let head_end = loop {
        let n = tokio::time::timeout(WAIT, stream.read(&mut chunk))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0, "closed during the handshake");
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    assert!(
        buf.starts_with(b"HTTP/1.1 101"),
        "{:?}",
        String::from_utf8_lossy(&buf)
    );
    let opened = tokio::time::Instant::now();
    buf.drain(..head_end);
    // Server frames are unmasked; pings and the close are short (length < 126).
    let mut pings = 0;
    let code = 'read: loop {
        while buf.len() >= 2 && buf.len() >= 2 + usize::from(buf[1] & 0x7f) {
            let (opcode, len) = (buf[0] & 0x0f, usize::from(buf[1] & 0x7f));
            let payload: Vec<u8> = buf.drain(..2 + len).skip(2).collect();
            match opcode {
                0x9 => pings += 1,
                0x8 => break 'read u16::from_be_bytes([payload[0], payload[1]]),
                _ => {}
            }
        }
        let n = tokio::time::timeout(WAIT, stream.read(&mut chunk))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0, "the connection ended without a close frame");
        buf.extend_from_slice(&chunk[..n]);
    };
    let silent_for = opened.elapsed();
    assert_eq!(code, 4002);
    assert_eq!(
        pings, 2,
        "pinged at 1 and 2 heartbeats, closed before the third"
    );
    assert!(
        silent_for >= heartbeat * 5 / 2 && silent_for < heartbeat * 3,
        "closed after {silent_for:?}"
    );
    node.stop().await;
}

/// `latest` is after the last message acknowledged when the client connected: a message whose
/// publish was answered (202) before the connect is never a `from=latest` reader's first, even
/// when this node's ring has not read it yet. Raced 30 times with a reader that keeps the
/// topic's consumption alive between rounds (so the ring exists and may lag the broker).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latest_starts_after_every_message_acknowledged_before_the_connect() {
    let node = start("").await;
    let base = ws_base(&node);
    publish(&node, "race", "text/plain", b"first".to_vec()).await;
    let mut keeper = ws_open(&format!("{base}/ws/race")).await;
    for round in 0..30 {
        publish(
            &node,
            "race",
            "text/plain",
            format!("before-{round}").into_bytes(),
        )
        .await;
        let mut reader = ws_open(&format!("{base}/ws/race?from=latest")).await;
        publish(
            &node,
            "race",
            "text/plain",
            format!("after-{round}").into_bytes(),
        )
        .await;
        let first = ws_next(&mut reader, WAIT).await.unwrap();
        assert_eq!(
            first.into_text().unwrap().as_str(),
            format!("after-{round}"),
            "round {round}"
        );
        reader.close(None).await.unwrap();
    }
    // The keeper, at the ring's head all along, got every message in order.
    for round in 0..30 {
        for what in ["before", "after"] {
            let m = ws_next(&mut keeper, WAIT).await.unwrap();
            assert_eq!(m.into_text().unwrap().as_str(), format!("{what}-{round}"));
        }
    }
    node.stop().await;
}

/// At the publish limit (1 MiB, the default): a raw WebSocket frame is the message itself,
/// within a client's default 1 MiB frame limit; the envelope of a binary message is larger
/// (base64) and stays within the documented headroom, 4/3 of the message plus 1 KiB plus its
/// headers and key. A client allowing 2 MiB frames (as docs/http-api.md advises) gets both,
/// byte-exact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_at_the_publish_limit_stay_within_the_documented_headroom() {
    use base64::Engine;
    use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
    let node = start("").await;
    let limit = 1024 * 1024;
    let payload: Vec<u8> = (0..limit).map(|i| (i % 251) as u8).collect();
    let open = |url: String| async move {
        let config = WebSocketConfig::default()
            .max_frame_size(Some(2 * 1024 * 1024))
            .max_message_size(Some(2 * 1024 * 1024));
        tokio_tungstenite::connect_async_with_config(url, Some(config), false)
            .await
            .unwrap()
            .0
    };
    let base = ws_base(&node);
    let mut raw = open(format!("{base}/ws/big")).await;
    let mut enveloped = open(format!("{base}/ws/big?envelope=json")).await;
    publish(&node, "big", "application/octet-stream", payload.clone()).await;
    // One byte over the limit is refused, nothing stored.
    let over = node
        .client
        .post(format!("{}/webhook-receiver?topic=big", node.base))
        .header("content-type", "application/octet-stream")
        .body(vec![0u8; limit + 1])
        .send()
        .await
        .unwrap();
    assert_eq!(over.status(), 413);

    let frame = ws_next(&mut raw, WAIT).await.unwrap();
    assert!(frame.is_binary());
    assert_eq!(frame.len(), limit, "the raw frame is the message");
    assert_eq!(frame.into_data().as_ref(), payload.as_slice());

    let frame = ws_next(&mut enveloped, WAIT).await.unwrap();
    let size = frame.len();
    let doc: serde_json::Value = serde_json::from_str(frame.into_text().unwrap().as_str()).unwrap();
    let headroom = limit.div_ceil(3) * 4 + 1024;
    assert!(size <= headroom, "{size} > {headroom}");
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(doc["payload_base64"].as_str().unwrap())
        .unwrap();
    assert_eq!(decoded, payload);
    node.stop().await;
}
