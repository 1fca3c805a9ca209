//! The administrators' pages of the portal (`/portal/admin`, accounts with the admin role):
//! applications' subscription requests waiting for approval (approve, reject), APIs and their
//! lifecycle (publish, deprecate, retire — the same transitions as the admin API), and accounts
//! (approve a pending one, disable, enable). Every form carries the session's CSRF token; a
//! developer gets 403.

use std::collections::HashMap;

use askama::Template;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use eventgate_raft_store::clock::now_ms;
use eventgate_raft_store::governance::{
    AccessState, Account, AccountRole, AccountState, Lifecycle,
};
use eventgate_raft_store::{Command, Response as Applied};

use super::accounts::{session_form_ok, signed_in};
use super::{html, Frame, SessionView};
use crate::http::AppState;

#[derive(Template)]
#[template(path = "portal/admin.html")]
struct AdminPage<'a> {
    frame: Frame<'a>,
    csrf: String,
    error: Option<String>,
    /// (application, API, plan).
    requests: Vec<(String, String, String)>,
    /// (API, lifecycle, the states it may move to).
    apis: Vec<(String, &'static str, Vec<&'static str>)>,
    /// (id, email, name, role, state).
    accounts: Vec<(String, String, String, &'static str, &'static str)>,
    /// Open invitations: (id, email, role, expires).
    invitations: Vec<(String, String, &'static str, String)>,
    /// A new invitation's link (shown once): (email, link).
    invited: Option<(String, String)>,
}

/// The signed-in administrator, or the answer for anyone else.
fn administrator(
    state: &AppState,
    headers: &HeaderMap,
) -> Result<(eventgate_raft_store::governance::PortalSession, Account), Box<Response>> {
    match signed_in(state, headers) {
        None => Err(Box::new(
            Redirect::to(&format!("{}/login", state.portal().path)).into_response(),
        )),
        Some((_, account)) if account.role != AccountRole::Admin => Err(Box::new(
            (StatusCode::FORBIDDEN, "administrators only").into_response(),
        )),
        Some(found) => Ok(found),
    }
}

fn page(state: &AppState, headers: &HeaderMap, error: Option<String>) -> Response {
    page_with(state, headers, error, None)
}

fn page_with(
    state: &AppState,
    headers: &HeaderMap,
    error: Option<String>,
    invited: Option<(String, String)>,
) -> Response {
    let (session, account) = match administrator(state, headers) {
        Ok(a) => a,
        Err(r) => return *r,
    };
    let now = now_ms();
    let (requests, apis, accounts, invitations) = state.control().reader().read(|s| {
        let g = &s.governance;
        let requests = g
            .access
            .values()
            .filter(|a| a.state == AccessState::Pending)
            .map(|a| (a.app.clone(), a.api.clone(), a.plan.clone()))
            .collect();
        let apis = g
            .apis
            .values()
            .map(|a| {
                let to = Lifecycle::ALL
                    .into_iter()
                    .filter(|l| *l != a.lifecycle && a.lifecycle.may_become(*l))
                    .map(Lifecycle::name)
                    .collect();
                (a.name.clone(), a.lifecycle.name(), to)
            })
            .collect();
        let accounts = g
            .accounts
            .values()
            .map(|a| {
                (
                    a.id.clone(),
                    a.email.clone(),
                    a.name.clone(),
                    match a.role {
                        AccountRole::Admin => "administrator",
                        AccountRole::Developer => "developer",
                    },
                    match a.state {
                        AccountState::Pending => "pending",
                        AccountState::Active => "active",
                        AccountState::Disabled => "disabled",
                    },
                )
            })
            .collect();
        let invitations = g
            .invitations
            .values()
            .filter(|i| i.expires_at_ms > now)
            .map(|i| {
                (
                    i.id.clone(),
                    i.email.clone(),
                    match i.role {
                        AccountRole::Admin => "administrator",
                        AccountRole::Developer => "developer",
                    },
                    humantime::format_rfc3339_seconds(
                        std::time::UNIX_EPOCH + std::time::Duration::from_millis(i.expires_at_ms),
                    )
                    .to_string(),
                )
            })
            .collect();
        (requests, apis, accounts, invitations)
    });
    let status = if error.is_some() {
        StatusCode::BAD_REQUEST
    } else {
        StatusCode::OK
    };
    let mut response = html(AdminPage {
        frame: Frame {
            title: &state.portal().title,
            base: &state.portal().path,
            session: Some(SessionView {
                name: account.name.clone(),
                csrf: session.csrf.clone(),
                admin: true,
            }),
        },
        csrf: session.csrf,
        error,
        requests,
        apis,
        accounts,
        invitations,
        invited: invited.clone(),
    });
    *response.status_mut() = status;
    if invited.is_some() {
        // The page shows a one-time link.
        response.headers_mut().insert(
            axum::http::header::CACHE_CONTROL,
            axum::http::HeaderValue::from_static("no-store"),
        );
    }
    response
}

