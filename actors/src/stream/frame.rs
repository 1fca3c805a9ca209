//! A message as streaming clients see it. A [`Frame`] is built once per message by the topic's
//! consumption and shared by every local reader (`Arc<Batch>`); each wire encoding (SSE event,
//! JSON envelope) is built on first use and then shared too, so a message is serialized once
//! per node whatever the number of clients.

use std::any::Any;
use std::sync::{Arc, OnceLock};

use base64::Engine as _;
use bytes::{BufMut, Bytes, BytesMut};

use crate::broker::Message;

use super::token;

/// Messages read together, one entry of a topic's ring.
#[derive(Debug)]
pub struct Batch {
    pub frames: Vec<Frame>,
    sse: OnceLock<Bytes>,
    sse_envelope: OnceLock<Bytes>,
}

impl Batch {
    pub fn new(frames: Vec<Frame>) -> Self {
        Self {
            frames,
            sse: OnceLock::new(),
            sse_envelope: OnceLock::new(),
        }
    }

    /// The SSE events of every frame, concatenated once for all the readers that take the
    /// whole batch (one write instead of one per message).
    pub fn sse(&self, envelope: bool) -> &Bytes {
        let (cell, one): (_, fn(&Frame) -> &Bytes) = if envelope {
            (&self.sse_envelope, Frame::sse_envelope)
        } else {
            (&self.sse, Frame::sse)
        };
        cell.get_or_init(|| {
            if let [only] = &self.frames[..] {
                return one(only).clone();
            }
            let len = self.frames.iter().map(|f| one(f).len()).sum();
            let mut out = BytesMut::with_capacity(len);
            for f in &self.frames {
                out.put_slice(one(f));
            }
            out.freeze()
        })
    }
}

/// One message with its resume token.
#[derive(Debug)]
pub struct Frame {
    pub topic: Arc<str>,
    pub partition: u32,
    pub offset: u64,
    pub timestamp_ms: u64,
    pub key: Option<Bytes>,
    /// `None`: a header without a value.
    pub headers: Vec<(String, Option<Bytes>)>,
    pub content_type: Option<String>,
    pub payload: Bytes,
    /// A record without a value (a Kafka tombstone), not an empty one.
    pub tombstone: bool,
    /// Next offset of every partition once this message is read.
    after: Box<[u64]>,
    token: Box<str>,
    text: bool,
    sse: OnceLock<Bytes>,
    envelope: OnceLock<Bytes>,
    sse_envelope: OnceLock<Bytes>,
    ext: [OnceLock<Box<dyn Any + Send + Sync>>; EXT_SLOTS],
}

/// Slots for encodings that a transport builds from a frame (once, then shared): see
/// [`Frame::ext`].
pub const EXT_SLOTS: usize = 4;

/// Whether a content type names text (sent as a WebSocket text frame when valid UTF-8).
pub fn is_text_type(content_type: Option<&str>) -> bool {
    let Some(ct) = content_type else {
        return false;
    };
    let essence = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    essence.starts_with("text/")
        || essence == "application/json"
        || essence.ends_with("+json")
        || essence == "application/xml"
        || essence.ends_with("+xml")
        || essence == "application/javascript"
        || essence == "application/x-www-form-urlencoded"
        || essence == "application/yaml"
        || essence == "application/x-yaml"
        || essence == "application/x-ndjson"
        || essence == "application/graphql"
}

impl Frame {
    /// A frame for `message` of `topic`, read when the topic stands at `after`.
    pub fn new(topic: Arc<str>, message: Message, after: &[u64]) -> Self {
        let text = is_text_type(message.content_type.as_deref())
            && std::str::from_utf8(&message.payload).is_ok();
        Self {
            topic,
            partition: message.partition,
            offset: message.offset,
            timestamp_ms: message.timestamp_ms,
            key: message.key,
            headers: message.headers,
            content_type: message.content_type,
            payload: message.payload,
            tombstone: message.tombstone,
            after: after.into(),
            token: token::format(after).into_boxed_str(),
            text,
            sse: OnceLock::new(),
            envelope: OnceLock::new(),
            sse_envelope: OnceLock::new(),
            ext: Default::default(),
        }
    }

