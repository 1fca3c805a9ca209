//! Verified ingest: the signature a provider must put on what it sends to an API's webhook
//! receiver (`apis.<name>.verify_ingest`) — GitHub's `X-Hub-Signature-256`, Standard Webhooks,
//! or an HMAC-SHA256 of the body in a header of the API's choosing. Comparisons are constant
//! time (the `hmac` crate's `verify_slice`, `subtle` for Standard Webhooks' base64 values). A
//! publish that fails is refused with 401 `invalid-signature` before anything is stored.

use std::time::SystemTime;

use axum::http::HeaderMap;
use base64::Engine;
use eventgate_raft_store::governance::{IngestScheme, IngestSignature};
use hmac::{Hmac, Mac};

type HmacSha256 = Hmac<sha2::Sha256>;

/// What an API's provider secret is sealed under (`websub.secret_key`; bound to the API).
pub fn seal_id(api: &str) -> String {
    format!("api:{api}")
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Result<&'a str, String> {
    headers
        .get(name)
        .ok_or_else(|| format!("the `{name}` header is missing"))?
        .to_str()
        .map_err(|_| format!("the `{name}` header is not text"))
}

fn mac(secret: &[u8]) -> HmacSha256 {
    <HmacSha256 as Mac>::new_from_slice(secret).expect("HMAC takes keys of any length")
}

/// Checks `body` and its `headers` against `signature` at `now`; the error says what is wrong
/// (never what the right signature would be).
pub fn verify(
    signature: &IngestSignature,
    headers: &HeaderMap,
    body: &[u8],
    now: SystemTime,
) -> Result<(), String> {
    match signature.scheme {
        IngestScheme::Github => {
            let value = header(headers, "x-hub-signature-256")?;
            let hex_part = value
                .strip_prefix("sha256=")
                .ok_or("`X-Hub-Signature-256` is `sha256=<hex>`")?;
            let given = hex::decode(hex_part).map_err(|_| "the signature is not hex")?;
            let mut mac = mac(signature.secret.as_bytes());
            mac.update(body);
            mac.verify_slice(&given)
                .map_err(|_| "the signature does not match the body".to_owned())
        }
        IngestScheme::Hmac => {
            let value = header(headers, &signature.header)?;
            let value = value.strip_prefix("sha256=").unwrap_or(value).trim();
            let given = hex::decode(value)
                .or_else(|_| base64::engine::general_purpose::STANDARD.decode(value))
                .map_err(|_| format!("`{}` is neither hex nor base64", signature.header))?;
            let mut mac = mac(signature.secret.as_bytes());
            mac.update(body);
            mac.verify_slice(&given)
                .map_err(|_| "the signature does not match the body".to_owned())
        }
        IngestScheme::StandardWebhooks => {
            let id = header(headers, "webhook-id")?;
            let timestamp: u64 = header(headers, "webhook-timestamp")?
                .trim()
                .parse()
                .map_err(|_| "`webhook-timestamp` is not Unix seconds")?;
            let now_s = now
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs();
            if now_s.abs_diff(timestamp).saturating_mul(1000) > signature.tolerance_ms {
                return Err(format!(
                    "`webhook-timestamp` is {} s from now; at most {} s are accepted",
                    now_s.abs_diff(timestamp),
                    signature.tolerance_ms / 1000
                ));
            }
            let key = eventgate_actors::standard_webhooks::key_of(&signature.secret)?;
            let expected =
                eventgate_actors::standard_webhooks::signature(&key, id, timestamp, body);
            let listed = header(headers, "webhook-signature")?;
            let matched = listed.split_whitespace().any(|candidate| {
                use subtle::ConstantTimeEq;
                candidate.len() == expected.len()
                    && bool::from(candidate.as_bytes().ct_eq(expected.as_bytes()))
            });
            if matched {
                Ok(())
            } else {
                Err("no `webhook-signature` matches the body".to_owned())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn required(scheme: IngestScheme, secret: &str) -> IngestSignature {
        IngestSignature {
            scheme,
            secret: secret.to_owned(),
            header: "x-signature".to_owned(),
            tolerance_ms: 300_000,
        }
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, value.parse().unwrap());
        }
        map
    }

    #[test]
    fn github_signatures_are_checked_against_the_body() {
        // GitHub's documented example: secret "It's a Secret to Everybody", body "Hello, World!".
        let sig = required(IngestScheme::Github, "It's a Secret to Everybody");
        let good = headers(&[(
            "x-hub-signature-256",
            "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17",
        )]);
        let now = SystemTime::now();
        assert_eq!(verify(&sig, &good, b"Hello, World!", now), Ok(()));
        assert!(verify(&sig, &good, b"Hello, World?", now).is_err());
        assert!(verify(&sig, &HeaderMap::new(), b"Hello, World!", now)
            .unwrap_err()
            .contains("missing"));
    }

    #[test]
    fn standard_webhooks_checks_the_timestamp_tolerance() {
        let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let sig = required(IngestScheme::StandardWebhooks, secret);
        let signed = headers(&[
            ("webhook-id", "msg_p5jXN8AQM9LWM0D4loKWxJek"),
            ("webhook-timestamp", "1614265330"),
            (
                "webhook-signature",
                "v1,bogus v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
            ),
        ]);
        let body = br#"{"test": 2432232314}"#;
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_614_265_330 + 60);
        assert_eq!(verify(&sig, &signed, body, at), Ok(()));
        let late = SystemTime::UNIX_EPOCH + Duration::from_secs(1_614_265_330 + 301);
        assert!(verify(&sig, &signed, body, late)
            .unwrap_err()
            .contains("from now"));
        assert!(verify(&sig, &signed, b"{}", at).is_err());
    }

    #[test]
    fn generic_hmac_takes_hex_or_base64() {
        let sig = required(IngestScheme::Hmac, "k");
        let mut m = mac(b"k");
        m.update(b"body");
        let raw = m.finalize().into_bytes();
        let now = SystemTime::now();
        for value in [
            hex::encode(raw),
            format!("sha256={}", hex::encode(raw)),
            base64::engine::general_purpose::STANDARD.encode(raw),
        ] {
            assert_eq!(
                verify(&sig, &headers(&[("x-signature", &value)]), b"body", now),
                Ok(())
            );
        }
        assert!(verify(&sig, &headers(&[("x-signature", "00")]), b"body", now).is_err());
    }
}
