//! OAuth2 client credentials (RFC 6749 §4.4): applications authenticate with their id and a
//! client secret at `/oauth2/token` and get a short-lived JWT access token signed by the
//! cluster's signing key (ES256).
//!
//! The signing key lives in the replicated state ([`SigningKey`]), its private half sealed under
//! the cluster's secret key (`websub.secret_key`, AES-256-GCM; kept as given when none is set),
//! so every node signs with the same key and every node verifies every token locally, with the
//! public half, on every entrypoint. A key older than `auth.oauth2.key_rotation` is replaced by
//! the first node that issues a token after that (a compare-and-set on the current key, so two
//! nodes rotating at once make one key); the previous key keeps verifying until the tokens it
//! signed have expired, and is published at `/.well-known/jwks.json` until then.
//!
//! A token names the application (`sub`, `client_id`), the client secret it was issued on
//! (`egw_sid`: revoking that secret ends it), and optionally a `scope` of API names it is limited
//! to. It stays subject to the application's live rights: disabling the application or ending
//! its access to an API ends every stream the token opened.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use eventgate_actors::secrets::SecretSealer;
use eventgate_raft_store::clock::now_ms;
use eventgate_raft_store::governance::{Governance, SigningKey};
use eventgate_raft_store::{Command, Response as Applied};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use rand::RngCore;
use ring::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
use serde::{Deserialize, Serialize};

use crate::config::governance::OAuth2Settings;

/// Prefix of every client secret this gateway issues.
pub const SECRET_PREFIX: &str = "egcs_";

/// A new client secret and its SHA-256 (hex): the secret is shown once, the hash is stored.
pub fn generate_secret() -> (String, String) {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    let secret = format!("{SECRET_PREFIX}{}", URL_SAFE_NO_PAD.encode(bytes));
    let hash = crate::auth::sha256_hex(&secret);
    (secret, hash)
}

/// The claims of an access token.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AccessClaims {
    pub iss: String,
    /// The application.
    pub sub: String,
    pub client_id: String,
    pub iat: u64,
    pub exp: u64,
    pub jti: String,
    /// The client secret it was issued on. A claim of our own name: it also tells this
    /// gateway's tokens from an identity provider's.
    #[serde(rename = "egw_sid")]
    pub sid: String,
    /// API names, space-separated; absent: every API the application has access to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
}

impl AccessClaims {
    /// The APIs the token is limited to, if it is.
    pub fn scopes(&self) -> Option<Vec<String>> {
        self.scope
            .as_ref()
            .map(|s| s.split_whitespace().map(str::to_owned).collect())
    }
}

/// The `typ` of the access tokens this gateway issues (RFC 9068).
pub const TOKEN_TYPE: &str = "at+jwt";

/// How long after it was issued a token whose key this node does not know yet is worth
/// waiting for: the key was made by another node and its write is still on its way here.
const FRESH_FOR_SECS: u64 = 60;

/// Whether `token` is signed by one of the cluster's keys (its header names one of them).
pub fn is_cluster_token(g: &Governance, token: &str) -> bool {
    jsonwebtoken::decode_header(token)
        .ok()
        .and_then(|h| h.kid)
        .is_some_and(|kid| g.signing_keys.contains_key(&kid))
}

/// The key id of a token that looks like a fresh access token of this gateway (its type, a
/// `kid`, our `egw_sid` claim, issued within the last minute), read without verifying
/// anything: a node that has not applied the key's rotation yet waits for it instead of
/// refusing a valid token. An identity provider's tokens (`at+jwt` too, perhaps) lack the
/// claim and are never waited for. (Not `iss`: nodes without a shared `http.public_url` or
/// `auth.oauth2.issuer` name themselves differently.)
pub fn fresh_kid(token: &str) -> Option<String> {
    let header = jsonwebtoken::decode_header(token).ok()?;
    if header.typ.as_deref() != Some(TOKEN_TYPE) {
        return None;
    }
    let payload = token.split('.').nth(1)?;
    let claims: serde_json::Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).ok()?).ok()?;
    claims.get("egw_sid")?.as_str()?;
    let iat = claims.get("iat")?.as_u64()?;
    let now = now_ms() / 1000;
    (iat <= now + 5 && now.saturating_sub(iat) <= FRESH_FOR_SECS).then_some(header.kid?)
}

