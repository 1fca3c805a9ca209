//! Admin API of OAuth2 clients: an application's client secrets (`/admin/applications/{id}/
//! client-secrets`: create or rotate with an overlap, list, revoke) and the cluster's token
//! signing keys (`/admin/oauth2/keys`: list, rotate now).

use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use eventgate_raft_store::clock::now_ms;
use eventgate_raft_store::governance::ClientSecret;
use eventgate_raft_store::Command;
use serde::Deserialize;
use serde_json::{json, Value};

use super::error::ApiError;
use super::manage::{commit_about, read};
use super::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route(
            "/applications/{id}/client-secrets",
            get(list_secrets).post(create_secret),
        )
        .route(
            "/applications/{id}/client-secrets/{secret}",
            delete(revoke_secret),
        )
        .route("/oauth2/keys", get(list_keys))
        .route("/oauth2/keys/rotate", post(rotate_key))
}

/// Request types of these routes, for the OpenAPI document.
#[derive(utoipa::OpenApi)]
#[openapi(components(schemas(SecretBody)))]
pub(super) struct Schemas;

fn secret_view(s: &ClientSecret) -> Value {
    json!({
        "id": s.id,
        "client_id": s.app,
        "created_at_ms": s.created_at_ms,
        "expires_at_ms": s.expires_at_ms,
        "revoked_at_ms": s.revoked_at_ms,
    })
}

/// `POST /admin/applications/{id}/client-secrets` (the body is optional).
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct SecretBody {
    /// How long the application's other secrets keep working (`"1h"`; `"0s"` ends them now).
    /// Default: `auth.oauth2.secret_overlap`.
    #[serde(default, with = "humantime_serde")]
    #[schema(value_type = Option<String>, example = "1h")]
    overlap: Option<Duration>,
    /// How long the new secret is valid; forever when absent.
    #[serde(default, with = "humantime_serde")]
    #[schema(value_type = Option<String>, example = "90d")]
    expires_in: Option<Duration>,
}

async fn create_secret(
    State(state): State<AppState>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let body: SecretBody = super::parse_optional_json(&body)?;
    if !read(&state, |g| g.applications.contains_key(&id)) {
        return Err(ApiError::not_found(format!("no application `{id}`")));
    }
    let (secret, sha256) = crate::oauth2::generate_secret();
    let now = now_ms();
    let overlap = body
        .overlap
        .unwrap_or(state.tokens().settings().secret_overlap);
    let stored = ClientSecret {
        id: sha256[..16].to_owned(),
        app: id.clone(),
        sha256,
        created_at_ms: now,
        expires_at_ms: body
            .expires_in
            .map(|d| now.saturating_add(d.as_millis() as u64)),
        revoked_at_ms: None,
    };
    let mut view = secret_view(&stored);
    commit_about(
        &state,
        Command::AddClientSecret {
            secret: stored,
            others_expire_at_ms: Some(now.saturating_add(overlap.as_millis() as u64)),
        },
        format!("no application `{id}`"),
    )
    .await?;
    view["client_secret"] = json!(secret);
    view["token_endpoint"] = json!(format!("{}/oauth2/token", state.tokens().issuer()));
    view["note"] = json!(
        "the secret is shown only this once; eventgate stores its SHA-256. The application's other secrets stop working after the overlap."
    );
    Ok((StatusCode::CREATED, Json(view)).into_response())
}

async fn list_secrets(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    read(&state, |g| {
        if !g.applications.contains_key(&id) {
            return Err(ApiError::not_found(format!("no application `{id}`")));
        }
        let secrets: Vec<Value> = g
            .client_secrets
            .values()
            .filter(|s| s.app == id)
            .map(secret_view)
            .collect();
        Ok(Json(json!({ "client_secrets": secrets })))
    })
}

async fn revoke_secret(
    State(state): State<AppState>,
    Path((id, secret)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let owned = read(&state, |g| {
        g.client_secrets.get(&secret).map(|s| s.app == id)
    });
    if owned != Some(true) {
        return Err(ApiError::not_found(format!(
            "application `{id}` has no client secret `{secret}`"
        )));
    }
    commit_about(
        &state,
        Command::RevokeClientSecret {
            id: secret.clone(),
            at_ms: now_ms(),
        },
        format!("no client secret `{secret}`"),
    )
    .await?;
    Ok(Json(json!({ "revoked": secret })))
}

async fn list_keys(State(state): State<AppState>) -> Json<Value> {
    let keys: Vec<Value> = read(&state, |g| {
        let current = g.current_signing_key().map(|k| k.kid.clone());
        g.signing_keys
            .values()
            .map(|k| {
                json!({
                    "kid": k.kid,
                    "current": current.as_deref() == Some(k.kid.as_str()),
                    "created_at_ms": k.created_at_ms,
                    "retired_at_ms": k.retired_at_ms,
                    "verify_until_ms": k.verify_until_ms,
                    "sealed": k.private_pkcs8.starts_with("enc:"),
                })
            })
            .collect()
    });
    Json(json!({ "keys": keys }))
}

/// `POST /admin/oauth2/keys/rotate`: a new signing key now; the previous one keeps verifying
/// the tokens it signed until they expire.
async fn rotate_key(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let kid = state
        .tokens()
        .rotate(state.control())
        .await
        .map_err(|e| match e.code {
            "temporarily_unavailable" => ApiError::not_ready(e.description),
            _ => ApiError::internal(format!("{}: {}", e.code, e.description)),
        })?;
    Ok(Json(json!({ "kid": kid })))
}
