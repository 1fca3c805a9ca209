//! A developer's applications in the portal: create and delete them, issue API keys (shown
//! once) and revoke them, issue OAuth2 client secrets (shown once; the others keep working for
//! `auth.oauth2.secret_overlap`), get an access token, and subscribe an application to a
//! published API under a plan (pending until an administrator approves where the plan says so).
//!
//! Every page and form is the owner's alone: an application of another account (or of no
//! account) answers 404, as one that does not exist. Every form carries the session's CSRF
//! token. The writes are the same commands as the admin API's, so what the portal does holds on
//! every node at once.

use std::collections::HashMap;
use std::time::Duration;

use askama::Template;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use eventgate_raft_store::clock::now_ms;
use eventgate_raft_store::governance::{
    Access, AccessState, Account, AccountRole, ApiKey, Application, ClientSecret, Origin,
    Permission, Plan, PortalSession,
};
use eventgate_raft_store::{Command, Response as Applied};

use super::accounts::signed_in;
use super::{html, Frame, SessionView};
use crate::http::AppState;

#[derive(Template)]
#[template(path = "portal/apps.html")]
struct AppsPage<'a> {
    frame: Frame<'a>,
    csrf: String,
    apps: Vec<AppRow>,
    error: Option<String>,
}

struct AppRow {
    id: String,
    name: String,
    description: String,
    subscriptions: usize,
}

#[derive(Template)]
#[template(path = "portal/app.html")]
struct AppPage<'a> {
    frame: Frame<'a>,
    csrf: String,
    id: String,
    name: String,
    description: String,
    /// A credential shown once: (what it is, its value).
    shown: Option<(String, String)>,
    error: Option<String>,
    keys: Vec<CredentialRow>,
    secrets: Vec<CredentialRow>,
    token_url: String,
    access: Vec<AccessRow>,
    apis: Vec<String>,
    plans: Vec<(String, bool)>,
}

struct CredentialRow {
    id: String,
    created: String,
    status: String,
    revocable: bool,
}

struct AccessRow {
    api: String,
    plan: String,
    state: &'static str,
    /// Where the application stands against the plan (approved access only).
    usage: Vec<UsageRow>,
}

/// One limit of a plan and how much of it is in use.
struct UsageRow {
    what: String,
    used: u64,
    /// None: the plan sets no limit on it.
    limit: Option<u64>,
    note: String,
}

/// The plan's limits on `(app, api)` and what is used of each, cluster-wide.
fn usage_rows(state: &AppState, app: &str, api: &str, plan: &Plan) -> Vec<UsageRow> {
    let usage = state.limiter().usage(app, api, plan);
    let mut rows = Vec::new();
    for (what, rate) in [
        ("Messages published", usage.publish),
        ("Messages delivered to streams", usage.deliveries),
    ] {
        if let Some(r) = rate {
            let window = humantime::format_duration(Duration::from_millis(r.limit.window_ms));
            let resets =
                humantime::format_duration(Duration::from_secs(r.resets_in_ms.div_ceil(1000)));
            rows.push(UsageRow {
                what: format!("{what} (per {window})"),
                used: r.used,
                limit: Some(r.limit.count),
                note: format!("the window resets in {resets}"),
            });
        }
    }
    rows.push(UsageRow {
        what: "WebSocket and SSE connections open now".to_owned(),
        used: usage.connections,
        limit: plan.max_connections.map(u64::from),
        note: String::new(),
    });
    rows.push(UsageRow {
        what: "WebSub subscriptions".to_owned(),
        used: usage.websub_subscriptions,
        limit: plan.max_subscriptions.map(u64::from),
        note: String::new(),
    });
    rows
}

fn rfc3339(ms: u64) -> String {
    humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms))
        .to_string()
}

