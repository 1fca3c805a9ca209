//! The admin API's API management: APIs, plans, applications, their API keys and their access
//! to APIs (under a plan). Every write is one Raft command, validated in full before it is
//! proposed (so a bad request changes nothing) and committed before the answer; reads serve
//! this node's applied state.

use eventgate_raft_store::clock::now_ms;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use eventgate_raft_store::governance::{
    Access, AccessState, Api, ApiKey, Application, Lifecycle, Origin, Plan, Security,
};
use eventgate_raft_store::{Command, Response as Applied};
use serde::Deserialize;
use serde_json::{json, Value};

use super::error::ApiError;
use super::{AppState, JsonBody};
use crate::config::governance as rules;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/apis", get(list_apis))
        .route("/apis/{name}", get(get_api).put(put_api).delete(delete_api))
        .route("/apis/{name}/lifecycle", put(put_lifecycle))
        .route("/apis/import", post(import_api))
        .route("/apis/{name}/asyncapi.json", get(preview_json))
        .route("/apis/{name}/asyncapi.yaml", get(preview_yaml))
        .route("/plans", get(list_plans))
        .route(
            "/plans/{name}",
            get(get_plan).put(put_plan).delete(delete_plan),
        )
        .route("/applications", get(list_apps))
        .route(
            "/applications/{id}",
            get(get_app).put(put_app).delete(delete_app),
        )
        .route("/applications/{id}/keys", get(list_keys).post(create_key))
        .route(
            "/applications/{id}/keys/{key}",
            axum::routing::delete(revoke_key),
        )
        .route("/applications/{id}/access", get(list_access))
        .route(
            "/applications/{id}/access/{api}",
            put(put_access).delete(delete_access),
        )
        .route(
            "/applications/{id}/access/{api}/approve",
            post(approve_access),
        )
        .route(
            "/applications/{id}/access/{api}/reject",
            post(reject_access),
        )
        // The same under their older name (an application's "subscriptions" to APIs), kept for
        // scripts written against it; documented as deprecated.
        .route("/applications/{id}/subscriptions", get(list_access_legacy))
        .route(
            "/applications/{id}/subscriptions/{api}",
            put(put_access).delete(delete_access),
        )
        .route(
            "/applications/{id}/subscriptions/{api}/approve",
            post(approve_access),
        )
        .route(
            "/applications/{id}/subscriptions/{api}/reject",
            post(reject_access),
        )
}

/// Request types of these routes, for the OpenAPI document.
#[derive(utoipa::OpenApi)]
#[openapi(components(schemas(
    LifecycleBody,
    AppBody,
    KeyBody,
    AccessBody,
    rules::RawApi,
    rules::RawPlan
)))]
pub(super) struct Schemas;

fn origin(o: Origin) -> &'static str {
    match o {
        Origin::Config => "config",
        Origin::Admin => "admin",
    }
}

fn access_state(s: AccessState) -> &'static str {
    match s {
        AccessState::Pending => "pending",
        AccessState::Approved => "approved",
        AccessState::Rejected => "rejected",
    }
}

fn api_view(api: &Api) -> Value {
    json!({
        "name": api.name,
        "version": api.version,
        "description": api.description,
        "tags": api.tags,
        "base_path": api.base_path,
        "channels": api.channels,
        "entrypoints": api.entrypoints.iter().map(|e| e.name()).collect::<Vec<_>>(),
        "security": api.security.iter().map(|s| s.name()).collect::<Vec<_>>(),
        "max_message_bytes": api.max_message_bytes,
        "origin": origin(api.origin),
        "updated_at_ms": api.updated_at_ms,
        "lifecycle": api.lifecycle.name(),
        "lifecycle_since_ms": api.lifecycle_since_ms,
        "sunset": api.sunset_ms.map(ms_rfc3339),
        "validate_messages": api.validate_messages,
        // The secret is never shown.
        "verify_ingest": api.verify_ingest.as_ref().map(|v| json!({
            "scheme": v.scheme.name(),
            "header": (v.scheme == eventgate_raft_store::governance::IngestScheme::Hmac).then_some(&v.header),
            "tolerance_ms": (v.scheme == eventgate_raft_store::governance::IngestScheme::StandardWebhooks).then_some(v.tolerance_ms),
        })),
        "messages": api.channel_specs.iter().map(|(channel, spec)| {
            let messages: Vec<Value> = spec.messages.iter().map(|m| json!({
                "name": m.name,
                "content_type": m.content_type,
                "schema": m.payload.as_deref().and_then(|p| serde_json::from_str::<Value>(p).ok()),
            })).collect();
            (channel.clone(), Value::Array(messages))
        }).collect::<serde_json::Map<String, Value>>(),
        "asyncapi": format!("/apis/{}/asyncapi.json", api.name),
    })
}

