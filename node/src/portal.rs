//! The developer portal: server-rendered pages every node serves at `portal.path`
//! (`/portal`), from the replicated state, so any node behind the load balancer answers any
//! visitor alike. Templates (askama) are compiled into the binary, and so are the stylesheet
//! and the two scripts (served under `{portal}/static/`); the Content-Security-Policy allows
//! nothing inline and nothing from elsewhere.
//!
//! Here: the **catalog** of published (and deprecated) APIs with search, and each API's
//! **page** — description, lifecycle notice, how to authenticate, every channel with its topic,
//! its URLs per entrypoint, its messages (content type, payload schema, examples) and
//! **snippets** filled in with the real URLs and, for a chosen application of the developer
//! (`?app=`), its client id and credential (curl, JavaScript, Python, wscat, a WebSub
//! subscription and a callback that verifies the signature) — the plans on offer with their
//! limits, and the AsyncAPI document to download. [`accounts`]: sign up, sign in (also the
//! operator, with the admin token), sign out, change the password; [`invitations`]: one-time
//! links that open accounts; [`apps`]: a developer's applications, their credentials, API
//! subscriptions and usage against the plans; [`try_it`]: a live stream of a channel in the
//! browser; [`webhooks`]: the developer's WebSub subscriptions and dead letters;
//! [`admin`]: the administrators' pages.

pub mod accounts;
pub mod admin;
pub mod apps;
pub mod invitations;
pub mod try_it;
pub mod webhooks;

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use eventgate_raft_store::governance::{Api, Entrypoint, Lifecycle, Plan, RateLimit, Security};

use crate::http::AppState;

/// The portal's routes under `path`.
pub fn router(path: &str, state: &AppState) -> Router<AppState> {
    Router::new()
        .route(path, get(catalog))
        .route(&format!("{path}/static/{{file}}"), get(asset))
        .route(&format!("{path}/"), get(catalog))
        .route(&format!("{path}/apis/{{name}}"), get(api_page))
        .route(
            &format!("{path}/signup"),
            get(accounts::signup_form).post(accounts::signup),
        )
        .route(
            &format!("{path}/login"),
            get(accounts::login_form).post(accounts::login),
        )
        .route(
            &format!("{path}/invitation"),
            get(invitations::show).post(invitations::accept),
        )
        .route(&format!("{path}/logout"), post(accounts::logout))
        .route(&format!("{path}/account"), get(accounts::account))
        .route(
            &format!("{path}/account/password"),
            post(accounts::change_password),
        )
        .route(&format!("{path}/apis/{{name}}/try"), post(try_it::start))
        .route(&format!("{path}/admin"), get(admin::show))
        .route(&format!("{path}/webhooks"), get(webhooks::show))
        .route(&format!("{path}/webhooks/redrive"), post(webhooks::redrive))
        .route(&format!("{path}/webhooks/enable"), post(webhooks::enable))
        .route(&format!("{path}/admin/{{action}}"), post(admin::act))
        .route(&format!("{path}/apps"), get(apps::list).post(apps::create))
        .route(&format!("{path}/apps/{{id}}"), get(apps::show))
        .route(&format!("{path}/apps/{{id}}/{{action}}"), post(apps::act))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            session_caught_up,
        ))
}

/// How long a request with a session this node does not know yet waits for it.
const SESSION_CATCH_UP: std::time::Duration = std::time::Duration::from_millis(500);

/// Read-your-writes behind a load balancer: a session opened on one node (sign-up, sign-in)
/// reaches the others as its Raft entry is applied there, a few milliseconds later — and the
/// browser's next request may be faster, on another node. A request whose session cookie this
/// node does not know yet waits (bounded) for it to be applied before it is answered, instead
/// of being sent to the sign-in page. An unknown cookie (expired, forged) costs that wait.
async fn session_caught_up(
    State(state): State<AppState>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    if let Some(token) = accounts::cookie(request.headers(), accounts::SESSION_COOKIE) {
        let hash = crate::auth::sha256_hex(&token);
        let known = |state: &AppState| {
            state
                .control()
                .reader()
                .read(|s| s.governance.session_by_hash(&hash).is_some())
        };
        if !known(&state) {
            let mut applied = state.control().reader().watch_applied();
            let deadline = tokio::time::Instant::now() + SESSION_CATCH_UP;
            while !known(&state) {
                let changed = tokio::time::timeout_at(deadline, applied.changed()).await;
                if !matches!(changed, Ok(Ok(()))) {
                    break;
                }
            }
        }
    }
    next.run(request).await
}

