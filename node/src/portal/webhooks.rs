//! "My webhooks": the WebSub subscriptions the signed-in developer's applications made — topic,
//! callback (without its query, which may hold a token), state, lease, retries waiting, dead
//! letters, the endpoint's health (paused by the circuit breaker, or the subscription disabled)
//! and the last attempts from the delivery ledger — with re-drive of a dead letter and
//! re-enabling of a disabled subscription (the admin API's, held to the owner).

use std::collections::HashMap;

use askama::Template;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use eventgate_raft_store::clock::now_ms;
use eventgate_raft_store::governance::AccountRole;
use eventgate_raft_store::SubscriptionState;

use super::accounts::{session_form_ok, signed_in};
use super::{html, Frame, SessionView};
use crate::http::AppState;

#[derive(Template)]
#[template(path = "portal/webhooks.html")]
struct WebhooksPage<'a> {
    frame: Frame<'a>,
    csrf: String,
    notice: Option<String>,
    subscriptions: Vec<SubscriptionRow>,
}

struct SubscriptionRow {
    id: String,
    app: String,
    topic: String,
    callback: String,
    state: String,
    lease: String,
    /// `WebSub (X-Hub-Signature)`, `Standard Webhooks`, or unsigned; with a rotation's end.
    signing: String,
    /// Per partition, the next offset to deliver (what came before is delivered).
    cursor: Vec<(u32, u64)>,
    retries: usize,
    /// Failing now: (partition, offset, attempts so far, last error, next attempt).
    failing: Vec<(u32, u64, u32, String, String)>,
    /// (partition, offset, attempts, last error, when).
    dead: Vec<(u32, u64, u32, String, String)>,
    /// The callback endpoint's health: paused by the circuit breaker (since, last error, next
    /// probe), when it is.
    endpoint: Option<String>,
    /// Why the subscription is disabled, when it is (it can be re-enabled here).
    disabled: Option<String>,
    /// The last attempts from the delivery ledger: (when, message id, outcome, detail).
    attempts: Vec<(String, String, String, String)>,
}

/// Attempts of the ledger shown per subscription.
const RECENT_ATTEMPTS: usize = 10;

fn rfc3339(ms: u64) -> String {
    humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms))
        .to_string()
}

/// The page for the signed-in developer, or the way to sign in.
fn page(state: &AppState, headers: &HeaderMap, notice: Option<String>) -> Response {
    let Some((session, account)) = signed_in(state, headers) else {
        return Redirect::to(&format!("{}/login", state.portal().path)).into_response();
    };
    let now = now_ms();
    let subscriptions = state.control().reader().read(|s| {
        let g = &s.governance;
        s.subscriptions
            .values()
            .filter_map(|sub| {
                let (app, _) = g.websub_applications.get(&sub.id)?;
                let mine = g
                    .applications
                    .get(app)
                    .is_some_and(|a| a.owner.as_deref() == Some(account.id.as_str()));
                mine.then(|| SubscriptionRow {
                    id: sub.id.clone(),
                    app: app.clone(),
                    topic: sub.topic.clone(),
                    callback: sub
                        .callback
                        .split('?')
                        .next()
                        .unwrap_or_default()
                        .to_owned(),
                    state: match sub.state {
                        SubscriptionState::PendingVerification => "verifying intent",
                        SubscriptionState::Active => "active",
                        SubscriptionState::PendingUnsubscribe => "unsubscribing",
                    }
                    .to_owned(),
                    lease: if sub.lease_expires_at_ms > now {
                        format!("until {}", rfc3339(sub.lease_expires_at_ms))
                    } else {
                        "expired".to_owned()
                    },
                    signing: {
                        let scheme = match (&sub.secret, sub.signing) {
                            (None, _) => "unsigned (no secret)",
                            (Some(_), eventgate_raft_store::Signing::WebSub) => {
                                "WebSub (X-Hub-Signature)"
                            }
                            (Some(_), eventgate_raft_store::Signing::StandardWebhooks) => {
                                "Standard Webhooks"
                            }
                        };
                        match sub.previous_secret.as_ref().filter(|p| p.until_ms > now) {
                            Some(p) => format!(
                                "{scheme}; the previous secret signs too until {}",
                                rfc3339(p.until_ms)
                            ),
                            None => scheme.to_owned(),
                        }
                    },
                    cursor: s
                        .cursors
                        .get(&sub.id)
                        .map(|c| c.iter().map(|(p, o)| (*p, *o)).collect())
                        .unwrap_or_default(),
                    retries: s.retries.get(&sub.id).map_or(0, Vec::len),
                    failing: s
                        .retries
                        .get(&sub.id)
                        .map(|entries| {
                            entries
                                .iter()
                                .map(|r| {
                                    (
                                        r.partition,
                                        r.offset,
                                        r.attempt,
                                        r.last_error.clone().unwrap_or_default(),
                                        rfc3339(r.next_attempt_at_ms),
                                    )
                                })
                                .collect()
                        })
                        .unwrap_or_default(),
                    dead: s
                        .dead_letters
                        .values()
                        .filter(|d| d.id == sub.id)
                        .map(|d| {
                            (
                                d.partition,
                                d.offset,
                                d.attempts,
                                d.last_error.clone(),
                                rfc3339(d.at_ms),
                            )
                        })
                        .collect(),
                    endpoint: s
                        .endpoints
                        .get(&eventgate_raft_store::callback_origin(&sub.callback))
                        .map(|e| {
                            format!(
                                "paused since {} after failures (last: {}); next probe {}",
                                rfc3339(e.opened_at_ms),
                                e.last_error,
                                rfc3339(e.next_probe_at_ms)
                            )
                        }),
                    disabled: s
                        .disabled
                        .get(&sub.id)
                        .map(|d| format!("disabled {}: {}", rfc3339(d.at_ms), d.reason)),
                    attempts: Vec::new(),
                })
            })
            .collect::<Vec<SubscriptionRow>>()
    });
    let ledger = state.ledger();
    let subscriptions: Vec<SubscriptionRow> = subscriptions
        .into_iter()
        .map(|mut row| {
            let filter = eventgate_actors::ledger::AttemptFilter {
                limit: RECENT_ATTEMPTS,
                ..Default::default()
            };
            row.attempts = ledger
                .query(&row.id, &filter)
                .into_iter()
                .map(|a| {
                    let outcome = match a.outcome {
                        eventgate_actors::ledger::AttemptOutcome::Succeeded => "delivered",
                        eventgate_actors::ledger::AttemptOutcome::Failed => "failed",
                        eventgate_actors::ledger::AttemptOutcome::Gone => "gone (410)",
                    };
                    let detail = match (&a.error, a.status) {
                        (Some(e), _) => format!("attempt {}: {e}, {} ms", a.attempt, a.latency_ms),
                        (None, Some(status)) => {
                            format!("attempt {}: {status}, {} ms", a.attempt, a.latency_ms)
                        }
                        (None, None) => format!("attempt {}", a.attempt),
                    };
                    (rfc3339(a.at_ms), a.message_id, outcome.to_owned(), detail)
                })
                .collect();
            row
        })
        .collect();
    html(WebhooksPage {
        frame: Frame {
            title: &state.portal().title,
            base: &state.portal().path,
            session: Some(SessionView {
                name: account.name.clone(),
                csrf: session.csrf.clone(),
                admin: account.role == AccountRole::Admin,
            }),
        },
        csrf: session.csrf,
        notice,
        subscriptions,
    })
}

