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
