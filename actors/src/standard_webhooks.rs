//! Standard Webhooks signing (<https://www.standardwebhooks.com/>), the scheme webhook
//! delivery services converge on, for subscriptions that choose it at subscribe time:
//! `webhook-id` (stable for a message across retries and failovers), `webhook-timestamp`
//! (Unix seconds of the attempt) and `webhook-signature: v1,<base64 HMAC-SHA256 of
//! "id.timestamp.body">`, several space-separated while a rotated-out secret still signs. The
//! key is the bytes of a `whsec_<base64>` secret.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hmac::{Hmac, Mac};

/// What every Standard Webhooks secret starts with.
pub const SECRET_PREFIX: &str = "whsec_";
/// Key lengths the specification asks for (bytes, once decoded).
const MIN_KEY: usize = 24;
const MAX_KEY: usize = 64;

/// The key bytes of a `whsec_<base64>` secret, or why it is not one.
pub fn key_of(secret: &str) -> Result<Vec<u8>, String> {
    let encoded = secret.strip_prefix(SECRET_PREFIX).ok_or_else(|| {
        format!("a Standard Webhooks secret is `{SECRET_PREFIX}` followed by base64")
    })?;
    let key = STANDARD
        .decode(encoded)
        .map_err(|e| format!("the part after `{SECRET_PREFIX}` is not base64: {e}"))?;
    if !(MIN_KEY..=MAX_KEY).contains(&key.len()) {
        return Err(format!(
            "the key is {} bytes; Standard Webhooks keys are {MIN_KEY} to {MAX_KEY}",
            key.len()
        ));
    }
    Ok(key)
}

/// A new random secret: `whsec_` and 32 random bytes in base64.
pub fn generate_secret() -> String {
    let mut key = [0u8; 32];
    rand::RngCore::fill_bytes(&mut rand::rng(), &mut key);
    format!("{SECRET_PREFIX}{}", STANDARD.encode(key))
}

/// One `v1,<base64>` signature of `body` sent as message `id` at `timestamp`.
pub fn signature(key: &[u8], id: &str, timestamp: u64, body: &[u8]) -> String {
    let mut mac =
        <Hmac<sha2::Sha256> as Mac>::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_checked_and_generated_ones_pass() {
        assert!(key_of("no-prefix").is_err());
        assert!(key_of("whsec_!!!").is_err());
        assert!(key_of(&format!("whsec_{}", STANDARD.encode([1u8; 8]))).is_err());
        assert_eq!(key_of(&generate_secret()).unwrap().len(), 32);
    }

    #[test]
    fn the_signature_is_the_hmac_of_id_timestamp_and_body() {
        // The example of the Standard Webhooks specification's reference libraries.
        let key = key_of("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let body = br#"{"test": 2432232314}"#;
        assert_eq!(
            signature(&key, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }
}
