//! `POST /hub`: WebSub subscription requests. Validation is synchronous (400 problem+json naming
//! the `hub.*` field); everything after is asynchronous: `202 Accepted` at once, then
//! verification of intent with the callback (or a denial), and only then a change of state.

use std::collections::HashMap;

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use eventgate_actors::broker::validate_topic_name;
use eventgate_actors::hub::{process_intent, Intent, IntentMode};
use eventgate_raft_store::control::ControlError;
use eventgate_raft_store::governance::Entrypoint;

use super::error::ApiError;
use super::webhook::read_body;
use super::AppState;
use crate::ingress::WebsubAsk;
use crate::policy::{Action, Target};
use crate::refusal::Refusal;

/// Largest `/hub` request body.
const MAX_HUB_BODY: usize = 64 * 1024;
/// Longest callback URL accepted.
const MAX_CALLBACK_LEN: usize = 4096;
/// `hub.secret` must be shorter than this (WebSub).
const MAX_SECRET_BYTES: usize = 200;

fn required<'a>(form: &'a HashMap<String, String>, field: &str) -> Result<&'a str, ApiError> {
    match form.get(field).map(|v| v.trim()) {
        Some(v) if !v.is_empty() => Ok(v),
        _ => Err(ApiError::invalid_field(
            field,
            format!("`{field}` is required"),
        )),
    }
}

/// The topic name named by `hub.topic`: a topic name, or a topic URL of this hub
/// (`…/topics/<name>`).
fn topic_name(given: &str) -> Result<String, ApiError> {
    let name = if given.contains("://") {
        let url = reqwest::Url::parse(given)
            .map_err(|e| ApiError::invalid_field("hub.topic", format!("not a URL: {e}")))?;
        let mut segments: Vec<&str> = url
            .path_segments()
            .map(Iterator::collect)
            .unwrap_or_default();
        let last = segments.pop().unwrap_or_default();
        if segments.last() != Some(&"topics") {
            return Err(ApiError::invalid_field(
                "hub.topic",
                "a topic URL of this hub ends in /topics/<name>",
            ));
        }
        last.to_owned()
    } else {
        given.to_owned()
    };
    validate_topic_name(&name).map_err(|e| ApiError::invalid_field("hub.topic", e.to_string()))?;
    Ok(name)
}

/// The topic named by `hub.topic`, and the API it was named through: a topic URL under an
/// API's base path (`…/shop/topics/<channel>`) names the channel's topic of that API; anything
/// else is read by [`topic_name`].
fn resolve_topic(state: &AppState, given: &str) -> Result<(String, Option<String>), ApiError> {
    if let Ok(url) = reqwest::Url::parse(given) {
        let public_path = reqwest::Url::parse(&state.inner.delivery.public_url)
            .map(|u| u.path().trim_end_matches('/').to_owned())
            .unwrap_or_default();
        let path = url.path();
        let path = path.strip_prefix(public_path.as_str()).unwrap_or(path);
        let found = state.control().reader().read(|s| {
            let (api, rest) = s.governance.api_of_path(path)?;
            let channel = rest.strip_prefix("/topics/").filter(|c| !c.contains('/'));
            Some(match channel.and_then(|c| api.channels.get(c)) {
                Some(topic) => Ok((topic.clone(), Some(api.name.clone()))),
                None => Err(ApiError::invalid_field(
                    "hub.topic",
                    format!(
                        "API `{}`'s topic URLs are {}/topics/<channel>, channels: {}",
                        api.name,
                        api.base_path.as_deref().unwrap_or_default(),
                        api.channels.keys().cloned().collect::<Vec<_>>().join(", ")
                    ),
                )),
            })
        });
        if let Some(found) = found {
            return found;
        }
    }
    topic_name(given).map(|t| (t, None))
}

