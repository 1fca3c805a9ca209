//! CloudEvents 1.0 over HTTP on the webhook receiver, and back out on WebSub deliveries.
//!
//! A publish is a CloudEvent when it comes in the binary content mode (`ce-specversion`,
//! `ce-id`, `ce-source`, `ce-type` and other `ce-*` headers; the body is the event's data,
//! `Content-Type` its `datacontenttype`) or the structured mode (`Content-Type:
//! application/cloudevents+json`: the whole event as JSON, its data in `data` or
//! `data_base64`). Either way the message stored is the event's data with its content type,
//! and each attribute rides along as a message header `ce_<attribute>` — the names of the
//! CloudEvents Kafka binding, so a Kafka consumer reads the same event. A message that carries
//! them is delivered to WebSub callbacks in the binary mode (`ce-*` headers), so a subscriber's
//! CloudEvents SDK reads it as the event that was published. Batches
//! (`application/cloudevents-batch+json`) are refused with 415.

use axum::http::HeaderMap;
use base64::Engine as _;
use bytes::Bytes;

use crate::http::error::ApiError;

/// Content type of the structured mode.
pub const STRUCTURED: &str = "application/cloudevents+json";
/// Content type of the batched mode (not taken).
pub const BATCH: &str = "application/cloudevents-batch+json";
/// Prefix of a message header holding an attribute (the Kafka binding's).
pub const HEADER_PREFIX: &str = "ce_";

/// A CloudEvent taken apart into what the broker stores.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// `ce_<attribute>` → value, `specversion`, `id`, `source`, `type` first.
    pub headers: Vec<(String, Bytes)>,
    /// The data's content type (`datacontenttype`), if any.
    pub content_type: Option<String>,
    pub data: Bytes,
}

const REQUIRED: [&str; 4] = ["specversion", "id", "source", "type"];

fn media_type(headers: &HeaderMap) -> Option<String> {
    let value = headers
        .get(axum::http::header::CONTENT_TYPE)?
        .to_str()
        .ok()?;
    Some(
        value
            .split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase(),
    )
}

/// Whether an attribute name is one CloudEvents allows: 1 to 20 of `a-z 0-9`.
fn valid_name(name: &str) -> bool {
    (1..=20).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

fn check_required(attributes: &[(String, Bytes)], prefix: &str) -> Result<(), ApiError> {
    for name in REQUIRED {
        let value = attributes
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_ref());
        match value {
            None | Some(b"") => {
                return Err(ApiError::invalid_field(
                    format!("{prefix}{name}"),
                    format!("a CloudEvent needs a non-empty `{name}`"),
                ))
            }
            Some(v) if name == "specversion" && v != b"1.0" => {
                return Err(ApiError::invalid_field(
                    format!("{prefix}specversion"),
                    "only CloudEvents 1.0 is taken",
                ))
            }
            Some(_) => {}
        }
    }
    Ok(())
}

/// The CloudEvent of a publish, if it is one (`None`: an ordinary publish). A CloudEvent that
/// lacks a required attribute, or a malformed structured one, is `400 invalid-field` naming
/// the attribute; a batch is `415`.
pub fn from_http(headers: &HeaderMap, body: &Bytes) -> Result<Option<Event>, ApiError> {
    let media = media_type(headers);
    if media.as_deref() == Some(BATCH) {
        return Err(ApiError::unsupported_media_type(
            "CloudEvents batches are not taken: publish each event on its own",
        ));
    }
    if media.as_deref() == Some(STRUCTURED) {
        return structured(body).map(Some);
    }
    if !headers.contains_key("ce-specversion") {
        return Ok(None);
    }
    let mut attributes: Vec<(String, Bytes)> = Vec::new();
    for (name, value) in headers {
        let Some(attribute) = name.as_str().strip_prefix("ce-") else {
            continue;
        };
        if !valid_name(attribute) {
            return Err(ApiError::invalid_field(
                name.as_str(),
                "CloudEvents attribute names are 1 to 20 of a-z and 0-9",
            ));
        }
        // Header values are percent-encoded in the binary mode (CloudEvents HTTP binding 3.1.3.2).
        let decoded: Vec<u8> = percent_encoding::percent_decode(value.as_bytes()).collect();
        attributes.push((attribute.to_owned(), Bytes::from(decoded)));
    }
    check_required(&attributes, "ce-")?;
    Ok(Some(Event {
        headers: ordered(attributes),
        content_type: headers
            .get(axum::http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
        data: body.clone(),
    }))
}

fn structured(body: &Bytes) -> Result<Event, ApiError> {
    let document: serde_json::Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::malformed_body(format!("a structured CloudEvent is JSON: {e}")))?;
    let serde_json::Value::Object(object) = document else {
        return Err(ApiError::malformed_body(
            "a structured CloudEvent is a JSON object",
        ));
    };
    let content_type = object
        .get("datacontenttype")
        .and_then(|v| v.as_str())
        .map(str::to_owned);
    let data = match (object.get("data"), object.get("data_base64")) {
        (Some(_), Some(_)) => {
            return Err(ApiError::invalid_field(
                "data_base64",
                "a CloudEvent has `data` or `data_base64`, not both",
            ))
        }
        (None, Some(encoded)) => {
            let text = encoded
                .as_str()
                .ok_or_else(|| ApiError::invalid_field("data_base64", "a base64 string"))?;
            Bytes::from(
                base64::engine::general_purpose::STANDARD
                    .decode(text)
                    .map_err(|e| {
                        ApiError::invalid_field("data_base64", format!("not base64: {e}"))
                    })?,
            )
        }
        // Text data of a type that is not JSON is the text itself; anything else is JSON.
        (Some(serde_json::Value::String(text)), None)
            if content_type.as_deref().is_some_and(|t| !is_json(t)) =>
        {
            Bytes::from(text.clone())
        }
        (Some(value), None) => Bytes::from(value.to_string()),
        (None, None) => Bytes::new(),
    };
    let mut attributes = Vec::new();
    for (name, value) in &object {
        if name == "data" || name == "data_base64" {
            continue;
        }
        if !valid_name(name) {
            return Err(ApiError::invalid_field(
                name.as_str(),
                "CloudEvents attribute names are 1 to 20 of a-z and 0-9",
            ));
        }
        let text = match value {
            serde_json::Value::String(s) => s.clone(),
            serde_json::Value::Null => continue,
            other => other.to_string(),
        };
        attributes.push((name.clone(), Bytes::from(text)));
    }
    check_required(&attributes, "")?;
    let content_type = content_type.or_else(|| {
        object
            .contains_key("data")
            .then(|| "application/json".to_owned())
    });
    Ok(Event {
        headers: ordered(attributes),
        content_type,
        data,
    })
}

