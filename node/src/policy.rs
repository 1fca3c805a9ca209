//! Who may do what: authentication (API keys, JWT) and authorization (APIs, applications'
//! subscriptions to them, topic permissions) for every entrypoint.
//!
//! Every entrypoint presents the client's [`Credential`] (the HTTP edge reads it from
//! `Authorization: Bearer …`, `X-API-Key`, or the `access_token` query parameter for browsers,
//! which cannot set headers on `EventSource` or `WebSocket`), the topic, the [`Action`] and the [`Entrypoint`] to the
//! [`Gatekeeper`], which reads the replicated state and answers an [`Admission`] or a
//! [`Refusal`]: unauthenticated without usable credentials, forbidden when not allowed.
//!
//! A topic that belongs to an API follows that API: a keyless API admits everyone; otherwise
//! the client must authenticate as an application with an approved subscription to the API and
//! a permission for the topic and action. A topic of no API is open to anonymous clients when
//! `auth.anonymous` is on (the default); a client that presents credentials there is still
//! authenticated and held to its permissions.

use std::sync::Arc;

use eventgate_raft_store::governance::{
    pattern_matches, AccessState, Entrypoint, Governance, Lifecycle, Plan, Security,
};
use eventgate_raft_store::StateReader;

use crate::auth::{sha256_hex, JwtVerifier, KEY_PREFIX};
use crate::refusal::Refusal;
use eventgate_raft_store::clock::now_ms;

/// Credentials as presented. Never logged.
#[derive(Clone, PartialEq, Eq)]
pub enum Credential {
    /// `Authorization: Bearer <token>` or `?access_token=<token>`: an API key or a JWT.
    Bearer(String),
    /// `X-API-Key: <key>`.
    ApiKey(String),
    /// Any other `Authorization` scheme, as given.
    Other(String),
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credential::Bearer(_) => f.write_str("Bearer(<redacted>)"),
            Credential::ApiKey(_) => f.write_str("ApiKey(<redacted>)"),
            Credential::Other(_) => f.write_str("Other(<redacted>)"),
        }
    }
}

/// The topic a request is about, and the API it came through when it used an API's base path
/// (then only that API decides, not every API the topic belongs to).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Target<'a> {
    pub topic: &'a str,
    pub api: Option<&'a str>,
}

impl<'a> Target<'a> {
    /// `topic` as reached through the gateway's own routes.
    pub fn topic(topic: &'a str) -> Self {
        Self { topic, api: None }
    }
}

/// What a client asks to do with a topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Subscribe,
    Publish,
}

impl Action {
    fn verb(self) -> &'static str {
        match self {
            Action::Subscribe => "subscribe to",
            Action::Publish => "publish to",
        }
    }
}

/// Longest a node waits to apply a signing key another node has just made, before refusing a
/// token it signed.
const KEY_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// How a principal proved who it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Via {
    /// The API key with this id.
    ApiKey(String),
    Jwt,
    /// An access token of this gateway, issued on the client secret `secret`, limited to the
    /// APIs of `scope` when it has one.
    OAuth2 {
        secret: String,
        scope: Option<Vec<String>>,
    },
}

/// An authenticated application.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub app: String,
    pub via: Via,
    /// When the credential stops being valid (a JWT's `exp` plus leeway; a key's expiry).
    pub expires_at_ms: Option<u64>,
}

/// The API a request goes through and the plan the application holds on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    pub api: String,
    pub plan: Plan,
    pub max_message_bytes: Option<u64>,
}

/// An admitted request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Admission {
    /// `None` for anonymous clients.
    pub principal: Option<Principal>,
    /// The application's plan on the API, when the topic is an API's and the client is known.
    pub grant: Option<Grant>,
    /// Largest message this API accepts, known also for anonymous clients of keyless APIs.
    pub max_message_bytes: Option<u64>,
}