fn check_callback(state: &AppState, callback: &str) -> Result<(), ApiError> {
    if callback.len() > MAX_CALLBACK_LEN {
        return Err(ApiError::invalid_field(
            "hub.callback",
            format!("longer than {MAX_CALLBACK_LEN} characters"),
        ));
    }
    let url = reqwest::Url::parse(callback)
        .map_err(|e| ApiError::invalid_field("hub.callback", format!("not a URL: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        return Err(ApiError::invalid_field(
            "hub.callback",
            "must be an absolute http or https URL",
        ));
    }
    if !state.inner.websub.outbound.allow_private {
        let host = url.host_str().unwrap_or_default();
        let literal = host.trim_start_matches('[').trim_end_matches(']');
        let refused = literal
            .parse::<std::net::IpAddr>()
            .is_ok_and(crate::outbound::is_non_public)
            || host.eq_ignore_ascii_case("localhost");
        if refused {
            return Err(ApiError::invalid_field(
                "hub.callback",
                "callbacks to loopback, private or link-local addresses are refused (websub.allow_private_callbacks is off)",
            ));
        }
    }
    Ok(())
}

/// A form body, every name and value decoded strictly: bytes that are not UTF-8 once
/// percent-decoded are refused (naming the field), not replaced.
fn parse_form(bytes: &[u8]) -> Result<HashMap<String, String>, ApiError> {
    let decode = |raw: &[u8], field: &str| {
        let plus_as_space: Vec<u8> = raw
            .iter()
            .map(|&b| if b == b'+' { b' ' } else { b })
            .collect();
        let decoded: Vec<u8> = percent_encoding::percent_decode(&plus_as_space).collect();
        String::from_utf8(decoded)
            .map_err(|_| ApiError::invalid_field(field, "not valid UTF-8 once percent-decoded"))
    };
    let mut form = HashMap::new();
    for pair in bytes.split(|&b| b == b'&').filter(|p| !p.is_empty()) {
        let mut parts = pair.splitn(2, |&b| b == b'=');
        let raw_name = parts.next().unwrap_or_default();
        let name = decode(raw_name, "form")?;
        let value = decode(parts.next().unwrap_or_default(), &name)?;
        form.insert(name, value);
    }
    Ok(form)
}

/// The one translation of a [`Refusal`] for `/hub`: what the subscriber may not do (the topic,
/// or it does not exist) is a WebSub denial with this reason at its callback; anything else is
/// answered at once.
fn denial(refusal: Refusal) -> Result<String, ApiError> {
    match refusal {
        Refusal::Forbidden { detail } => Ok(detail),
        missing @ Refusal::TopicNotFound { .. } => Ok(missing.to_string()),
        other => Err(other.into()),
    }
}

/// `hub.lease_seconds`, or the default, within the configured bounds.
fn lease_of(
    form: &HashMap<String, String>,
    settings: &crate::config::WebsubSettings,
) -> Result<u64, ApiError> {
    let requested = match form.get("hub.lease_seconds").map(|v| v.trim()) {
        None | Some("") => None,
        Some(v) => Some(v.parse::<u64>().map_err(|_| {
            ApiError::invalid_field("hub.lease_seconds", "must be a whole number of seconds")
        })?),
    };
    Ok(requested
        .unwrap_or(settings.lease_default.as_secs())
        .clamp(settings.lease_min.as_secs(), settings.lease_max.as_secs()))
}

/// `hub.secret`, if given (shorter than 200 bytes, as WebSub requires).
fn secret_of(form: &HashMap<String, String>) -> Result<Option<String>, ApiError> {
    match form.get("hub.secret") {
        Some(s) if s.len() >= MAX_SECRET_BYTES => Err(ApiError::invalid_field(
            "hub.secret",
            format!("must be shorter than {MAX_SECRET_BYTES} bytes"),
        )),
        Some(s) if !s.is_empty() => Ok(Some(s.clone())),
        _ => Ok(None),
    }
}

