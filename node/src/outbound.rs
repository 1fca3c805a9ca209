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

/// IPv4 ranges callbacks may not reach by default: every block of IANA's IPv4 special-purpose
/// address registry that is not globally reachable, and the reserved space (network, prefix
/// length).
const NON_PUBLIC_V4: &[(u32, u8)] = &[
    (0x0000_0000, 8),  // 0.0.0.0/8 "this network"
    (0x0a00_0000, 8),  // 10.0.0.0/8 private
    (0x6440_0000, 10), // 100.64.0.0/10 shared address space (CGNAT)
    (0x7f00_0000, 8),  // 127.0.0.0/8 loopback
    (0xa9fe_0000, 16), // 169.254.0.0/16 link-local (cloud metadata)
    (0xac10_0000, 12), // 172.16.0.0/12 private
    (0xc000_0000, 24), // 192.0.0.0/24 IETF protocol assignments
    (0xc000_0200, 24), // 192.0.2.0/24 TEST-NET-1
    (0xc058_6300, 24), // 192.88.99.0/24 6to4 relay anycast (deprecated)
    (0xc0a8_0000, 16), // 192.168.0.0/16 private
    (0xc612_0000, 15), // 198.18.0.0/15 benchmarking
    (0xc633_6400, 24), // 198.51.100.0/24 TEST-NET-2
    (0xcb00_7100, 24), // 203.0.113.0/24 TEST-NET-3
    (0xe000_0000, 4),  // 224.0.0.0/4 multicast
    (0xf000_0000, 4),  // 240.0.0.0/4 reserved, and 255.255.255.255 broadcast
];

/// IPv6 ranges callbacks may not reach by default (IANA's IPv6 special-purpose registry);
/// the ranges that embed an IPv4 address are checked as that address instead.
const NON_PUBLIC_V6: &[(u128, u8)] = &[
    (0, 128),                     // ::/128 unspecified
    (1, 128),                     // ::1/128 loopback
    (0x0064_ff9b_0001 << 80, 48), // 64:ff9b:1::/48 local-use NAT64
    (0x0100 << 112, 64),          // 100::/64 discard-only
    (0x2001 << 112, 23),          // 2001::/23 IETF protocol assignments (Teredo, …)
    (0x2001_0db8 << 96, 32),      // 2001:db8::/32 documentation
    (0x3fff << 112, 20),          // 3fff::/20 documentation
    (0x5f00 << 112, 16),          // 5f00::/16 segment routing SIDs
    (0xfc00 << 112, 7),           // fc00::/7 unique local
    (0xfe80 << 112, 10),          // fe80::/10 link-local
    (0xfec0 << 112, 10),          // fec0::/10 site-local (deprecated)
    (0xff00 << 112, 8),           // ff00::/8 multicast
];

fn in_v4(addr: u32, network: u32, prefix: u8) -> bool {
    let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
    addr & mask == network & mask
}

fn in_v6(addr: u128, network: u128, prefix: u8) -> bool {
    let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
    addr & mask == network & mask
}

/// The IPv4 address an IPv6 address carries, where it is one that routes to IPv4: mapped
/// (`::ffff:a.b.c.d`), compatible (`::a.b.c.d`, deprecated), NAT64 (`64:ff9b::a.b.c.d`) and
/// 6to4 (`2002:aabb:ccdd::`).
fn embedded_v4(v6: std::net::Ipv6Addr) -> Option<std::net::Ipv4Addr> {
    let bits = u128::from(v6);
    let low32 = std::net::Ipv4Addr::from((bits & 0xffff_ffff) as u32);
    if bits >> 32 == 0xffff || (bits >> 32 == 0 && bits > 1) || bits >> 32 == 0x0064_ff9b << 64 {
        return Some(low32);
    }
    if bits >> 112 == 0x2002 {
        return Some(std::net::Ipv4Addr::from(
            ((bits >> 80) & 0xffff_ffff) as u32,
        ));
    }
    None
}