/// Unix milliseconds as an RFC 3339 date and time (UTC).
fn ms_rfc3339(ms: u64) -> String {
    humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

/// `PUT /admin/apis/{name}/lifecycle`: `{"state": "...", "sunset"?: "<RFC 3339>"}`.
#[derive(Debug, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct LifecycleBody {
    state: String,
    sunset: Option<String>,
}

async fn put_lifecycle(
    State(state): State<AppState>,
    Path(name): Path<String>,
    JsonBody(body): JsonBody<LifecycleBody>,
) -> Result<Json<Value>, ApiError> {
    let field = |(f, e): (String, String)| {
        ApiError::invalid_field(
            if f == "lifecycle" {
                "state".to_owned()
            } else {
                f
            },
            e,
        )
    };
    let (lifecycle, sunset_ms) = rules::lifecycle_from_raw(
        Some(&body.state),
        body.sunset.as_deref(),
        Lifecycle::Created,
    )
    .map_err(field)?;
    let command = Command::SetApiLifecycle {
        name: name.clone(),
        lifecycle,
        sunset_ms,
        at_ms: now_ms(),
    };
    match state.control().write(command).await? {
        Applied::NotFound => return Err(ApiError::not_found(format!("no API `{name}`"))),
        Applied::Refused { reason } => return Err(ApiError::conflict(reason)),
        _ => {}
    }
    read(&state, |g| g.apis.get(&name).map(api_view))
        .map(Json)
        .ok_or_else(|| ApiError::not_found(format!("no API `{name}`")))
}

fn rate_view(r: Option<eventgate_raft_store::governance::RateLimit>) -> Value {
    r.map_or(Value::Null, |r| {
        json!({ "count": r.count, "per": humantime::format_duration(Duration::from_millis(r.window_ms)).to_string() })
    })
}

fn plan_view(p: &Plan) -> Value {
    json!({
        "name": p.name,
        "description": p.description,
        "publish": rate_view(p.publish),
        "deliveries": rate_view(p.deliveries),
        "max_connections": p.max_connections,
        "max_subscriptions": p.max_subscriptions,
        "on_delivery_limit": match p.on_delivery_limit {
            eventgate_raft_store::governance::OverLimit::Pause => "pause",
            eventgate_raft_store::governance::OverLimit::Drop => "drop",
        },
        "approval_required": p.approval_required,
        "origin": origin(p.origin),
        "updated_at_ms": p.updated_at_ms,
    })
}

fn app_view(a: &Application) -> Value {
    json!({
        "id": a.id,
        "name": a.name,
        "description": a.description,
        "owner": a.owner,
        "permissions": a.permissions.iter().map(|p| json!({
            "topics": p.pattern, "publish": p.publish, "subscribe": p.subscribe,
        })).collect::<Vec<_>>(),
        "disabled": a.disabled,
        "origin": origin(a.origin),
        "updated_at_ms": a.updated_at_ms,
    })
}

fn key_view(k: &ApiKey) -> Value {
    json!({
        "id": k.id,
        "application": k.app,
        "created_at_ms": k.created_at_ms,
        "expires_at_ms": k.expires_at_ms,
        "revoked_at_ms": k.revoked_at_ms,
        "origin": origin(k.origin),
    })
}

fn access_view(a: &Access) -> Value {
    json!({
        "application": a.app,
        "api": a.api,
        "plan": a.plan,
        "state": access_state(a.state),
        "origin": origin(a.origin),
        "updated_at_ms": a.updated_at_ms,
    })
}