/// `hub.signing`: `websub` (the default: `X-Hub-Signature`) or `standard-webhooks`, which
/// needs a `whsec_<base64>` `hub.secret`.
fn signing_of(
    form: &HashMap<String, String>,
    secret: Option<&str>,
) -> Result<eventgate_raft_store::Signing, ApiError> {
    use eventgate_raft_store::Signing;
    match form.get("hub.signing").map(|v| v.trim()) {
        None | Some("" | "websub") => Ok(Signing::WebSub),
        Some("standard-webhooks") => {
            let secret = secret.ok_or_else(|| {
                ApiError::invalid_field(
                    "hub.secret",
                    "Standard Webhooks signing needs a `whsec_<base64>` hub.secret",
                )
            })?;
            eventgate_actors::standard_webhooks::key_of(secret)
                .map_err(|e| ApiError::invalid_field("hub.secret", e))?;
            Ok(Signing::StandardWebhooks)
        }
        Some(other) => Err(ApiError::invalid_field(
            "hub.signing",
            format!("`{other}` is not websub or standard-webhooks"),
        )),
    }
}

/// How long `/hub` waits for a leader (an election under way) before it answers `no-quorum`.
const HUB_LEADER_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

pub async fn hub(
    State(state): State<AppState>,
    axum::extract::RawQuery(query): axum::extract::RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let form_encoded = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    if !form_encoded {
        return Err(ApiError::unsupported_media_type(
            "a hub request is a form: `Content-Type: application/x-www-form-urlencoded`",
        ));
    }
    let bytes = read_body(&headers, body, MAX_HUB_BODY, state.inner.body_timeout).await?;
    let form = parse_form(&bytes)?;

    let mode = required(&form, "hub.mode")?;
    let callback = required(&form, "hub.callback")?.to_owned();
    let topic_as_given = required(&form, "hub.topic")?.to_owned();
    check_callback(&state, &callback)?;
    let (topic, via_api) = resolve_topic(&state, &topic_as_given)?;
    let settings = &state.inner.websub;
    let subscribe = match mode {
        "subscribe" => true,
        "unsubscribe" => false,
        other => {
            return Err(ApiError::invalid_field(
                "hub.mode",
                format!("`{other}` is not subscribe or unsubscribe"),
            ))
        }
    };
    let lease_seconds = lease_of(&form, settings);
    let secret = secret_of(&form);
    // (A bad secret is answered as such, before what signing it would have served.)
    let signing = match &secret {
        Ok(secret) => signing_of(&form, secret.as_deref()),
        Err(_) => Ok(Default::default()),
    };
    let id = eventgate_actors::websub::subscription_id(&topic, &callback);

    // Credentials: `Authorization` / `X-API-Key`, or `access_token` in the hub URL's query.
    // Missing or wrong credentials are answered at once (401); a known client without the
    // right to the topic gets a WebSub denial at its callback. A subscribe that is otherwise
    // valid is also held to its plan's subscription limit and needs its topic.
    let ask = WebsubAsk {
        id: &id,
        subscribe: subscribe && lease_seconds.is_ok() && secret.is_ok() && signing.is_ok(),
    };
    let admitted = state
        .ingress()
        .admit_subscription(
            super::credential(&headers, query.as_deref()).as_ref(),
            Target {
                topic: &topic,
                api: via_api.as_deref(),
            },
            &ask,
        )
        .await;
    let (application, denied) = match admitted {
        Ok(application) => (application, None),
        Err(refusal) => (None, Some(denial(refusal)?)),
    };
    let mode = match denied {
        Some(reason) => IntentMode::Deny { reason },
        None if subscribe => IntentMode::Subscribe {
            lease_seconds: lease_seconds?,
            secret: secret?,
            signing: signing?,
        },
        None => IntentMode::Unsubscribe,
    };
    let (application, key) = match application {
        Some(maker) => (Some((maker.app, maker.api)), maker.key),
        None => (None, None),
    };
    let intent = Intent {
        mode,
        topic,
        topic_as_given,
        callback,
        application,
        key,
    };
    // Subscribing and unsubscribing change the replicated state after verification: without a
    // quorum that cannot happen, so say so now rather than accept and then fail in silence.
    // (A denial needs no write.)
    let writes = !matches!(intent.mode, IntentMode::Deny { .. });
    if writes
        && !state
            .control()
            .quorum_within(HUB_LEADER_WAIT, state.inner.quorum_ack_limit)
            .await
    {
        return Err(ControlError::NoLeader {
            millis: HUB_LEADER_WAIT.as_millis() as u64,
        }
        .into());
    }
    tokio::spawn(process_intent(state.inner.delivery.clone(), intent));
    Ok((
        StatusCode::ACCEPTED,
        "accepted: verification of intent follows\n",
    )
        .into_response())
}