    /// The same message at other positions (a reader whose other partitions stand elsewhere).
    pub fn at(&self, after: &[u64]) -> Self {
        Self {
            topic: self.topic.clone(),
            partition: self.partition,
            offset: self.offset,
            timestamp_ms: self.timestamp_ms,
            key: self.key.clone(),
            headers: self.headers.clone(),
            content_type: self.content_type.clone(),
            payload: self.payload.clone(),
            tombstone: self.tombstone,
            after: after.into(),
            token: token::format(after).into_boxed_str(),
            text: self.text,
            sse: OnceLock::new(),
            envelope: OnceLock::new(),
            sse_envelope: OnceLock::new(),
            ext: Default::default(),
        }
    }

    /// A transport's own encoding of this frame in `slot` (below [`EXT_SLOTS`]), built by
    /// `init` on first use and shared after: for types the frame cannot know (a WebSocket
    /// message type). A slot always holds the same type; a mismatch builds without caching.
    #[allow(clippy::redundant_closure)]
    pub fn ext<T: Any + Clone + Send + Sync>(&self, slot: usize, init: impl Fn(&Frame) -> T) -> T {
        let Some(cell) = self.ext.get(slot) else {
            return init(self);
        };
        let value = cell.get_or_init(|| Box::new(init(self)));
        match value.downcast_ref::<T>() {
            Some(v) => v.clone(),
            None => init(self),
        }
    }

    /// The resume token: resuming from it reads what follows this message.
    pub fn token(&self) -> &str {
        &self.token
    }

    /// Next offset of every partition once this message is read.
    pub fn after(&self) -> &[u64] {
        &self.after
    }

    /// Whether the payload is text (a text content type and valid UTF-8).
    pub fn is_text(&self) -> bool {
        self.text
    }

    /// The SSE event: `id:` the token, `data:` the payload (one `data:` line per line; a
    /// payload that is not text is sent base64-encoded as `event: binary`; a tombstone is
    /// `event: tombstone` with empty data).
    pub fn sse(&self) -> &Bytes {
        self.sse.get_or_init(|| {
            let mut out = BytesMut::with_capacity(self.payload.len() + self.token.len() + 16);
            put_id(&mut out, &self.token);
            if self.tombstone {
                out.put_slice(b"event: tombstone\ndata:\n");
            } else if self.text {
                // `text` guarantees UTF-8.
                let text = std::str::from_utf8(&self.payload).unwrap_or_default();
                put_data(&mut out, text);
            } else {
                out.put_slice(b"event: binary\n");
                let encoded = base64::engine::general_purpose::STANDARD.encode(&self.payload);
                put_data(&mut out, &encoded);
            }
            out.put_u8(b'\n');
            out.freeze()
        })
    }

