//! Client addresses behind trusted proxies: which peers are trusted (`--trusted-proxy`), the
//! client address an HTTP request from one of them names (`X-Forwarded-For` or `Forwarded`),
//! and reading the PROXY protocol header a trusted balancer puts before a STOMP TCP stream.
//!
//! Nothing a peer outside the trusted networks says about addresses is believed.

pub mod header;

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::time::Duration;

use bytes::BytesMut;
use http::HeaderMap;
use tokio::io::AsyncReadExt as _;
use tokio::net::TcpStream;
use tokio::time::timeout;

use self::header::{ProxyHeader, ProxyHeaderError, MAX_HEADER_LEN};

/// A network in CIDR notation (`10.0.0.0/8`, `::1/128`; a bare address is a host).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    net: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// `ip` is inside this network (an IPv4-mapped IPv6 address counts as its IPv4 one).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.net, canonical(ip)) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl FromStr for Cidr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("{s:?} is not an address or a network like 10.0.0.0/8 or fd00::/8");
        let (addr, prefix) = match s.trim().split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s.trim(), None),
        };
        let net = canonical(addr.parse::<IpAddr>().map_err(|_| bad())?);
        let max = if net.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => {
                p.parse::<u8>().ok().filter(|&p| p <= max).ok_or_else(bad)?
            }
            Some(_) => return Err(bad()),
        };
        Ok(Self { net, prefix })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.net, self.prefix)
    }
}

/// IPv4-mapped IPv6 (`::ffff:a.b.c.d`, what a dual-stack socket reports) as plain IPv4.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

/// Which request header a trusted proxy names the client in.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ForwardedHeader {
    /// `X-Forwarded-For: client, proxy1, proxy2` (nginx `$proxy_add_x_forwarded_for`,
    /// haproxy `option forwardfor`).
    #[default]
    XForwardedFor,
    /// RFC 7239 `Forwarded: for=client, for=proxy1`.
    Forwarded,
}

/// The trusted proxies and how they name clients; empty trusts nobody.
#[derive(Clone, Debug, Default)]
pub struct TrustedProxies {
    /// Networks whose peers are proxies.
    pub networks: Vec<Cidr>,
    /// The header those proxies set.
    pub header: ForwardedHeader,
    /// Longest wait for a PROXY protocol header on the STOMP TCP listener.
    pub header_timeout: Duration,
}

impl TrustedProxies {
    /// `ip` is one of ours.
    pub fn trusts(&self, ip: IpAddr) -> bool {
        self.networks.iter().any(|n| n.contains(ip))
    }

    /// The client an HTTP request from `peer` is for: `peer` itself unless it is trusted;
    /// else, walking the forwarding header from the right, the first address that is not a
    /// trusted proxy (everything left of it was written by the client and proves nothing).
    /// When every hop is trusted the left-most one is the client; an entry that is not an
    /// address stops the walk at the last trusted hop.
    pub fn client(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let peer = canonical(peer);
        if !self.trusts(peer) {
            return peer;
        }
        let (name, parse): (_, fn(&str) -> Option<IpAddr>) = match self.header {
            ForwardedHeader::XForwardedFor => ("x-forwarded-for", xff_entry),
            ForwardedHeader::Forwarded => ("forwarded", forwarded_entry),
        };
        let mut client = peer;
        // Several header lines are one list, in order (RFC 9110 §5.3).
        let lines: Vec<&str> = headers
            .get_all(name)
            .iter()
            .map(|v| v.to_str().unwrap_or(""))
            .collect();
        for entry in lines.iter().rev().flat_map(|line| line.rsplit(',')) {
            let Some(hop) = parse(entry) else {
                return client;
            };
            client = canonical(hop);
            if !self.trusts(client) {
                return client;
            }
        }
        client
    }

    /// Reads the PROXY protocol header (v1 or v2) a trusted balancer sends first on STOMP TCP,
    /// within the header timeout. `Ok((client, rest))`: the client and any bytes read past the
    /// header (the client's own, to be handled as STOMP). No header at all is fine too, so a
    /// client on a trusted address can connect directly: STOMP never begins with `P` or with
    /// `\r\n\r\n\0`, so the two cannot be mistaken for each other.
    pub async fn read_header(
        &self,
        stream: &mut TcpStream,
        peer: IpAddr,
    ) -> Result<(IpAddr, BytesMut), ProxyHeaderError> {
        let mut buf = BytesMut::with_capacity(256);
        let read = async {
            loop {
                match header::parse(&buf) {
                    Ok(None) => {}
                    Ok(Some((found, used))) => {
                        let _ = buf.split_to(used);
                        return Ok(found);
                    }
                    Err(ProxyHeaderError::Missing) => return Ok(ProxyHeader::Local),
                    Err(e) => return Err(e),
                }
                if buf.len() >= MAX_HEADER_LEN {
                    return Err(ProxyHeaderError::TooLong);
                }
                // One small read at a time: never past the longest header plus a read's worth.
                let n = stream.read_buf(&mut buf).await.unwrap_or(0);
                if n == 0 {
                    return Err(ProxyHeaderError::Missing);
                }
            }
        };
        let found = timeout(self.header_timeout, read)
            .await
            .unwrap_or(Err(ProxyHeaderError::Missing))?;
        let client = match found {
            ProxyHeader::Proxied(addr) => canonical(addr.ip()),
            ProxyHeader::Local => peer,
        };
        Ok((client, buf))
    }
}

