//! Credentials: API keys (random, shown once, stored as their SHA-256) and JWTs (HS256, RS256,
//! ES256; issuer, audience, `exp`/`nbf` with leeway; keys from a secret, a PEM file or a JWKS
//! file or URL, reloaded periodically and when a token names an unknown `kid`).

use std::sync::{Arc, RwLock};
use std::time::Duration;

use base64::Engine;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use rand::RngCore;
use sha2::Digest;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::config::governance::JwtSettings;

/// Prefix of every API key this gateway issues.
pub const KEY_PREFIX: &str = "egk_";

/// A new API key and its SHA-256 (hex): the key is shown once, the hash is stored.
pub fn generate_key() -> (String, String) {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    let key = format!(
        "{KEY_PREFIX}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    );
    let hash = sha256_hex(&key);
    (key, hash)
}

/// Lowercase hex SHA-256 of `text`.
pub fn sha256_hex(text: &str) -> String {
    hex::encode(sha2::Sha256::digest(text.as_bytes()))
}

/// What a verified JWT says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwtClaims {
    /// The application the token names.
    pub app: String,
    /// `exp`, in unix milliseconds.
    pub expires_at_ms: Option<u64>,
}

/// Why a JWT was refused. Shown to the client (it holds no secret).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct JwtError(pub String);

struct VerifyKey {
    kid: Option<String>,
    algorithm: Algorithm,
    key: DecodingKey,
}

/// Verifies JWTs against the configured keys.
pub struct JwtVerifier {
    settings: JwtSettings,
    keys: RwLock<Arc<Vec<VerifyKey>>>,
    /// Last reload, to bound reloads triggered by unknown `kid`s.
    last_reload: tokio::sync::Mutex<Option<Instant>>,
    http: reqwest::Client,
}

impl std::fmt::Debug for JwtVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtVerifier")
            .field("issuer", &self.settings.issuer)
            .field("audience", &self.settings.audience)
            .field("algorithms", &self.settings.algorithms)
            .finish_non_exhaustive()
    }
}

fn algorithm(name: &str) -> Option<Algorithm> {
    match name {
        "HS256" => Some(Algorithm::HS256),
        "RS256" => Some(Algorithm::RS256),
        "ES256" => Some(Algorithm::ES256),
        _ => None,
    }
}