/// Public keys by `kid`, decoded once.
#[derive(Default)]
pub struct VerifyKeys {
    keys: RwLock<HashMap<String, Arc<DecodingKey>>>,
}

impl std::fmt::Debug for VerifyKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("VerifyKeys")
    }
}

impl VerifyKeys {
    fn get(&self, key: &SigningKey) -> Result<Arc<DecodingKey>, String> {
        if let Some(k) = self
            .keys
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key.kid)
        {
            return Ok(k.clone());
        }
        let decoded = Arc::new(
            DecodingKey::from_ec_components(&key.x, &key.y)
                .map_err(|e| format!("signing key {}: {e}", key.kid))?,
        );
        let mut keys = self.keys.write().unwrap_or_else(|p| p.into_inner());
        if keys.len() > 64 {
            keys.clear();
        }
        keys.insert(key.kid.clone(), decoded.clone());
        Ok(decoded)
    }

    /// Verifies an access token of the cluster against the keys in `g`: signature (ES256, the
    /// key its header names, still verifying), `exp`. Errors are shown to the client.
    pub fn verify(&self, g: &Governance, token: &str) -> Result<AccessClaims, String> {
        let header = jsonwebtoken::decode_header(token).map_err(|e| format!("not a JWT: {e}"))?;
        let kid = header
            .kid
            .ok_or_else(|| "the token names no signing key".to_owned())?;
        let key = g
            .signing_keys
            .get(&kid)
            .ok_or_else(|| format!("no signing key `{kid}` (expired or never ours)"))?;
        if key.verify_until_ms.is_some_and(|t| t <= now_ms()) {
            return Err(format!("signing key `{kid}` no longer verifies"));
        }
        let decoding = self.get(key)?;
        let mut validation = Validation::new(Algorithm::ES256);
        validation.set_required_spec_claims(&["exp", "sub", "iss"]);
        validation.validate_aud = false;
        validation.leeway = 0;
        let data =
            jsonwebtoken::decode::<AccessClaims>(token, &decoding, &validation).map_err(|e| {
                use jsonwebtoken::errors::ErrorKind;
                match e.kind() {
                    ErrorKind::ExpiredSignature => "the access token has expired".to_owned(),
                    ErrorKind::InvalidSignature => {
                        "the access token's signature does not verify".to_owned()
                    }
                    _ => format!("the access token is not valid: {e}"),
                }
            })?;
        Ok(data.claims)
    }
}

/// Why a token request is refused: an RFC 6749 §5.2 error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenError {
    /// `invalid_request`, `invalid_client`, `invalid_grant`, `unauthorized_client`,
    /// `unsupported_grant_type`, `invalid_scope`; also `slow_down` (rate) and
    /// `temporarily_unavailable` (no quorum to rotate the key).
    pub code: &'static str,
    pub description: String,
}

impl TokenError {
    pub fn new(code: &'static str, description: impl Into<String>) -> Self {
        Self {
            code,
            description: description.into(),
        }
    }
}

/// An issued token.
#[derive(Debug, Clone)]
pub struct Issued {
    pub access_token: String,
    pub expires_in: u64,
    pub scope: Option<String>,
}

/// Issues access tokens. One per node; its request budgets are per node.
pub struct TokenService {
    settings: OAuth2Settings,
    issuer: String,
    sealer: Arc<SecretSealer>,
    /// The opened signing key, by kid.
    signer: Mutex<Option<(String, Arc<EncodingKey>)>>,
    /// Requests per client address and per client id in the current window.
    requests: crate::rate::LocalWindows,
}

impl std::fmt::Debug for TokenService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenService")
            .field("issuer", &self.issuer)
            .finish_non_exhaustive()
    }
}

/// Seals a new P-256 key pair under `sealer`, bound to its kid.
fn new_signing_key(sealer: &SecretSealer, at_ms: u64) -> Result<SigningKey, String> {
    let rng = ring::rand::SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
        .map_err(|_| "could not generate a P-256 key".to_owned())?;
    let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
        .map_err(|_| "could not read the generated key".to_owned())?;
    // Uncompressed point: 0x04 ‖ x ‖ y.
    let point = pair.public_key().as_ref();
    let (x, y) = (&point[1..33], &point[33..65]);
    let mut id = [0u8; 8];
    rand::rng().fill_bytes(&mut id);
    let kid = hex::encode(id);
    let encoded = STANDARD.encode(pkcs8.as_ref());
    Ok(SigningKey {
        private_pkcs8: sealer.seal(&kid, &encoded),
        kid,
        x: URL_SAFE_NO_PAD.encode(x),
        y: URL_SAFE_NO_PAD.encode(y),
        created_at_ms: at_ms,
        retired_at_ms: None,
        verify_until_ms: None,
    })
}