fn path_name(field: &str, name: &str) -> Result<(), ApiError> {
    rules::valid_name(name).map_err(|e| ApiError::invalid_field(field, e))
}

/// Commits `command`, mapping what applying it said.
async fn commit(state: &AppState, command: Command) -> Result<(), ApiError> {
    commit_about(state, command, "no such resource".to_owned()).await
}

/// Commits `command`; a command about something that does not exist answers 404 with
/// `missing` as its detail.
pub(super) async fn commit_about(
    state: &AppState,
    command: Command,
    missing: String,
) -> Result<(), ApiError> {
    match state.control().write(command).await? {
        Applied::NotFound => Err(ApiError::not_found(missing)),
        Applied::Refused { reason } => Err(ApiError::conflict(reason)),
        _ => Ok(()),
    }
}

pub(super) fn read<R>(
    state: &AppState,
    f: impl FnOnce(&eventgate_raft_store::governance::Governance) -> R,
) -> R {
    state.control().reader().read(|s| f(&s.governance))
}

// ---- APIs ----

async fn list_apis(State(state): State<AppState>) -> Json<Value> {
    Json(json!({ "apis": read(&state, |g| g.apis.values().map(api_view).collect::<Vec<_>>()) }))
}

async fn get_api(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    read(&state, |g| g.apis.get(&name).map(api_view))
        .map(Json)
        .ok_or_else(|| ApiError::not_found(format!("no API `{name}`")))
}

async fn put_api(
    State(state): State<AppState>,
    Path(name): Path<String>,
    JsonBody(raw): JsonBody<rules::RawApi>,
) -> Result<Response, ApiError> {
    path_name("name", &name)?;
    let mut api = rules::api_from_raw(&name, &raw, Origin::Admin, now_ms())
        .map_err(|(field, e)| ApiError::invalid_field(field, e))?;
    if let Some(v) = &mut api.verify_ingest {
        v.secret = state
            .inner
            .delivery
            .secrets
            .seal(&crate::ingest_signature::seal_id(&name), &v.secret);
    }
    let jwt_named = raw
        .security
        .as_ref()
        .is_some_and(|s| s.iter().any(|s| s == "jwt"));
    if jwt_named && !state.gate().verifies_jwt() {
        return Err(ApiError::invalid_field(
            "security",
            "`jwt` needs [auth.jwt] in the nodes' configuration",
        ));
    }
    let (status, view) = store_api(&state, api, raw.lifecycle.is_some()).await?;
    Ok((status, Json(view)).into_response())
}

