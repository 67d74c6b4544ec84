//! Outgoing HTTP to URLs that are not Slack: callbacks and action hooks. A URL a requester gave
//! (`callback_url`) must reach only globally reachable addresses (SSRF): it is checked when the
//! request is created and again at every delivery, by a DNS resolver that refuses other
//! addresses, so the address connected to is the one that was checked and a DNS rebinding
//! cannot slip through. Redirects are never followed.
//!
//! Refused: every block of the IANA IPv4 and IPv6 Special-Purpose Address Registries that is not
//! globally reachable (loopback, private, shared, link-local and cloud metadata, documentation,
//! benchmarking, protocol assignments, discard, translation for local use, ...), multicast and
//! reserved space, any IPv6 address outside global unicast `2000::/3`, an IPv4 address hidden in
//! an IPv6 one (mapped, NAT64, 6to4) when that IPv4 address is refused, and the host's own
//! interface addresses whatever their range (a public address of this machine reaches its own
//! admin ports). `[delivery] allow_private_targets` turns the whole guard off.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// An address block: network, prefix length, and its name in the registry.
type Block<A> = (A, u8, &'static str);

/// IPv4 blocks a requester-given URL must not reach: the IANA IPv4 Special-Purpose Address
/// Registry's entries that are not globally reachable, plus multicast and the reserved space.
/// The registry's globally reachable entries (AS112 192.31.196.0/24 and 192.175.48.0/24, AMT
/// 192.52.193.0/24) pass. 192.0.0.0/24 is refused whole, though two anycast addresses in it
/// (192.0.0.9, 192.0.0.10) are globally reachable: no callback lives there.
#[rustfmt::skip]
const FORBIDDEN_V4: &[Block<Ipv4Addr>] = &[
    (Ipv4Addr::new(0, 0, 0, 0), 8, "this network"),
    (Ipv4Addr::new(10, 0, 0, 0), 8, "private use"),
    (Ipv4Addr::new(100, 64, 0, 0), 10, "shared address space (CGNAT)"),
    (Ipv4Addr::new(127, 0, 0, 0), 8, "loopback"),
    (Ipv4Addr::new(169, 254, 0, 0), 16, "link-local, cloud metadata"),
    (Ipv4Addr::new(172, 16, 0, 0), 12, "private use"),
    (Ipv4Addr::new(192, 0, 0, 0), 24, "IETF protocol assignments"),
    (Ipv4Addr::new(192, 0, 2, 0), 24, "documentation (TEST-NET-1)"),
    (Ipv4Addr::new(192, 88, 99, 0), 24, "6to4 relay anycast (deprecated)"),
    (Ipv4Addr::new(192, 168, 0, 0), 16, "private use"),
    (Ipv4Addr::new(198, 18, 0, 0), 15, "benchmarking"),
    (Ipv4Addr::new(198, 51, 100, 0), 24, "documentation (TEST-NET-2)"),
    (Ipv4Addr::new(203, 0, 113, 0), 24, "documentation (TEST-NET-3)"),
    (Ipv4Addr::new(224, 0, 0, 0), 4, "multicast"),
    (Ipv4Addr::new(240, 0, 0, 0), 4, "reserved, limited broadcast"),
];

/// IPv6 blocks refused outright: the IANA IPv6 Special-Purpose Address Registry's entries that
/// are not globally reachable, and deprecated or non-unicast space. `2001::/23` is refused whole,
/// though a few of its sub-blocks (anycast services, ORCHIDv2, AMT, AS112, drone remote ID) are
/// globally reachable: none is a callback target. Blocks outside `2000::/3` are listed for the
/// record; everything there is refused anyway (see `forbidden_v6`).
#[rustfmt::skip]
const FORBIDDEN_V6: &[Block<Ipv6Addr>] = &[
    (Ipv6Addr::new(0, 0, 0, 0, 0, 0, 0, 0), 128, "unspecified"),
    (Ipv6Addr::new(0, 0, 0, 0, 0, 0, 0, 1), 128, "loopback"),
    (Ipv6Addr::new(0, 0, 0, 0, 0, 0, 0, 0), 96, "IPv4-compatible (deprecated)"),
    (Ipv6Addr::new(0, 0, 0, 0, 0xffff, 0, 0, 0), 96, "IPv4-translated"),
    (Ipv6Addr::new(0x64, 0xff9b, 1, 0, 0, 0, 0, 0), 48, "IPv4/IPv6 translation, local use"),
    (Ipv6Addr::new(0x100, 0, 0, 0, 0, 0, 0, 0), 64, "discard-only"),
    (Ipv6Addr::new(0x100, 0, 0, 1, 0, 0, 0, 0), 64, "dummy prefix"),
    (Ipv6Addr::new(0x2001, 0, 0, 0, 0, 0, 0, 0), 23, "IETF protocol assignments (Teredo, benchmarking, ORCHID, ...)"),
    (Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0), 32, "documentation"),
    (Ipv6Addr::new(0x3fff, 0, 0, 0, 0, 0, 0, 0), 20, "documentation"),
    (Ipv6Addr::new(0x5f00, 0, 0, 0, 0, 0, 0, 0), 16, "segment routing (SRv6) SIDs"),
    (Ipv6Addr::new(0xfc00, 0, 0, 0, 0, 0, 0, 0), 7, "unique local (AWS metadata fd00:ec2::254)"),
    (Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0), 10, "link-local"),
    (Ipv6Addr::new(0xfec0, 0, 0, 0, 0, 0, 0, 0), 10, "site-local (deprecated)"),
    (Ipv6Addr::new(0xff00, 0, 0, 0, 0, 0, 0, 0), 8, "multicast"),
];