impl TokenService {
    pub fn new(settings: OAuth2Settings, public_url: &str, sealer: Arc<SecretSealer>) -> Self {
        let issuer = settings
            .issuer
            .clone()
            .unwrap_or_else(|| public_url.trim_end_matches('/').to_owned());
        Self {
            settings,
            issuer,
            sealer,
            signer: Mutex::new(None),
            requests: crate::rate::LocalWindows::default(),
        }
    }

    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    pub fn settings(&self) -> &OAuth2Settings {
        &self.settings
    }

    /// Counts a token request of client id `client`: false when its window's budget
    /// (`auth.oauth2.token_requests`) is spent.
    pub fn allow(&self, client: &str) -> bool {
        self.count(
            &format!("client:{client}"),
            self.settings.token_requests.count,
        )
    }

    /// Counts a token request from `address` (`auth.oauth2.token_requests_per_address`).
    pub fn allow_address(&self, address: &str) -> bool {
        let limit = self.settings.token_requests_per_address;
        limit == 0 || self.count(&format!("address:{address}"), limit)
    }

    fn count(&self, key: &str, count: u64) -> bool {
        self.requests
            .allow(key, count, self.settings.token_requests.window_ms)
    }

    /// Seconds until the rate window of token requests ends.
    pub fn retry_after(&self) -> u64 {
        let window_ms = self.settings.token_requests.window_ms.max(1);
        (window_ms - now_ms() % window_ms).div_ceil(1000).max(1)
    }

    /// Authenticates a client by its id and secret, and checks the requested scope against the
    /// application's access: the claims of the token to issue.
    pub fn authenticate(
        &self,
        g: &Governance,
        client_id: &str,
        secret: &str,
        scope: Option<&str>,
    ) -> Result<AccessClaims, TokenError> {
        let invalid_client = || TokenError::new("invalid_client", "unknown client or wrong secret");
        let hash = crate::auth::sha256_hex(secret);
        let stored = g.client_secret_by_hash(&hash).ok_or_else(invalid_client)?;
        let now = now_ms();
        if stored.app != client_id || !stored.usable(now) {
            return Err(invalid_client());
        }
        match g.applications.get(client_id) {
            Some(app) if !app.disabled => {}
            _ => {
                return Err(TokenError::new(
                    "unauthorized_client",
                    format!("application `{client_id}` is disabled"),
                ))
            }
        }
        self.claims_for(g, client_id, &stored.id, scope)
    }

    /// The claims of a token of application `client_id` on its client secret `secret_id`
    /// (already authenticated: the portal issues for a signed-in owner), with the requested
    /// scope checked against the application's approved access.
    pub fn claims_for(
        &self,
        g: &Governance,
        client_id: &str,
        secret_id: &str,
        scope: Option<&str>,
    ) -> Result<AccessClaims, TokenError> {
        let now = now_ms();
        let scope = match scope.map(str::trim).filter(|s| !s.is_empty()) {
            None => None,
            Some(requested) => {
                for api in requested.split_whitespace() {
                    let approved = g
                        .access
                        .get(&(client_id.to_owned(), api.to_owned()))
                        .is_some_and(|a| {
                            a.state == eventgate_raft_store::governance::AccessState::Approved
                        });
                    if !approved {
                        return Err(TokenError::new(
                            "invalid_scope",
                            format!(
                                "`{api}` is not an API application `{client_id}` has approved access to"
                            ),
                        ));
                    }
                }
                Some(requested.split_whitespace().collect::<Vec<_>>().join(" "))
            }
        };
        let iat = now / 1000;
        let mut jti = [0u8; 16];
        rand::rng().fill_bytes(&mut jti);
        Ok(AccessClaims {
            iss: self.issuer.clone(),
            sub: client_id.to_owned(),
            client_id: client_id.to_owned(),
            iat,
            exp: iat + self.settings.token_ttl.as_secs(),
            jti: URL_SAFE_NO_PAD.encode(jti),
            sid: secret_id.to_owned(),
            scope,
        })
    }

