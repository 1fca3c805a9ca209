//! Portal accounts and sessions: sign up (open, with an administrator's approval, or closed —
//! then by invitation, [`super::invitations`]), sign in, sign out, change the password. The
//! operator signs in with `admin` and the admin token, as the administrator account `operator`.
//!
//! Passwords are hashed with argon2id (the `argon2` crate's defaults, a random salt each) off
//! the async threads. A session is a random 256-bit cookie value; the replicated state keeps
//! only its SHA-256 ([`PortalSession`]), so a sign-in made through one node is valid on every
//! node, and signing out, or an account disabled, ends it everywhere. The cookie is
//! `HttpOnly`, `SameSite=Strict`, scoped to the portal's path, and `Secure` when the gateway's
//! public URL is https. Every state-changing form carries a CSRF token: the session's own once
//! signed in, before that a double-submit token (a cookie and the form must agree). Sign-in
//! attempts are limited per address and per email on each node.

use std::collections::HashMap;

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use askama::Template;
use axum::extract::{ConnectInfo, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use eventgate_raft_store::clock::now_ms;
use eventgate_raft_store::governance::{Account, AccountRole, AccountState, PortalSession};
use eventgate_raft_store::{Command, Response as Applied};
use rand::RngCore;

use super::{html, Frame, SessionView};
use crate::config::PortalSignup;
use crate::http::listener::Peer;
use crate::http::AppState;

/// The session cookie's name.
pub const SESSION_COOKIE: &str = "egw_session";
/// The double-submit CSRF cookie of the forms shown before signing in.
const CSRF_COOKIE: &str = "egw_csrf";
/// Sign-in attempts per email in [`ATTEMPT_WINDOW_MS`], on each node (per address:
/// `portal.sign_in_attempts_per_address`).
const MAX_ATTEMPTS: u64 = 10;
const ATTEMPT_WINDOW_MS: u64 = 5 * 60 * 1000;
/// Password length bounds (characters).
const MIN_PASSWORD: usize = 12;
const MAX_PASSWORD: usize = 256;

pub(super) fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// `name=value` of the `Cookie` headers.
pub fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_owned())
}

/// The signed-in account of a request, if its session cookie names a live session of an
/// active account.
pub fn signed_in(state: &AppState, headers: &HeaderMap) -> Option<(PortalSession, Account)> {
    let token = cookie(headers, SESSION_COOKIE)?;
    let hash = crate::auth::sha256_hex(&token);
    state.control().reader().read(|s| {
        let g = &s.governance;
        let session = g.session_by_hash(&hash)?;
        if session.expires_at_ms <= now_ms() {
            return None;
        }
        let account = g.accounts.get(&session.account)?;
        (account.state == AccountState::Active).then(|| (session.clone(), account.clone()))
    })
}

/// The frame's view of the session.
pub(super) fn session_view(state: &AppState, headers: &HeaderMap) -> Option<SessionView> {
    signed_in(state, headers).map(|(session, account)| SessionView {
        name: account.name,
        csrf: session.csrf,
        admin: account.role == AccountRole::Admin,
    })
}

/// Sign-in attempts per address and per email, on this node.
#[derive(Debug, Default)]
pub struct Attempts(crate::rate::LocalWindows);

impl Attempts {
    /// Counts an attempt of `key` against `limit` (0: none): false when it is spent.
    fn allow(&self, key: &str, limit: u64) -> bool {
        limit == 0 || self.0.allow(key, limit, ATTEMPT_WINDOW_MS)
    }
}

/// Whether a form of a signed-in page carries the session's CSRF token.
pub fn session_form_ok(session: &PortalSession, form: &HashMap<String, String>) -> bool {
    form.get("csrf")
        .is_some_and(|c| constant_eq(c, &session.csrf))
}

pub(super) fn cookie_attributes(state: &AppState) -> String {
    let secure = if state.public_url().starts_with("https://") {
        "; Secure"
    } else {
        ""
    };
    format!(
        "; Path={}; HttpOnly; SameSite=Strict{secure}",
        state.portal().path
    )
}

pub(super) fn set_cookie(response: &mut Response, value: String) {
    if let Ok(v) = HeaderValue::from_str(&value) {
        response.headers_mut().append(header::SET_COOKIE, v);
    }
}