fn in_v4((net, len, _): &Block<Ipv4Addr>, ip: Ipv4Addr) -> bool {
    let mask = u32::MAX.checked_shl(32 - u32::from(*len)).unwrap_or(0);
    u32::from(ip) & mask == u32::from(*net)
}

fn in_v6((net, len, _): &Block<Ipv6Addr>, ip: Ipv6Addr) -> bool {
    let mask = u128::MAX.checked_shl(128 - u32::from(*len)).unwrap_or(0);
    u128::from(ip) & mask == u128::from(*net)
}

/// True for addresses a requester-given URL must not reach, by range (the host's own addresses
/// are checked apart, see `check_ip`).
pub fn is_forbidden(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => forbidden_v4(v4),
        IpAddr::V6(v6) => forbidden_v6(v6),
    }
}

fn forbidden_v4(ip: Ipv4Addr) -> bool {
    FORBIDDEN_V4.iter().any(|b| in_v4(b, ip))
}

/// The IPv4 address in the last 32 bits.
fn low_v4(ip: Ipv6Addr) -> Ipv4Addr {
    Ipv4Addr::from((u128::from(ip) & 0xffff_ffff) as u32)
}

fn forbidden_v6(ip: Ipv6Addr) -> bool {
    let s = ip.segments();
    // Forms that carry an IPv4 address to a globally reachable host: judge that address.
    if s[..6] == [0, 0, 0, 0, 0, 0xffff] {
        return forbidden_v4(low_v4(ip)); // IPv4-mapped ::ffff:a.b.c.d
    }
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return forbidden_v4(low_v4(ip)); // NAT64 well-known prefix 64:ff9b::/96
    }
    if s[0] == 0x2002 {
        // 6to4 carries its IPv4 address in the second and third segments.
        let v4 = Ipv4Addr::from((u32::from(s[1]) << 16) | u32::from(s[2]));
        return forbidden_v4(v4);
    }
    // Only 2000::/3 is allocated as global unicast; the rest is special or unassigned.
    (s[0] & 0xe000) != 0x2000 || FORBIDDEN_V6.iter().any(|b| in_v6(b, ip))
}

