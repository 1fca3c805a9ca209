//! A real Server-Sent Events client for the tests, over reqwest: events as a browser's
//! `EventSource` parses them (ids remembered, comments skipped).

use std::time::Duration;

use futures_util::StreamExt;

/// One SSE event as a client sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Event {
    pub id: Option<String>,
    pub event: Option<String>,
    pub data: String,
}

/// An open SSE stream.
pub struct Sse {
    body: std::pin::Pin<Box<dyn futures_util::Stream<Item = reqwest::Result<bytes::Bytes>> + Send>>,
    buffer: Vec<u8>,
    /// Bytes of `buffer` already searched for an event's end.
    scanned: usize,
    pub last_id: Option<String>,
}

impl std::fmt::Debug for Sse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sse")
            .field("last_id", &self.last_id)
            .finish_non_exhaustive()
    }
}

impl Sse {
    /// Opens `url`; panics unless the answer is a 200 event stream.
    pub async fn open(url: &str, last_event_id: Option<&str>) -> Self {
        Self::try_open(url, last_event_id)
            .await
            .unwrap_or_else(|e| panic!("{url}: {e}"))
    }

    /// Opens `url`; an error unless the answer is a 200 event stream.
    pub async fn try_open(url: &str, last_event_id: Option<&str>) -> anyhow::Result<Self> {
        let client = reqwest::Client::new();
        let mut request = client.get(url);
        if let Some(id) = last_event_id {
            request = request.header("Last-Event-ID", id);
        }
        let response = request.send().await?;
        anyhow::ensure!(response.status() == 200, "status {}", response.status());
        anyhow::ensure!(
            response
                .headers()
                .get("content-type")
                .is_some_and(|v| v == "text/event-stream; charset=utf-8"),
            "not an event stream"
        );
        Ok(Self {
            body: Box::pin(response.bytes_stream()),
            buffer: Vec::new(),
            scanned: 0,
            last_id: None,
        })
    }

    /// The next event (comments and `retry:` skipped); `None` at the end of the stream.
    pub async fn next(&mut self) -> Option<Event> {
        loop {
            // Search only what arrived since the last search (one byte back for a split "\n\n").
            let from = self.scanned.saturating_sub(1);
            let found = self.buffer[from..]
                .windows(2)
                .position(|w| w == b"\n\n")
                .map(|i| from + i);
            self.scanned = self.buffer.len();
            if let Some(end) = found {
                let block: Vec<u8> = self.buffer.drain(..end + 2).collect();
                self.scanned = 0;
                let text = String::from_utf8_lossy(&block).into_owned();
                let mut event = Event::default();
                let mut data = Vec::new();
                for line in text.lines() {
                    if let Some(v) = line.strip_prefix("id: ") {
                        event.id = Some(v.to_owned());
                    } else if let Some(v) = line.strip_prefix("event: ") {
                        event.event = Some(v.to_owned());
                    } else if let Some(v) = line.strip_prefix("data: ") {
                        data.push(v.to_owned());
                    }
                }
                if event.id.is_none() && event.event.is_none() && data.is_empty() {
                    continue;
                }
                event.data = data.join("\n");
                if event.id.is_some() {
                    self.last_id = event.id.clone();
                }
                return Some(event);
            }
            match self.body.next().await {
                Some(Ok(bytes)) => self.buffer.extend_from_slice(&bytes),
                _ => return None,
            }
        }
    }

    /// The next event within `within`, or a panic naming `what`.
    pub async fn expect(&mut self, within: Duration, what: &str) -> Event {
        tokio::time::timeout(within, self.next())
            .await
            .unwrap_or_else(|_| panic!("no SSE event in {within:?}: {what}"))
            .unwrap_or_else(|| panic!("SSE stream ended: {what}"))
    }
}
