//! `POST /oauth2/token` (client credentials, RFC 6749 §4.4), `GET /.well-known/jwks.json` and
//! `GET /.well-known/oauth-authorization-server` (RFC 8414). Errors are RFC 6749 §5.2 JSON
//! documents (`error`, `error_description`), not problem+json: that is what OAuth2 clients read.

use std::collections::HashMap;

use axum::extract::{ConnectInfo, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine;
use serde_json::json;

use super::listener::Peer;
use super::AppState;
use crate::oauth2::{TokenError, TokenService};

/// Largest token request body read.
const MAX_BODY: usize = 8 * 1024;

fn no_store(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    response
}

fn error_response(e: &TokenError, retry_after: Option<u64>) -> Response {
    let status = match e.code {
        "invalid_client" => StatusCode::UNAUTHORIZED,
        "slow_down" => StatusCode::TOO_MANY_REQUESTS,
        "server_error" => StatusCode::INTERNAL_SERVER_ERROR,
        "temporarily_unavailable" => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::BAD_REQUEST,
    };
    let mut response = (
        status,
        Json(json!({ "error": e.code, "error_description": e.description })),
    )
        .into_response();
    let headers = response.headers_mut();
    if status == StatusCode::UNAUTHORIZED {
        headers.insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"eventgate\""),
        );
    }
    if let Some(secs) = retry_after {
        headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    no_store(response)
}

/// `client_id` and `client_secret` from `Authorization: Basic` (each form-urlencoded, RFC 6749
/// §2.3.1) or from the form; both at once is an error.
fn client_credentials(
    headers: &HeaderMap,
    form: &HashMap<String, String>,
) -> Result<(String, String), TokenError> {
    let basic = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, rest) = v.split_once(' ')?;
            scheme.eq_ignore_ascii_case("basic").then(|| rest.trim())
        });
    let in_form = form.get("client_secret");
    match (basic, in_form) {
        (Some(_), Some(_)) => Err(TokenError::new(
            "invalid_request",
            "authenticate the client one way: the Authorization header or the form, not both",
        )),
        (Some(encoded), None) => {
            let bad = || TokenError::new("invalid_client", "a malformed Basic Authorization");
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(encoded)
                .map_err(|_| bad())?;
            let text = String::from_utf8(decoded).map_err(|_| bad())?;
            let (id, secret) = text.split_once(':').ok_or_else(bad)?;
            let unescape = |s: &str| {
                form_urlencoded::parse(format!("v={s}").as_bytes())
                    .next()
                    .map(|(_, v)| v.into_owned())
                    .unwrap_or_default()
            };
            Ok((unescape(id), unescape(secret)))
        }
        (None, Some(secret)) => {
            let id = form.get("client_id").ok_or_else(|| {
                TokenError::new("invalid_request", "client_secret without client_id")
            })?;
            Ok((id.clone(), secret.clone()))
        }
        (None, None) => Err(TokenError::new(
            "invalid_client",
            "authenticate with Authorization: Basic (client id and secret) or client_id and client_secret in the form",
        )),
    }
}

/// `POST /oauth2/token`.
pub async fn token(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let tokens = state.tokens();
    // Per address a wider budget than per client: many clients may share one address (a
    // proxy, the load balancer).
    if !tokens.allow_address(&peer.addr.ip().to_string()) {
        return slow_down(tokens);
    }
    let form_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(';').next().is_some_and(|t| {
                t.trim()
                    .eq_ignore_ascii_case("application/x-www-form-urlencoded")
            })
        });
    if !form_type {
        return error_response(
            &TokenError::new(
                "invalid_request",
                "the request is application/x-www-form-urlencoded",
            ),
            None,
        );
    }
    if body.len() > MAX_BODY {
        return error_response(
            &TokenError::new(
                "invalid_request",
                format!("the body exceeds {MAX_BODY} bytes"),
            ),
            None,
        );
    }
    let mut form = HashMap::new();
    for (k, v) in form_urlencoded::parse(&body) {
        // RFC 6749 §3.2: parameters must not be repeated.
        if form.insert(k.to_string(), v.into_owned()).is_some() {
            return error_response(
                &TokenError::new("invalid_request", format!("`{k}` is given more than once")),
                None,
            );
        }
    }
    match form.get("grant_type").map(String::as_str) {
        None => {
            return error_response(
                &TokenError::new("invalid_request", "grant_type is required"),
                None,
            )
        }
        Some("client_credentials") => {}
        Some(other) => {
            return error_response(
                &TokenError::new(
                    "unsupported_grant_type",
                    format!("`{other}` is not supported; use client_credentials"),
                ),
                None,
            )
        }
    }
    let (client_id, secret) = match client_credentials(&headers, &form) {
        Ok(c) => c,
        Err(e) => return error_response(&e, None),
    };
    if !tokens.allow(&client_id) {
        return slow_down(tokens);
    }
    let claims = state.control().reader().read(|s| {
        tokens.authenticate(
            &s.governance,
            &client_id,
            &secret,
            form.get("scope").map(String::as_str),
        )
    });
    let claims = match claims {
        Ok(c) => c,
        Err(e) => {
            state
                .metrics()
                .auth_rejections
                .get_or_create(&crate::metrics::AuthLabels {
                    outcome: "unauthorized",
                    entrypoint: "oauth2",
                })
                .inc();
            return error_response(&e, None);
        }
    };
    match tokens.sign(state.control(), &claims).await {
        Ok(issued) => {
            let mut body = json!({
                "access_token": issued.access_token,
                "token_type": "Bearer",
                "expires_in": issued.expires_in,
            });
            if let Some(scope) = issued.scope {
                body["scope"] = json!(scope);
            }
            no_store(Json(body).into_response())
        }
        Err(e) => {
            let retry = (e.code == "temporarily_unavailable").then_some(1);
            error_response(&e, retry)
        }
    }
}

fn slow_down(tokens: &TokenService) -> Response {
    error_response(
        &TokenError::new(
            "slow_down",
            "too many token requests (auth.oauth2.token_requests); cache tokens until they expire",
        ),
        Some(tokens.retry_after()),
    )
}

/// `GET /.well-known/jwks.json`: the keys that verify the cluster's access tokens.
pub async fn jwks(State(state): State<AppState>) -> Response {
    let set = state
        .control()
        .reader()
        .read(|s| TokenService::jwks(&s.governance));
    let mut response = Json(set).into_response();
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        // Short: a rotated-in key signs at once, and verifiers fetch again on an unknown kid.
        HeaderValue::from_static("public, max-age=10"),
    );
    response
}

/// `GET /.well-known/oauth-authorization-server` (RFC 8414).
pub async fn metadata(State(state): State<AppState>) -> Response {
    Json(state.tokens().metadata()).into_response()
}
