//! WebSub (W3C Recommendation) pieces of the hub role that need no network: content
//! signatures, verification-of-intent URLs, subscription ids, `Link` headers and the retry
//! schedule.

use std::time::Duration;

use hmac::{Hmac, Mac};
use rand::Rng;
use sha2::Digest;

/// The HMAC algorithm of `X-Hub-Signature` (`sha1`, `sha256`, `sha384` or `sha512` in the
/// configuration).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SignatureAlgorithm {
    Sha1,
    #[default]
    Sha256,
    Sha384,
    Sha512,
}

impl SignatureAlgorithm {
    /// Parses `sha1`, `sha256`, `sha384` or `sha512`.
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "sha1" => Some(Self::Sha1),
            "sha256" => Some(Self::Sha256),
            "sha384" => Some(Self::Sha384),
            "sha512" => Some(Self::Sha512),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Sha1 => "sha1",
            Self::Sha256 => "sha256",
            Self::Sha384 => "sha384",
            Self::Sha512 => "sha512",
        }
    }

    /// The `X-Hub-Signature` value for `body` under `secret`: `<method>=<hex HMAC>`.
    pub fn sign(self, secret: &[u8], body: &[u8]) -> String {
        fn hex_mac<M: Mac + hmac::digest::KeyInit>(secret: &[u8], body: &[u8]) -> String {
            let mut mac = <M as hmac::digest::KeyInit>::new_from_slice(secret)
                .expect("HMAC takes keys of any length");
            mac.update(body);
            hex::encode(mac.finalize().into_bytes())
        }
        let hex = match self {
            Self::Sha1 => hex_mac::<Hmac<sha1::Sha1>>(secret, body),
            Self::Sha256 => hex_mac::<Hmac<sha2::Sha256>>(secret, body),
            Self::Sha384 => hex_mac::<Hmac<sha2::Sha384>>(secret, body),
            Self::Sha512 => hex_mac::<Hmac<sha2::Sha512>>(secret, body),
        };
        format!("{}={hex}", self.name())
    }
}

/// `callback` with `params` appended to its query (any query it has is kept, as the
/// Recommendation requires).
pub fn with_query(callback: &str, params: &[(&str, &str)]) -> String {
    let (base, fragment) = match callback.split_once('#') {
        Some((b, f)) => (b, Some(f)),
        None => (callback, None),
    };
    let mut serializer = form_urlencoded::Serializer::new(String::new());
    for (k, v) in params {
        serializer.append_pair(k, v);
    }
    let extra = serializer.finish();
    let separator = if base.contains('?') {
        if base.ends_with('?') || base.ends_with('&') {
            ""
        } else {
            "&"
        }
    } else {
        "?"
    };
    let mut url = format!("{base}{separator}{extra}");
    if let Some(f) = fragment {
        url.push('#');
        url.push_str(f);
    }
    url
}

/// The stable id of the subscription of `callback` to `topic` (the pair identifies a WebSub
/// subscription): 32 hex characters of SHA-256.
pub fn subscription_id(topic: &str, callback: &str) -> String {
    let mut hasher = sha2::Sha256::new();
    hasher.update(topic.as_bytes());
    hasher.update([0u8]);
    hasher.update(callback.as_bytes());
    hex::encode(&hasher.finalize()[..16])
}

/// The `Link` header of a content distribution.
pub fn link_header(hub_url: &str, topic_url: &str) -> String {
    format!("<{hub_url}>; rel=\"hub\", <{topic_url}>; rel=\"self\"")
}

/// A random challenge for verification of intent.
pub fn challenge() -> String {
    let bytes: [u8; 24] = rand::rng().random();
    hex::encode(bytes)
}

/// Delay before attempt `attempt + 1` after `attempt` failures: exponential from `base`,
/// capped at `max`, with "equal jitter" (half fixed, half random) so that retries of many
/// subscriptions spread out.
pub fn retry_delay(attempt: u32, base: Duration, max: Duration) -> Duration {
    let exp = base.saturating_mul(1u32 << attempt.saturating_sub(1).min(20));
    let capped = exp.min(max);
    let half = capped / 2;
    let jitter = rand::rng().random_range(0..=half.as_millis() as u64);
    half + Duration::from_millis(jitter)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_match_known_vectors() {
        // RFC 4231 test case 2 (key "Jefe").
        let body = b"what do ya want for nothing?";
        assert_eq!(
            SignatureAlgorithm::Sha256.sign(b"Jefe", body),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        assert_eq!(
            SignatureAlgorithm::Sha1.sign(b"Jefe", body),
            "sha1=effcdf6ae5eb2fa2d27416d5f184df9c259a7c79"
        );
        assert!(SignatureAlgorithm::Sha384.sign(b"Jefe", body).starts_with(
            "sha384=af45d2e376484031617f78d2b58a6b1b9c7ef464f5a01b47e42ec3736322445e"
        ));
        assert!(SignatureAlgorithm::Sha512.sign(b"Jefe", body).starts_with(
            "sha512=164b7a7bfcf819e2e395fbe73b56e0a387bd64222e831fd610270cd7ea250554"
        ));
        assert_eq!(SignatureAlgorithm::parse("md5"), None);
    }

    #[test]
    fn verification_urls_keep_the_callbacks_query() {
        let url = with_query(
            "http://h/cb?x=1#frag",
            &[("hub.mode", "subscribe"), ("hub.topic", "a b&c")],
        );
        assert_eq!(
            url,
            "http://h/cb?x=1&hub.mode=subscribe&hub.topic=a+b%26c#frag"
        );
        assert_eq!(with_query("http://h/cb", &[("a", "1")]), "http://h/cb?a=1");
    }

    #[test]
    fn ids_are_stable_and_distinct() {
        let a = subscription_id("t", "http://h/cb");
        assert_eq!(a, subscription_id("t", "http://h/cb"));
        assert_ne!(a, subscription_id("t2", "http://h/cb"));
        assert_ne!(subscription_id("ab", "c"), subscription_id("a", "bc"));
        assert_eq!(a.len(), 32);
    }

    #[test]
    fn retry_delays_grow_and_stay_capped() {
        let base = Duration::from_millis(100);
        let max = Duration::from_secs(10);
        for attempt in 1..30 {
            let d = retry_delay(attempt, base, max);
            assert!(d <= max, "{attempt}: {d:?}");
        }
        let first = retry_delay(1, base, max);
        assert!(first >= Duration::from_millis(50) && first <= base);
        assert!(retry_delay(6, base, max) >= Duration::from_millis(1600));
    }
}
