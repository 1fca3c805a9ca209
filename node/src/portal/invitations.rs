//! Invitations to the portal: an administrator (admin API or the portal's administration page)
//! invites an email address and gets a one-time link, valid for a while (7 days unless said
//! otherwise, at most 30); whoever opens it chooses a name and a password and has an active
//! account with the invited role — also where sign-up is closed. The replicated state keeps
//! only the SHA-256 of the link's token, so the link is shown once; accepting it opens the
//! account and ends the invitation in one command, so a link opens one account, once, on
//! whichever node.

use std::time::Duration;

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use eventgate_raft_store::clock::now_ms;
use eventgate_raft_store::governance::{AccountRole, AccountState, Invitation};
use eventgate_raft_store::{Command, Response as Applied};

use super::accounts::{
    capitalize, check_name_and_password, cookie_attributes, double_submit_ok, frame, new_account,
    notice, parse_form, random_token, set_cookie, start_session, valid_email,
};
use super::html;
use crate::http::error::ApiError;
use crate::http::AppState;

/// How long an invitation is valid unless said otherwise, and at most.
pub const DEFAULT_TTL: Duration = Duration::from_secs(7 * 24 * 3600);
pub const MAX_TTL: Duration = Duration::from_secs(30 * 24 * 3600);

/// The double-submit CSRF cookie of the invitation form (as the other forms shown before
/// signing in).
const CSRF_COOKIE: &str = "egw_csrf";

/// A new invitation and its one-time link.
#[derive(Debug)]
pub struct Issued {
    pub invitation: Invitation,
    pub url: String,
}

/// Why an invitation was not made: the field at fault and the reason.
#[derive(Debug)]
pub struct Refused {
    pub field: &'static str,
    pub detail: String,
}

fn role_name(role: AccountRole) -> &'static str {
    match role {
        AccountRole::Admin => "admin",
        AccountRole::Developer => "developer",
    }
}

/// Invites `email` (case-insensitive) as `role` for `ttl`; `by` is the inviting account.
pub async fn invite(
    state: &AppState,
    email: &str,
    role: AccountRole,
    ttl: Duration,
    by: Option<String>,
) -> Result<Issued, Refused> {
    let email = email.trim().to_lowercase();
    if !valid_email(&email) {
        return Err(Refused {
            field: "email",
            detail: format!("`{email}` is not an email address"),
        });
    }
    if ttl.is_zero() || ttl > MAX_TTL {
        return Err(Refused {
            field: "expires_in",
            detail: "an invitation is valid for more than nothing and at most 30 days".to_owned(),
        });
    }
    let token = random_token();
    let sha256 = crate::auth::sha256_hex(&token);
    let now = now_ms();
    let invitation = Invitation {
        id: sha256[..16].to_owned(),
        sha256,
        email,
        role,
        invited_by: by,
        created_at_ms: now,
        expires_at_ms: now.saturating_add(ttl.as_millis() as u64),
    };
    match state
        .control()
        .write(Command::PutInvitation(invitation.clone()))
        .await
    {
        Ok(Applied::Applied) => {}
        Ok(Applied::Refused { reason }) => {
            return Err(Refused {
                field: "email",
                detail: reason,
            })
        }
        Ok(other) => {
            return Err(Refused {
                field: "email",
                detail: format!("{other:?}"),
            })
        }
        Err(e) => {
            return Err(Refused {
                field: "email",
                detail: format!("the cluster could not record it: {e}"),
            })
        }
    }
    let url = format!(
        "{}{}/invitation?token={token}",
        state.public_url(),
        state.portal().path
    );
    Ok(Issued { invitation, url })
}

// ---- the admin API ----

/// `POST /admin/accounts/invitations`, `GET /admin/accounts/invitations`,
/// `DELETE /admin/accounts/invitations/{id}`.
pub fn admin_router() -> axum::Router<AppState> {
    axum::Router::new()
        .route(
            "/accounts/invitations",
            axum::routing::get(list).post(create),
        )
        .route(
            "/accounts/invitations/{id}",
            axum::routing::delete(withdraw),
        )
}