/// Every page's frame.
struct Frame<'a> {
    title: &'a str,
    /// The portal's path (`/portal`), for links.
    base: &'a str,
    /// The signed-in account, if any.
    session: Option<SessionView>,
}

/// The signed-in account as the frame shows it.
struct SessionView {
    name: String,
    /// For the sign-out form.
    csrf: String,
    admin: bool,
}

#[derive(Template)]
#[template(path = "portal/catalog.html")]
struct CatalogPage<'a> {
    frame: Frame<'a>,
    query: String,
    apis: Vec<ApiCard>,
}

/// An API in the catalog.
struct ApiCard {
    name: String,
    version: String,
    description: String,
    deprecated: bool,
    sunset: Option<String>,
    channels: Vec<String>,
    tags: Vec<String>,
}

#[derive(Template)]
#[template(path = "portal/api.html")]
struct ApiPage<'a> {
    frame: Frame<'a>,
    name: String,
    version: String,
    description: String,
    tags: Vec<String>,
    deprecated: bool,
    sunset: Option<String>,
    /// How a client authenticates (what, how to send it); empty: open to anyone.
    credentials: Vec<(String, String)>,
    token_url: Option<String>,
    channels: Vec<ChannelView>,
    plans: Vec<PlanView>,
    asyncapi_json: String,
    asyncapi_yaml: String,
    /// The signed-in developer's applications with approved access to the API (try it).
    try_apps: Vec<String>,
    /// All the signed-in developer's applications (whose credentials the snippets name).
    my_apps: Vec<String>,
    /// The one the snippets are filled in for (`?app=`).
    chosen_app: Option<String>,
}

struct ChannelView {
    name: String,
    topic: String,
    description: Option<String>,
    /// (entrypoint, URL).
    endpoints: Vec<(String, String)>,
    messages: Vec<MessageView>,
    snippets: Vec<Snippet>,
}

struct MessageView {
    name: String,
    title: Option<String>,
    content_type: String,
    schema: Option<String>,
    examples: Vec<String>,
}

struct Snippet {
    /// Unique on the page (for the copy button).
    id: String,
    label: String,
    code: String,
}

struct PlanView {
    name: String,
    description: Option<String>,
    limits: Vec<String>,
    approval: bool,
}

/// What every portal page may load and do: its own stylesheet and scripts (files, never
/// inline, so no injected markup can run), connections back to this origin (the try-it
/// stream), forms posted only here, never framed.
const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; form-action 'self'; base-uri 'none'; object-src 'none'; frame-ancestors 'none'";

/// The portal's stylesheet and scripts, compiled into the binary.
const ASSETS: [(&str, &str, &str); 3] = [
    (
        "portal.css",
        "text/css; charset=utf-8",
        include_str!("../assets/portal/portal.css"),
    ),
    (
        "portal.js",
        "text/javascript; charset=utf-8",
        include_str!("../assets/portal/portal.js"),
    ),
    (
        "try.js",
        "text/javascript; charset=utf-8",
        include_str!("../assets/portal/try.js"),
    ),
];

/// `GET {portal}/static/{file}`.
async fn asset(Path(file): Path<String>) -> Response {
    match ASSETS.iter().find(|(name, _, _)| *name == file) {
        Some((_, content_type, body)) => (
            [
                (header::CONTENT_TYPE, *content_type),
                // Short: a new build's files reach browsers within minutes.
                (header::CACHE_CONTROL, "public, max-age=300"),
                (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            ],
            *body,
        )
            .into_response(),
        None => (StatusCode::NOT_FOUND, "no such file").into_response(),
    }
}

fn html(page: impl Template) -> Response {
    match page.render() {
        Ok(body) => {
            let mut response = Html(body).into_response();
            let headers = response.headers_mut();
            // Nothing of the portal is framed elsewhere, nor loads anything from elsewhere.
            headers.insert(
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(CONTENT_SECURITY_POLICY),
            );
            headers.insert(
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            );
            headers.insert(
                header::REFERRER_POLICY,
                HeaderValue::from_static("same-origin"),
            );
            response
        }
        Err(e) => {
            tracing::error!(error = %e, "a portal page failed to render");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "the page could not be rendered",
            )
                .into_response()
        }
    }
}

fn rfc3339(ms: u64) -> String {
    humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms))
        .to_string()
}