    /// The JSON envelope (always valid UTF-8): `{"type":"message","id","topic","partition",
    /// "offset","timestamp","key","headers","content_type","payload"}`; byte fields that are not
    /// UTF-8 text are given base64-encoded under `<field>_base64` instead; a header name that
    /// repeats has the array of its values.
    pub fn envelope(&self) -> &Bytes {
        self.envelope.get_or_init(|| {
            let mut doc = serde_json::Map::new();
            doc.insert("type".into(), "message".into());
            doc.insert("id".into(), self.token.as_ref().into());
            doc.insert("topic".into(), self.topic.as_ref().into());
            doc.insert("partition".into(), self.partition.into());
            doc.insert("offset".into(), self.offset.into());
            doc.insert("timestamp".into(), self.timestamp_ms.into());
            if let Some(key) = &self.key {
                put_bytes(&mut doc, "key", key);
            }
            if !self.headers.is_empty() {
                let mut headers = serde_json::Map::new();
                for (name, value) in &self.headers {
                    let value = match value.as_deref().map(std::str::from_utf8) {
                        None => serde_json::Value::Null,
                        Some(Ok(s)) => serde_json::Value::from(s),
                        Some(Err(_)) => serde_json::json!({
                            "base64": base64::engine::general_purpose::STANDARD
                                .encode(value.as_deref().unwrap_or_default())
                        }),
                    };
                    // A name that repeats (Kafka allows it) keeps every value, in order: its
                    // values become an array instead of the last one winning.
                    match headers.get_mut(name) {
                        None => {
                            headers.insert(name.clone(), value);
                        }
                        Some(serde_json::Value::Array(values)) if values.len() > 1 => {
                            values.push(value)
                        }
                        Some(first) => {
                            let earlier = first.take();
                            *first = serde_json::Value::Array(vec![earlier, value]);
                        }
                    }
                }
                doc.insert("headers".into(), headers.into());
            }
            if let Some(ct) = &self.content_type {
                doc.insert("content_type".into(), ct.as_str().into());
            }
            if self.tombstone {
                // No value at all: `null`, where an empty one is "".
                doc.insert("payload".into(), serde_json::Value::Null);
            } else if self.text {
                put_bytes(&mut doc, "payload", &self.payload);
            } else {
                doc.insert(
                    "payload_base64".into(),
                    base64::engine::general_purpose::STANDARD
                        .encode(&self.payload)
                        .into(),
                );
            }
            Bytes::from(serde_json::to_vec(&doc).unwrap_or_default())
        })
    }

    /// The message as a CloudEvent 1.0 in the structured JSON format (not cached: callers keep
    /// it in an [`ext`](Self::ext) slot). A message published as a CloudEvent (its attributes in
    /// `ce_*` headers) is that event again; any other gets `id` `<topic>:<partition>:<offset>`,
    /// `source` `/topics/<topic>`, `type` `dev.eventgate.message` and `time` its append time.
    /// `data` is the JSON value for a JSON content type, the text for other text, else
    /// `data_base64`; a tombstone has no data. Extensions: `eventgatetoken` (the resume token)
    /// and `partitionkey` (the key, when it is text).
    pub fn cloudevent(&self) -> Bytes {
        use serde_json::Value;
        let attribute = |name: &str| {
            self.headers
                .iter()
                .find(|(n, _)| n.strip_prefix("ce_") == Some(name))
                .and_then(|(_, v)| std::str::from_utf8(v.as_deref()?).ok())
        };
        let mut doc = serde_json::Map::new();
        doc.insert("specversion".into(), "1.0".into());
        let id = attribute("id").map_or_else(
            || format!("{}:{}:{}", self.topic, self.partition, self.offset),
            str::to_owned,
        );
        doc.insert("id".into(), id.into());
        let source =
            attribute("source").map_or_else(|| format!("/topics/{}", self.topic), str::to_owned);
        doc.insert("source".into(), source.into());
        doc.insert(
            "type".into(),
            attribute("type").unwrap_or("dev.eventgate.message").into(),
        );
        let time = attribute("time").map_or_else(
            || {
                humantime::format_rfc3339_millis(
                    std::time::UNIX_EPOCH + std::time::Duration::from_millis(self.timestamp_ms),
                )
                .to_string()
            },
            str::to_owned,
        );
        doc.insert("time".into(), time.into());
        // The event's other attributes as it was published (valid names only).
        for (name, value) in &self.headers {
            let Some(attr) = name.strip_prefix("ce_") else {
                continue;
            };
            let valid = !attr.is_empty()
                && attr.len() <= 20
                && attr
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
            let known = [
                "specversion",
                "id",
                "source",
                "type",
                "time",
                "datacontenttype",
            ];
            if !valid || known.contains(&attr) || doc.contains_key(attr) {
                continue;
            }
            if let Some(text) = value.as_deref().and_then(|v| std::str::from_utf8(v).ok()) {
                doc.insert(attr.to_owned(), text.into());
            }
        }
        doc.insert("eventgatetoken".into(), self.token.as_ref().into());
        if let Some(key) = self
            .key
            .as_deref()
            .and_then(|k| std::str::from_utf8(k).ok())
        {
            doc.insert("partitionkey".into(), key.into());
        }
        if let Some(ct) = &self.content_type {
            doc.insert("datacontenttype".into(), ct.as_str().into());
        }
        if !self.tombstone {
            let essence = self
                .content_type
                .as_deref()
                .and_then(|ct| ct.split(';').next())
                .map(|e| e.trim().to_ascii_lowercase());
            let json = essence
                .as_deref()
                .is_some_and(|e| e == "application/json" || e.ends_with("+json"));
            let parsed = json
                .then(|| serde_json::from_slice::<Value>(&self.payload).ok())
                .flatten();
            match parsed {
                Some(value) => {
                    doc.insert("data".into(), value);
                }
                None if self.text => {
                    put_bytes(&mut doc, "data", &self.payload);
                }
                None => {
                    doc.insert(
                        "data_base64".into(),
                        base64::engine::general_purpose::STANDARD
                            .encode(&self.payload)
                            .into(),
                    );
                }
            }
        }
        Bytes::from(serde_json::to_vec(&doc).unwrap_or_default())
    }