/// Stores an API made through the admin API (a PUT or an import) in one write. Replacing an
/// API's description does not move it through its lifecycle unless `lifecycle_given`.
async fn store_api(
    state: &AppState,
    mut api: Api,
    lifecycle_given: bool,
) -> Result<(StatusCode, Value), ApiError> {
    let name = api.name.clone();
    if let Some(existing) = read(state, |g| g.apis.get(&name).cloned()) {
        if !lifecycle_given {
            api.lifecycle = existing.lifecycle;
            api.lifecycle_since_ms = existing.lifecycle_since_ms;
            api.sunset_ms = existing.sunset_ms;
        } else if !existing.lifecycle.may_become(api.lifecycle) {
            return Err(ApiError::conflict(format!(
                "API `{name}` is {}; it cannot become {}",
                existing.lifecycle.name(),
                api.lifecycle.name()
            )));
        } else if existing.lifecycle == api.lifecycle {
            api.lifecycle_since_ms = existing.lifecycle_since_ms;
        }
    }
    read(state, |g| {
        rules::base_path_free(
            &name,
            api.base_path.as_deref(),
            g.apis
                .values()
                .map(|a| (a.name.as_str(), a.base_path.as_deref())),
        )
    })
    .map_err(|(field, e)| ApiError::invalid_field(field, e))?;
    let existed = read(state, |g| g.apis.contains_key(&name));
    let view = api_view(&api);
    commit(state, Command::PutApi(api)).await?;
    let status = if existed {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok((status, view))
}

/// `GET /admin/apis/{name}/asyncapi.json`: an API's document in any lifecycle state (a created
/// API's preview before it is published; the export to import elsewhere).
async fn preview_json(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    state.api_asyncapi_in(&name, true).map(Json)
}

/// `GET /admin/apis/{name}/asyncapi.yaml`.
async fn preview_yaml(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    Ok(super::yaml_response(&state.api_asyncapi_in(&name, true)?))
}

/// `POST /admin/apis/import`: an AsyncAPI document (JSON or YAML) as an API, created or
/// replaced in one write; query options `name`, `base_path`, `validate_messages` and
/// `topic.<channel id>=<topic>`. A new API is created (in no catalog until published); an
/// existing one keeps its lifecycle state.
async fn import_api(
    State(state): State<AppState>,
    axum::extract::RawQuery(query): axum::extract::RawQuery,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    use crate::asyncapi::import;
    let mut options = import::Options {
        jwt_configured: state.gate().verifies_jwt(),
        ..import::Options::default()
    };
    for (key, value) in form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        match key.as_ref() {
            "name" => options.name = Some(value.into_owned()),
            "base_path" => options.base_path = Some(value.into_owned()),
            "validate_messages" => {
                options.validate_messages = Some(match value.as_ref() {
                    "true" => true,
                    "false" => false,
                    _ => {
                        return Err(ApiError::invalid_field(
                            "validate_messages",
                            "true or false",
                        ))
                    }
                })
            }
            other => match other.strip_prefix("topic.") {
                Some(channel) if !channel.is_empty() => {
                    options
                        .topics
                        .insert(channel.to_owned(), value.into_owned());
                }
                _ => return Err(ApiError::invalid_field(
                    other,
                    "the import takes name, base_path, validate_messages and topic.<channel id>",
                )),
            },
        }
    }
    let problem = |e: import::ImportError| ApiError::invalid_document(&e.pointer, e.detail);
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::invalid_document(
            "",
            "the body is an AsyncAPI document",
        ));
    }
    let document = import::parse(&body).map_err(problem)?;
    let imported = import::import(&document, &options, now_ms()).map_err(problem)?;
    if imported.api.security.contains(&Security::Jwt) && !state.gate().verifies_jwt() {
        return Err(ApiError::invalid_document(
            "/x-eventgate/security",
            "`jwt` needs [auth.jwt] in the nodes' configuration",
        ));
    }
    let mut api = imported.api;
    // An AsyncAPI document says nothing of the provider's signature: a re-import keeps it.
    api.verify_ingest = read(&state, |g| {
        g.apis.get(&api.name).and_then(|a| a.verify_ingest.clone())
    });
    let (status, view) = store_api(&state, api, false).await?;
    Ok((
        status,
        Json(json!({ "api": view, "warnings": imported.warnings })),
    )
        .into_response())
}

async fn delete_api(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    commit_about(
        &state,
        Command::DeleteApi { name: name.clone() },
        format!("no API `{name}`"),
    )
    .await?;
    Ok(Json(json!({ "deleted": name })))
}

// ---- plans ----

async fn list_plans(State(state): State<AppState>) -> Json<Value> {
    Json(json!({ "plans": read(&state, |g| g.plans.values().map(plan_view).collect::<Vec<_>>()) }))
}

async fn get_plan(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    read(&state, |g| g.plans.get(&name).map(plan_view))
        .map(Json)
        .ok_or_else(|| ApiError::not_found(format!("no plan `{name}`")))
}

async fn put_plan(
    State(state): State<AppState>,
    Path(name): Path<String>,
    JsonBody(raw): JsonBody<rules::RawPlan>,
) -> Result<Response, ApiError> {
    path_name("name", &name)?;
    let plan = rules::plan_from_raw(&name, &raw, Origin::Admin, now_ms())
        .map_err(|(field, e)| ApiError::invalid_field(field, e))?;
    let existed = read(&state, |g| g.plans.contains_key(&name));
    let view = plan_view(&plan);
    commit(&state, Command::PutPlan(plan)).await?;
    let status = if existed {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok((status, Json(view)).into_response())
}

async fn delete_plan(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    commit_about(
        &state,
        Command::DeletePlan { name: name.clone() },
        format!("no plan `{name}`"),
    )
    .await?;
    Ok(Json(json!({ "deleted": name })))
}

// ---- applications ----

/// `PUT /admin/applications/{id}`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct AppBody {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    permissions: Vec<rules::RawPermission>,
    #[serde(default)]
    disabled: bool,
}