/// Whether `api` matches the search words (name, description, channels, topics).
fn matches(api: &Api, query: &str) -> bool {
    let haystack = format!(
        "{} {} {} {} {}",
        api.name,
        api.tags.join(" "),
        api.description.as_deref().unwrap_or_default(),
        api.channels.keys().cloned().collect::<Vec<_>>().join(" "),
        api.channels.values().cloned().collect::<Vec<_>>().join(" ")
    )
    .to_lowercase();
    query
        .split_whitespace()
        .all(|word| haystack.contains(&word.to_lowercase()))
}

#[derive(Debug, serde::Deserialize)]
struct Search {
    #[serde(default)]
    q: String,
}

/// `GET {portal}/`: the catalog.
async fn catalog(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(search): Query<Search>,
) -> Response {
    let settings = state.portal();
    let query: String = search.q.chars().take(200).collect();
    let apis = state.control().reader().read(|s| {
        s.governance
            .apis
            .values()
            .filter(|a| a.lifecycle.admits() && matches(a, &query))
            .map(|a| ApiCard {
                name: a.name.clone(),
                version: a.version.clone(),
                description: a.description.clone().unwrap_or_default(),
                deprecated: a.lifecycle == Lifecycle::Deprecated,
                sunset: a.sunset_ms.map(rfc3339),
                channels: a.channels.keys().cloned().collect(),
                tags: a.tags.clone(),
            })
            .collect()
    });
    html(CatalogPage {
        frame: Frame {
            title: &settings.title,
            base: &settings.path,
            session: accounts::session_view(&state, &headers),
        },
        query,
        apis,
    })
}

#[derive(Debug, serde::Deserialize)]
struct ApiQuery {
    /// One of the signed-in developer's applications: the snippets name its credentials.
    app: Option<String>,
}

/// `GET {portal}/apis/{name}[?app=ID]`: one published API.
async fn api_page(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(name): Path<String>,
    Query(query): Query<ApiQuery>,
) -> Response {
    let settings = state.portal();
    let found = state.control().reader().read(|s| {
        let g = &s.governance;
        g.apis
            .get(&name)
            .filter(|a| a.lifecycle.admits())
            .map(|a| (a.clone(), g.plans.values().cloned().collect::<Vec<_>>()))
    });
    let Some((api, plans)) = found else {
        return (
            StatusCode::NOT_FOUND,
            Html(format!(
                "<!doctype html><title>Not found</title><p>No published API <code>{}</code>. <a href=\"{}\">Back to the catalog</a>.</p>",
                escape(&name),
                escape(&settings.path)
            )),
        )
            .into_response();
    };
    let public_url = state.public_url().to_owned();
    let token_url = api
        .security
        .contains(&Security::OAuth2)
        .then(|| format!("{}/oauth2/token", state.tokens().issuer()));
    // The developer's applications: all (for the snippets) and those with approved access
    // (for try-it).
    let (my_apps, try_apps): (Vec<String>, Vec<String>) =
        match accounts::signed_in(&state, &headers) {
            None => (Vec::new(), Vec::new()),
            Some((_, account)) => state.control().reader().read(|s| {
                let g = &s.governance;
                let mine = g
                    .applications
                    .values()
                    .filter(|a| a.owner.as_deref() == Some(account.id.as_str()));
                let approved = |id: &str| {
                    g.access
                        .get(&(id.to_owned(), api.name.clone()))
                        .is_some_and(|x| {
                            x.state == eventgate_raft_store::governance::AccessState::Approved
                        })
                };
                (
                    mine.clone().map(|a| a.id.clone()).collect(),
                    mine.filter(|a| approved(&a.id))
                        .map(|a| a.id.clone())
                        .collect(),
                )
            }),
        };
    // Only one of the developer's own applications is named in the snippets.
    let chosen_app = query.app.filter(|a| my_apps.contains(a));
    let app_page = chosen_app
        .as_ref()
        .map(|a| format!("{public_url}{}/apps/{a}", settings.path));
    let credentials_of = chosen_app.as_deref().zip(app_page.as_deref());
    let channels = api
        .channels
        .iter()
        .map(|(channel, topic)| {
            channel_view(
                &api,
                channel,
                topic,
                &public_url,
                token_url.as_deref(),
                credentials_of,
            )
        })
        .collect();
    html(ApiPage {
        frame: Frame {
            title: &settings.title,
            base: &settings.path,
            session: accounts::session_view(&state, &headers),
        },
        try_apps,
        my_apps,
        chosen_app,
        name: api.name.clone(),
        version: api.version.clone(),
        description: api.description.clone().unwrap_or_default(),
        tags: api.tags.clone(),
        deprecated: api.lifecycle == Lifecycle::Deprecated,
        sunset: api.sunset_ms.map(rfc3339),
        credentials: credentials(&api),
        token_url,
        channels,
        plans: plans.iter().map(plan_view).collect(),
        asyncapi_json: format!("/apis/{}/asyncapi.json", api.name),
        asyncapi_yaml: format!("/apis/{}/asyncapi.yaml", api.name),
    })
}