/// `GET {portal}/webhooks`.
pub async fn show(State(state): State<AppState>, headers: HeaderMap) -> Response {
    page(&state, &headers, None)
}

/// `POST {portal}/webhooks/enable`: re-enables the developer's own subscription disabled
/// after its endpoint's long outage.
pub async fn enable(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let (account, form) = match signed_form(&state, &headers, &body) {
        Ok(signed) => signed,
        Err(answer) => return *answer,
    };
    let id = form.get("subscription").cloned().unwrap_or_default();
    if !owned_by(&state, &id, &account.id) {
        return (StatusCode::NOT_FOUND, "no such subscription of yours").into_response();
    }
    let command = eventgate_raft_store::Command::EnableSubscription { id };
    let notice = match state.control().write(command).await {
        Ok(eventgate_raft_store::Response::Count(1)) => {
            "Re-enabled: deliveries go on from where they stopped.".to_owned()
        }
        Ok(_) => "That subscription is not disabled.".to_owned(),
        Err(e) => format!("Not re-enabled: {e}"),
    };
    page(&state, &headers, Some(notice))
}

/// A form posted by the signed-in developer, CSRF-checked: their account and its fields; or
/// the answer (to the sign-in page, or 403).
fn signed_form(
    state: &AppState,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<
    (
        eventgate_raft_store::governance::Account,
        HashMap<String, String>,
    ),
    Box<Response>,
> {
    let form: HashMap<String, String> = form_urlencoded::parse(body)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    let Some((session, account)) = signed_in(state, headers) else {
        return Err(Box::new(
            Redirect::to(&format!("{}/login", state.portal().path)).into_response(),
        ));
    };
    if !session_form_ok(&session, &form) {
        return Err(Box::new(
            (
                StatusCode::FORBIDDEN,
                "the form did not come from this portal (CSRF check); reload it",
            )
                .into_response(),
        ));
    }
    Ok((account, form))
}

/// Whether subscription `id` was made by an application of account `account`.
fn owned_by(state: &AppState, id: &str, account: &str) -> bool {
    state.control().reader().read(|s| {
        let g = &s.governance;
        g.websub_applications.get(id).is_some_and(|(app, _)| {
            g.applications
                .get(app)
                .is_some_and(|a| a.owner.as_deref() == Some(account))
        })
    })
}

/// `POST {portal}/webhooks/redrive`: subscription, partition, offset.
pub async fn redrive(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let (account, form) = match signed_form(&state, &headers, &body) {
        Ok(signed) => signed,
        Err(answer) => return *answer,
    };
    let id = form.get("subscription").cloned().unwrap_or_default();
    let (Some(partition), Some(offset)) = (
        form.get("partition").and_then(|p| p.parse::<u32>().ok()),
        form.get("offset").and_then(|o| o.parse::<u64>().ok()),
    ) else {
        return page(&state, &headers, Some("Which dead letter?".to_owned()));
    };
    if !owned_by(&state, &id, &account.id) {
        return (StatusCode::NOT_FOUND, "no such subscription of yours").into_response();
    }
    let notice = match crate::http::admin::redrive(&state, &id, partition, offset).await {
        Ok(()) => format!("Delivered {partition}/{offset} again: the callback took it."),
        Err(e) => format!("Not delivered: {}", e.detail),
    };
    page(&state, &headers, Some(notice))
}