#[derive(Template)]
#[template(path = "portal/form.html")]
struct FormPage<'a> {
    frame: Frame<'a>,
    /// `signup`, `login` or `password`.
    kind: &'static str,
    heading: &'static str,
    action: String,
    csrf: String,
    error: Option<String>,
    email: String,
    name: String,
}

#[derive(Template)]
#[template(path = "portal/notice.html")]
struct NoticePage<'a> {
    frame: Frame<'a>,
    heading: String,
    text: String,
}

#[derive(Template)]
#[template(path = "portal/account.html")]
struct AccountPage<'a> {
    frame: Frame<'a>,
    name: String,
    email: String,
    role: &'static str,
}

pub(super) fn frame<'a>(state: &'a AppState, session: Option<SessionView>) -> Frame<'a> {
    Frame {
        title: &state.portal().title,
        base: &state.portal().path,
        session,
    }
}

pub(super) fn notice(state: &AppState, status: StatusCode, heading: &str, text: &str) -> Response {
    let mut response = html(NoticePage {
        frame: frame(state, None),
        heading: heading.to_owned(),
        text: text.to_owned(),
    });
    *response.status_mut() = status;
    response
}

/// A form shown before signing in, with a fresh double-submit CSRF token.
fn anonymous_form(
    state: &AppState,
    kind: &'static str,
    status: StatusCode,
    error: Option<String>,
    email: String,
    name: String,
) -> Response {
    let csrf = random_token();
    let (heading, action) = match kind {
        "signup" => ("Create an account", "signup"),
        _ => ("Sign in", "login"),
    };
    let mut response = html(FormPage {
        frame: frame(state, None),
        kind,
        heading,
        action: format!("{}/{action}", state.portal().path),
        csrf: csrf.clone(),
        error,
        email,
        name,
    });
    *response.status_mut() = status;
    set_cookie(
        &mut response,
        format!("{CSRF_COOKIE}={csrf}{}", cookie_attributes(state)),
    );
    response
}

/// Whether a form's CSRF token matches the double-submit cookie.
pub(super) fn double_submit_ok(headers: &HeaderMap, form: &HashMap<String, String>) -> bool {
    match (cookie(headers, CSRF_COOKIE), form.get("csrf")) {
        (Some(c), Some(f)) => !c.is_empty() && constant_eq(&c, f),
        _ => false,
    }
}

