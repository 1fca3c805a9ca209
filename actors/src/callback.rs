//! The seam through which the hub calls subscribers' callbacks (verification `GET`s and content
//! `POST`s). The node provides the HTTP implementation; the delivery logic only sees this trait.

use bytes::Bytes;
use futures_util::future::BoxFuture;

/// HTTP method of a callback request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallbackMethod {
    Get,
    Post,
}

/// A request to a subscriber's callback.
#[derive(Debug, Clone)]
pub struct CallbackRequest {
    pub method: CallbackMethod,
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
}

/// The subscriber's answer (its body cut at the client's response cap).
#[derive(Debug, Clone)]
pub struct CallbackResponse {
    pub status: u16,
    pub body: Bytes,
    /// The answer's `Retry-After`, as a wait from now.
    pub retry_after: Option<std::time::Duration>,
}

/// A `Retry-After` value (RFC 9110 §10.2.3: delay-seconds or an HTTP date) as a wait from
/// `now`; a date in the past is no wait, anything else unreadable is none.
pub fn parse_retry_after(value: &str, now: std::time::SystemTime) -> Option<std::time::Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(std::time::Duration::from_secs(seconds));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or_default())
}

/// Why a callback request got no answer.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CallbackError {
    /// The callback's address is not allowed (loopback, private, link-local …).
    #[error("callback refused: {0}")]
    Refused(String),
    #[error("callback timed out")]
    Timeout,
    #[error("callback connection failed: {0}")]
    Connect(String),
    #[error("callback answer larger than {0} bytes")]
    ResponseTooLarge(usize),
    #[error("callback request failed: {0}")]
    Other(String),
}

/// Sends requests to subscribers' callbacks.
pub trait WebhookClient: Send + Sync + std::fmt::Debug + 'static {
    fn send(
        &self,
        request: CallbackRequest,
    ) -> BoxFuture<'_, Result<CallbackResponse, CallbackError>>;
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use super::parse_retry_after;

    #[test]
    fn retry_after_takes_seconds_or_an_http_date() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_445_412_480);
        assert_eq!(
            parse_retry_after("120", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(parse_retry_after(" 0 ", now), Some(Duration::ZERO));
        // 2015-10-21 07:28:00 UTC is `now`; two minutes later:
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:30:00 GMT", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:00:00 GMT", now),
            Some(Duration::ZERO),
            "a date past is no wait"
        );
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("-5", now), None);
    }
}