/// Minimal HTML escaping for the few strings written outside templates.
fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// How a client authenticates: (what, how to send it), one per kind of credential.
fn credentials(api: &Api) -> Vec<(String, String)> {
    api.security
        .iter()
        .map(|s| {
            let (what, how) = match s {
                Security::ApiKey => (
                    "An API key of your application",
                    "X-API-Key: egk_… · Authorization: Bearer egk_… · ?access_token=egk_… (browsers)",
                ),
                Security::Jwt => (
                    "A JWT of the identity provider naming your application",
                    "Authorization: Bearer <JWT> · ?access_token=<JWT>",
                ),
                Security::OAuth2 => (
                    "An access token of this gateway (OAuth2 client credentials: your application's id and a client secret, at the token URL)",
                    "Authorization: Bearer <token> · ?access_token=<token>",
                ),
            };
            (what.to_owned(), how.to_owned())
        })
        .collect()
}

fn rate(r: Option<RateLimit>, what: &str) -> Option<String> {
    r.map(|r| {
        let window = humantime::format_duration(std::time::Duration::from_millis(r.window_ms));
        format!("{} {what} per {window}", r.count)
    })
}

fn plan_view(p: &Plan) -> PlanView {
    let mut limits: Vec<String> = [
        rate(p.publish, "messages published"),
        rate(p.deliveries, "messages delivered"),
    ]
    .into_iter()
    .flatten()
    .collect();
    if let Some(n) = p.max_connections {
        limits.push(format!("{n} WebSocket/SSE connections at once"));
    }
    if let Some(n) = p.max_subscriptions {
        limits.push(format!("{n} WebSub subscriptions"));
    }
    if limits.is_empty() {
        limits.push("no limits".to_owned());
    }
    PlanView {
        name: p.name.clone(),
        description: p.description.clone(),
        limits,
        approval: p.approval_required,
    }
}

/// A JSON text pretty-printed, or as it is.
fn pretty(text: &str) -> String {
    serde_json::from_str::<serde_json::Value>(text)
        .ok()
        .and_then(|v| serde_json::to_string_pretty(&v).ok())
        .unwrap_or_else(|| text.to_owned())
}

fn channel_view(
    api: &Api,
    channel: &str,
    topic: &str,
    public_url: &str,
    token_url: Option<&str>,
    app: Option<(&str, &str)>,
) -> ChannelView {
    // Under the API's base path, by channel name; otherwise the gateway's routes, by topic.
    let (prefix, name) = match &api.base_path {
        Some(base) => (format!("{public_url}{base}"), channel.to_owned()),
        None => (public_url.to_owned(), topic.to_owned()),
    };
    let ws_prefix = prefix
        .replacen("https://", "wss://", 1)
        .replacen("http://", "ws://", 1);
    let topic_url = format!("{prefix}/topics/{name}");
    let offers = |e: Entrypoint| api.entrypoints.contains(&e);
    let mut endpoints = Vec::new();
    if offers(Entrypoint::Websocket) {
        endpoints.push(("WebSocket".to_owned(), format!("{ws_prefix}/ws/{name}")));
    }
    if offers(Entrypoint::Sse) {
        endpoints.push((
            "Server-Sent Events".to_owned(),
            format!("{prefix}/sse/{name}"),
        ));
    }
    if offers(Entrypoint::Webhook) {
        endpoints.push((
            "Webhook receiver (publish)".to_owned(),
            format!("{prefix}/webhook-receiver?topic={name}"),
        ));
    }
    if offers(Entrypoint::Websub) {
        endpoints.push(("WebSub topic URL (hub.topic)".to_owned(), topic_url.clone()));
    }
    let spec = api.channel_specs.get(channel);
    let messages: Vec<MessageView> = spec
        .map(|s| {
            s.messages
                .iter()
                .map(|m| MessageView {
                    name: m.name.clone(),
                    title: m.title.clone(),
                    content_type: m.content_type.clone().unwrap_or_else(|| "any".to_owned()),
                    schema: m.payload.as_deref().map(pretty),
                    examples: m.examples.iter().map(String::as_str).map(pretty).collect(),
                })
                .collect()
        })
        .unwrap_or_default();
    let example = spec
        .and_then(|s| s.messages.iter().find_map(|m| m.examples.first()))
        .cloned()
        .unwrap_or_else(|| r#"{"hello":"world"}"#.to_owned());
    let secured = !api.security.is_empty();
    let snippets = snippets(&SnippetInput {
        id: channel,
        api,
        prefix: &prefix,
        ws_prefix: &ws_prefix,
        name: &name,
        topic_url: &topic_url,
        public_url,
        token_url,
        secured,
        example: &example,
        app,
    });
    ChannelView {
        name: channel.to_owned(),
        topic: topic.to_owned(),
        description: spec.and_then(|s| s.description.clone()),
        endpoints,
        messages,
        snippets,
    }
}

struct SnippetInput<'a> {
    id: &'a str,
    api: &'a Api,
    prefix: &'a str,
    ws_prefix: &'a str,
    /// The channel as routes name it.
    name: &'a str,
    topic_url: &'a str,
    public_url: &'a str,
    token_url: Option<&'a str>,
    secured: bool,
    example: &'a str,
    /// The developer's chosen application and its portal page: the snippets name its
    /// credentials.
    app: Option<(&'a str, &'a str)>,
}