/// Decides who may do what, from the replicated state.
#[derive(Debug, Clone)]
pub struct Gatekeeper {
    reader: StateReader,
    anonymous: bool,
    jwt: Option<Arc<JwtVerifier>>,
    /// The cluster's token signing keys, decoded.
    tokens: Arc<crate::oauth2::VerifyKeys>,
    changes: tokio::sync::watch::Receiver<u64>,
    /// Topics the gateway writes itself (the delivery ledger, the operator events): nobody
    /// publishes to them; the ledger is read through the admin API only.
    internal: Arc<InternalTopics>,
}

/// The gateway's own topics.
#[derive(Debug, Clone, Default)]
pub struct InternalTopics {
    pub ledger: Option<String>,
    pub events: Option<String>,
}

impl InternalTopics {
    fn refusal(&self, topic: &str, action: Action) -> Option<Refusal> {
        let is = |t: &Option<String>| t.as_deref() == Some(topic);
        if is(&self.ledger) {
            return Some(Refusal::Forbidden {
                detail: format!(
                    "`{topic}` is the gateway's delivery ledger: read it through the admin API (GET /admin/subscriptions/{{id}}/attempts)"
                ),
            });
        }
        if is(&self.events) && action == Action::Publish {
            return Some(Refusal::Forbidden {
                detail: format!("`{topic}` carries the gateway's own operator events: only the gateway publishes to it"),
            });
        }
        None
    }
}

impl Gatekeeper {
    /// Refuses what no one may do on the gateway's own topics.
    pub fn with_internal_topics(mut self, internal: InternalTopics) -> Self {
        self.internal = Arc::new(internal);
        self
    }

    /// A gatekeeper on `reader`. Spawns the task that tells streams when rights change.
    pub fn new(reader: StateReader, anonymous: bool, jwt: Option<Arc<JwtVerifier>>) -> Self {
        let (tx, changes) = tokio::sync::watch::channel(reader.read(|s| s.governance.version));
        let mut applied = reader.watch_applied();
        let watched = reader.clone();
        tokio::spawn(async move {
            while applied.changed().await.is_ok() {
                let version = watched.read(|s| s.governance.version);
                tx.send_if_modified(|current| {
                    let changed = *current != version;
                    *current = version;
                    changed
                });
            }
        });
        Self {
            reader,
            anonymous,
            jwt,
            tokens: Arc::default(),
            changes,
            internal: Arc::default(),
        }
    }

