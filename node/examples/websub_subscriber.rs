//! A WebSub subscriber that checks every delivery's signature: the smallest correct one.
//!
//! It serves a callback, subscribes it at a hub with a secret, answers the hub's verification
//! of intent (echoing `hub.challenge`), and for each delivery recomputes `X-Hub-Signature`
//! (`sha256=<hex HMAC of the body>`) with the secret, in constant time: a delivery that does not
//! verify is refused with 403 (the hub retries it); one that does is printed and acknowledged
//! with 204. `X-Eventgate-Delivery` is the same on every attempt of a message: keep the last few
//! to drop a repeat.
//!
//! ```sh
//! cargo run --release -p eventgate -- serve &                          # a development node
//! cargo run -p eventgate --example websub_subscriber -- --topic demo   # subscribe, print
//! curl -X POST 'http://127.0.0.1:8080/webhook-receiver?topic=demo' -d 'hello'
//! ```

use std::collections::HashMap;
use std::net::SocketAddr;

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::get;
use axum::Router;
use hmac::{Mac, SimpleHmac};

#[derive(Clone)]
struct Subscriber {
    secret: String,
    topic: String,
}

/// The hub's verification of intent: echo the challenge of the subscription we asked for.
async fn verify(
    State(me): State<Subscriber>,
    Query(query): Query<HashMap<String, String>>,
) -> (StatusCode, String) {
    let mode = query.get("hub.mode").map(String::as_str);
    let topic = query
        .get("hub.topic")
        .map(String::as_str)
        .unwrap_or_default();
    match (mode, query.get("hub.challenge")) {
        (Some("subscribe" | "unsubscribe"), Some(challenge)) if topic.ends_with(&me.topic) => {
            println!("verified: {} {topic}", mode.unwrap_or_default());
            (StatusCode::OK, challenge.clone())
        }
        (Some("denied"), _) => {
            let reason = query.get("hub.reason").cloned().unwrap_or_default();
            eprintln!("the hub denied the subscription: {reason}");
            (StatusCode::OK, String::new())
        }
        _ => (StatusCode::NOT_FOUND, String::new()),
    }
}

/// Whether `header` (`sha256=<hex>`) is the HMAC-SHA256 of `body` under `secret`.
fn signature_ok(secret: &str, header: Option<&str>, body: &[u8]) -> bool {
    let Some(hex_digest) = header.and_then(|h| h.strip_prefix("sha256=")) else {
        return false;
    };
    let Ok(expected) = hex::decode(hex_digest) else {
        return false;
    };
    let Ok(mut mac) = SimpleHmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()) else {
        return false;
    };
    mac.update(body);
    // `verify_slice` compares in constant time.
    mac.verify_slice(&expected).is_ok()
}

async fn deliver(State(me): State<Subscriber>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if !signature_ok(&me.secret, header("x-hub-signature"), &body) {
        eprintln!("refused a delivery whose signature does not verify");
        return StatusCode::FORBIDDEN;
    }
    println!(
        "delivery {} (attempt {}), {}: {}",
        header("x-eventgate-delivery").unwrap_or("?"),
        header("x-eventgate-attempt").unwrap_or("?"),
        header("content-type").unwrap_or("?"),
        String::from_utf8_lossy(&body)
    );
    StatusCode::NO_CONTENT
}

fn arg(name: &str, default: &str) -> String {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
        .unwrap_or_else(|| default.to_owned())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let hub = arg("--hub", "http://127.0.0.1:8080/hub");
    let listen: SocketAddr = arg("--listen", "127.0.0.1:9000").parse()?;
    let me = Subscriber {
        secret: arg("--secret", "a-secret-only-we-and-the-hub-know"),
        topic: arg("--topic", "demo"),
    };
    let app = Router::new()
        .route("/callback", get(verify).post(deliver))
        .with_state(me.clone());
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    let callback = format!("http://{listen}/callback");
    let answer = reqwest::Client::new()
        .post(&hub)
        .form(&[
            ("hub.mode", "subscribe"),
            ("hub.topic", me.topic.as_str()),
            ("hub.callback", callback.as_str()),
            ("hub.secret", me.secret.as_str()),
        ])
        .send()
        .await?;
    println!("subscribe {} at {hub}: {}", me.topic, answer.status());
    server.await??;
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn signatures_verify_only_with_the_secret() {
        use hmac::Mac;
        let mut mac =
            hmac::SimpleHmac::<sha2::Sha256>::new_from_slice(b"s3cret").expect("any key length");
        mac.update(b"body");
        let header = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
        assert!(super::signature_ok("s3cret", Some(&header), b"body"));
        assert!(!super::signature_ok("other", Some(&header), b"body"));
        assert!(!super::signature_ok("s3cret", Some(&header), b"bodY"));
        assert!(!super::signature_ok("s3cret", None, b"body"));
    }
}
