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