fn is_json(media: &str) -> bool {
    let media = media.split(';').next().unwrap_or_default().trim();
    media == "application/json" || media.ends_with("+json") || media == "text/json"
}

/// The attributes as message headers, the required ones first.
fn ordered(mut attributes: Vec<(String, Bytes)>) -> Vec<(String, Bytes)> {
    attributes.retain(|(name, _)| name != "datacontenttype");
    attributes.sort_by_key(|(name, _)| {
        (
            REQUIRED
                .iter()
                .position(|r| r == name)
                .unwrap_or(REQUIRED.len()),
            name.clone(),
        )
    });
    attributes
        .into_iter()
        .map(|(name, value)| (format!("{HEADER_PREFIX}{name}"), value))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.insert(
                axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        map
    }

    #[test]
    fn binary_mode_keeps_every_attribute_and_the_body() {
        let h = headers(&[
            ("ce-specversion", "1.0"),
            ("ce-id", "A234-1234-1234"),
            ("ce-source", "https://github.com/cloudevents/spec/pull"),
            ("ce-type", "com.github.pull_request.opened"),
            ("ce-subject", "123"),
            ("ce-comexampleextension1", "value%20with%20space"),
            ("content-type", "text/xml"),
        ]);
        let event = from_http(&h, &Bytes::from_static(b"<much wow=\"xml\"/>"))
            .unwrap()
            .unwrap();
        assert_eq!(event.content_type.as_deref(), Some("text/xml"));
        assert_eq!(event.data, Bytes::from_static(b"<much wow=\"xml\"/>"));
        assert_eq!(event.headers[0], ("ce_specversion".into(), "1.0".into()));
        assert_eq!(event.headers[1].0, "ce_id");
        assert!(event
            .headers
            .contains(&("ce_comexampleextension1".into(), "value with space".into())));
        let h = headers(&[
            ("ce-specversion", "1.0"),
            ("ce-id", "x"),
            ("ce-source", "s"),
        ]);
        let e = from_http(&h, &Bytes::new()).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("ce-type"));
        assert!(
            from_http(&headers(&[("content-type", "text/plain")]), &Bytes::new())
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn structured_mode_takes_data_and_data_base64() {
        let h = headers(&[(
            "content-type",
            "application/cloudevents+json; charset=utf-8",
        )]);
        let body = Bytes::from_static(
            br#"{"specversion":"1.0","type":"t","source":"/s","id":"1","data":{"n":1}}"#,
        );
        let event = from_http(&h, &body).unwrap().unwrap();
        assert_eq!(event.data, Bytes::from_static(br#"{"n":1}"#));
        assert_eq!(event.content_type.as_deref(), Some("application/json"));
        let body = Bytes::from_static(
            br#"{"specversion":"1.0","type":"t","source":"/s","id":"1","datacontenttype":"application/octet-stream","data_base64":"AAEC"}"#,
        );
        let event = from_http(&h, &body).unwrap().unwrap();
        assert_eq!(event.data, Bytes::from_static(&[0, 1, 2]));
        let body =
            Bytes::from_static(br#"{"specversion":"0.3","type":"t","source":"/s","id":"1"}"#);
        let e = from_http(&h, &body).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("specversion"));
        let batch = headers(&[("content-type", BATCH)]);
        assert_eq!(
            from_http(&batch, &Bytes::from_static(b"[]"))
                .unwrap_err()
                .status,
            axum::http::StatusCode::UNSUPPORTED_MEDIA_TYPE
        );
    }
}