    /// Signs `claims` with the cluster's current key, replacing the key first when there is
    /// none or it is older than `key_rotation`.
    pub async fn sign(
        &self,
        control: &eventgate_raft_store::control::ControlPlane,
        claims: &AccessClaims,
    ) -> Result<Issued, TokenError> {
        let key = self.current_key(control, false).await?;
        let (kid, encoding) = self.open(&key)?;
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(kid);
        header.typ = Some(TOKEN_TYPE.to_owned());
        let access_token = jsonwebtoken::encode(&header, claims, &encoding).map_err(|e| {
            TokenError::new(
                "server_error",
                format!("the token could not be signed: {e}"),
            )
        })?;
        Ok(Issued {
            access_token,
            expires_in: claims.exp.saturating_sub(claims.iat),
            scope: claims.scope.clone(),
        })
    }

    /// Replaces the signing key now (admin), answering the new key's id.
    pub async fn rotate(
        &self,
        control: &eventgate_raft_store::control::ControlPlane,
    ) -> Result<String, TokenError> {
        self.current_key(control, true).await.map(|k| k.kid)
    }

    /// The key to sign with: the current one, or a new one when asked, when there is none, or
    /// when it is due. Two nodes rotating at once: one write wins, the other reads its key.
    async fn current_key(
        &self,
        control: &eventgate_raft_store::control::ControlPlane,
        force: bool,
    ) -> Result<SigningKey, TokenError> {
        // A forced rotation that loses the race to another node's tries again on top of it.
        for _ in 0..3 {
            if let Some(key) = self.try_current_key(control, force).await? {
                return Ok(key);
            }
        }
        Err(TokenError::new(
            "temporarily_unavailable",
            "the signing key is being replaced by other nodes; try again",
        ))
    }

    /// One attempt of [`Self::current_key`]; `None`: a forced rotation lost a race.
    async fn try_current_key(
        &self,
        control: &eventgate_raft_store::control::ControlPlane,
        force: bool,
    ) -> Result<Option<SigningKey>, TokenError> {
        let rotation_ms = self.settings.key_rotation.as_millis() as u64;
        let now = now_ms();
        let current = control
            .reader()
            .read(|s| s.governance.current_signing_key().cloned());
        let due = current
            .as_ref()
            .is_none_or(|k| now.saturating_sub(k.created_at_ms) >= rotation_ms);
        if let (Some(key), false, false) = (&current, due, force) {
            return Ok(Some(key.clone()));
        }
        let fresh =
            new_signing_key(&self.sealer, now).map_err(|e| TokenError::new("server_error", e))?;
        let command = Command::RotateSigningKey {
            key: fresh.clone(),
            expected: current.as_ref().map(|k| k.kid.clone()),
            at_ms: now,
            // Tokens live at most token_ttl; a minute more for clocks.
            keep_verifying_ms: self.settings.token_ttl.as_millis() as u64 + 60_000,
        };
        match control.write(command).await {
            Ok(Applied::Applied) => Ok(Some(fresh)),
            // Another node rotated first (its entry is applied here before our refused one).
            Ok(Applied::Refused { .. }) if force => Ok(None),
            Ok(Applied::Refused { .. }) => control
                .reader()
                .read(|s| s.governance.current_signing_key().cloned())
                .map(Some)
                .ok_or_else(|| TokenError::new("server_error", "no signing key")),
            Ok(other) => Err(TokenError::new(
                "server_error",
                format!("the signing key was not replaced: {other:?}"),
            )),
            // Without a quorum, a key still current signs on; none: nothing to sign with.
            Err(e) => match current {
                Some(key) if !force => Ok(Some(key)),
                _ => Err(TokenError::new(
                    "temporarily_unavailable",
                    format!("the signing key could not be replaced: {e}"),
                )),
            },
        }
    }

