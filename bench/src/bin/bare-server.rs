//! The baseline of the ingest benchmark: a bare axum server that answers
//! `POST /webhook-receiver` with 202 and a small JSON body, storing nothing. Its figures are the
//! ceiling of the HTTP stack on this machine.
//!
//! `bare-server <port>`

use axum::routing::post;
use axum::{Json, Router};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let port: u16 = std::env::args()
        .nth(1)
        .ok_or_else(|| anyhow::anyhow!("usage: bare-server <port>"))?
        .parse()?;
    let app = Router::new()
        .route(
            "/webhook-receiver",
            post(|_body: axum::body::Bytes| async {
                (
                    axum::http::StatusCode::ACCEPTED,
                    Json(serde_json::json!({"id": "0-0"})),
                )
            }),
        )
        .route("/readyz", axum::routing::get(|| async { "ok" }));
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    axum::serve(listener, app).await?;
    Ok(())
}