/// One `X-Forwarded-For` entry: an address, maybe with a port (`1.2.3.4:5`, `[::1]:5`).
fn xff_entry(entry: &str) -> Option<IpAddr> {
    let entry = entry.trim();
    entry
        .parse::<IpAddr>()
        .ok()
        .or_else(|| entry.parse::<SocketAddr>().ok().map(|a| a.ip()))
}

/// One `Forwarded` element's `for=` (`for=192.0.2.1`, `for="[2001:db8::1]:80"`); an element
/// without one, or with `unknown`/an obfuscated name, is no address.
fn forwarded_entry(element: &str) -> Option<IpAddr> {
    let value = element.split(';').find_map(|pair| {
        let (key, value) = pair.trim().split_once('=')?;
        key.trim()
            .eq_ignore_ascii_case("for")
            .then_some(value.trim())
    })?;
    let value = value
        .strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .unwrap_or(value);
    if let Some(inner) = value.strip_prefix('[') {
        let (ip, _) = inner.split_once(']')?;
        return ip.parse().ok();
    }
    xff_entry(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn proxies(nets: &[&str], header: ForwardedHeader) -> TrustedProxies {
        TrustedProxies {
            networks: nets.iter().map(|n| n.parse().unwrap()).collect(),
            header,
            header_timeout: Duration::from_secs(1),
        }
    }

    fn headers(name: &str, values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(
                http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn cidrs_parse_and_match() {
        let net: Cidr = "10.1.0.0/16".parse().unwrap();
        assert!(net.contains(ip("10.1.255.3")));
        assert!(!net.contains(ip("10.2.0.1")));
        assert!(net.contains(ip("::ffff:10.1.0.9")), "mapped v4");
        let host: Cidr = "127.0.0.1".parse().unwrap();
        assert_eq!(host.to_string(), "127.0.0.1/32");
        assert!(!host.contains(ip("127.0.0.2")));
        let all: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains(ip("203.0.113.1")) && !all.contains(ip("::1")));
        let v6: Cidr = "fd00::/8".parse().unwrap();
        assert!(v6.contains(ip("fd12::1")) && !v6.contains(ip("fe80::1")));
        for bad in [
            "10.0.0.0/33",
            "::/129",
            "10.0.0.0/",
            "10.0.0/8",
            "x",
            "1.2.3.4/+8",
        ] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad}");
        }
    }

    #[test]
    fn untrusted_peers_are_their_own_address_whatever_they_send() {
        let p = proxies(&["10.0.0.0/8"], ForwardedHeader::XForwardedFor);
        let h = headers("x-forwarded-for", &["198.51.100.1"]);
        assert_eq!(p.client(ip("203.0.113.9"), &h), ip("203.0.113.9"));
        let nobody = TrustedProxies::default();
        assert_eq!(nobody.client(ip("10.0.0.1"), &h), ip("10.0.0.1"));
    }

    #[test]
    fn the_right_most_untrusted_hop_is_the_client() {
        let p = proxies(&["10.0.0.0/8"], ForwardedHeader::XForwardedFor);
        // The client wrote the first two itself; the balancer appended the real one.
        let h = headers(
            "x-forwarded-for",
            &["1.1.1.1, 2.2.2.2", "192.0.2.5, 10.0.0.7"],
        );
        assert_eq!(p.client(ip("10.0.0.2"), &h), ip("192.0.2.5"));
        let all_trusted = headers("x-forwarded-for", &["10.9.9.9, 10.0.0.7"]);
        assert_eq!(p.client(ip("10.0.0.2"), &all_trusted), ip("10.9.9.9"));
        let garbage = headers("x-forwarded-for", &["junk, 10.0.0.7"]);
        assert_eq!(p.client(ip("10.0.0.2"), &garbage), ip("10.0.0.7"));
        let ported = headers("x-forwarded-for", &["[2001:db8::1]:443", "192.0.2.9:80"]);
        assert_eq!(p.client(ip("10.0.0.2"), &ported), ip("192.0.2.9"));
        assert_eq!(p.client(ip("10.0.0.2"), &HeaderMap::new()), ip("10.0.0.2"));
    }

    #[test]
    fn forwarded_is_read_only_when_configured() {
        let p = proxies(&["127.0.0.0/8"], ForwardedHeader::Forwarded);
        let h = headers(
            "forwarded",
            &["for=1.1.1.1, for=\"[2001:db8::7]:80\";proto=https, for=127.0.0.5;by=x"],
        );
        assert_eq!(p.client(ip("127.0.0.1"), &h), ip("2001:db8::7"));
        let unknown = headers("forwarded", &["for=unknown"]);
        assert_eq!(p.client(ip("127.0.0.1"), &unknown), ip("127.0.0.1"));
        let xff = headers("x-forwarded-for", &["192.0.2.1"]);
        assert_eq!(p.client(ip("127.0.0.1"), &xff), ip("127.0.0.1"));
    }
}
