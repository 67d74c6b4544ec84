//! Outgoing HTTP to URLs that are not Slack: callbacks and action hooks. A URL a requester gave
//! (`callback_url`) must not reach loopback, private, link-local or cloud-metadata addresses
//! (SSRF): it is checked when the request is created and again at every delivery, by a DNS
//! resolver that refuses such addresses, so the address connected to is the one that was
//! checked and a DNS rebinding cannot slip through. Redirects are never followed.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// True for addresses a requester-given URL must not reach.
pub fn is_forbidden(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => forbidden_v4(v4),
        IpAddr::V6(v6) => forbidden_v6(v6),
    }
}

fn forbidden_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    a == 0 // "this network", including 0.0.0.0
        || a == 10
        || a == 127
        || (a == 100 && (64..128).contains(&b)) // CGNAT 100.64/10
        || (a == 169 && b == 254) // link-local, cloud metadata 169.254.169.254
        || (a == 172 && (16..32).contains(&b))
        || (a == 192 && b == 168)
        || (a == 192 && b == 0 && c == 0) // IETF protocol assignments
        || (a == 198 && (18..20).contains(&b)) // benchmarking
        || a >= 224 // multicast, reserved, broadcast
}

fn forbidden_v6(ip: Ipv6Addr) -> bool {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return forbidden_v4(v4);
    }
    let s = ip.segments();
    // IPv4-compatible (::a.b.c.d, deprecated) and NAT64 (64:ff9b::/96) embed an IPv4 address.
    let embedded = Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
    if s[..6] == [0; 6] || s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return ip.is_unspecified() || ip.is_loopback() || forbidden_v4(embedded);
    }
    if s[0] == 0x2002 {
        // 6to4 carries its IPv4 address in the second and third segments.
        let v4 = Ipv4Addr::new((s[1] >> 8) as u8, s[1] as u8, (s[2] >> 8) as u8, s[2] as u8);
        return forbidden_v4(v4);
    }
    (s[0] & 0xfe00) == 0xfc00 // unique local fc00::/7 (AWS metadata fd00:ec2::254)
        || (s[0] & 0xffc0) == 0xfe80 // link-local
        || (s[0] & 0xffc0) == 0xfec0 // site-local (deprecated)
        || (s[0] & 0xff00) == 0xff00 // multicast
        || (s[0] == 0x2001 && s[1] == 0) // Teredo hides an IPv4 address
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    #[error("{host} resolves to {addr}, a loopback, private, link-local or metadata address")]
    Forbidden { host: String, addr: IpAddr },
    #[error("the URL has no host")]
    NoHost,
}

/// Checks a requester-given URL now. A host that does not resolve passes: delivery checks again
/// and records the failure, and a DNS hiccup should not refuse a request.
pub async fn check_url(url: &reqwest::Url) -> Result<(), TargetError> {
    let host = match literal_host(url)? {
        (host, Some(ip)) => return check_ip(&host, ip),
        (host, None) => host,
    };
    let lookup = tokio::time::timeout(
        Duration::from_secs(3),
        tokio::net::lookup_host((host.as_str(), 0)),
    )
    .await;
    if let Ok(Ok(addrs)) = lookup {
        for a in addrs {
            check_ip(&host, a.ip())?;
        }
    }
    Ok(())
}

/// The URL's host, and its address when the host is an IP literal.
fn literal_host(url: &reqwest::Url) -> Result<(String, Option<IpAddr>), TargetError> {
    let host = url.host_str().ok_or(TargetError::NoHost)?;
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    Ok((host.to_owned(), bare.parse().ok()))
}

fn check_ip(host: &str, ip: IpAddr) -> Result<(), TargetError> {
    if is_forbidden(ip) {
        Err(TargetError::Forbidden {
            host: host.to_owned(),
            addr: ip,
        })
    } else {
        Ok(())
    }
}

/// Resolves like the system does, then refuses the whole name if any address is forbidden
/// (a name that mixes public and private addresses is an attack or a mistake).
struct GuardedResolver;

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            for a in &addrs {
                check_ip(&host, a.ip())?;
            }
            let addrs: Addrs = Box::new(addrs.into_iter());
            Ok(addrs)
        })
    }
}

/// Why an outgoing call failed, in words safe to store and show (no URL, no headers).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    #[error("callback_url_not_allowed: {0}")]
    NotAllowed(TargetError),
    #[error("HTTP {0}")]
    Status(u16),
    #[error("{0}")]
    Failed(String),
}

impl SendError {
    /// Whether trying again could help.
    pub fn is_permanent(&self) -> bool {
        matches!(self, SendError::NotAllowed(_))
    }
}

/// Two clients: one that guards requester-given URLs, one for the operator's own configured
/// targets (an internal Jenkins is a normal thing to call).
#[derive(Clone)]
pub struct Outbound {
    guarded: reqwest::Client,
    open: reqwest::Client,
    allow_private: bool,
}