/// An API key or client secret as the page lists it.
fn credential_row(
    id: &str,
    created_at_ms: u64,
    revoked_at_ms: Option<u64>,
    expires_at_ms: Option<u64>,
    now: u64,
) -> CredentialRow {
    let status = match (revoked_at_ms, expires_at_ms) {
        (Some(at), _) => format!("revoked {}", rfc3339(at)),
        (None, Some(at)) if at <= now => format!("expired {}", rfc3339(at)),
        (None, Some(at)) => format!("valid until {}", rfc3339(at)),
        (None, None) => "valid".to_owned(),
    };
    CredentialRow {
        id: id.to_owned(),
        created: rfc3339(created_at_ms),
        status,
        revocable: revoked_at_ms.is_none(),
    }
}

fn form(body: &[u8]) -> HashMap<String, String> {
    form_urlencoded::parse(body)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

fn frame<'a>(state: &'a AppState, session: &PortalSession, account: &Account) -> Frame<'a> {
    Frame {
        title: &state.portal().title,
        base: &state.portal().path,
        session: Some(SessionView {
            name: account.name.clone(),
            csrf: session.csrf.clone(),
            admin: account.role == AccountRole::Admin,
        }),
    }
}

fn sign_in_first(state: &AppState) -> Response {
    Redirect::to(&format!("{}/login", state.portal().path)).into_response()
}

fn not_found(state: &AppState) -> Response {
    (
        StatusCode::NOT_FOUND,
        axum::response::Html(format!(
            "<!doctype html><title>Not found</title><p>No such application of yours. <a href=\"{}/apps\">Your applications</a>.</p>",
            state.portal().path
        )),
    )
        .into_response()
}

/// The signed-in owner and, for a form, whether its CSRF token is the session's.
fn owner(
    state: &AppState,
    headers: &HeaderMap,
    form: Option<&HashMap<String, String>>,
) -> Result<(PortalSession, Account), Box<Response>> {
    let Some((session, account)) = signed_in(state, headers) else {
        return Err(Box::new(sign_in_first(state)));
    };
    if let Some(form) = form {
        if !super::accounts::session_form_ok(&session, form) {
            return Err(Box::new(
                (
                    StatusCode::FORBIDDEN,
                    "the form did not come from this portal (CSRF check); reload it",
                )
                    .into_response(),
            ));
        }
    }
    Ok((session, account))
}

/// The application `id` if `account` owns it.
fn owned(state: &AppState, account: &Account, id: &str) -> Option<Application> {
    state.control().reader().read(|s| {
        s.governance
            .applications
            .get(id)
            .filter(|a| a.owner.as_deref() == Some(account.id.as_str()))
            .cloned()
    })
}

/// The form's `name` (at most 100 characters) and `description` (at most 500), trimmed; empty
/// ones are none.
fn name_and_description(
    form: &HashMap<String, String>,
) -> Result<(Option<String>, Option<String>), String> {
    let field = |key: &str| {
        form.get(key)
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    };
    let (name, description) = (field("name"), field("description"));
    if name.as_ref().is_some_and(|n| n.chars().count() > 100) {
        return Err("The name may have 100 characters at most.".to_owned());
    }
    if description
        .as_ref()
        .is_some_and(|d| d.chars().count() > 500)
    {
        return Err("The description may have 500 characters at most.".to_owned());
    }
    Ok((name, description))
}

async fn write(state: &AppState, command: Command) -> Result<(), String> {
    match state.control().write(command).await {
        Ok(Applied::Applied | Applied::Count(_)) => Ok(()),
        Ok(Applied::Refused { reason }) => Err(reason),
        Ok(other) => Err(format!("{other:?}")),
        Err(e) => Err(format!("the cluster could not record it: {e}")),
    }
}

fn apps_page(
    state: &AppState,
    session: &PortalSession,
    account: &Account,
    error: Option<String>,
) -> Response {
    let apps = state.control().reader().read(|s| {
        let g = &s.governance;
        g.applications
            .values()
            .filter(|a| a.owner.as_deref() == Some(account.id.as_str()))
            .map(|a| AppRow {
                id: a.id.clone(),
                name: a.name.clone().unwrap_or_default(),
                description: a.description.clone().unwrap_or_default(),
                subscriptions: g.access.keys().filter(|(app, _)| *app == a.id).count(),
            })
            .collect()
    });
    let status = if error.is_some() {
        StatusCode::BAD_REQUEST
    } else {
        StatusCode::OK
    };
    let mut response = html(AppsPage {
        frame: frame(state, session, account),
        csrf: session.csrf.clone(),
        apps,
        error,
    });
    *response.status_mut() = status;
    response
}