impl JwtVerifier {
    /// Loads the keys (reading the files, fetching the JWKS URL).
    pub async fn load(settings: JwtSettings) -> Result<Arc<Self>, String> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| e.to_string())?;
        let verifier = Arc::new(Self {
            settings,
            keys: RwLock::new(Arc::new(Vec::new())),
            last_reload: tokio::sync::Mutex::new(None),
            http,
        });
        let keys = verifier.read_keys().await?;
        *verifier.keys.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(keys);
        Ok(verifier)
    }

    fn algorithms(&self) -> Vec<Algorithm> {
        self.settings
            .algorithms
            .iter()
            .filter_map(|a| algorithm(a))
            .collect()
    }

    async fn read_keys(&self) -> Result<Vec<VerifyKey>, String> {
        let s = &self.settings;
        if let Some(secret) = &s.secret {
            return Ok(vec![VerifyKey {
                kid: None,
                algorithm: Algorithm::HS256,
                key: DecodingKey::from_secret(secret.as_bytes()),
            }]);
        }
        if let Some(path) = &s.public_key_file {
            let pem = tokio::fs::read(path)
                .await
                .map_err(|e| format!("auth.jwt.public_key_file {}: {e}", path.display()))?;
            let mut keys = Vec::new();
            for alg in self.algorithms() {
                let key = match alg {
                    Algorithm::RS256 => DecodingKey::from_rsa_pem(&pem),
                    Algorithm::ES256 => DecodingKey::from_ec_pem(&pem),
                    _ => continue,
                };
                if let Ok(key) = key {
                    keys.push(VerifyKey {
                        kid: None,
                        algorithm: alg,
                        key,
                    });
                }
            }
            if keys.is_empty() {
                return Err(format!(
                    "auth.jwt.public_key_file {}: not a PEM public key for {}",
                    path.display(),
                    s.algorithms.join(", ")
                ));
            }
            return Ok(keys);
        }
        let text = if let Some(path) = &s.jwks_file {
            tokio::fs::read_to_string(path)
                .await
                .map_err(|e| format!("auth.jwt.jwks_file {}: {e}", path.display()))?
        } else if let Some(url) = &s.jwks_url {
            let response = self
                .http
                .get(url)
                .send()
                .await
                .and_then(reqwest::Response::error_for_status)
                .map_err(|e| format!("auth.jwt.jwks_url {url}: {e}"))?;
            response
                .text()
                .await
                .map_err(|e| format!("auth.jwt.jwks_url {url}: {e}"))?
        } else {
            return Err("auth.jwt: no key source".to_owned());
        };
        let set: JwkSet =
            serde_json::from_str(&text).map_err(|e| format!("auth.jwt: not a JWK set: {e}"))?;
        let allowed = self.algorithms();
        let mut keys = Vec::new();
        for jwk in &set.keys {
            let Ok(key) = DecodingKey::from_jwk(jwk) else {
                continue;
            };
            let alg = jwk
                .common
                .key_algorithm
                .and_then(|a| algorithm(&format!("{a:?}")));
            let candidates: Vec<Algorithm> = match alg {
                Some(a) => vec![a],
                None => allowed.clone(),
            };
            for algorithm in candidates.into_iter().filter(|a| allowed.contains(a)) {
                keys.push(VerifyKey {
                    kid: jwk.common.key_id.clone(),
                    algorithm,
                    key: key.clone(),
                });
            }
        }
        if keys.is_empty() {
            return Err("auth.jwt: the JWK set holds no usable key".to_owned());
        }
        Ok(keys)
    }

    /// Reloads the keys now (for key sets), at most once per second.
    async fn reload(&self) {
        if self.settings.jwks_file.is_none() && self.settings.jwks_url.is_none() {
            return;
        }
        let mut last = self.last_reload.lock().await;
        if last.is_some_and(|t| t.elapsed() < Duration::from_secs(1)) {
            return;
        }
        *last = Some(Instant::now());
        match self.read_keys().await {
            Ok(keys) => {
                *self.keys.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(keys);
            }
            Err(e) => tracing::warn!(error = %e, "JWK set reload failed; keeping the keys held"),
        }
    }

    /// Reloads a key set every `jwks_refresh` until `shutdown`.
    pub fn spawn_refresh(self: &Arc<Self>, shutdown: CancellationToken) {
        if self.settings.jwks_file.is_none() && self.settings.jwks_url.is_none() {
            return;
        }
        let this = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(this.settings.jwks_refresh);
            tick.tick().await;
            loop {
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    _ = tick.tick() => this.reload().await,
                }
            }
        });
    }

    /// Verifies `token`: signature, algorithm, `iss`, `aud`, `exp` (required) and `nbf` with
    /// leeway, and names the application.
    pub async fn verify(&self, token: &str) -> Result<JwtClaims, JwtError> {
        let header =
            jsonwebtoken::decode_header(token).map_err(|e| JwtError(format!("not a JWT: {e}")))?;
        if !self.algorithms().contains(&header.alg) {
            return Err(JwtError(format!(
                "algorithm {:?} is not accepted (auth.jwt.algorithms: {})",
                header.alg,
                self.settings.algorithms.join(", ")
            )));
        }
        let mut found = self.pick(&header);
        if found.is_none() && header.kid.is_some() {
            // A key rotated in since the last load.
            self.reload().await;
            found = self.pick(&header);
        }
        let Some((keys, index)) = found else {
            return Err(JwtError(format!(
                "no verification key for kid {:?}",
                header.kid.as_deref().unwrap_or("(none)")
            )));
        };
        let key = &keys[index];
        let mut validation = Validation::new(key.algorithm);
        validation.set_issuer(&self.settings.issuer);
        validation.set_audience(&self.settings.audience);
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        validation.validate_nbf = true;
        validation.leeway = self.settings.leeway.as_secs();
        let data = jsonwebtoken::decode::<serde_json::Map<String, serde_json::Value>>(
            token,
            &key.key,
            &validation,
        )
        .map_err(|e| {
            use jsonwebtoken::errors::ErrorKind;
            JwtError(match e.kind() {
                ErrorKind::ExpiredSignature => "the token has expired".to_owned(),
                ErrorKind::ImmatureSignature => "the token is not valid yet (nbf)".to_owned(),
                ErrorKind::InvalidIssuer => "the token's issuer is not accepted".to_owned(),
                ErrorKind::InvalidAudience => "the token's audience is not accepted".to_owned(),
                ErrorKind::InvalidSignature => "the token's signature does not verify".to_owned(),
                ErrorKind::MissingRequiredClaim(c) => format!("the token has no `{c}` claim"),
                _ => format!("the token is not valid: {e}"),
            })
        })?;
        let claim = &self.settings.application_claim;
        let app = data
            .claims
            .get(claim)
            .and_then(|v| v.as_str())
            .ok_or_else(|| JwtError(format!("the token has no string `{claim}` claim")))?
            .to_owned();
        let expires_at_ms = data
            .claims
            .get("exp")
            .and_then(serde_json::Value::as_u64)
            .map(|s| s.saturating_add(self.settings.leeway.as_secs()) * 1000);
        Ok(JwtClaims { app, expires_at_ms })
    }

    fn pick(&self, header: &jsonwebtoken::Header) -> Option<(Arc<Vec<VerifyKey>>, usize)> {
        let keys = self.keys.read().unwrap_or_else(|p| p.into_inner()).clone();
        let index = keys.iter().position(|k| {
            k.algorithm == header.alg
                && match (&header.kid, &k.kid) {
                    (Some(want), Some(have)) => want == have,
                    (Some(_), None) | (None, _) => true,
                }
        })?;
        Some((keys, index))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_random_and_hash_to_their_stored_form() {
        let (a, hash_a) = generate_key();
        let (b, _) = generate_key();
        assert_ne!(a, b);
        assert!(a.starts_with(KEY_PREFIX));
        assert_eq!(a.len(), KEY_PREFIX.len() + 43);
        assert_eq!(sha256_hex(&a), hash_a);
        assert_eq!(hash_a.len(), 64);
    }
}