pub struct OutgoingRequest {
    pub method: reqwest::Method,
    pub url: reqwest::Url,
    pub headers: Vec<(String, String)>,
    pub body: Option<String>,
    /// The URL came from a requester: apply the SSRF guard.
    pub guarded: bool,
}

impl Outbound {
    pub fn new(timeout: Duration, allow_private: bool) -> reqwest::Result<Self> {
        let base = || {
            reqwest::Client::builder()
                .timeout(timeout)
                .connect_timeout(timeout.min(Duration::from_secs(5)))
                .redirect(reqwest::redirect::Policy::none())
                .user_agent(concat!("greenlight/", env!("CARGO_PKG_VERSION")))
        };
        Ok(Self {
            // A proxy would resolve the name itself, out of the guard's sight.
            guarded: base()
                .no_proxy()
                .dns_resolver(Arc::new(GuardedResolver))
                .build()?,
            open: base().build()?,
            allow_private,
        })
    }

    pub fn allow_private(&self) -> bool {
        self.allow_private
    }

    /// Sends once; 2xx is success and gives the status.
    pub async fn send(&self, req: OutgoingRequest) -> Result<u16, SendError> {
        let guard = req.guarded && !self.allow_private;
        if guard {
            // Literal addresses never reach the resolver.
            if let (host, Some(ip)) = literal_host(&req.url).map_err(SendError::NotAllowed)? {
                check_ip(&host, ip).map_err(SendError::NotAllowed)?;
            }
        }
        let client = if guard { &self.guarded } else { &self.open };
        let mut builder = client.request(req.method, req.url);
        for (name, value) in &req.headers {
            let value = reqwest::header::HeaderValue::from_str(value)
                .map_err(|_| SendError::Failed(format!("header {name} has an invalid value")))?;
            builder = builder.header(name.as_str(), value);
        }
        if let Some(body) = req.body {
            builder = builder.body(body);
        }
        let response = builder.send().await.map_err(describe)?;
        let status = response.status().as_u16();
        if response.status().is_success() {
            Ok(status)
        } else {
            Err(SendError::Status(status))
        }
    }
}

/// Describes a failed send without the URL (which may carry a secret from the environment).
fn describe(err: reqwest::Error) -> SendError {
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(&err);
    while let Some(e) = source {
        if let Some(t) = e.downcast_ref::<TargetError>() {
            return SendError::NotAllowed(t.clone());
        }
        source = e.source();
    }
    let what = if err.is_timeout() {
        "timed out"
    } else if err.is_connect() {
        "could not connect"
    } else if err.is_body() || err.is_decode() {
        "broken response"
    } else if err.is_request() {
        "request failed"
    } else {
        "failed"
    };
    SendError::Failed(what.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_and_special_addresses_are_forbidden() {
        for bad in [
            "127.0.0.1",
            "127.1.2.3",
            "0.0.0.0",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "100.127.255.255",
            "224.0.0.1",
            "255.255.255.255",
            "::1",
            "::",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "::127.0.0.1",
            "64:ff9b::a00:1",
            "2002:7f00:1::",
            "fc00::1",
            "fd00:ec2::254",
            "fe80::1",
            "ff02::1",
        ] {
            assert!(
                is_forbidden(bad.parse().unwrap()),
                "{bad} should be forbidden"
            );
        }
        for good in [
            "93.184.216.34",
            "8.8.8.8",
            "100.128.0.1",
            "172.32.0.1",
            "2606:4700::1111",
            "::ffff:8.8.8.8",
        ] {
            assert!(!is_forbidden(good.parse().unwrap()), "{good} should pass");
        }
    }

    /// At delivery the guard sits in the resolver, so what is checked is what is connected to.
    #[tokio::test]
    async fn delivery_refuses_a_guarded_url_that_resolves_to_loopback_without_connecting() {
        crate::install_crypto_provider();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let out = Outbound::new(Duration::from_secs(2), false).unwrap();
        for url in [
            format!("http://localhost:{port}/"),
            format!("http://127.0.0.1:{port}/"),
        ] {
            let res = out
                .send(OutgoingRequest {
                    method: reqwest::Method::POST,
                    url: reqwest::Url::parse(&url).unwrap(),
                    headers: Vec::new(),
                    body: None,
                    guarded: true,
                })
                .await;
            assert!(
                matches!(res, Err(SendError::NotAllowed(_))),
                "{url}: {res:?}"
            );
        }
        let accepted = tokio::time::timeout(Duration::from_millis(100), listener.accept()).await;
        assert!(accepted.is_err(), "nothing connected");
    }

    #[tokio::test]
    async fn a_name_resolving_to_loopback_is_refused() {
        let url = reqwest::Url::parse("http://localhost:9/hook").unwrap();
        assert!(matches!(
            check_url(&url).await,
            Err(TargetError::Forbidden { .. })
        ));
        let url = reqwest::Url::parse("http://[::ffff:7f00:1]/").unwrap();
        assert!(check_url(&url).await.is_err());
    }
}