/// Request types of the admin routes on invitations, for the OpenAPI document.
#[derive(utoipa::OpenApi)]
#[openapi(components(schemas(InvitationBody)))]
#[derive(Debug)]
pub struct AdminSchemas;

#[derive(Debug, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct InvitationBody {
    email: String,
    #[serde(default)]
    role: Option<String>,
    /// `"7d"`; at most 30 days.
    #[serde(default, with = "humantime_serde")]
    #[schema(value_type = Option<String>, example = "7d")]
    expires_in: Option<Duration>,
}

fn view(i: &Invitation) -> serde_json::Value {
    serde_json::json!({
        "id": i.id,
        "email": i.email,
        "role": role_name(i.role),
        "invited_by": i.invited_by,
        "created_at_ms": i.created_at_ms,
        "expires_at_ms": i.expires_at_ms,
    })
}

async fn create(
    State(state): State<AppState>,
    crate::http::JsonBody(body): crate::http::JsonBody<InvitationBody>,
) -> Result<Response, ApiError> {
    let role = match body.role.as_deref() {
        None | Some("developer") => AccountRole::Developer,
        Some("admin") => AccountRole::Admin,
        Some(other) => {
            return Err(ApiError::invalid_field(
                "role",
                format!("`{other}` is not developer or admin"),
            ))
        }
    };
    let ttl = body.expires_in.unwrap_or(DEFAULT_TTL);
    match invite(&state, &body.email, role, ttl, None).await {
        Ok(issued) => {
            let mut answer = view(&issued.invitation);
            answer["url"] = serde_json::Value::String(issued.url);
            Ok((StatusCode::CREATED, axum::Json(answer)).into_response())
        }
        Err(r) if r.detail.contains("exists") => Err(ApiError::conflict(r.detail)),
        Err(r) => Err(ApiError::invalid_field(r.field, r.detail)),
    }
}

async fn list(State(state): State<AppState>) -> axum::Json<serde_json::Value> {
    let now = now_ms();
    let invitations: Vec<serde_json::Value> = state.control().reader().read(|s| {
        s.governance
            .invitations
            .values()
            .filter(|i| i.expires_at_ms > now)
            .map(view)
            .collect()
    });
    axum::Json(serde_json::json!({ "invitations": invitations }))
}

async fn withdraw(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<axum::Json<serde_json::Value>, ApiError> {
    match state
        .control()
        .write(Command::DeleteInvitation { id: id.clone() })
        .await?
    {
        Applied::Applied => Ok(axum::Json(serde_json::json!({ "withdrawn": id }))),
        Applied::NotFound => Err(ApiError::not_found(format!("no invitation `{id}`"))),
        other => Err(ApiError::internal(format!("{other:?}"))),
    }
}

// ---- the page the link opens ----

#[derive(Template)]
#[template(path = "portal/invitation.html")]
struct InvitationPage<'a> {
    frame: super::Frame<'a>,
    action: String,
    csrf: String,
    token: String,
    email: String,
    role: &'static str,
    name: String,
    error: Option<String>,
}

#[derive(Debug, serde::Deserialize)]
pub struct TokenQuery {
    #[serde(default)]
    token: String,
}

/// The live invitation of `token`, or the page saying why there is none.
fn live(state: &AppState, token: &str) -> Result<Invitation, Box<Response>> {
    let found = state.control().reader().read(|s| {
        s.governance
            .invitation_by_hash(&crate::auth::sha256_hex(token))
            .cloned()
    });
    match found {
        Some(i) if i.expires_at_ms > now_ms() => Ok(i),
        Some(_) => Err(Box::new(notice(
            state,
            StatusCode::GONE,
            "Invitation expired",
            "This invitation has expired: ask an administrator for a new one.",
        ))),
        None => Err(Box::new(notice(
            state,
            StatusCode::NOT_FOUND,
            "No such invitation",
            "This link opens no account: it was used already, withdrawn, or mistyped.",
        ))),
    }
}