    /// A receiver that changes whenever who may do what changes (keys, applications, APIs,
    /// access to APIs).
    pub fn changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changes.clone()
    }

    /// Authenticates `credential` as an application.
    pub async fn authenticate(&self, credential: &Credential) -> Result<Principal, Refusal> {
        let token = match credential {
            Credential::Other(_) => {
                return Err(Refusal::unauthenticated(
                    "use `Authorization: Bearer <API key or JWT>` or `X-API-Key: <API key>`",
                ))
            }
            Credential::ApiKey(key) => return self.authenticate_key(key),
            Credential::Bearer(token) if token.starts_with(KEY_PREFIX) => {
                return self.authenticate_key(token)
            }
            Credential::Bearer(token) => token,
        };
        if let Some(kid) = crate::oauth2::fresh_kid(token) {
            // Signed by a key another node just made: wait (briefly) to apply it.
            self.await_signing_key(&kid).await;
        }
        if let Some(found) = self.reader.read(|s| {
            let g = &s.governance;
            crate::oauth2::is_cluster_token(g, token).then(|| {
                let claims = self
                    .tokens
                    .verify(g, token)
                    .map_err(Refusal::unauthenticated)?;
                secret_usable(g, &claims.sid)?;
                app_usable(g, &claims.sub)?;
                Ok(Principal {
                    via: Via::OAuth2 {
                        secret: claims.sid.clone(),
                        scope: claims.scopes(),
                    },
                    app: claims.sub,
                    expires_at_ms: Some(claims.exp * 1000),
                })
            })
        }) {
            return found;
        }
        let Some(jwt) = &self.jwt else {
            return Err(Refusal::unauthenticated(
                "not an API key or access token of this gateway, and no JWT verification is configured",
            ));
        };
        let claims = jwt
            .verify(token)
            .await
            .map_err(|e| Refusal::unauthenticated(e.to_string()))?;
        self.reader.read(|s| {
            app_usable(&s.governance, &claims.app)?;
            Ok(Principal {
                app: claims.app,
                via: Via::Jwt,
                expires_at_ms: claims.expires_at_ms,
            })
        })
    }

    /// Waits until this node has applied signing key `kid`, at most [`KEY_WAIT`].
    async fn await_signing_key(&self, kid: &str) {
        let known =
            |reader: &StateReader| reader.read(|s| s.governance.signing_keys.contains_key(kid));
        if known(&self.reader) {
            return;
        }
        let mut applied = self.reader.watch_applied();
        let _ = tokio::time::timeout(KEY_WAIT, async {
            while !known(&self.reader) {
                if applied.changed().await.is_err() {
                    return;
                }
            }
        })
        .await;
    }

    fn authenticate_key(&self, key: &str) -> Result<Principal, Refusal> {
        let hash = sha256_hex(key);
        self.reader.read(|s| {
            let g = &s.governance;
            let Some(stored) = g.key_by_hash(&hash) else {
                return Err(Refusal::unauthenticated("unknown API key"));
            };
            if stored.revoked_at_ms.is_some() {
                return Err(Refusal::unauthenticated(format!(
                    "API key {} has been revoked",
                    stored.id
                )));
            }
            if stored.expires_at_ms.is_some_and(|t| t <= now_ms()) {
                return Err(Refusal::unauthenticated(format!(
                    "API key {} has expired",
                    stored.id
                )));
            }
            app_usable(g, &stored.app)?;
            Ok(Principal {
                app: stored.app.clone(),
                via: Via::ApiKey(stored.id.clone()),
                expires_at_ms: stored.expires_at_ms,
            })
        })
    }

    /// Admits `credential` to `action` on `topic` through `entrypoint`, or refuses.
    pub async fn admit(
        &self,
        credential: Option<&Credential>,
        target: Target<'_>,
        action: Action,
        entrypoint: Entrypoint,
    ) -> Result<Admission, Refusal> {
        let principal = match credential {
            Some(c) => Some(self.authenticate(c).await?),
            None => None,
        };
        self.authorize(principal, credential.is_some(), target, action, entrypoint)
    }

    /// Admits an already authenticated `principal` (or an anonymous client; `presented`: it
    /// gave credentials) to `action` on `topic` through `entrypoint`, or refuses.
    pub fn authorize(
        &self,
        principal: Option<Principal>,
        presented: bool,
        target: Target<'_>,
        action: Action,
        entrypoint: Entrypoint,
    ) -> Result<Admission, Refusal> {
        if let Some(refusal) = self.internal.refusal(target.topic, action) {
            return Err(refusal);
        }
        self.reader.read(|s| {
            self.decide(
                &s.governance,
                principal.as_ref(),
                presented,
                target,
                action,
                entrypoint,
            )
            .map(|(grant, max_message_bytes)| Admission {
                principal,
                grant,
                max_message_bytes,
            })
        })
    }

    /// Whether `principal` may still do what it was admitted to (keys revoked, applications
    /// disabled, subscriptions ended, permissions changed, credentials expired since).
    pub fn recheck(
        &self,
        principal: Option<&Principal>,
        target: Target<'_>,
        action: Action,
        entrypoint: Entrypoint,
    ) -> Result<(), Refusal> {
        let Some(principal) = principal else {
            // Anonymous: as it was admitted, by the topic's (or the API's) openness.
            return self.reader.read(|s| {
                self.decide(&s.governance, None, false, target, action, entrypoint)
                    .map(|_| ())
            });
        };
        if principal.expires_at_ms.is_some_and(|t| t <= now_ms()) {
            return Err(Refusal::unauthenticated("the credential has expired"));
        }
        self.reader.read(|s| {
            let g = &s.governance;
            match &principal.via {
                Via::ApiKey(id) => match g.keys.get(id) {
                    Some(k) if k.revoked_at_ms.is_none() => {}
                    _ => {
                        return Err(Refusal::unauthenticated(format!(
                            "API key {id} has been revoked"
                        )))
                    }
                },
                Via::OAuth2 { secret, .. } => secret_usable(g, secret)?,
                Via::Jwt => {}
            }
            app_usable(g, &principal.app)?;
            self.decide(g, Some(principal), true, target, action, entrypoint)
                .map(|_| ())
        })
    }

    /// Whether JWTs can be verified (`[auth.jwt]` is configured).
    pub fn verifies_jwt(&self) -> bool {
        self.jwt.is_some()
    }

    /// The replicated state's reader.
    pub fn reader(&self) -> &StateReader {
        &self.reader
    }

    fn decide(
        &self,
        g: &Governance,
        principal: Option<&Principal>,
        presented: bool,
        target: Target<'_>,
        action: Action,
        entrypoint: Entrypoint,
    ) -> Result<(Option<Grant>, Option<u64>), Refusal> {
        let topic = target.topic;
        let apis: Vec<_> = g
            .apis_of_topic(topic)
            .map(|(api, _)| api)
            .filter(|api| target.api.is_none_or(|name| api.name == name))
            .collect();
        if let (Some(name), true) = (target.api, apis.is_empty()) {
            // Deleted, or its channel moved, since the request was routed.
            return Err(Refusal::NotOffered {
                detail: format!("API `{name}` no longer offers topic `{topic}`"),
            });
        }
        // Only published and deprecated APIs admit clients; an API being prepared or retired
        // still holds its topics (nobody gets in through them).
        let (apis, closed): (Vec<_>, Vec<_>) = apis.into_iter().partition(|a| a.lifecycle.admits());
        if let (true, Some(api)) = (apis.is_empty(), closed.first()) {
            return Err(match api.lifecycle {
                Lifecycle::Retired => Refusal::ApiRetired {
                    api: api.name.clone(),
                },
                _ => Refusal::NotOffered {
                    detail: format!("API `{}` is not published", api.name),
                },
            });
        }
        if apis.is_empty() {
            return match principal {
                None if self.anonymous => Ok((None, None)),
                None if presented => Err(Refusal::unauthenticated("credentials required")),
                None => Err(Refusal::unauthenticated(format!(
                    "topic `{topic}` needs credentials (auth.anonymous is off)"
                ))),
                // A token limited to some APIs reaches nothing outside them.
                Some(Principal {
                    via:
                        Via::OAuth2 {
                            scope: Some(scope), ..
                        },
                    ..
                }) => Err(Refusal::forbidden(format!(
                    "topic `{topic}` belongs to no API, and the access token is limited to {}",
                    scope.join(", ")
                ))),
                Some(p) => {
                    permitted(g, p, topic, action)?;
                    Ok((None, None))
                }
            };
        }
        let offering: Vec<_> = apis
            .iter()
            .filter(|a| a.entrypoints.contains(&entrypoint))
            .collect();
        if offering.is_empty() {
            return Err(Refusal::forbidden(format!(
                "topic `{topic}` is not offered over {} by API {}",
                entrypoint.name(),
                apis.iter()
                    .map(|a| format!("`{}`", a.name))
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        let limit = offering.iter().filter_map(|a| a.max_message_bytes).min();
        if principal.is_none() && offering.iter().any(|a| a.security.is_empty()) {
            // A keyless API.
            return Ok((None, limit));
        }
        let Some(p) = principal else {
            let schemes: Vec<&str> = offering
                .iter()
                .flat_map(|a| a.security.iter().map(|s| s.name()))
                .collect();
            return Err(Refusal::unauthenticated(format!(
                "topic `{topic}` belongs to API `{}`, which needs credentials ({})",
                offering[0].name,
                schemes.join(" or ")
            )));
        };
        let mut refusal = None;
        for api in &offering {
            if let Via::OAuth2 {
                scope: Some(scope), ..
            } = &p.via
            {
                if !scope.contains(&api.name) {
                    refusal.get_or_insert_with(|| {
                        Refusal::forbidden(format!(
                            "the access token's scope does not include API `{}`",
                            api.name
                        ))
                    });
                    continue;
                }
            }
            let accepted = api.security.is_empty()
                || match p.via {
                    Via::ApiKey(_) => api.security.contains(&Security::ApiKey),
                    Via::Jwt => api.security.contains(&Security::Jwt),
                    Via::OAuth2 { .. } => api.security.contains(&Security::OAuth2),
                };
            if !accepted {
                refusal.get_or_insert_with(|| {
                    Refusal::unauthenticated(format!(
                        "API `{}` does not accept this kind of credential",
                        api.name
                    ))
                });
                continue;
            }
            match g.access.get(&(p.app.clone(), api.name.clone())) {
                Some(access) if access.state == AccessState::Approved => {
                    permitted(g, p, topic, action)?;
                    let plan = g.plans.get(&access.plan).cloned().ok_or_else(|| {
                        Refusal::forbidden(format!("plan `{}` no longer exists", access.plan))
                    })?;
                    return Ok((
                        Some(Grant {
                            api: api.name.clone(),
                            plan,
                            max_message_bytes: api.max_message_bytes,
                        }),
                        api.max_message_bytes,
                    ));
                }
                // A keyless API: rights as the application's permissions say, no plan.
                Some(_) | None if api.security.is_empty() => {
                    permitted(g, p, topic, action)?;
                    return Ok((None, api.max_message_bytes));
                }
                Some(access) => {
                    refusal.get_or_insert_with(|| {
                        Refusal::forbidden(format!(
                            "application `{}`'s access to API `{}` is {}",
                            p.app,
                            api.name,
                            match access.state {
                                AccessState::Pending => "waiting for approval",
                                _ => "rejected",
                            }
                        ))
                    });
                }
                None => {
                    refusal.get_or_insert_with(|| {
                        Refusal::forbidden(format!(
                            "application `{}` has no access to API `{}`",
                            p.app, api.name
                        ))
                    });
                }
            }
        }
        Err(refusal.unwrap_or_else(|| Refusal::forbidden("not allowed")))
    }
}

/// Whether the client secret an access token was issued on still stands (a secret rotated out
/// keeps its tokens until they expire; a revoked one ends them).
fn secret_usable(g: &Governance, id: &str) -> Result<(), Refusal> {
    match g.client_secrets.get(id) {
        Some(s) if s.revoked_at_ms.is_none() => Ok(()),
        _ => Err(Refusal::unauthenticated(format!(
            "client secret {id} has been revoked"
        ))),
    }
}

fn app_usable(g: &Governance, app: &str) -> Result<(), Refusal> {
    match g.applications.get(app) {
        None => Err(Refusal::forbidden(format!("no application `{app}`"))),
        Some(a) if a.disabled => Err(Refusal::forbidden(format!(
            "application `{app}` is disabled"
        ))),
        Some(_) => Ok(()),
    }
}

fn permitted(g: &Governance, p: &Principal, topic: &str, action: Action) -> Result<(), Refusal> {
    let allowed = g.applications.get(&p.app).is_some_and(|a| {
        a.permissions.iter().any(|perm| {
            pattern_matches(&perm.pattern, topic)
                && match action {
                    Action::Subscribe => perm.subscribe,
                    Action::Publish => perm.publish,
                }
        })
    });
    if allowed {
        Ok(())
    } else {
        Err(Refusal::forbidden(format!(
            "application `{}` may not {} `{topic}`",
            p.app,
            action.verb()
        )))
    }
}