async fn list_apps(State(state): State<AppState>) -> Json<Value> {
    Json(json!({
        "applications": read(&state, |g| g.applications.values().map(app_view).collect::<Vec<_>>())
    }))
}

async fn get_app(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    read(&state, |g| {
        g.applications.get(&id).map(|a| {
            let mut view = app_view(a);
            view["keys"] = g
                .keys
                .values()
                .filter(|k| k.app == id)
                .map(key_view)
                .collect();
            let access: Vec<Value> = g
                .access
                .values()
                .filter(|s| s.app == id)
                .map(access_view)
                .collect();
            // `subscriptions`: the older name, kept for clients written against it.
            view["subscriptions"] = json!(access);
            view["access"] = json!(access);
            view
        })
    })
    .map(Json)
    .ok_or_else(|| ApiError::not_found(format!("no application `{id}`")))
}

async fn put_app(
    State(state): State<AppState>,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<AppBody>,
) -> Result<Response, ApiError> {
    path_name("id", &id)?;
    let permissions = rules::permissions_from_raw(&body.permissions)
        .map_err(|(field, e)| ApiError::invalid_field(field, e))?;
    let app = Application {
        id: id.clone(),
        name: body.name,
        description: body.description,
        permissions,
        disabled: body.disabled,
        origin: Origin::Admin,
        updated_at_ms: now_ms(),
        // A portal developer's application stays theirs.
        owner: read(&state, |g| {
            g.applications.get(&id).and_then(|a| a.owner.clone())
        }),
    };
    let existed = read(&state, |g| g.applications.contains_key(&id));
    let view = app_view(&app);
    commit(&state, Command::PutApplication(app)).await?;
    let status = if existed {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok((status, Json(view)).into_response())
}

async fn delete_app(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    commit_about(
        &state,
        Command::DeleteApplication { id: id.clone() },
        format!("no application `{id}`"),
    )
    .await?;
    Ok(Json(json!({ "deleted": id })))
}

// ---- keys ----

/// `POST /admin/applications/{id}/keys` (the body is optional).
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct KeyBody {
    /// How long the key is valid (`"90d"`); forever when absent.
    #[serde(default, with = "humantime_serde")]
    #[schema(value_type = Option<String>, example = "90d")]
    expires_in: Option<Duration>,
    /// Rotation: the application's other keys keep working this long (`"24h"`; `"0s"`: they
    /// stop now), then expire. Absent: they are left as they are.
    #[serde(default, with = "humantime_serde")]
    #[schema(value_type = Option<String>, example = "24h")]
    overlap: Option<Duration>,
}

async fn list_keys(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    read(&state, |g| {
        g.applications.contains_key(&id).then(|| {
            json!({ "keys": g.keys.values().filter(|k| k.app == id).map(key_view).collect::<Vec<_>>() })
        })
    })
    .map(Json)
    .ok_or_else(|| ApiError::not_found(format!("no application `{id}`")))
}

async fn create_key(
    State(state): State<AppState>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let body: KeyBody = super::parse_optional_json(&body)?;
    if !read(&state, |g| g.applications.contains_key(&id)) {
        return Err(ApiError::not_found(format!("no application `{id}`")));
    }
    let (key, sha256) = crate::auth::generate_key();
    let now = now_ms();
    let stored = ApiKey {
        id: sha256[..16].to_owned(),
        app: id.clone(),
        sha256,
        created_at_ms: now,
        expires_at_ms: body
            .expires_in
            .map(|d| now.saturating_add(d.as_millis() as u64)),
        revoked_at_ms: None,
        origin: Origin::Admin,
    };
    let mut view = key_view(&stored);
    let command = match body.overlap {
        None => Command::AddApiKey(stored),
        Some(overlap) => Command::RotateApiKey {
            key: stored,
            others_expire_at_ms: now.saturating_add(overlap.as_millis() as u64),
        },
    };
    commit_about(&state, command, format!("no application `{id}`")).await?;
    view["key"] = json!(key);
    view["note"] = json!("the key is shown only this once; eventgate stores its SHA-256");
    Ok((StatusCode::CREATED, Json(view)).into_response())
}

async fn revoke_key(
    State(state): State<AppState>,
    Path((id, key)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let owned = read(&state, |g| g.keys.get(&key).map(|k| k.app == id));
    if owned != Some(true) {
        return Err(ApiError::not_found(format!(
            "application `{id}` has no key `{key}`"
        )));
    }
    commit(
        &state,
        Command::RevokeApiKey {
            id: key.clone(),
            at_ms: now_ms(),
        },
    )
    .await?;
    Ok(Json(json!({ "revoked": key })))
}

// ---- applications' access to APIs ----

/// `PUT /admin/applications/{id}/access/{api}`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct AccessBody {
    plan: String,
}

/// `GET /admin/applications/{id}/access`.
async fn list_access(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    access_of(&state, &id).map(|access| Json(json!({ "access": access })))
}

/// `GET /admin/applications/{id}/subscriptions`: the same list under its older name.
async fn list_access_legacy(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    access_of(&state, &id).map(|access| Json(json!({ "subscriptions": access })))
}

fn access_of(state: &AppState, id: &str) -> Result<Vec<Value>, ApiError> {
    read(state, |g| {
        g.applications.contains_key(id).then(|| {
            g.access
                .values()
                .filter(|a| a.app == id)
                .map(|a| {
                    let mut view = access_view(a);
                    // Usage under the plan's `max_subscriptions`.
                    view["websub_subscriptions"] = json!(g.websub_count(&a.app, &a.api));
                    view
                })
                .collect()
        })
    })
    .ok_or_else(|| ApiError::not_found(format!("no application `{id}`")))
}

/// Gives an application access to an API under a plan: approved at once, or pending when the
/// plan requires approval.
async fn put_access(
    State(state): State<AppState>,
    Path((id, api)): Path<(String, String)>,
    JsonBody(body): JsonBody<AccessBody>,
) -> Result<Response, ApiError> {
    let (app_known, api_known, plan) = read(&state, |g| {
        (
            g.applications.contains_key(&id),
            g.apis.contains_key(&api),
            g.plans.get(&body.plan).cloned(),
        )
    });
    if !app_known {
        return Err(ApiError::not_found(format!("no application `{id}`")));
    }
    if !api_known {
        return Err(ApiError::not_found(format!("no API `{api}`")));
    }
    let Some(plan) = plan else {
        return Err(ApiError::invalid_field(
            "plan",
            format!("no plan `{}`", body.plan),
        ));
    };
    let access = Access {
        app: id,
        api,
        plan: plan.name,
        state: if plan.approval_required {
            AccessState::Pending
        } else {
            AccessState::Approved
        },
        origin: Origin::Admin,
        updated_at_ms: now_ms(),
    };
    let view = access_view(&access);
    commit(&state, Command::PutAccess(access)).await?;
    Ok((StatusCode::OK, Json(view)).into_response())
}

async fn set_access_state(
    state: &AppState,
    id: String,
    api: String,
    to: AccessState,
) -> Result<Json<Value>, ApiError> {
    let Some(mut access) = read(state, |g| g.access.get(&(id.clone(), api.clone())).cloned())
    else {
        return Err(ApiError::not_found(format!(
            "application `{id}` has no access to API `{api}`"
        )));
    };
    access.state = to;
    access.updated_at_ms = now_ms();
    let view = access_view(&access);
    commit(state, Command::PutAccess(access)).await?;
    Ok(Json(view))
}

async fn approve_access(
    State(state): State<AppState>,
    Path((id, api)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    set_access_state(&state, id, api, AccessState::Approved).await
}

async fn reject_access(
    State(state): State<AppState>,
    Path((id, api)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    set_access_state(&state, id, api, AccessState::Rejected).await
}

async fn delete_access(
    State(state): State<AppState>,
    Path((id, api)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    commit_about(
        &state,
        Command::DeleteAccess {
            app: id.clone(),
            api: api.clone(),
        },
        format!("application `{id}` has no access to API `{api}`"),
    )
    .await?;
    Ok(Json(
        json!({ "deleted": { "application": id, "api": api } }),
    ))
}