fn form_page(
    state: &AppState,
    token: &str,
    invitation: &Invitation,
    status: StatusCode,
    name: String,
    error: Option<String>,
) -> Response {
    let csrf = random_token();
    let mut response = html(InvitationPage {
        frame: frame(state, None),
        action: format!("{}/invitation", state.portal().path),
        csrf: csrf.clone(),
        token: token.to_owned(),
        email: invitation.email.clone(),
        role: match invitation.role {
            AccountRole::Admin => "an administrator",
            AccountRole::Developer => "a developer",
        },
        name,
        error,
    });
    *response.status_mut() = status;
    // The page carries the token: neither cached nor sent on as a referrer.
    let headers = response.headers_mut();
    headers.insert(
        axum::http::header::CACHE_CONTROL,
        axum::http::HeaderValue::from_static("no-store"),
    );
    headers.insert(
        axum::http::header::REFERRER_POLICY,
        axum::http::HeaderValue::from_static("no-referrer"),
    );
    set_cookie(
        &mut response,
        format!("{CSRF_COOKIE}={csrf}{}", cookie_attributes(state)),
    );
    response
}

/// `GET {portal}/invitation?token=…`.
pub async fn show(State(state): State<AppState>, Query(query): Query<TokenQuery>) -> Response {
    match live(&state, &query.token) {
        Ok(invitation) => form_page(
            &state,
            &query.token,
            &invitation,
            StatusCode::OK,
            String::new(),
            None,
        ),
        Err(r) => *r,
    }
}

/// `POST {portal}/invitation`: token, name, password (and the form's CSRF token). Opens the
/// account and signs it in.
pub async fn accept(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let form = parse_form(&body);
    if !double_submit_ok(&headers, &form) {
        return notice(&state, StatusCode::FORBIDDEN, "Refused", "The form expired or did not come from this portal (CSRF check). Reload it and try again.");
    }
    let token = form.get("token").cloned().unwrap_or_default();
    let invitation = match live(&state, &token) {
        Ok(i) => i,
        Err(r) => return *r,
    };
    let name = form
        .get("name")
        .map(|n| n.trim().to_owned())
        .unwrap_or_default();
    let password = form.get("password").cloned().unwrap_or_default();
    let again = |error: String| {
        form_page(
            &state,
            &token,
            &invitation,
            StatusCode::BAD_REQUEST,
            name.clone(),
            Some(error),
        )
    };
    if let Err(e) = check_name_and_password(&name, &password) {
        return again(e);
    }
    let account = match new_account(
        &state,
        &invitation.email,
        &name,
        password,
        invitation.role,
        AccountState::Active,
    )
    .await
    {
        Ok(account) => account,
        Err(page) => return *page,
    };
    let command = Command::AcceptInvitation {
        id: invitation.id.clone(),
        sha256: invitation.sha256.clone(),
        account: Box::new(account.clone()),
    };
    match state.control().write(command).await {
        Ok(Applied::Applied) => {
            let to = format!("{}/account", state.portal().path);
            start_session(&state, &account, &to).await
        }
        Ok(Applied::Refused { reason }) => notice(
            &state,
            StatusCode::CONFLICT,
            "The invitation was not accepted",
            &format!("{}.", capitalize(&reason)),
        ),
        Ok(other) => notice(
            &state,
            StatusCode::INTERNAL_SERVER_ERROR,
            "Error",
            &format!("{other:?}"),
        ),
        Err(e) => notice(
            &state,
            StatusCode::SERVICE_UNAVAILABLE,
            "Try again",
            &format!("The cluster could not record it: {e}"),
        ),
    }
}