    fn open(&self, key: &SigningKey) -> Result<(String, Arc<EncodingKey>), TokenError> {
        let mut signer = self.signer.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((kid, encoding)) = signer.as_ref() {
            if *kid == key.kid {
                return Ok((kid.clone(), encoding.clone()));
            }
        }
        let failed = |e: String| {
            tracing::error!(kid = %key.kid, error = %e, "the cluster's signing key cannot be opened (websub.secret_key differs between nodes?)");
            TokenError::new(
                "server_error",
                "the signing key cannot be opened on this node",
            )
        };
        let encoded = self
            .sealer
            .open(&key.kid, &key.private_pkcs8)
            .map_err(failed)?;
        let der = STANDARD
            .decode(encoded.as_bytes())
            .map_err(|e| failed(e.to_string()))?;
        let encoding = Arc::new(EncodingKey::from_ec_der(&der));
        *signer = Some((key.kid.clone(), encoding.clone()));
        Ok((key.kid.clone(), encoding))
    }

    /// The JWK set of every key that still verifies.
    pub fn jwks(g: &Governance) -> serde_json::Value {
        let now = now_ms();
        let keys: Vec<serde_json::Value> = g
            .signing_keys
            .values()
            .filter(|k| k.verify_until_ms.is_none_or(|t| t > now))
            .map(|k| {
                serde_json::json!({
                    "kty": "EC",
                    "crv": "P-256",
                    "alg": "ES256",
                    "use": "sig",
                    "kid": k.kid,
                    "x": k.x,
                    "y": k.y,
                })
            })
            .collect();
        serde_json::json!({ "keys": keys })
    }

    /// The RFC 8414 authorization server metadata.
    pub fn metadata(&self) -> serde_json::Value {
        serde_json::json!({
            "issuer": self.issuer,
            "token_endpoint": format!("{}/oauth2/token", self.issuer),
            "jwks_uri": format!("{}/.well-known/jwks.json", self.issuer),
            "grant_types_supported": ["client_credentials"],
            "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
            "response_types_supported": [],
            "scopes_supported": [],
            "service_documentation": format!("{}/asyncapi.json", self.issuer),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2000))]

        /// Whatever a client presents as a token, reading and verifying it never panics.
        #[test]
        fn arbitrary_tokens_never_panic(token in "[A-Za-z0-9_.=-]{0,200}") {
            let _ = fresh_kid(&token);
            let g = Governance::default();
            let _ = is_cluster_token(&g, &token);
            let _ = VerifyKeys::default().verify(&g, &token);
        }
    }

    #[test]
    fn a_generated_key_signs_what_its_public_half_verifies() {
        let sealer = SecretSealer::new(&[7u8; 32], &[]);
        let key = new_signing_key(&sealer, 1).unwrap();
        assert!(key.private_pkcs8.starts_with("enc:v1:"));
        let der = STANDARD
            .decode(sealer.open(&key.kid, &key.private_pkcs8).unwrap())
            .unwrap();
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(key.kid.clone());
        header.typ = Some(TOKEN_TYPE.to_owned());
        let claims = AccessClaims {
            iss: "http://gw".to_owned(),
            sub: "app".to_owned(),
            client_id: "app".to_owned(),
            iat: now_ms() / 1000,
            exp: now_ms() / 1000 + 60,
            jti: "j".to_owned(),
            sid: "s".to_owned(),
            scope: None,
        };
        let token =
            jsonwebtoken::encode(&header, &claims, &EncodingKey::from_ec_der(&der)).unwrap();
        // Fresh and ours: worth waiting for its key; without our claim (an identity
        // provider's token) it never is.
        assert_eq!(fresh_kid(&token), Some(key.kid.clone()));
        let foreign = jsonwebtoken::encode(
            &header,
            &serde_json::json!({ "iss": "https://idp", "sub": "app", "iat": claims.iat, "exp": claims.exp }),
            &EncodingKey::from_ec_der(&der),
        )
        .unwrap();
        assert_eq!(fresh_kid(&foreign), None);
        let mut g = Governance::default();
        g.signing_keys.insert(key.kid.clone(), key.clone());
        assert!(is_cluster_token(&g, &token));
        let verified = VerifyKeys::default().verify(&g, &token).unwrap();
        assert_eq!(verified.sub, "app");
        // Another key's public half does not verify it.
        let other = new_signing_key(&sealer, 2).unwrap();
        g.signing_keys.get_mut(&key.kid).unwrap().x = other.x;
        assert!(VerifyKeys::default().verify(&g, &token).is_err());
    }
}