/// `GET /topics/{name}`: WebSub discovery for a topic of this gateway. Answers `Link` headers
/// naming the hub (`rel="hub"`) and the topic URL (`rel="self"`), and a small JSON description.
pub async fn topic(
    State(state): State<AppState>,
    axum::extract::Path(name): axum::extract::Path<String>,
    axum::extract::RawQuery(query): axum::extract::RawQuery,
    via: Option<axum::Extension<super::ViaApi>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    validate_topic_name(&name).map_err(|e| ApiError::invalid_field("topic", e.to_string()))?;
    // Discovery tells what subscribing would: decided as a WebSub subscription to the topic
    // is (a secured API's topic needs its credentials, an API without WebSub refuses).
    state
        .ingress()
        .admit(
            super::credential(&headers, query.as_deref()).as_ref(),
            Target {
                topic: &name,
                api: super::ViaApi::api_of(&via),
            },
            Action::Subscribe,
            Entrypoint::Websub,
        )
        .await?;
    let broker = state.broker();
    if !broker.topic_exists(&name).await? {
        return Err(ApiError::topic_not_found(&name));
    }
    let latest = broker.latest_offsets(&name).await?;
    let ctx = &state.inner.delivery;
    // Under an API's base path the topic URL is the API's, by channel.
    let topic_url = match &via {
        Some(axum::Extension(v)) => format!(
            "{}{}/topics/{}",
            ctx.public_url.trim_end_matches('/'),
            v.base_path,
            v.channel
        ),
        None => ctx.topic_url(&name),
    };
    let hub_url = ctx.hub_url();
    let body = serde_json::json!({
        "topic": name,
        "hub": hub_url,
        "self": topic_url,
        "partitions": latest.len(),
        "latest_offsets": latest
            .iter()
            .map(|(p, o)| (p.to_string(), *o))
            .collect::<std::collections::BTreeMap<String, u64>>(),
    });
    let link = eventgate_actors::websub::link_header(&hub_url, &topic_url);
    Ok((StatusCode::OK, [(header::LINK, link)], axum::Json(body)).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_are_names_or_topic_urls() {
        assert_eq!(topic_name("orders").unwrap(), "orders");
        assert_eq!(
            topic_name("https://gw.example/topics/orders").unwrap(),
            "orders"
        );
        assert!(topic_name("https://gw.example/other/orders").is_err());
        assert!(topic_name("bad name").is_err());
    }

    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// A hub form, whatever its bytes, is read or refused with a field named; never a panic.
        #[test]
        fn arbitrary_forms_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = parse_form(&bytes);
        }

        /// What a form encoder writes reads back as it was (the last of repeated names wins).
        #[test]
        fn forms_round_trip(
            pairs in proptest::collection::vec(("[a-z.]{1,10}", "\\PC{0,20}"), 0..6),
        ) {
            let body = form_urlencoded::Serializer::new(String::new())
                .extend_pairs(&pairs)
                .finish();
            let expected: HashMap<String, String> = pairs.iter().cloned().collect();
            prop_assert_eq!(parse_form(body.as_bytes()).unwrap(), expected);
        }

        /// Topic names and URLs are accepted or refused, never a panic.
        #[test]
        fn arbitrary_topics_never_panic(given in "\\PC{0,80}") {
            let _ = topic_name(&given);
        }
    }
}