pub(super) fn constant_eq(a: &str, b: &str) -> bool {
    use subtle::ConstantTimeEq;
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

pub(super) fn parse_form(body: &[u8]) -> HashMap<String, String> {
    form_urlencoded::parse(body)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

pub(super) async fn hash_password(password: String) -> Result<String, String> {
    tokio::task::spawn_blocking(move || {
        let salt = SaltString::generate(&mut OsRng);
        Argon2::default()
            .hash_password(password.as_bytes(), &salt)
            .map(|h| h.to_string())
            .map_err(|e| e.to_string())
    })
    .await
    .map_err(|e| e.to_string())?
}

async fn verify_password(password: String, hash: String) -> bool {
    tokio::task::spawn_blocking(move || {
        PasswordHash::new(&hash).is_ok_and(|h| {
            Argon2::default()
                .verify_password(password.as_bytes(), &h)
                .is_ok()
        })
    })
    .await
    .unwrap_or(false)
}

/// A hash no password matches, verified when the email is unknown so that the answer takes
/// as long as for a known one.
const DECOY_HASH: &str =
    "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0$0000000000000000000000000000000000000000000";

/// Whether `email` (lowercase) looks like an address: a user part, an `@`, a dotted host.
pub(super) fn valid_email(email: &str) -> bool {
    email.len() <= 254
        && email.split_once('@').is_some_and(|(user, host)| {
            !user.is_empty() && host.contains('.') && !host.starts_with('.')
        })
        && !email.chars().any(char::is_whitespace)
}

/// A name of 1 to 100 characters and a password [`check_password`] accepts; the error is a
/// sentence for the form.
pub(super) fn check_name_and_password(name: &str, password: &str) -> Result<(), String> {
    if name.is_empty() || name.chars().count() > 100 {
        return Err("Give a name of 1 to 100 characters.".to_owned());
    }
    check_password(password).map_err(|e| format!("{}.", capitalize(&e)))
}

/// A new account (a random id, the password hashed with argon2id off the async threads), not
/// yet written; the page to show when the password could not be hashed.
pub(super) async fn new_account(
    state: &AppState,
    email: &str,
    name: &str,
    password: String,
    role: AccountRole,
    opening: AccountState,
) -> Result<Account, Box<Response>> {
    let Ok(password_hash) = hash_password(password).await else {
        return Err(Box::new(notice(
            state,
            StatusCode::INTERNAL_SERVER_ERROR,
            "Error",
            "The password could not be hashed.",
        )));
    };
    let mut id = [0u8; 8];
    rand::rng().fill_bytes(&mut id);
    let now = now_ms();
    Ok(Account {
        id: hex::encode(id),
        email: email.to_owned(),
        name: name.to_owned(),
        password_hash,
        role,
        state: opening,
        created_at_ms: now,
        updated_at_ms: now,
    })
}

pub(super) fn check_password(password: &str) -> Result<(), String> {
    let n = password.chars().count();
    if n < MIN_PASSWORD {
        return Err(format!(
            "the password needs at least {MIN_PASSWORD} characters"
        ));
    }
    if n > MAX_PASSWORD {
        return Err(format!(
            "the password may have at most {MAX_PASSWORD} characters"
        ));
    }
    Ok(())
}

/// Opens a session for `account` and answers a redirect carrying its cookie.
pub(super) async fn start_session(state: &AppState, account: &Account, to: &str) -> Response {
    let token = random_token();
    let sha256 = crate::auth::sha256_hex(&token);
    let now = now_ms();
    let ttl = state.portal().session_ttl;
    let session = PortalSession {
        id: sha256[..16].to_owned(),
        sha256,
        account: account.id.clone(),
        csrf: random_token(),
        created_at_ms: now,
        expires_at_ms: now + ttl.as_millis() as u64,
    };
    match state.control().write(Command::OpenSession(session)).await {
        Ok(Applied::Applied) => {}
        Ok(other) => {
            return notice(
                state,
                StatusCode::FORBIDDEN,
                "Not signed in",
                &format!("The session was not opened: {other:?}"),
            )
        }
        Err(e) => {
            return notice(
                state,
                StatusCode::SERVICE_UNAVAILABLE,
                "Try again",
                &format!("The cluster could not record the sign-in: {e}"),
            )
        }
    }
    let mut response = Redirect::to(to).into_response();
    set_cookie(
        &mut response,
        format!(
            "{SESSION_COOKIE}={token}{}; Max-Age={}",
            cookie_attributes(state),
            ttl.as_secs()
        ),
    );
    response
}

/// `GET {portal}/signup`.
pub async fn signup_form(State(state): State<AppState>) -> Response {
    if state.portal().signup == PortalSignup::Closed {
        return notice(
            &state,
            StatusCode::FORBIDDEN,
            "Sign-up is closed",
            "Accounts are made by invitation: ask an administrator.",
        );
    }
    anonymous_form(
        &state,
        "signup",
        StatusCode::OK,
        None,
        String::new(),
        String::new(),
    )
}

/// `POST {portal}/signup`: name, email, password.
pub async fn signup(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let form = parse_form(&body);
    if !double_submit_ok(&headers, &form) {
        return notice(&state, StatusCode::FORBIDDEN, "Refused", "The form expired or did not come from this portal (CSRF check). Reload it and try again.");
    }
    let mode = state.portal().signup;
    if mode == PortalSignup::Closed {
        return notice(
            &state,
            StatusCode::FORBIDDEN,
            "Sign-up is closed",
            "Accounts are made by invitation: ask an administrator.",
        );
    }
    let email = form
        .get("email")
        .map(|e| e.trim().to_lowercase())
        .unwrap_or_default();
    let name = form
        .get("name")
        .map(|n| n.trim().to_owned())
        .unwrap_or_default();
    let password = form.get("password").cloned().unwrap_or_default();
    let again = |error: String| {
        anonymous_form(
            &state,
            "signup",
            StatusCode::BAD_REQUEST,
            Some(error),
            email.clone(),
            name.clone(),
        )
    };
    if !valid_email(&email) {
        return again("The email address is not valid.".to_owned());
    }
    if let Err(e) = check_name_and_password(&name, &password) {
        return again(e);
    }
    if state
        .control()
        .reader()
        .read(|s| s.governance.account_by_email(&email).is_some())
    {
        return again("An account with this email exists: sign in instead.".to_owned());
    }
    let opening = match mode {
        PortalSignup::Approval => AccountState::Pending,
        _ => AccountState::Active,
    };
    let account = match new_account(
        &state,
        &email,
        &name,
        password,
        AccountRole::Developer,
        opening,
    )
    .await
    {
        Ok(account) => account,
        Err(page) => return *page,
    };
    match state
        .control()
        .write(Command::PutAccount(account.clone()))
        .await
    {
        Ok(Applied::Applied) => {}
        Ok(Applied::Refused { .. }) => {
            return again("An account with this email exists: sign in instead.".to_owned())
        }
        Ok(other) => {
            return notice(
                &state,
                StatusCode::INTERNAL_SERVER_ERROR,
                "Error",
                &format!("{other:?}"),
            )
        }
        Err(e) => {
            return notice(
                &state,
                StatusCode::SERVICE_UNAVAILABLE,
                "Try again",
                &format!("The cluster could not record the account: {e}"),
            )
        }
    }
    if account.state == AccountState::Pending {
        return notice(
            &state,
            StatusCode::ACCEPTED,
            "Account requested",
            "An administrator will approve your account; then sign in.",
        );
    }
    let to = format!("{}/account", state.portal().path);
    start_session(&state, &account, &to).await
}

pub(super) fn capitalize(text: &str) -> String {
    let mut chars = text.chars();
    chars
        .next()
        .map(|c| c.to_uppercase().collect::<String>() + chars.as_str())
        .unwrap_or_default()
}

/// `GET {portal}/login`.
pub async fn login_form(State(state): State<AppState>) -> Response {
    anonymous_form(
        &state,
        "login",
        StatusCode::OK,
        None,
        String::new(),
        String::new(),
    )
}

/// `POST {portal}/login`: email, password.
pub async fn login(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let form = parse_form(&body);
    if !double_submit_ok(&headers, &form) {
        return notice(&state, StatusCode::FORBIDDEN, "Refused", "The form expired or did not come from this portal (CSRF check). Reload it and try again.");
    }
    let email = form
        .get("email")
        .map(|e| e.trim().to_lowercase())
        .unwrap_or_default();
    let password = form.get("password").cloned().unwrap_or_default();
    let attempts = state.portal_attempts();
    let per_address = state.portal().sign_in_attempts_per_address;
    if !attempts.allow(&format!("address:{}", peer.addr.ip()), per_address)
        || !attempts.allow(&format!("email:{email}"), MAX_ATTEMPTS)
    {
        return notice(
            &state,
            StatusCode::TOO_MANY_REQUESTS,
            "Too many attempts",
            "Too many sign-in attempts: wait a few minutes.",
        );
    }
    if email == OPERATOR_LOGIN {
        return operator_login(&state, &password).await;
    }
    let account = state
        .control()
        .reader()
        .read(|s| s.governance.account_by_email(&email).cloned());
    let hash = account
        .as_ref()
        .map_or(DECOY_HASH.to_owned(), |a| a.password_hash.clone());
    let matched = verify_password(password, hash).await;
    let Some(account) = account.filter(|_| matched) else {
        return anonymous_form(
            &state,
            "login",
            StatusCode::UNAUTHORIZED,
            Some("Wrong email or password.".to_owned()),
            email,
            String::new(),
        );
    };
    match account.state {
        AccountState::Active => {}
        AccountState::Pending => {
            return notice(
                &state,
                StatusCode::FORBIDDEN,
                "Not approved yet",
                "An administrator has not approved your account yet.",
            )
        }
        AccountState::Disabled => {
            return notice(
                &state,
                StatusCode::FORBIDDEN,
                "Account disabled",
                "This account is disabled.",
            )
        }
    }
    let to = format!("{}/account", state.portal().path);
    start_session(&state, &account, &to).await
}

/// What an operator types as the email to sign in with `admin.token` as the password.
pub const OPERATOR_LOGIN: &str = "admin";
/// The account such a sign-in opens a session of (an administrator; no password opens it).
const OPERATOR_ACCOUNT: &str = "operator";

/// Signs the operator in with the admin token: as the administrator account `operator`, made
/// (or re-enabled) on the way. Without a configured `admin.token` nobody signs in so.
async fn operator_login(state: &AppState, password: &str) -> Response {
    let wrong = || {
        anonymous_form(
            state,
            "login",
            StatusCode::UNAUTHORIZED,
            Some("Wrong email or password.".to_owned()),
            OPERATOR_LOGIN.to_owned(),
            String::new(),
        )
    };
    let Some(token) = state.admin_token() else {
        return wrong();
    };
    if !constant_eq(password, token) {
        return wrong();
    }
    let now = now_ms();
    let existing = state
        .control()
        .reader()
        .read(|s| s.governance.accounts.get(OPERATOR_ACCOUNT).cloned());
    let account = Account {
        id: OPERATOR_ACCOUNT.to_owned(),
        // Not an address, so no sign-up can take it.
        email: OPERATOR_LOGIN.to_owned(),
        name: "Operator (admin token)".to_owned(),
        password_hash: DECOY_HASH.to_owned(),
        role: AccountRole::Admin,
        state: AccountState::Active,
        created_at_ms: existing.as_ref().map_or(now, |a| a.created_at_ms),
        updated_at_ms: now,
    };
    let usable = existing.as_ref().is_some_and(|a| {
        a.role == AccountRole::Admin && a.state == AccountState::Active && a.email == account.email
    });
    if !usable {
        match state
            .control()
            .write(Command::PutAccount(account.clone()))
            .await
        {
            Ok(Applied::Applied) => {}
            Ok(other) => {
                return notice(
                    state,
                    StatusCode::CONFLICT,
                    "Not signed in",
                    &format!("The operator's account could not be made: {other:?}"),
                )
            }
            Err(e) => {
                return notice(
                    state,
                    StatusCode::SERVICE_UNAVAILABLE,
                    "Try again",
                    &format!("The cluster could not record the sign-in: {e}"),
                )
            }
        }
    }
    let to = format!("{}/admin", state.portal().path);
    start_session(state, &account, &to).await
}

/// `POST {portal}/logout`.
pub async fn logout(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let form = parse_form(&body);
    let Some((session, _)) = signed_in(&state, &headers) else {
        return Redirect::to(&state.portal().path).into_response();
    };
    if !form
        .get("csrf")
        .is_some_and(|c| constant_eq(c, &session.csrf))
    {
        return notice(
            &state,
            StatusCode::FORBIDDEN,
            "Refused",
            "The form did not come from this portal (CSRF check).",
        );
    }
    if let Err(e) = state
        .control()
        .write(Command::CloseSession { id: session.id })
        .await
    {
        return notice(
            &state,
            StatusCode::SERVICE_UNAVAILABLE,
            "Try again",
            &format!("The cluster could not record the sign-out: {e}"),
        );
    }
    let mut response = Redirect::to(&state.portal().path).into_response();
    set_cookie(
        &mut response,
        format!("{SESSION_COOKIE}={}; Max-Age=0", cookie_attributes(&state)),
    );
    response
}

/// `GET {portal}/account`.
pub async fn account(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let Some((session, account)) = signed_in(&state, &headers) else {
        return Redirect::to(&format!("{}/login", state.portal().path)).into_response();
    };
    html(AccountPage {
        frame: frame(
            &state,
            Some(SessionView {
                name: account.name.clone(),
                csrf: session.csrf,
                admin: account.role == AccountRole::Admin,
            }),
        ),
        name: account.name,
        email: account.email,
        role: match account.role {
            AccountRole::Admin => "administrator",
            AccountRole::Developer => "developer",
        },
    })
}

/// `POST {portal}/account/password`: current, password.
pub async fn change_password(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let form = parse_form(&body);
    let Some((session, account)) = signed_in(&state, &headers) else {
        return Redirect::to(&format!("{}/login", state.portal().path)).into_response();
    };
    if !form
        .get("csrf")
        .is_some_and(|c| constant_eq(c, &session.csrf))
    {
        return notice(
            &state,
            StatusCode::FORBIDDEN,
            "Refused",
            "The form did not come from this portal (CSRF check).",
        );
    }
    let current = form.get("current").cloned().unwrap_or_default();
    let new = form.get("password").cloned().unwrap_or_default();
    if !verify_password(current, account.password_hash.clone()).await {
        return notice(
            &state,
            StatusCode::UNAUTHORIZED,
            "Not changed",
            "The current password is wrong.",
        );
    }
    if let Err(e) = check_password(&new) {
        return notice(
            &state,
            StatusCode::BAD_REQUEST,
            "Not changed",
            &format!("{}.", capitalize(&e)),
        );
    }
    let Ok(password_hash) = hash_password(new).await else {
        return notice(
            &state,
            StatusCode::INTERNAL_SERVER_ERROR,
            "Error",
            "The password could not be hashed.",
        );
    };
    let updated = Account {
        password_hash,
        updated_at_ms: now_ms(),
        ..account
    };
    match state.control().write(Command::PutAccount(updated)).await {
        Ok(Applied::Applied) => notice(
            &state,
            StatusCode::OK,
            "Password changed",
            "Your password is changed.",
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
            &format!("{e}"),
        ),
    }
}

/// The admin API of portal accounts: `GET /admin/accounts`, `PUT /admin/accounts/{id}`
/// (`{"state": "active"|"disabled", "role": "developer"|"admin"}`): approve a pending account,
/// disable one (its sessions end on every node), make an administrator.
pub fn admin_router() -> axum::Router<AppState> {
    axum::Router::new()
        .route("/accounts", axum::routing::get(list_accounts))
        .route("/accounts/{id}", axum::routing::put(update_account))
}

fn account_view(a: &Account) -> serde_json::Value {
    serde_json::json!({
        "id": a.id,
        "email": a.email,
        "name": a.name,
        "role": match a.role { AccountRole::Admin => "admin", AccountRole::Developer => "developer" },
        "state": match a.state {
            AccountState::Pending => "pending",
            AccountState::Active => "active",
            AccountState::Disabled => "disabled",
        },
        "created_at_ms": a.created_at_ms,
    })
}

async fn list_accounts(State(state): State<AppState>) -> axum::Json<serde_json::Value> {
    let accounts: Vec<serde_json::Value> = state
        .control()
        .reader()
        .read(|s| s.governance.accounts.values().map(account_view).collect());
    axum::Json(serde_json::json!({ "accounts": accounts }))
}

/// Request types of the admin routes on accounts, for the OpenAPI document.
#[derive(utoipa::OpenApi)]
#[openapi(components(schemas(AccountUpdate)))]
#[derive(Debug)]
pub struct AdminSchemas;

/// `PUT /admin/accounts/{id}`.
#[derive(Debug, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct AccountUpdate {
    state: Option<String>,
    role: Option<String>,
}

async fn update_account(
    State(state): State<AppState>,
    axum::extract::Path(id): axum::extract::Path<String>,
    crate::http::JsonBody(body): crate::http::JsonBody<AccountUpdate>,
) -> Result<axum::Json<serde_json::Value>, crate::http::error::ApiError> {
    use crate::http::error::ApiError;
    let mut account = state
        .control()
        .reader()
        .read(|s| s.governance.accounts.get(&id).cloned())
        .ok_or_else(|| ApiError::not_found(format!("no account `{id}`")))?;
    if let Some(s) = &body.state {
        account.state = match s.as_str() {
            "active" => AccountState::Active,
            "disabled" => AccountState::Disabled,
            other => {
                return Err(ApiError::invalid_field(
                    "state",
                    format!("`{other}` is not active or disabled"),
                ))
            }
        };
    }
    if let Some(r) = &body.role {
        account.role = match r.as_str() {
            "developer" => AccountRole::Developer,
            "admin" => AccountRole::Admin,
            other => {
                return Err(ApiError::invalid_field(
                    "role",
                    format!("`{other}` is not developer or admin"),
                ))
            }
        };
    }
    account.updated_at_ms = now_ms();
    match state
        .control()
        .write(Command::PutAccount(account.clone()))
        .await?
    {
        Applied::Applied => Ok(axum::Json(account_view(&account))),
        Applied::Refused { reason } => Err(ApiError::conflict(reason)),
        other => Err(ApiError::internal(format!("{other:?}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_are_found_among_others() {
        let mut headers = HeaderMap::new();
        headers.append(
            header::COOKIE,
            HeaderValue::from_static("a=1; egw_session=xyz"),
        );
        headers.append(header::COOKIE, HeaderValue::from_static("b=2"));
        assert_eq!(cookie(&headers, SESSION_COOKIE).as_deref(), Some("xyz"));
        assert_eq!(cookie(&headers, "b").as_deref(), Some("2"));
        assert_eq!(cookie(&headers, "c"), None);
    }

    #[test]
    fn the_decoy_hash_parses_and_matches_nothing() {
        let hash = PasswordHash::new(DECOY_HASH).unwrap();
        assert!(Argon2::default()
            .verify_password(b"anything", &hash)
            .is_err());
    }
}