/// `GET {portal}/apps`.
pub async fn list(State(state): State<AppState>, headers: HeaderMap) -> Response {
    match owner(&state, &headers, None) {
        Ok((session, account)) => apps_page(&state, &session, &account, None),
        Err(r) => *r,
    }
}

/// `POST {portal}/apps`: id, description.
pub async fn create(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let form = form(&body);
    let (session, account) = match owner(&state, &headers, Some(&form)) {
        Ok(o) => o,
        Err(r) => return *r,
    };
    let id = form
        .get("id")
        .map(|i| i.trim().to_owned())
        .unwrap_or_default();
    let (name, description) = match name_and_description(&form) {
        Ok(found) => found,
        Err(e) => return apps_page(&state, &session, &account, Some(e)),
    };
    if let Err(e) = crate::config::governance::valid_name(&id) {
        return apps_page(
            &state,
            &session,
            &account,
            Some(format!(
                "Application id `{id}`: {e} (lowercase letters, digits, - and _)."
            )),
        );
    }
    if state
        .control()
        .reader()
        .read(|s| s.governance.applications.contains_key(&id))
    {
        return apps_page(
            &state,
            &session,
            &account,
            Some(format!("The id `{id}` is taken: choose another.")),
        );
    }
    let app = Application {
        id: id.clone(),
        name,
        description,
        permissions: Vec::new(),
        disabled: false,
        origin: Origin::Admin,
        updated_at_ms: now_ms(),
        owner: Some(account.id.clone()),
    };
    if let Err(e) = write(&state, Command::PutApplication(app)).await {
        return apps_page(&state, &session, &account, Some(e));
    }
    Redirect::to(&format!("{}/apps/{id}", state.portal().path)).into_response()
}

fn app_page(
    state: &AppState,
    session: &PortalSession,
    account: &Account,
    app: &Application,
    shown: Option<(String, String)>,
    error: Option<String>,
) -> Response {
    let now = now_ms();
    let (keys, secrets, access, apis, plans) = state.control().reader().read(|s| {
        let g = &s.governance;
        let keys = g
            .keys
            .values()
            .filter(|k| k.app == app.id)
            .map(|k| {
                credential_row(
                    &k.id,
                    k.created_at_ms,
                    k.revoked_at_ms,
                    k.expires_at_ms,
                    now,
                )
            })
            .collect::<Vec<_>>();
        let secrets = g
            .client_secrets
            .values()
            .filter(|c| c.app == app.id)
            .map(|c| {
                credential_row(
                    &c.id,
                    c.created_at_ms,
                    c.revoked_at_ms,
                    c.expires_at_ms,
                    now,
                )
            })
            .collect::<Vec<_>>();
        let access = g
            .access
            .values()
            .filter(|a| a.app == app.id)
            .map(|a| {
                let plan = g.plans.get(&a.plan).cloned();
                (a.clone(), plan)
            })
            .collect::<Vec<_>>();
        let apis = g
            .apis
            .values()
            .filter(|a| a.lifecycle.admits())
            .map(|a| a.name.clone())
            .collect::<Vec<_>>();
        let plans = g
            .plans
            .values()
            .map(|p| (p.name.clone(), p.approval_required))
            .collect::<Vec<_>>();
        (keys, secrets, access, apis, plans)
    });
    // Usage is read outside the state's lock: the limiter reads the state itself.
    let access = access
        .into_iter()
        .map(|(a, plan)| AccessRow {
            usage: match (&a.state, plan) {
                (AccessState::Approved, Some(plan)) => usage_rows(state, &a.app, &a.api, &plan),
                _ => Vec::new(),
            },
            api: a.api,
            plan: a.plan,
            state: match a.state {
                AccessState::Approved => "approved",
                AccessState::Pending => "waiting for approval",
                AccessState::Rejected => "rejected",
            },
        })
        .collect();
    let status = if error.is_some() {
        StatusCode::BAD_REQUEST
    } else {
        StatusCode::OK
    };
    let mut response = html(AppPage {
        frame: frame(state, session, account),
        csrf: session.csrf.clone(),
        id: app.id.clone(),
        name: app.name.clone().unwrap_or_default(),
        description: app.description.clone().unwrap_or_default(),
        shown,
        error,
        keys,
        secrets,
        token_url: format!("{}/oauth2/token", state.tokens().issuer()),
        access,
        apis,
        plans,
    });
    *response.status_mut() = status;
    // A page showing a credential is never cached.
    response.headers_mut().insert(
        axum::http::header::CACHE_CONTROL,
        axum::http::HeaderValue::from_static("no-store"),
    );
    response
}