/// How long the host's interface addresses are trusted before they are read again (DHCP,
/// an interface coming up).
const OWN_ADDRESSES_TTL: Duration = Duration::from_secs(5);

/// The host's own interface addresses, read at most every `OWN_ADDRESSES_TTL`. If they cannot be
/// read and never were, the answer is `None` and the guard refuses (fails closed).
fn own_addresses() -> Option<Arc<HashSet<IpAddr>>> {
    type Cache = Mutex<Option<(Instant, Arc<HashSet<IpAddr>>)>>;
    static CACHE: Cache = Mutex::new(None);
    let mut cache = CACHE
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some((read_at, addrs)) = cache.as_ref()
        && read_at.elapsed() < OWN_ADDRESSES_TTL
    {
        return Some(addrs.clone());
    }
    match if_addrs::get_if_addrs() {
        Ok(interfaces) => {
            let addrs: Arc<HashSet<IpAddr>> =
                Arc::new(interfaces.iter().map(|i| canonical(i.ip())).collect());
            *cache = Some((Instant::now(), addrs.clone()));
            Some(addrs)
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot list this host's addresses for the SSRF guard");
            // A stale list beats none; none refuses everything.
            cache.as_ref().map(|(_, addrs)| addrs.clone())
        }
    }
}

/// An IPv4-mapped IPv6 address is the IPv4 address.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    #[error(
        "{host} resolves to {addr}, a loopback, private, link-local, documentation or other special-purpose address"
    )]
    Forbidden { host: String, addr: IpAddr },
    #[error("{host} resolves to {addr}, an address of this host")]
    OwnAddress { host: String, addr: IpAddr },
    #[error("this host's own addresses cannot be read, so {host} cannot be checked")]
    Unverifiable { host: String },
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
        return Err(TargetError::Forbidden {
            host: host.to_owned(),
            addr: ip,
        });
    }
    match own_addresses() {
        None => Err(TargetError::Unverifiable {
            host: host.to_owned(),
        }),
        Some(own) => check_not_own(host, ip, &own),
    }
}

fn check_not_own(host: &str, ip: IpAddr, own: &HashSet<IpAddr>) -> Result<(), TargetError> {
    if own.contains(&canonical(ip)) {
        Err(TargetError::OwnAddress {
            host: host.to_owned(),
            addr: ip,
        })
    } else {
        Ok(())
    }
}

/// Looks a name up; the system's resolver, or a fixed table in tests.
type Lookup = fn(String) -> futures::future::BoxFuture<'static, std::io::Result<Vec<SocketAddr>>>;

fn system_lookup(
    host: String,
) -> futures::future::BoxFuture<'static, std::io::Result<Vec<SocketAddr>>> {
    Box::pin(async move { Ok(tokio::net::lookup_host((host.as_str(), 0)).await?.collect()) })
}

