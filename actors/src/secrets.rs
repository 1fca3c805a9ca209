//! WebSub subscribers' secrets at rest: sealed with AES-256-GCM under a key the operator gives
//! every node (`websub.secret_key`), bound to the subscription's id, before they go into the
//! replicated log and state; opened only to sign a delivery.
//!
//! A sealed secret reads `enc:v1:<key id>:<base64 of nonce ‖ ciphertext ‖ tag>`; the key id is
//! the first 8 hex digits of the key's SHA-256, so a node holding the previous keys
//! (`websub.previous_secret_keys`) still opens what an earlier key sealed: rotation is a new
//! current key with the old one kept as previous until every subscription was renewed (or
//! re-created). Without a key, secrets are kept as given (and the node warns at start).

use base64::Engine;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use ring::rand::{SecureRandom, SystemRandom};
use sha2::Digest;

const PREFIX: &str = "enc:v1:";

/// One key: its id and the AEAD key.
struct Key {
    id: String,
    key: LessSafeKey,
}

/// Seals and opens subscribers' secrets. Cheap to share.
pub struct SecretSealer {
    current: Option<Key>,
    previous: Vec<Key>,
    rng: SystemRandom,
}

impl std::fmt::Debug for SecretSealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretSealer")
            .field("current", &self.current.as_ref().map(|k| &k.id))
            .field(
                "previous",
                &self.previous.iter().map(|k| &k.id).collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl Default for SecretSealer {
    /// No key: secrets are kept as given.
    fn default() -> Self {
        Self {
            current: None,
            previous: Vec::new(),
            rng: SystemRandom::new(),
        }
    }
}

fn key_of(bytes: &[u8; 32]) -> Key {
    let id = hex::encode(&sha2::Sha256::digest(bytes)[..4]);
    let key = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, bytes).expect("a 32-byte key"));
    Key { id, key }
}

impl SecretSealer {
    /// A sealer with `current` (sealing and opening) and `previous` keys (opening only).
    pub fn new(current: &[u8; 32], previous: &[[u8; 32]]) -> Self {
        Self {
            current: Some(key_of(current)),
            previous: previous.iter().map(key_of).collect(),
            rng: SystemRandom::new(),
        }
    }

    /// Whether secrets are sealed (a key is configured).
    pub fn seals(&self) -> bool {
        self.current.is_some()
    }

    /// `secret` of subscription `id` as it is stored: sealed under the current key, or as
    /// given without one.
    pub fn seal(&self, id: &str, secret: &str) -> String {
        let Some(key) = &self.current else {
            return secret.to_owned();
        };
        let mut nonce = [0u8; NONCE_LEN];
        self.rng
            .fill(&mut nonce)
            .expect("the system random source works");
        let mut sealed = secret.as_bytes().to_vec();
        key.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(id.as_bytes()),
                &mut sealed,
            )
            .expect("sealing a short secret");
        let mut blob = nonce.to_vec();
        blob.extend(sealed);
        format!(
            "{PREFIX}{}:{}",
            key.id,
            base64::engine::general_purpose::STANDARD_NO_PAD.encode(blob)
        )
    }

    /// The secret of subscription `id` from what is stored: opened when sealed, as it is
    /// otherwise (stored before a key was configured).
    pub fn open(&self, id: &str, stored: &str) -> Result<String, String> {
        let Some(rest) = stored.strip_prefix(PREFIX) else {
            return Ok(stored.to_owned());
        };
        let (key_id, blob) = rest
            .split_once(':')
            .ok_or("a sealed secret without its key id")?;
        let key = self
            .current
            .iter()
            .chain(&self.previous)
            .find(|k| k.id == key_id)
            .ok_or_else(|| {
                format!("the subscription's secret is sealed with key {key_id}, which this node does not hold (websub.secret_key / previous_secret_keys)")
            })?;
        let blob = base64::engine::general_purpose::STANDARD_NO_PAD
            .decode(blob)
            .map_err(|_| "a sealed secret that is not base64")?;
        if blob.len() < NONCE_LEN {
            return Err("a sealed secret too short to hold its nonce".to_owned());
        }
        let (nonce, sealed) = blob.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| "a bad nonce")?;
        let mut buffer = sealed.to_vec();
        let plain = key
            .key
            .open_in_place(nonce, Aad::from(id.as_bytes()), &mut buffer)
            .map_err(|_| "the sealed secret does not open (damaged, or another subscription's)")?;
        String::from_utf8(plain.to_vec())
            .map_err(|_| "a sealed secret that is not UTF-8".to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_sealed_bound_to_their_subscription_and_survive_rotation() {
        let old = SecretSealer::new(&[1; 32], &[]);
        let sealed = old.seal("sub-a", "s3cret");
        assert!(sealed.starts_with("enc:v1:"), "{sealed}");
        assert!(!sealed.contains("s3cret"));
        assert_ne!(
            sealed,
            old.seal("sub-a", "s3cret"),
            "a fresh nonce each time"
        );
        assert_eq!(old.open("sub-a", &sealed).unwrap(), "s3cret");
        assert!(
            old.open("sub-b", &sealed).is_err(),
            "bound to its subscription"
        );

        // Rotated: the new key seals, the old one still opens.
        let rotated = SecretSealer::new(&[2; 32], &[[1; 32]]);
        assert_eq!(rotated.open("sub-a", &sealed).unwrap(), "s3cret");
        let resealed = rotated.seal("sub-a", "s3cret");
        assert!(
            old.open("sub-a", &resealed).is_err(),
            "the old node lacks the new key"
        );

        // Without a key: kept as given; stored plaintext still reads.
        let none = SecretSealer::default();
        assert_eq!(none.seal("sub-a", "plain"), "plain");
        assert_eq!(rotated.open("sub-a", "plain").unwrap(), "plain");
        let mut damaged = sealed.clone();
        damaged.pop();
        assert!(old.open("sub-a", &damaged).is_err());
    }
}