    /// The SSE event carrying `json` (a CloudEvent, an envelope): `id:` the token, one `data:`
    /// line.
    pub fn sse_json(&self, json: &[u8]) -> Bytes {
        let mut out = BytesMut::with_capacity(json.len() + self.token.len() + 16);
        put_id(&mut out, &self.token);
        out.put_slice(b"data: ");
        out.put_slice(json);
        out.put_slice(b"\n\n");
        out.freeze()
    }

    /// The SSE event carrying the JSON envelope.
    pub fn sse_envelope(&self) -> &Bytes {
        self.sse_envelope.get_or_init(|| {
            let json = self.envelope();
            let mut out = BytesMut::with_capacity(json.len() + self.token.len() + 16);
            put_id(&mut out, &self.token);
            out.put_slice(b"data: ");
            out.put_slice(json);
            out.put_slice(b"\n\n");
            out.freeze()
        })
    }
}

fn put_bytes(doc: &mut serde_json::Map<String, serde_json::Value>, field: &str, value: &Bytes) {
    match std::str::from_utf8(value) {
        Ok(s) => {
            doc.insert(field.to_owned(), s.into());
        }
        Err(_) => {
            doc.insert(
                format!("{field}_base64"),
                base64::engine::general_purpose::STANDARD
                    .encode(value)
                    .into(),
            );
        }
    }
}

fn put_id(out: &mut BytesMut, token: &str) {
    out.put_slice(b"id: ");
    out.put_slice(token.as_bytes());
    out.put_u8(b'\n');
}

/// `data:` lines for `text`; CR, LF and CRLF all end a line in SSE, so each becomes a new
/// `data:` line (the client joins them with LF).
fn put_data(out: &mut BytesMut, text: &str) {
    let mut rest = text;
    loop {
        let end = rest.find(['\r', '\n']).unwrap_or(rest.len());
        out.put_slice(b"data: ");
        out.put_slice(&rest.as_bytes()[..end]);
        out.put_u8(b'\n');
        if end == rest.len() {
            break;
        }
        let skip = if rest[end..].starts_with("\r\n") {
            2
        } else {
            1
        };
        rest = &rest[end + skip..];
    }
}