/// `GET {portal}/admin`.
pub async fn show(State(state): State<AppState>, headers: HeaderMap) -> Response {
    page(&state, &headers, None)
}

/// `POST {portal}/admin/{action}`: `approve` / `reject` (app, api), `lifecycle` (api, state),
/// `account` (id, state: active | disabled), `invite` (email, role: developer | admin),
/// `withdraw` (invitation).
pub async fn act(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(action): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    let form: HashMap<String, String> = form_urlencoded::parse(&body)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    let (session, admin) = match administrator(&state, &headers) {
        Ok(a) => a,
        Err(r) => return *r,
    };
    if !session_form_ok(&session, &form) {
        return (
            StatusCode::FORBIDDEN,
            "the form did not come from this portal (CSRF check); reload it",
        )
            .into_response();
    }
    let field = |name: &str| form.get(name).cloned().unwrap_or_default();
    let now = now_ms();
    let command = match action.as_str() {
        "approve" | "reject" => {
            let (app, api) = (field("app"), field("api"));
            let access = state.control().reader().read(|s| {
                s.governance
                    .access
                    .get(&(app.clone(), api.clone()))
                    .cloned()
            });
            let Some(mut access) = access else {
                return page(
                    &state,
                    &headers,
                    Some(format!("no request of `{app}` for `{api}`")),
                );
            };
            access.state = if action == "approve" {
                AccessState::Approved
            } else {
                AccessState::Rejected
            };
            access.updated_at_ms = now;
            Command::PutAccess(access)
        }
        "lifecycle" => {
            let Some(to) = Lifecycle::parse(&field("state")) else {
                return page(
                    &state,
                    &headers,
                    Some("choose a lifecycle state".to_owned()),
                );
            };
            Command::SetApiLifecycle {
                name: field("api"),
                lifecycle: to,
                sunset_ms: None,
                at_ms: now,
            }
        }
        "account" => {
            let id = field("id");
            let found = state
                .control()
                .reader()
                .read(|s| s.governance.accounts.get(&id).cloned());
            let Some(mut account) = found else {
                return page(&state, &headers, Some(format!("no account `{id}`")));
            };
            account.state = match field("state").as_str() {
                "active" => AccountState::Active,
                "disabled" => AccountState::Disabled,
                _ => return page(&state, &headers, Some("active or disabled".to_owned())),
            };
            account.updated_at_ms = now;
            Command::PutAccount(account)
        }
        "invite" => {
            let role = match field("role").as_str() {
                "admin" => AccountRole::Admin,
                _ => AccountRole::Developer,
            };
            return match super::invitations::invite(
                &state,
                &field("email"),
                role,
                super::invitations::DEFAULT_TTL,
                Some(admin.id.clone()),
            )
            .await
            {
                Ok(issued) => page_with(
                    &state,
                    &headers,
                    None,
                    Some((issued.invitation.email, issued.url)),
                ),
                Err(r) => page(&state, &headers, Some(format!("{}: {}", r.field, r.detail))),
            };
        }
        "withdraw" => Command::DeleteInvitation {
            id: field("invitation"),
        },
        _ => return (StatusCode::NOT_FOUND, "no such action").into_response(),
    };
    match state.control().write(command).await {
        Ok(Applied::Applied) => {
            Redirect::to(&format!("{}/admin", state.portal().path)).into_response()
        }
        Ok(Applied::Refused { reason }) => page(&state, &headers, Some(reason)),
        Ok(other) => page(&state, &headers, Some(format!("{other:?}"))),
        Err(e) => page(&state, &headers, Some(e.to_string())),
    }
}