/// `GET {portal}/apps/{id}`.
pub async fn show(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let (session, account) = match owner(&state, &headers, None) {
        Ok(o) => o,
        Err(r) => return *r,
    };
    match owned(&state, &account, &id) {
        Some(app) => app_page(&state, &session, &account, &app, None, None),
        None => not_found(&state),
    }
}

/// `POST {portal}/apps/{id}/{action}`: `keys` (issue an API key), `secrets` (issue a client
/// secret), `token` (an access token on the newest client secret), `subscribe` (api, plan),
/// `revoke-key` / `revoke-secret` (credential), `edit` (name, description: the rename; the id
/// stays), `delete`.
pub async fn act(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path((id, action)): Path<(String, String)>,
    body: axum::body::Bytes,
) -> Response {
    let form = form(&body);
    let (session, account) = match owner(&state, &headers, Some(&form)) {
        Ok(o) => o,
        Err(r) => return *r,
    };
    let Some(app) = owned(&state, &account, &id) else {
        return not_found(&state);
    };
    let page = |shown: Option<(String, String)>, error: Option<String>| {
        let app = owned(&state, &account, &id).unwrap_or_else(|| app.clone());
        app_page(&state, &session, &account, &app, shown, error)
    };
    let now = now_ms();
    match action.as_str() {
        "keys" | "rotate-key" => {
            let (key, sha256) = crate::auth::generate_key();
            let stored = ApiKey {
                id: sha256[..16].to_owned(),
                app: id.clone(),
                sha256,
                created_at_ms: now,
                expires_at_ms: None,
                revoked_at_ms: None,
                origin: Origin::Admin,
            };
            let (command, what) = if action == "rotate-key" {
                let overlap = match form.get("overlap").map(String::as_str) {
                    Some("0s") => 0,
                    Some("1h") => 3_600_000,
                    Some("7d") => 7 * 86_400_000,
                    _ => 86_400_000,
                };
                (
                    Command::RotateApiKey {
                        key: stored,
                        others_expire_at_ms: now.saturating_add(overlap),
                    },
                    "New API key (shown only now; the others stop at the end of the overlap)",
                )
            } else {
                (Command::AddApiKey(stored), "API key (shown only now)")
            };
            match write(&state, command).await {
                Ok(()) => page(Some((what.to_owned(), key)), None),
                Err(e) => page(None, Some(e)),
            }
        }
        "secrets" => {
            let (secret, sha256) = crate::oauth2::generate_secret();
            let overlap = state.tokens().settings().secret_overlap;
            let stored = ClientSecret {
                id: sha256[..16].to_owned(),
                app: id.clone(),
                sha256,
                created_at_ms: now,
                expires_at_ms: None,
                revoked_at_ms: None,
            };
            let command = Command::AddClientSecret {
                secret: stored,
                others_expire_at_ms: Some(now.saturating_add(overlap.as_millis() as u64)),
            };
            match write(&state, command).await {
                Ok(()) => page(
                    Some((
                        format!("Client secret of client id `{id}` (shown only now)"),
                        secret,
                    )),
                    None,
                ),
                Err(e) => page(None, Some(e)),
            }
        }
        "token" => {
            let claims = state.control().reader().read(|s| {
                let g = &s.governance;
                let newest = g
                    .client_secrets
                    .values()
                    .filter(|c| c.app == id && c.usable(now))
                    .max_by_key(|c| c.created_at_ms)?;
                Some(state.tokens().claims_for(g, &id, &newest.id, None))
            });
            match claims {
                None => page(
                    None,
                    Some("Issue a client secret first: tokens are issued on one.".to_owned()),
                ),
                Some(Err(e)) => page(None, Some(e.description)),
                Some(Ok(claims)) => match state.tokens().sign(state.control(), &claims).await {
                    Ok(issued) => page(
                        Some((
                            format!("Access token (expires in {} s)", issued.expires_in),
                            issued.access_token,
                        )),
                        None,
                    ),
                    Err(e) => page(None, Some(e.description)),
                },
            }
        }
        "subscribe" => {
            let api = form.get("api").cloned().unwrap_or_default();
            let plan = form.get("plan").cloned().unwrap_or_default();
            let found = state.control().reader().read(|s| {
                let g = &s.governance;
                let api = g.apis.get(&api).filter(|a| a.lifecycle.admits()).cloned();
                (api, g.plans.get(&plan).cloned())
            });
            let (Some(api), Some(plan)) = found else {
                return page(None, Some("Choose a published API and a plan.".to_owned()));
            };
            // The application may use the API's topics: a permission per topic.
            let mut updated = app.clone();
            for topic in api.channels.values() {
                if !updated.permissions.iter().any(|p| p.pattern == *topic) {
                    updated.permissions.push(Permission {
                        pattern: topic.clone(),
                        publish: true,
                        subscribe: true,
                    });
                }
            }
            updated.updated_at_ms = now;
            let access = Access {
                app: id.clone(),
                api: api.name.clone(),
                plan: plan.name.clone(),
                state: if plan.approval_required {
                    AccessState::Pending
                } else {
                    AccessState::Approved
                },
                origin: Origin::Admin,
                updated_at_ms: now,
            };
            if let Err(e) = write(&state, Command::PutApplication(updated)).await {
                return page(None, Some(e));
            }
            match write(&state, Command::PutAccess(access)).await {
                Ok(()) => page(None, None),
                Err(e) => page(None, Some(e)),
            }
        }
        "revoke-key" | "revoke-secret" => {
            let credential = form.get("credential").cloned().unwrap_or_default();
            let mine = state.control().reader().read(|s| {
                let g = &s.governance;
                if action == "revoke-key" {
                    g.keys.get(&credential).is_some_and(|k| k.app == id)
                } else {
                    g.client_secrets
                        .get(&credential)
                        .is_some_and(|c| c.app == id)
                }
            });
            if !mine {
                return page(
                    None,
                    Some("No such credential of this application.".to_owned()),
                );
            }
            let command = if action == "revoke-key" {
                Command::RevokeApiKey {
                    id: credential,
                    at_ms: now,
                }
            } else {
                Command::RevokeClientSecret {
                    id: credential,
                    at_ms: now,
                }
            };
            match write(&state, command).await {
                Ok(()) => page(None, None),
                Err(e) => page(None, Some(e)),
            }
        }
        "edit" => {
            let (name, description) = match name_and_description(&form) {
                Ok(found) => found,
                Err(e) => return page(None, Some(e)),
            };
            let mut updated = app.clone();
            updated.name = name;
            updated.description = description;
            updated.updated_at_ms = now;
            match write(&state, Command::PutApplication(updated)).await {
                Ok(()) => {
                    Redirect::to(&format!("{}/apps/{id}", state.portal().path)).into_response()
                }
                Err(e) => page(None, Some(e)),
            }
        }
        "delete" => match write(&state, Command::DeleteApplication { id: id.clone() }).await {
            Ok(()) => Redirect::to(&format!("{}/apps", state.portal().path)).into_response(),
            Err(e) => page(None, Some(e)),
        },
        _ => not_found(&state),
    }
}
