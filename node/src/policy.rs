//! The policy seam: who may read or publish which topic.
//!
//! Every streaming entrypoint presents the client's [`Credential`] (an `Authorization` header,
//! or the `access_token` query parameter for browsers, which cannot set headers on
//! `EventSource` or `WebSocket`) and the [`Action`] to a [`Policy`], which answers with the
//! principal acting or a refusal. [`OpenPolicy`] admits everyone and is what runs until API
//! keys, JWT and topic ACLs are configured.

use axum::http::{header, HeaderMap};

use crate::http::error::ApiError;

/// Credentials as presented. Never logged.
#[derive(Clone, PartialEq, Eq)]
pub enum Credential {
    /// `Authorization: Bearer <token>` or `?access_token=<token>`.
    Bearer(String),
    /// Any other `Authorization` scheme, as given.
    Other(String),
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credential::Bearer(_) => f.write_str("Bearer(<redacted>)"),
            Credential::Other(_) => f.write_str("Other(<redacted>)"),
        }
    }
}

impl Credential {
    /// The request's credential: the `Authorization` header, else `access_token` from the query.
    pub fn from_request(headers: &HeaderMap, access_token: Option<String>) -> Option<Self> {
        if let Some(value) = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
        {
            return Some(match value.strip_prefix("Bearer ") {
                Some(token) => Credential::Bearer(token.trim().to_owned()),
                None => Credential::Other(value.to_owned()),
            });
        }
        access_token
            .filter(|t| !t.is_empty())
            .map(Credential::Bearer)
    }
}

/// What a client asks to do with a topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Subscribe,
    Publish,
}

/// Who is acting, once admitted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub name: String,
}

/// Decides who may do what.
pub trait Policy: Send + Sync + std::fmt::Debug + 'static {
    /// Admits `credential` to `action` on `topic`, naming the principal (if any), or refuses
    /// with a problem (401 without usable credentials, 403 when not allowed).
    fn authorize(
        &self,
        credential: Option<&Credential>,
        topic: &str,
        action: Action,
    ) -> Result<Option<Principal>, ApiError>;
}

/// Admits every client to read; publishing over WebSocket as configured.
#[derive(Debug, Clone)]
pub struct OpenPolicy {
    pub allow_publish: bool,
}

impl Policy for OpenPolicy {
    fn authorize(
        &self,
        _credential: Option<&Credential>,
        topic: &str,
        action: Action,
    ) -> Result<Option<Principal>, ApiError> {
        match action {
            Action::Subscribe => Ok(None),
            Action::Publish if self.allow_publish => Ok(None),
            Action::Publish => Err(ApiError::forbidden(format!(
                "publishing to `{topic}` over WebSocket is not allowed (streams.allow_publish)"
            ))),
        }
    }
}
