//! WebSocket helpers over tokio-tungstenite.

use std::time::Duration;

use futures_util::StreamExt;
use tokio_tungstenite::tungstenite::Message;

pub type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Opens a WebSocket to `url` (`ws://…`).
pub async fn ws_open(url: &str) -> Ws {
    let (socket, response) = tokio_tungstenite::connect_async(url).await.unwrap();
    assert_eq!(response.status(), 101);
    socket
}

/// The next data frame (text or binary; pings skipped) within `within`; `Err` with the close
/// frame's code when the server closes.
pub async fn ws_next(socket: &mut Ws, within: Duration) -> Result<Message, Option<u16>> {
    loop {
        let message = tokio::time::timeout(within, socket.next())
            .await
            .expect("no websocket frame in time");
        match message {
            Some(Ok(Message::Close(frame))) => return Err(frame.map(|f| u16::from(f.code))),
            Some(Ok(m @ (Message::Text(_) | Message::Binary(_)))) => return Ok(m),
            Some(Ok(_)) => {}
            Some(Err(_)) | None => return Err(None),
        }
    }
}