/// Resolves, then refuses the whole name if any address is forbidden (a name that mixes
/// public and private addresses is an attack or a mistake).
struct GuardedResolver {
    lookup: Lookup,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let host = name.as_str().to_owned();
        let lookup = (self.lookup)(host.clone());
        Box::pin(async move {
            let addrs = lookup.await?;
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
                .dns_resolver(Arc::new(GuardedResolver {
                    lookup: system_lookup,
                }))
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

    fn v4(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    fn v6(s: &str) -> Ipv6Addr {
        s.parse().unwrap()
    }

    /// Every address of every refused block is refused: its first, its last and one inside.
    #[test]
    fn every_block_of_the_tables_is_refused_from_first_to_last_address() {
        for (net, len, name) in FORBIDDEN_V4 {
            let first = u32::from(*net);
            let last = first | u32::MAX.checked_shr(u32::from(*len)).unwrap_or(0);
            for ip in [first, last, first + (last - first) / 2] {
                let ip = Ipv4Addr::from(ip);
                assert!(is_forbidden(ip.into()), "{ip} ({name})");
                // The same address as IPv4-mapped, NAT64 and 6to4 is refused too.
                assert!(is_forbidden(ip.to_ipv6_mapped().into()), "mapped {ip}");
                let o = ip.octets();
                let nat64 = Ipv6Addr::from(0x0064_ff9b_u128 << 96 | u128::from(u32::from(ip)));
                assert!(is_forbidden(nat64.into()), "{nat64} ({name})");
                let six_to_four = Ipv6Addr::new(
                    0x2002,
                    u16::from_be_bytes([o[0], o[1]]),
                    u16::from_be_bytes([o[2], o[3]]),
                    0,
                    0,
                    0,
                    0,
                    1,
                );
                assert!(is_forbidden(six_to_four.into()), "{six_to_four} ({name})");
            }
        }
        for (net, len, name) in FORBIDDEN_V6 {
            let first = u128::from(*net);
            let last = first | u128::MAX.checked_shr(u32::from(*len)).unwrap_or(0);
            for ip in [first, last, first + (last - first) / 2] {
                let ip = Ipv6Addr::from(ip);
                assert!(is_forbidden(ip.into()), "{ip} ({name})");
            }
        }
    }

    /// The table, spelled out from the IANA registries (and what the probe found accepted).
    #[test]
    fn special_purpose_addresses_are_refused() {
        for bad in [
            "0.0.0.0",
            "0.1.2.3",
            "10.1.2.3",
            "100.64.0.1",
            "100.127.255.255",
            "127.0.0.1",
            "127.1.2.3",
            "169.254.169.254",
            "172.16.0.1",
            "172.31.255.255",
            "192.0.0.1",
            "192.0.0.170",
            "192.0.2.1",
            "192.0.2.2",
            "192.88.99.1",
            "192.168.1.1",
            "198.18.0.1",
            "198.19.255.255",
            "198.51.100.7",
            "203.0.113.9",
            "224.0.0.1",
            "239.255.255.250",
            "240.0.0.1",
            "255.255.255.255",
        ] {
            assert!(forbidden_v4(v4(bad)), "{bad} should be refused");
        }
        for bad in [
            "::",
            "::1",
            "::127.0.0.1",
            "::8.8.8.8", // IPv4-compatible: deprecated, never a real target
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "::ffff:192.0.2.1",
            "::ffff:0:7f00:1",  // IPv4-translated ::ffff:0:127.0.0.1
            "::ffff:0:808:808", // IPv4-translated, even of a public address
            "64:ff9b::a00:1",
            "64:ff9b::c000:201", // NAT64 of 192.0.2.1
            "64:ff9b:1::808:808",
            "64:ff9b:1:ffff::1",
            "100::1",
            "100::ffff:ffff:ffff:ffff",
            "100:0:0:1::1",
            "2001::1",     // Teredo
            "2001:2::1",   // benchmarking
            "2001:10::1",  // ORCHID
            "2001:1ff::1", // end of the IETF block
            "2001:db8::1",
            "2001:db8:ffff::1",
            "2002:7f00:1::",
            "2002:c000:201::1", // 6to4 of 192.0.2.1
            "2002:a00:1::1",
            "3fff::1",
            "3fff:fff::1",
            "5f00::1",
            "fc00::1",
            "fd00::2",
            "fd00:ec2::254",
            "fe80::1",
            "fec0::1",
            "ff02::1",
            "ff0e::1",
            "4000::1", // outside global unicast
            "1::1",
        ] {
            assert!(forbidden_v6(v6(bad)), "{bad} should be refused");
        }
    }

    #[test]
    fn globally_reachable_addresses_pass() {
        for good in [
            "1.1.1.1",
            "8.8.8.8",
            "93.184.216.34",
            "100.63.255.255",
            "100.128.0.1",
            "172.15.255.255",
            "172.32.0.1",
            "192.0.1.255",
            "192.0.3.0",
            "192.31.196.1", // AS112, globally reachable
            "192.52.193.1", // AMT, globally reachable
            "192.175.48.1", // AS112, globally reachable
            "198.17.255.255",
            "198.20.0.0",
            "198.51.99.255",
            "198.51.101.0",
            "203.0.112.255",
            "203.0.114.0",
            "223.255.255.255",
        ] {
            assert!(!forbidden_v4(v4(good)), "{good} should pass");
        }
        for good in [
            "2606:4700::1111",
            "2a00:1450:4001::1",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808", // NAT64 of a public address
            "2002:808:808::1",  // 6to4 of a public address
            "2001:200::1",      // just past 2001::/23
            "2001:db7:ffff::1",
            "2001:db9::1",
            "2620:4f:8000::1", // AS112, globally reachable
            "3ffe:ffff::1",
            "3fff:1000::1", // just past 3fff::/20
        ] {
            assert!(!forbidden_v6(v6(good)), "{good} should pass");
        }
    }

    /// The machine's own interface addresses are refused whatever their range.
    #[test]
    fn the_hosts_own_addresses_are_refused() {
        let own = own_addresses().expect("interfaces readable");
        assert!(own.contains(&IpAddr::V4(Ipv4Addr::LOCALHOST)), "{own:?}");
        for ip in own.iter() {
            assert!(check_ip("self", *ip).is_err(), "{ip}");
        }
        // A public address that is this host's own is refused too, mapped or not.
        let public: IpAddr = "93.184.216.34".parse().unwrap();
        let own: HashSet<IpAddr> = [public].into();
        assert_eq!(
            check_not_own("me.example", public, &own),
            Err(TargetError::OwnAddress {
                host: "me.example".into(),
                addr: public
            })
        );
        let mapped: IpAddr = "::ffff:93.184.216.34".parse().unwrap();
        assert!(check_not_own("me.example", mapped, &own).is_err());
        assert!(check_not_own("me.example", "8.8.8.8".parse().unwrap(), &own).is_ok());
    }

    /// A fixed DNS: each name resolves to the address it spells (`192-0-2-1.test`), and
    /// `mixed.test` to a public and a documentation address.
    fn fake_lookup(
        host: String,
    ) -> futures::future::BoxFuture<'static, std::io::Result<Vec<SocketAddr>>> {
        Box::pin(async move {
            let ips: Vec<IpAddr> = if host == "mixed.test" {
                vec!["8.8.8.8".parse().unwrap(), "203.0.113.9".parse().unwrap()]
            } else {
                let spelled = host.trim_end_matches(".test");
                let ip = spelled
                    .replace('-', ".")
                    .parse()
                    .or_else(|_| spelled.replace('-', ":").parse())
                    .map_err(|_| std::io::Error::other("no such name"))?;
                vec![ip]
            };
            Ok(ips.into_iter().map(|ip| SocketAddr::new(ip, 0)).collect())
        })
    }

    /// What the delivery's resolver does with names that lead to special-purpose addresses.
    #[tokio::test]
    async fn the_delivery_resolver_refuses_names_of_special_purpose_addresses() {
        let resolver = GuardedResolver {
            lookup: fake_lookup,
        };
        for name in [
            "192-0-2-1.test",
            "198-51-100-7.test",
            "203-0-113-9.test",
            "2001-db8--1.test",
            "100--1.test",
            "--ffff-0-7f00-1.test",
            "64-ff9b-1--1.test",
            "mixed.test",
        ] {
            let res = resolver.resolve(name.parse().unwrap()).await;
            let err = match res {
                Ok(addrs) => panic!("{name} resolved to {:?}", addrs.collect::<Vec<_>>()),
                Err(e) => e,
            };
            assert!(
                matches!(
                    err.downcast_ref::<TargetError>(),
                    Some(TargetError::Forbidden { .. })
                ),
                "{name}: {err}"
            );
        }
        let ok = resolver.resolve("8-8-8-8.test".parse().unwrap()).await;
        assert_eq!(
            ok.unwrap().map(|a| a.ip()).collect::<Vec<_>>(),
            ["8.8.8.8".parse::<IpAddr>().unwrap()]
        );
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