/// What `$TOKEN` stands for in the snippets: the kind of credential the API takes, of the
/// chosen application (or of "your application").
fn credential_placeholder(i: &SnippetInput<'_>) -> String {
    let kind = if i.api.security.contains(&Security::OAuth2) {
        "an access token"
    } else if i.api.security.contains(&Security::ApiKey) {
        "an API key"
    } else {
        "a JWT"
    };
    match i.app {
        Some((app, page)) => format!("{kind} of application {app} (its page: {page})"),
        None => format!("{kind} of your application"),
    }
}

/// Code to copy, per entrypoint the API offers, with the real URLs; `$TOKEN` stands for the
/// application's credential.
fn snippets(i: &SnippetInput<'_>) -> Vec<Snippet> {
    let (prefix, ws, name) = (i.prefix, i.ws_prefix, i.name);
    let auth_header = if i.secured {
        " -H \"Authorization: Bearer $TOKEN\""
    } else {
        ""
    };
    let offers = |e: Entrypoint| i.api.entrypoints.contains(&e);
    let placeholder = credential_placeholder(i);
    // Where a snippet reads `$TOKEN` / `TOKEN`, the line that says what it is.
    let (shell_token, js_token, python_token) = if i.secured {
        (
            format!("# $TOKEN: {placeholder}\n"),
            format!("const TOKEN = '<{placeholder}>';\n"),
            format!("# TOKEN: {placeholder}\n"),
        )
    } else {
        Default::default()
    };
    let mut out = Vec::new();
    let mut add = |key: &str, label: &str, code: String| {
        out.push(Snippet {
            id: format!("{}-{key}", i.id),
            label: label.to_owned(),
            code,
        });
    };
    if let Some(token_url) = i.token_url {
        let client = match i.app {
            Some((app, page)) => format!(
                "CLIENT_ID='{app}'\nCLIENT_SECRET='<a client secret of {app}>'  # issued on {page}\n"
            ),
            None => "CLIENT_ID='<your application id>'\nCLIENT_SECRET='<a client secret of it>'\n"
                .to_owned(),
        };
        add(
            "token",
            "Get an access token (curl)",
            format!(
                "{client}TOKEN=$(curl -s -u \"$CLIENT_ID:$CLIENT_SECRET\" -d grant_type=client_credentials {token_url} \\\n  | python3 -c 'import json,sys; print(json.load(sys.stdin)[\"access_token\"])')"
            ),
        );
    }
    if offers(Entrypoint::Sse) {
        add(
            "curl-sse",
            "Stream with curl (SSE)",
            format!("{shell_token}curl -N{auth_header} '{prefix}/sse/{name}'"),
        );
        let query = if i.secured {
            "?access_token=' + encodeURIComponent(TOKEN)"
        } else {
            "'"
        };
        add(
            "js-sse",
            "JavaScript EventSource (browser)",
            format!(
                "{js_token}const events = new EventSource('{prefix}/sse/{name}{query});\nevents.onmessage = (e) => console.log(e.lastEventId, e.data);\nevents.addEventListener('close', (e) => console.log('closed', e.data));"
            ),
        );
    }
    if offers(Entrypoint::Websocket) {
        add(
            "wscat",
            "Stream with wscat",
            format!("{shell_token}wscat -c '{ws}/ws/{name}'{auth_header}"),
        );
        let query = if i.secured {
            "?access_token=' + encodeURIComponent(TOKEN)"
        } else {
            "'"
        };
        add(
            "js-ws",
            "JavaScript WebSocket (browser)",
            format!(
                "{js_token}const socket = new WebSocket('{ws}/ws/{name}{query});\nsocket.onmessage = (e) => console.log(e.data);\nsocket.onclose = (e) => console.log('closed', e.code, e.reason);"
            ),
        );
        let headers = if i.secured {
            ", additional_headers={\"Authorization\": \"Bearer \" + TOKEN}"
        } else {
            ""
        };
        add(
            "python-ws",
            "Python (websockets)",
            format!(
                "{python_token}import asyncio, os\nimport websockets\n\nTOKEN = os.environ.get(\"TOKEN\", \"\")\n\nasync def main():\n    async with websockets.connect(\"{ws}/ws/{name}\"{headers}) as socket:\n        async for message in socket:\n            print(message)\n\nasyncio.run(main())"
            ),
        );
    }
    if offers(Entrypoint::Webhook) {
        add(
            "curl-publish",
            "Publish with curl (webhook receiver)",
            format!(
                "{shell_token}curl -X POST '{prefix}/webhook-receiver?topic={name}'{auth_header} \\\n  -H 'content-type: application/json' -d '{}'",
                i.example.replace('\'', "'\\''")
            ),
        );
    }
    if offers(Entrypoint::Websub) {
        add(
            "websub",
            "Subscribe a callback (WebSub)",
            format!(
                "{shell_token}curl -X POST {}/hub{auth_header} \\\n  -d hub.mode=subscribe \\\n  --data-urlencode 'hub.topic={}' \\\n  --data-urlencode 'hub.callback=https://your-service.example/callback' \\\n  -d hub.secret=\"$CALLBACK_SECRET\" -d hub.lease_seconds=86400",
                i.public_url, i.topic_url
            ),
        );
        add(
            "callback",
            "A callback that verifies the signature (Python)",
            "import hashlib, hmac, os\nfrom http.server import BaseHTTPRequestHandler, HTTPServer\nfrom urllib.parse import urlparse, parse_qs\n\nSECRET = os.environ[\"CALLBACK_SECRET\"].encode()\n\nclass Callback(BaseHTTPRequestHandler):\n    def do_GET(self):  # verification of intent: echo hub.challenge\n        query = parse_qs(urlparse(self.path).query)\n        challenge = query.get(\"hub.challenge\", [\"\"])[0].encode()\n        self.send_response(200); self.end_headers(); self.wfile.write(challenge)\n\n    def do_POST(self):  # a delivery: X-Hub-Signature: sha256=<hex HMAC of the body>\n        body = self.rfile.read(int(self.headers[\"Content-Length\"]))\n        method, _, received = self.headers.get(\"X-Hub-Signature\", \"\").partition(\"=\")\n        expected = hmac.new(SECRET, body, getattr(hashlib, method or \"sha256\")).hexdigest()\n        if not hmac.compare_digest(expected, received):\n            self.send_response(403); self.end_headers(); return\n        print(body.decode(errors=\"replace\"))\n        self.send_response(204); self.end_headers()\n\nHTTPServer((\"0.0.0.0\", 8000), Callback).serve_forever()".to_owned(),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn search_matches_every_word_anywhere() {
        let mut api = Api {
            name: "sweet-prod-app".to_owned(),
            version: "1".to_owned(),
            description: Some("Events of the production line".to_owned()),
            base_path: None,
            channels: [("production".to_owned(), "sweet.production".to_owned())].into(),
            entrypoints: Entrypoint::ALL.to_vec(),
            security: vec![],
            max_message_bytes: None,
            origin: eventgate_raft_store::governance::Origin::Admin,
            updated_at_ms: 0,
            lifecycle: Lifecycle::Published,
            lifecycle_since_ms: 0,
            sunset_ms: None,
            channel_specs: Default::default(),
            validate_messages: false,
            verify_ingest: None,
            tags: vec!["manufacturing".to_owned()],
        };
        assert!(matches(&api, ""));
        assert!(matches(&api, "SWEET line"));
        assert!(matches(&api, "production"));
        assert!(matches(&api, "Manufacturing"), "tags are searched");
        assert!(!matches(&api, "sweet orders"));
        api.description = None;
        assert!(!matches(&api, "line"));
    }
}
