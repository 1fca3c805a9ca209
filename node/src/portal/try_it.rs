//! Try it: on an API's page, a signed-in developer picks one of their applications with
//! approved access to the API and a channel; the portal issues the application a short-lived
//! access token (on its newest client secret) and renders a page that opens a live stream of
//! the channel in the browser (SSE or WebSocket, with `?access_token=`) and can publish a test
//! message through the webhook receiver. The token is the application's own: everything the
//! page does is held to the application's rights, as any client's would be.

use std::collections::HashMap;

use askama::Template;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use eventgate_raft_store::clock::now_ms;
use eventgate_raft_store::governance::{AccessState, AccountRole, Entrypoint};

use super::accounts::{session_form_ok, signed_in};
use super::{html, Frame, SessionView};
use crate::http::AppState;

#[derive(Template)]
#[template(path = "portal/try.html")]
struct TryPage<'a> {
    frame: Frame<'a>,
    api: String,
    app: String,
    channel: String,
    token: String,
    expires_in: u64,
    /// Where the page streams from (SSE) and the WebSocket URL, without the token.
    sse_url: String,
    ws_url: String,
    /// Where it publishes, when the API offers the webhook receiver.
    publish_url: Option<String>,
}

fn refuse(status: StatusCode, text: &str) -> Response {
    (status, text.to_owned()).into_response()
}

/// `POST {portal}/apis/{name}/try`: app, channel.
pub async fn start(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(name): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    let form: HashMap<String, String> = form_urlencoded::parse(&body)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    let Some((session, account)) = signed_in(&state, &headers) else {
        return refuse(StatusCode::UNAUTHORIZED, "sign in first");
    };
    if !session_form_ok(&session, &form) {
        return refuse(
            StatusCode::FORBIDDEN,
            "the form did not come from this portal (CSRF check); reload it",
        );
    }
    let app = form.get("app").cloned().unwrap_or_default();
    let channel = form.get("channel").cloned().unwrap_or_default();
    let now = now_ms();
    // The application must be this account's, with approved access to the published API.
    let found = state.control().reader().read(|s| {
        let g = &s.governance;
        let owned = g
            .applications
            .get(&app)
            .is_some_and(|a| a.owner.as_deref() == Some(account.id.as_str()));
        if !owned {
            return Err((
                StatusCode::NOT_FOUND,
                "no such application of yours".to_owned(),
            ));
        }
        let api = g
            .apis
            .get(&name)
            .filter(|a| a.lifecycle.admits())
            .ok_or((StatusCode::NOT_FOUND, format!("no published API `{name}`")))?;
        let topic = api.channels.get(&channel).ok_or((
            StatusCode::BAD_REQUEST,
            format!("API `{name}` has no channel `{channel}`"),
        ))?;
        let approved = g
            .access
            .get(&(app.clone(), name.clone()))
            .is_some_and(|a| a.state == AccessState::Approved);
        if !approved {
            return Err((
                StatusCode::FORBIDDEN,
                format!(
                    "application `{app}` has no approved access to `{name}`: subscribe it first"
                ),
            ));
        }
        let secret = g
            .client_secrets
            .values()
            .filter(|c| c.app == app && c.usable(now))
            .max_by_key(|c| c.created_at_ms)
            .ok_or((
                StatusCode::BAD_REQUEST,
                format!("application `{app}` has no client secret: issue one on its page first"),
            ))?;
        let claims = state
            .tokens()
            .claims_for(g, &app, &secret.id, Some(&name))
            .map_err(|e| (StatusCode::FORBIDDEN, e.description))?;
        Ok((api.clone(), topic.clone(), claims))
    });
    let (api, topic, claims) = match found {
        Ok(f) => f,
        Err((status, text)) => return refuse(status, &text),
    };
    let issued = match state.tokens().sign(state.control(), &claims).await {
        Ok(i) => i,
        Err(e) => return refuse(StatusCode::SERVICE_UNAVAILABLE, &e.description),
    };
    let public_url = state.public_url();
    let (prefix, route_name) = match &api.base_path {
        Some(base) => (format!("{public_url}{base}"), channel.clone()),
        None => (public_url.to_owned(), topic),
    };
    let ws_prefix = prefix
        .replacen("https://", "wss://", 1)
        .replacen("http://", "ws://", 1);
    let mut response = html(TryPage {
        frame: Frame {
            title: &state.portal().title,
            base: &state.portal().path,
            session: Some(SessionView {
                name: account.name.clone(),
                csrf: session.csrf.clone(),
                admin: account.role == AccountRole::Admin,
            }),
        },
        api: api.name.clone(),
        app,
        channel,
        token: issued.access_token,
        expires_in: issued.expires_in,
        sse_url: format!("{prefix}/sse/{route_name}"),
        ws_url: format!("{ws_prefix}/ws/{route_name}"),
        publish_url: api
            .entrypoints
            .contains(&Entrypoint::Webhook)
            .then(|| format!("{prefix}/webhook-receiver?topic={route_name}")),
    });
    // The page holds a token: never cached.
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}
