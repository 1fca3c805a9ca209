//! Message schemas: a channel of an API may carry JSON Schemas for its messages' payloads (from
//! an AsyncAPI import or the admin API's `schemas`). When the API validates messages
//! (`validate_messages`), every message published to the channel's topic — through the webhook
//! receiver or a WebSocket, by any route — must match one of them; one that does not is refused
//! with the failing instance paths (400 `invalid-message`, WebSocket close 1007) and nothing is
//! stored.
//!
//! Schemas are AsyncAPI schema objects, a superset of JSON Schema draft 7: draft 7 unless the
//! schema names another with `$schema`. They are compiled once per distinct schema text and
//! kept.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use eventgate_raft_store::governance::{Governance, MessageSpec};
use serde_json::Value;

/// Most violations reported for one message.
const MAX_VIOLATIONS: usize = 10;
/// Compiled schemas kept; the cache starts over beyond this.
const MAX_CACHED: usize = 1024;

/// Where a message fails its schema.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// JSON pointer into the message (`/lumens`; empty for the whole message).
    pub instance_path: String,
    /// JSON pointer into the schema of the keyword that failed.
    pub schema_path: String,
    pub message: String,
}

/// A message refused by its channel's schema.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidMessage {
    pub api: String,
    pub channel: String,
    pub errors: Vec<Violation>,
}

impl std::fmt::Display for InvalidMessage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the message does not match the schema of channel `{}` of API `{}`",
            self.channel, self.api
        )?;
        if let Some(first) = self.errors.first() {
            let at = if first.instance_path.is_empty() {
                "(the whole message)"
            } else {
                first.instance_path.as_str()
            };
            write!(f, ": at {at}: {}", first.message)?;
        }
        Ok(())
    }
}

impl std::error::Error for InvalidMessage {}

impl InvalidMessage {
    /// The violations as clients get them: `[{"instancePath", "schemaPath", "message"}]`.
    pub fn errors_json(&self) -> serde_json::Value {
        self.errors
            .iter()
            .map(|e| {
                serde_json::json!({
                    "instancePath": e.instance_path,
                    "schemaPath": e.schema_path,
                    "message": e.message,
                })
            })
            .collect()
    }
}

/// Compiles a payload schema: draft 7 unless it names its own `$schema`.
pub fn compile(schema: &Value) -> Result<jsonschema::Validator, String> {
    let mut options = jsonschema::options();
    if schema.get("$schema").is_none() {
        options = options.with_draft(jsonschema::Draft::Draft7);
    }
    options.build(schema).map_err(|e| e.to_string())
}

/// Whether a message of this kind is JSON (so its payload schema applies to the bytes).
fn is_json(spec: &MessageSpec) -> bool {
    spec.content_type
        .as_deref()
        .is_none_or(|t| t.contains("json"))
}

/// Checks published messages against their channels' schemas. Cheap to share.
#[derive(Debug, Default)]
pub struct MessageChecker {
    compiled: Mutex<HashMap<String, Arc<jsonschema::Validator>>>,
}

impl MessageChecker {
    fn validator(&self, text: &str) -> Option<Arc<jsonschema::Validator>> {
        let mut cache = self.compiled.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(v) = cache.get(text) {
            return Some(v.clone());
        }
        // Schemas are checked when they are stored; one that no longer compiles (another
        // version of the validator) checks nothing rather than refusing everything.
        let schema: Value = serde_json::from_str(text).ok()?;
        let validator = match compile(&schema) {
            Ok(v) => Arc::new(v),
            Err(e) => {
                tracing::warn!(error = %e, "a stored message schema does not compile; not checked");
                return None;
            }
        };
        if cache.len() >= MAX_CACHED {
            cache.clear();
        }
        cache.insert(text.to_owned(), validator.clone());
        Some(validator)
    }

    /// Checks `payload`, published to `topic`, against the schemas of every validating API
    /// that offers the topic: it must match one message of each such channel.
    pub fn check(
        &self,
        g: &Governance,
        topic: &str,
        payload: &[u8],
    ) -> Result<(), Box<InvalidMessage>> {
        let mut parsed: Option<Result<Value, String>> = None;
        for (api, channel) in g.apis_of_topic(topic) {
            if !api.validate_messages {
                continue;
            }
            let Some(spec) = api.channel_specs.get(channel) else {
                continue;
            };
            let schemas: Vec<&str> = spec
                .messages
                .iter()
                .filter(|m| is_json(m))
                .filter_map(|m| m.payload.as_deref())
                .collect();
            if schemas.is_empty() {
                continue;
            }
            let refuse = |errors: Vec<Violation>| {
                Box::new(InvalidMessage {
                    api: api.name.clone(),
                    channel: channel.to_owned(),
                    errors,
                })
            };
            let instance = match parsed.get_or_insert_with(|| {
                serde_json::from_slice::<Value>(payload).map_err(|e| e.to_string())
            }) {
                Ok(v) => v,
                Err(e) => {
                    return Err(refuse(vec![Violation {
                        instance_path: String::new(),
                        schema_path: String::new(),
                        message: format!("the message is not JSON: {e}"),
                    }]))
                }
            };
            let mut best: Option<Vec<Violation>> = None;
            let mut matched = false;
            for text in schemas {
                let Some(validator) = self.validator(text) else {
                    matched = true;
                    break;
                };
                let errors: Vec<Violation> = validator
                    .iter_errors(instance)
                    .take(MAX_VIOLATIONS)
                    .map(|e| Violation {
                        instance_path: e.instance_path().as_str().to_owned(),
                        schema_path: e.schema_path().as_str().to_owned(),
                        message: e.to_string(),
                    })
                    .collect();
                if errors.is_empty() {
                    matched = true;
                    break;
                }
                // Of several messages, report the one the payload came closest to.
                if best.as_ref().is_none_or(|b| errors.len() < b.len()) {
                    best = Some(errors);
                }
            }
            if !matched {
                return Err(refuse(best.unwrap_or_default()));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draft_7_unless_named_and_errors_carry_the_instance_path() {
        let v = compile(&serde_json::json!({
            "type": "object",
            "properties": { "lumens": { "type": "integer", "minimum": 0 } },
            "required": ["lumens"],
        }))
        .unwrap();
        let bad = serde_json::json!({ "lumens": -3 });
        let errors: Vec<String> = v
            .iter_errors(&bad)
            .map(|e| e.instance_path().as_str().to_owned())
            .collect();
        assert_eq!(errors, vec!["/lumens".to_owned()]);
        assert!(compile(&serde_json::json!({ "type": "nope" })).is_err());
    }
}
