//! The HTTP client for subscribers' callbacks: pooled keep-alive connections, connect and total
//! timeouts, a cap on response bodies, bounded concurrency per callback host, no redirects, and
//! a guard against server-side request forgery: unless `websub.allow_private_callbacks` is on,
//! callbacks whose address is loopback, private, link-local, shared (CGNAT), unspecified or
//! multicast are refused — checked on the resolved addresses at connect time, so a name that
//! resolves (or re-resolves) to such an address is refused too.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use eventgate_actors::callback::{
    CallbackError, CallbackMethod, CallbackRequest, CallbackResponse, WebhookClient,
};
use futures_util::future::BoxFuture;
use tokio::sync::Semaphore;

/// Settings of the callback client.
#[derive(Debug, Clone)]
pub struct OutboundSettings {
    pub allow_private: bool,
    pub connect_timeout: Duration,
    pub timeout: Duration,
    pub max_response_bytes: usize,
    pub per_host_concurrency: usize,
}

/// Whether `ip` is an address callbacks may not reach by default.
pub fn is_non_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || o[0] == 0
                || (o[0] == 100 && (64..128).contains(&o[1]))
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_non_public(IpAddr::V4(v4));
            }
            let first = v6.segments()[0];
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80
        }
    }
}

#[derive(Debug)]
struct GuardedResolver {
    allow_private: bool,
}

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let allow_private = self.allow_private;
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0))
                .await?
                .filter(|a| allow_private || !is_non_public(a.ip()))
                .collect();
            if addrs.is_empty() {
                return Err(format!(
                    "{host} resolves to no public address (websub.allow_private_callbacks is off)"
                )
                .into());
            }
            Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// The callback client.
#[derive(Debug)]
pub struct HttpWebhookClient {
    client: reqwest::Client,
    settings: OutboundSettings,
    per_host: Mutex<HashMap<String, Arc<Semaphore>>>,
}

impl HttpWebhookClient {
    pub fn new(settings: OutboundSettings) -> Result<Self, String> {
        eventgate_raft_store::install_crypto_provider();
        let client = reqwest::Client::builder()
            .connect_timeout(settings.connect_timeout)
            .timeout(settings.timeout)
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_max_idle_per_host(settings.per_host_concurrency)
            .redirect(reqwest::redirect::Policy::none())
            .dns_resolver(Arc::new(GuardedResolver {
                allow_private: settings.allow_private,
            }))
            .user_agent(concat!(
                "eventgate/",
                env!("CARGO_PKG_VERSION"),
                " (WebSub hub)"
            ))
            .build()
            .map_err(|e| e.to_string())?;
        Ok(Self {
            client,
            settings,
            per_host: Mutex::new(HashMap::new()),
        })
    }

    fn host_permits(&self, host: &str) -> Arc<Semaphore> {
        let mut map = self.per_host.lock().unwrap_or_else(|p| p.into_inner());
        map.entry(host.to_owned())
            .or_insert_with(|| Arc::new(Semaphore::new(self.settings.per_host_concurrency)))
            .clone()
    }

    async fn send_checked(
        &self,
        request: CallbackRequest,
    ) -> Result<CallbackResponse, CallbackError> {
        let url = reqwest::Url::parse(&request.url)
            .map_err(|e| CallbackError::Refused(format!("not a URL: {e}")))?;
        let host = url
            .host_str()
            .ok_or_else(|| CallbackError::Refused("no host".to_owned()))?
            .to_owned();
        if !self.settings.allow_private {
            let literal = host.trim_start_matches('[').trim_end_matches(']');
            if let Ok(ip) = literal.parse::<IpAddr>() {
                if is_non_public(ip) {
                    return Err(CallbackError::Refused(format!(
                        "{ip} is not a public address (websub.allow_private_callbacks is off)"
                    )));
                }
            }
        }
        let permits = self.host_permits(&host);
        let _permit = permits
            .acquire_owned()
            .await
            .map_err(|e| CallbackError::Other(e.to_string()))?;
        let mut builder = match request.method {
            CallbackMethod::Get => self.client.get(url),
            CallbackMethod::Post => self.client.post(url).body(request.body),
        };
        for (name, value) in &request.headers {
            builder = builder.header(name.as_str(), value.as_str());
        }
        let mut response = builder.send().await.map_err(classify)?;
        let status = response.status().as_u16();
        let cap = self.settings.max_response_bytes;
        let mut body = BytesMut::new();
        while let Some(chunk) = response.chunk().await.map_err(classify)? {
            if body.len() + chunk.len() > cap {
                return Err(CallbackError::ResponseTooLarge(cap));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(CallbackResponse {
            status,
            body: Bytes::from(body),
        })
    }
}

fn classify(e: reqwest::Error) -> CallbackError {
    if e.is_timeout() {
        return CallbackError::Timeout;
    }
    // The URL may carry the subscriber's tokens and a verification's `hub.challenge`: the
    // error, which is logged and kept in dead letters, goes without it.
    let e = e.without_url();
    let mut text = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    if text.contains("no public address") {
        CallbackError::Refused(text)
    } else if e.is_connect() {
        CallbackError::Connect(text)
    } else {
        CallbackError::Other(text)
    }
}

impl WebhookClient for HttpWebhookClient {
    fn send(
        &self,
        request: CallbackRequest,
    ) -> BoxFuture<'_, Result<CallbackResponse, CallbackError>> {
        Box::pin(self.send_checked(request))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_public_addresses_are_recognised() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "224.0.0.1",
            "::1",
            "fe80::1",
            "fd00::1",
            "::ffff:127.0.0.1",
        ] {
            assert!(is_non_public(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["93.184.216.34", "8.8.8.8", "2606:4700::1111", "100.128.0.1"] {
            assert!(!is_non_public(ip.parse().unwrap()), "{ip}");
        }
    }

    #[tokio::test]
    async fn private_callbacks_are_refused_unless_allowed() {
        let client = HttpWebhookClient::new(OutboundSettings {
            allow_private: false,
            connect_timeout: Duration::from_secs(1),
            timeout: Duration::from_secs(2),
            max_response_bytes: 1024,
            per_host_concurrency: 4,
        })
        .unwrap();
        for url in [
            "http://127.0.0.1:9/cb",
            "http://[::1]:9/cb",
            "http://localhost:9/cb",
        ] {
            let err = client
                .send(CallbackRequest {
                    method: CallbackMethod::Get,
                    url: url.to_owned(),
                    headers: Vec::new(),
                    body: Bytes::new(),
                })
                .await
                .unwrap_err();
            assert!(matches!(err, CallbackError::Refused(_)), "{url}: {err}");
        }
    }
}