/// An SSE event of type `event` with one JSON `data:` line and no id.
pub fn sse_control(event: &str, data: &serde_json::Value) -> Bytes {
    let json = data.to_string();
    let mut out = BytesMut::with_capacity(json.len() + event.len() + 16);
    out.put_slice(b"event: ");
    out.put_slice(event.as_bytes());
    out.put_slice(b"\ndata: ");
    out.put_slice(json.as_bytes());
    out.put_slice(b"\n\n");
    out.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(content_type: &str, payload: &'static [u8]) -> Message {
        Message {
            partition: 0,
            offset: 7,
            timestamp_ms: 1,
            key: Some(Bytes::from_static(b"k")),
            headers: vec![("h".into(), Some(Bytes::from_static(b"\xff")))],
            content_type: Some(content_type.into()),
            payload: Bytes::from_static(payload),
            tombstone: false,
        }
    }

    #[test]
    fn sse_splits_lines_and_carries_the_token() {
        let f = Frame::new("t".into(), message("text/plain", b"a\nb\r\nc\rd"), &[8]);
        assert_eq!(
            &f.sse()[..],
            b"id: 8\ndata: a\ndata: b\ndata: c\ndata: d\n\n".as_slice()
        );
    }

    #[test]
    fn binary_goes_base64() {
        let f = Frame::new(
            "t".into(),
            message("application/octet-stream", b"\x00\x01"),
            &[8],
        );
        assert!(!f.is_text());
        assert_eq!(
            &f.sse()[..],
            b"id: 8\nevent: binary\ndata: AAE=\n\n".as_slice()
        );
        let doc: serde_json::Value = serde_json::from_slice(f.envelope()).unwrap();
        assert_eq!(doc["payload_base64"], "AAE=");
        assert_eq!(doc["headers"]["h"]["base64"], "/w==");
        assert_eq!(doc["key"], "k");
        assert_eq!(doc["id"], "8");
    }

    #[test]
    fn json_envelope_escapes_newlines() {
        let f = Frame::new(
            "t".into(),
            message("application/json", b"{\"a\":\n1}"),
            &[8, 3],
        );
        let event = f.sse_envelope();
        assert!(event.starts_with(b"id: 8.3\ndata: {"));
        assert_eq!(event.iter().filter(|b| **b == b'\n').count(), 3);
        assert!(is_text_type(Some(
            "application/cloudevents+json; charset=utf-8"
        )));
        assert!(!is_text_type(Some("image/png")));
        assert!(!is_text_type(None));
    }

    #[test]
    fn repeated_header_names_keep_every_value() {
        let mut m = message("text/plain", b"x");
        m.headers = ["a", "b", "c"]
            .iter()
            .map(|v| ("tag".to_owned(), Some(Bytes::from(v.to_string()))))
            .chain([("x".to_owned(), Some(Bytes::from_static(b"1")))])
            .collect();
        let f = Frame::new("t".into(), m, &[8]);
        let doc: serde_json::Value = serde_json::from_slice(f.envelope()).unwrap();
        assert_eq!(doc["headers"]["tag"], serde_json::json!(["a", "b", "c"]));
        assert_eq!(doc["headers"]["x"], "1");
        assert!(is_text_type(Some("application/yaml")));
    }

    /// A header without a value is `null`, an empty one `""`; a tombstone's payload is `null`
    /// (and `event: tombstone` on SSE), an empty payload `""`.
    #[test]
    fn null_stays_null_and_a_tombstone_is_not_an_empty_payload() {
        let mut m = message("text/plain", b"");
        m.headers = vec![
            ("none".to_owned(), None),
            ("empty".to_owned(), Some(Bytes::new())),
            ("pair".to_owned(), None),
            ("pair".to_owned(), Some(Bytes::from_static(b"v"))),
        ];
        let empty = Frame::new("t".into(), m.clone(), &[8]);
        let doc: serde_json::Value = serde_json::from_slice(empty.envelope()).unwrap();
        assert_eq!(doc["headers"]["none"], serde_json::Value::Null);
        assert_eq!(doc["headers"]["empty"], "");
        assert_eq!(doc["headers"]["pair"], serde_json::json!([null, "v"]));
        assert_eq!(doc["payload"], "");
        assert!(!String::from_utf8_lossy(empty.sse()).contains("tombstone"));
        m.tombstone = true;
        let gone = Frame::new("t".into(), m, &[8]);
        let doc: serde_json::Value = serde_json::from_slice(gone.envelope()).unwrap();
        assert!(
            doc.get("payload").is_some_and(serde_json::Value::is_null),
            "{doc}"
        );
        assert!(doc.get("payload_base64").is_none());
        assert_eq!(
            String::from_utf8_lossy(gone.sse()),
            "id: 8\nevent: tombstone\ndata:\n\n"
        );
    }
}