/// Whether `ip` is an address callbacks may not reach by default.
pub fn is_non_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let addr = u32::from(v4);
            NON_PUBLIC_V4
                .iter()
                .any(|&(net, prefix)| in_v4(addr, net, prefix))
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = embedded_v4(v6) {
                return is_non_public(IpAddr::V4(v4));
            }
            let addr = u128::from(v6);
            NON_PUBLIC_V6
                .iter()
                .any(|&(net, prefix)| in_v6(addr, net, prefix))
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
            // Never through HTTP_PROXY / HTTPS_PROXY / ALL_PROXY: a proxy would resolve the
            // callback's host itself, past the guarded resolver below.
            .no_proxy()
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
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                eventgate_actors::callback::parse_retry_after(v, std::time::SystemTime::now())
            });
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
            retry_after,
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
        // Every special-purpose range, at its first and last address, and the IPv4 ones also
        // embedded in IPv6 (mapped, compatible, NAT64, 6to4).
        let refused = [
            "0.0.0.0",
            "0.255.255.255",
            "10.0.0.0",
            "10.255.255.255",
            "100.64.0.0",
            "100.127.255.255",
            "127.0.0.1",
            "127.255.255.255",
            "169.254.169.254",
            "172.16.0.1",
            "172.31.255.255",
            "192.0.0.1",
            "192.0.0.255",
            "192.0.2.1",
            "192.88.99.1",
            "192.168.1.1",
            "198.18.0.1",
            "198.19.255.255",
            "198.51.100.1",
            "203.0.113.1",
            "224.0.0.1",
            "239.255.255.255",
            "240.0.0.1",
            "255.255.255.255",
            "::",
            "::1",
            "::ffff:127.0.0.1",
            "::127.0.0.1",
            "::10.0.0.1",
            "64:ff9b::7f00:1",
            "64:ff9b::a9fe:a9fe",
            "64:ff9b:1::1",
            "2002:7f00:1::",
            "2002:c0a8:101::1",
            "100::1",
            "2001::1",
            "2001:1ff:ffff::1",
            "2001:db8::1",
            "3fff::1",
            "5f00::1",
            "fc00::1",
            "fdff::1",
            "fe80::1",
            "febf::1",
            "fec0::1",
            "feff::1",
            "ff02::1",
        ];
        for ip in refused {
            assert!(is_non_public(ip.parse().unwrap()), "{ip} should be refused");
        }
        let allowed = [
            "1.1.1.1",
            "8.8.8.8",
            "93.184.216.34",
            "100.63.255.255",
            "100.128.0.1",
            "172.15.255.255",
            "172.32.0.1",
            "192.0.1.1",
            "192.0.3.1",
            "198.17.255.255",
            "198.20.0.1",
            "223.255.255.255",
            "2606:4700::1111",
            "2a00:1450::1",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
            "2002:808:808::1",
            "2001:200::1",
        ];
        for ip in allowed {
            assert!(
                !is_non_public(ip.parse().unwrap()),
                "{ip} should be allowed"
            );
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

    /// Proxy variables in the node's environment do not carry callbacks past the address
    /// guard. Run in a child process of this test binary, so that the variables reach no other
    /// test; the parent holds the "proxy" and checks that nothing connected to it.
    #[test]
    fn environment_proxies_are_not_used_for_callbacks() {
        const CHILD: &str = "EVENTGATE_TEST_PROXY_CHILD";
        const NAME: &str = "outbound::tests::environment_proxies_are_not_used_for_callbacks";
        if std::env::var_os(CHILD).is_none() {
            let proxy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let url = format!("http://{}", proxy.local_addr().unwrap());
            let output = std::process::Command::new(std::env::current_exe().unwrap())
                .args(["--exact", NAME, "--nocapture", "--test-threads=1"])
                .env(CHILD, "1")
                .env("HTTP_PROXY", &url)
                .env("HTTPS_PROXY", &url)
                .env("ALL_PROXY", &url)
                .env("http_proxy", &url)
                .output()
                .unwrap();
            let text = String::from_utf8_lossy(&output.stdout);
            assert!(output.status.success(), "child failed: {text}");
            assert!(text.contains("1 passed"), "the child ran no test: {text}");
            proxy.set_nonblocking(true).unwrap();
            assert!(
                proxy.accept().is_err(),
                "a callback went to the environment's proxy"
            );
            return;
        }
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let client = HttpWebhookClient::new(OutboundSettings {
                allow_private: false,
                connect_timeout: Duration::from_secs(1),
                timeout: Duration::from_secs(2),
                max_response_bytes: 1024,
                per_host_concurrency: 4,
            })
            .unwrap();
            for url in ["http://internal.invalid/cb", "http://127.0.0.1:9/cb"] {
                let err = client
                    .send(CallbackRequest {
                        method: CallbackMethod::Post,
                        url: url.to_owned(),
                        headers: Vec::new(),
                        body: Bytes::new(),
                    })
                    .await
                    .unwrap_err();
                // Refused or unresolvable here: not a timeout waiting for a proxy's answer.
                assert!(!matches!(err, CallbackError::Timeout), "{url}: {err}");
            }
        });
    }
}
