//! The PROXY protocol header (HAProxy's spec, versions 1 and 2), sans IO: what a balancer in
//! front of the STOMP TCP listener says about the client before the client's own bytes.
//!
//! Strict and bounded: a v1 line is at most 107 bytes, a v2 header at most
//! [`MAX_V2_PAYLOAD`] bytes past its 16-byte start; anything that is not exactly one of the two
//! is an error, never guessed at.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The v2 signature: `\r\n\r\n\0\r\nQUIT\n`.
pub const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// The v1 line's start.
const V1_PREFIX: &[u8] = b"PROXY ";
/// Longest v1 line, CRLF included (the spec's worst case: TCP6 with full addresses).
pub const MAX_V1_LEN: usize = 107;
/// Longest v2 address block plus TLVs accepted (addresses take 36 bytes at most; the rest is
/// room for the TLVs balancers add).
pub const MAX_V2_PAYLOAD: usize = 1024;
/// The longest header of either version.
pub const MAX_HEADER_LEN: usize = 16 + MAX_V2_PAYLOAD;

/// What a PROXY header says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProxyHeader {
    /// The connection was proxied for this client.
    Proxied(SocketAddr),
    /// The balancer speaks for itself (v2 `LOCAL`, e.g. a health check; v1 `UNKNOWN`): the
    /// connection's own peer is the client.
    Local,
}

/// Why a PROXY header is refused; the connection is closed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProxyHeaderError {
    /// Neither the v1 prefix nor the v2 signature.
    #[error("no PROXY protocol header")]
    Missing,
    /// A v1 line longer than 107 bytes, or a v2 block longer than we accept.
    #[error("PROXY header too long")]
    TooLong,
    /// A v1 line that does not follow the grammar.
    #[error("malformed PROXY v1 line")]
    MalformedV1,
    /// A v2 version other than 2, or a command other than LOCAL and PROXY.
    #[error("unsupported PROXY v2 version or command")]
    UnsupportedV2,
    /// A v2 family/transport other than TCP over IPv4 or IPv6 (or UNSPEC with LOCAL).
    #[error("unsupported PROXY v2 address family")]
    UnsupportedFamily,
    /// A v2 block shorter than its addresses.
    #[error("PROXY v2 address block too short")]
    ShortAddresses,
}

/// Parses the header at the start of `buf`: `Ok(None)` until it is complete, then the header
/// and how many bytes it took. Decides as early as the bytes allow: a wrong first byte fails
/// at once.
pub fn parse(buf: &[u8]) -> Result<Option<(ProxyHeader, usize)>, ProxyHeaderError> {
    if buf.is_empty() {
        return Ok(None);
    }
    if is_prefix(buf, V1_PREFIX) {
        return parse_v1(buf);
    }
    if is_prefix(buf, &V2_SIGNATURE) {
        return parse_v2(buf);
    }
    Err(ProxyHeaderError::Missing)
}

/// `buf` and `pattern` agree on their common length.
fn is_prefix(buf: &[u8], pattern: &[u8]) -> bool {
    let n = buf.len().min(pattern.len());
    buf[..n] == pattern[..n]
}

fn parse_v1(buf: &[u8]) -> Result<Option<(ProxyHeader, usize)>, ProxyHeaderError> {
    let window = &buf[..buf.len().min(MAX_V1_LEN)];
    let Some(cr) = window.iter().position(|&b| b == b'\r') else {
        return if buf.len() >= MAX_V1_LEN {
            Err(ProxyHeaderError::TooLong)
        } else {
            Ok(None)
        };
    };
    match window.get(cr + 1) {
        None if cr + 1 >= MAX_V1_LEN => return Err(ProxyHeaderError::TooLong),
        None => return Ok(None),
        Some(b'\n') => {}
        Some(_) => return Err(ProxyHeaderError::MalformedV1),
    }
    let line = std::str::from_utf8(&window[V1_PREFIX.len()..cr])
        .map_err(|_| ProxyHeaderError::MalformedV1)?;
    Ok(Some((v1_fields(line)?, cr + 2)))
}

/// `TCP4 SRC DST SPORT DPORT`, `TCP6 …`, or `UNKNOWN` followed by anything.
fn v1_fields(line: &str) -> Result<ProxyHeader, ProxyHeaderError> {
    if line == "UNKNOWN" || line.starts_with("UNKNOWN ") {
        return Ok(ProxyHeader::Local);
    }
    let bad = ProxyHeaderError::MalformedV1;
    let fields: Vec<&str> = line.split(' ').collect();
    let [proto, src, dst, sport, dport] = fields[..] else {
        return Err(bad);
    };
    let (src, dst): (IpAddr, IpAddr) = match proto {
        "TCP4" => (
            src.parse::<Ipv4Addr>().map_err(|_| bad.clone())?.into(),
            dst.parse::<Ipv4Addr>().map_err(|_| bad.clone())?.into(),
        ),
        "TCP6" => (
            src.parse::<Ipv6Addr>().map_err(|_| bad.clone())?.into(),
            dst.parse::<Ipv6Addr>().map_err(|_| bad.clone())?.into(),
        ),
        _ => return Err(bad),
    };
    let _ = (dst, port(dport)?);
    Ok(ProxyHeader::Proxied(SocketAddr::new(src, port(sport)?)))
}

/// A v1 port: decimal 0-65535, no sign, no leading zero.
fn port(field: &str) -> Result<u16, ProxyHeaderError> {
    let digits_only = !field.is_empty() && field.bytes().all(|b| b.is_ascii_digit());
    if !digits_only || (field.len() > 1 && field.starts_with('0')) {
        return Err(ProxyHeaderError::MalformedV1);
    }
    field.parse().map_err(|_| ProxyHeaderError::MalformedV1)
}

fn parse_v2(buf: &[u8]) -> Result<Option<(ProxyHeader, usize)>, ProxyHeaderError> {
    if buf.len() < 16 {
        // The version and command byte fails early, before the rest arrives.
        if let Some(&ver_cmd) = buf.get(12) {
            check_ver_cmd(ver_cmd)?;
        }
        return Ok(None);
    }
    let local = check_ver_cmd(buf[12])?;
    let family = buf[13];
    let len = usize::from(u16::from_be_bytes([buf[14], buf[15]]));
    if len > MAX_V2_PAYLOAD {
        return Err(ProxyHeaderError::TooLong);
    }
    let needed = match family {
        0x11 => 12,
        0x21 => 36,
        0x00 if local => 0,
        _ => return Err(ProxyHeaderError::UnsupportedFamily),
    };
    if len < needed {
        return Err(ProxyHeaderError::ShortAddresses);
    }
    if buf.len() < 16 + len {
        return Ok(None);
    }
    if local {
        // LOCAL: the addresses (if any) are to be ignored.
        return Ok(Some((ProxyHeader::Local, 16 + len)));
    }
    let block = &buf[16..16 + len];
    let source = if family == 0x11 {
        let ip: [u8; 4] = [block[0], block[1], block[2], block[3]];
        SocketAddr::new(IpAddr::from(ip), u16::from_be_bytes([block[8], block[9]]))
    } else {
        let mut ip = [0u8; 16];
        ip.copy_from_slice(&block[..16]);
        SocketAddr::new(IpAddr::from(ip), u16::from_be_bytes([block[32], block[33]]))
    };
    Ok(Some((ProxyHeader::Proxied(source), 16 + len)))
}

/// Version 2 only; `true` for LOCAL, `false` for PROXY.
fn check_ver_cmd(ver_cmd: u8) -> Result<bool, ProxyHeaderError> {
    match ver_cmd {
        0x20 => Ok(true),
        0x21 => Ok(false),
        _ => Err(ProxyHeaderError::UnsupportedV2),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn v2(ver_cmd: u8, family: u8, block: &[u8]) -> Vec<u8> {
        let mut out = V2_SIGNATURE.to_vec();
        out.extend_from_slice(&[ver_cmd, family]);
        out.extend_from_slice(&(block.len() as u16).to_be_bytes());
        out.extend_from_slice(block);
        out
    }

    fn v4_block(src: [u8; 4], sport: u16) -> Vec<u8> {
        let mut b = src.to_vec();
        b.extend_from_slice(&[127, 0, 0, 1]);
        b.extend_from_slice(&sport.to_be_bytes());
        b.extend_from_slice(&61613u16.to_be_bytes());
        b
    }

    #[test]
    fn v1_tcp4_tcp6_and_unknown() {
        let line = b"PROXY TCP4 192.0.2.7 127.0.0.1 5555 61613\r\nCONNECT\n";
        let (h, n) = parse(line).unwrap().unwrap();
        assert_eq!(h, ProxyHeader::Proxied("192.0.2.7:5555".parse().unwrap()));
        assert_eq!(&line[n..], b"CONNECT\n");
        let line = b"PROXY TCP6 2001:db8::1 ::1 65535 61613\r\n";
        let (h, n) = parse(line).unwrap().unwrap();
        assert_eq!(
            h,
            ProxyHeader::Proxied("[2001:db8::1]:65535".parse().unwrap())
        );
        assert_eq!(n, line.len());
        assert_eq!(
            parse(b"PROXY UNKNOWN\r\n").unwrap(),
            Some((ProxyHeader::Local, 15))
        );
        assert_eq!(
            parse(b"PROXY UNKNOWN ffff::1 ::1 1 2\r\n")
                .unwrap()
                .unwrap()
                .0,
            ProxyHeader::Local
        );
    }

    #[test]
    fn v1_partial_lines_wait_and_wrong_ones_fail_early() {
        let line = b"PROXY TCP4 192.0.2.7 127.0.0.1 5555 61613\r\n";
        for cut in 1..line.len() {
            assert_eq!(parse(&line[..cut]), Ok(None), "cut at {cut}");
        }
        assert_eq!(parse(b"PROXX"), Err(ProxyHeaderError::Missing));
        assert_eq!(parse(b"CONNECT\n"), Err(ProxyHeaderError::Missing));
        assert_eq!(parse(b"\r\n\r\n\0\r\nQUIX"), Err(ProxyHeaderError::Missing));
    }

    #[test]
    fn v1_grammar_is_strict() {
        for bad in [
            &b"PROXY TCP4 192.0.2.7 127.0.0.1 5555\r\n"[..],
            b"PROXY TCP4 192.0.2.7  127.0.0.1 5555 1\r\n",
            b"PROXY TCP4 2001:db8::1 127.0.0.1 5555 1\r\n",
            b"PROXY TCP6 192.0.2.7 ::1 5555 1\r\n",
            b"PROXY TCP4 192.0.2.7 127.0.0.1 05555 1\r\n",
            b"PROXY TCP4 192.0.2.7 127.0.0.1 65536 1\r\n",
            b"PROXY TCP4 192.0.2.7 127.0.0.1 +5 1\r\n",
            b"PROXY TCP4 192.0.2.07 127.0.0.1 5 1\r\n",
            b"PROXY UDP4 192.0.2.7 127.0.0.1 5 1\r\n",
            b"PROXY TCP4 192.0.2.7 127.0.0.1 5 1\rX",
            b"PROXY TCP4 192.0.2.7 127.0.0.1 5 1 \r\n",
        ] {
            assert_eq!(
                parse(bad),
                Err(ProxyHeaderError::MalformedV1),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn v1_is_bounded() {
        let mut long = b"PROXY UNKNOWN ".to_vec();
        long.resize(MAX_V1_LEN, b'x');
        assert_eq!(parse(&long), Err(ProxyHeaderError::TooLong));
        long.truncate(MAX_V1_LEN - 2);
        long.extend_from_slice(b"\r\n");
        assert_eq!(parse(&long).unwrap().unwrap(), (ProxyHeader::Local, 107));
    }

    #[test]
    fn v2_proxy_local_and_tlvs() {
        let mut block = v4_block([198, 51, 100, 9], 4000);
        block.extend_from_slice(&[0x02, 0x00, 0x03, b'a', b'b', b'c']); // an authority TLV
        let bytes = v2(0x21, 0x11, &block);
        let (h, n) = parse(&bytes).unwrap().unwrap();
        assert_eq!(
            h,
            ProxyHeader::Proxied("198.51.100.9:4000".parse().unwrap())
        );
        assert_eq!(n, bytes.len());
        for cut in 1..bytes.len() {
            assert_eq!(parse(&bytes[..cut]), Ok(None), "cut at {cut}");
        }
        let mut v6 = Vec::new();
        v6.extend_from_slice(&"2001:db8::5".parse::<Ipv6Addr>().unwrap().octets());
        v6.extend_from_slice(&Ipv6Addr::LOCALHOST.octets());
        v6.extend_from_slice(&[0x12, 0x34, 0xee, 0xcd]);
        assert_eq!(
            parse(&v2(0x21, 0x21, &v6)).unwrap().unwrap().0,
            ProxyHeader::Proxied("[2001:db8::5]:4660".parse().unwrap())
        );
        assert_eq!(
            parse(&v2(0x20, 0x00, &[])).unwrap(),
            Some((ProxyHeader::Local, 16))
        );
        assert_eq!(
            parse(&v2(0x20, 0x11, &v4_block([1, 2, 3, 4], 5)))
                .unwrap()
                .unwrap()
                .0,
            ProxyHeader::Local
        );
    }

    #[test]
    fn v2_refusals() {
        let block = v4_block([1, 2, 3, 4], 5);
        assert_eq!(
            parse(&v2(0x11, 0x11, &block)),
            Err(ProxyHeaderError::UnsupportedV2)
        );
        assert_eq!(
            parse(&v2(0x22, 0x11, &block)),
            Err(ProxyHeaderError::UnsupportedV2)
        );
        // Fails on the 13th byte, before the rest arrives.
        assert_eq!(
            parse(&v2(0x31, 0x11, &block)[..13]),
            Err(ProxyHeaderError::UnsupportedV2)
        );
        for family in [0x12, 0x22, 0x31, 0x32, 0x00] {
            assert_eq!(
                parse(&v2(0x21, family, &block)),
                Err(ProxyHeaderError::UnsupportedFamily)
            );
        }
        assert_eq!(
            parse(&v2(0x21, 0x21, &block)),
            Err(ProxyHeaderError::ShortAddresses)
        );
        let mut huge = v2(0x21, 0x11, &block);
        huge[14..16].copy_from_slice(&((MAX_V2_PAYLOAD + 1) as u16).to_be_bytes());
        assert_eq!(parse(&huge[..16]), Err(ProxyHeaderError::TooLong));
    }

    proptest! {
        /// Any bytes: no panic, and a header, when found, lies within the input and the bound.
        #[test]
        fn never_panics_and_stays_bounded(bytes in proptest::collection::vec(any::<u8>(), 0..1200)) {
            if let Ok(Some((_, n))) = parse(&bytes) {
                prop_assert!(n <= bytes.len() && n <= MAX_HEADER_LEN);
            }
        }

        /// Junk after a valid prefix: still no panic, and the same answer for every split.
        #[test]
        fn prefixes_of_valid_headers_then_junk(
            v6 in any::<bool>(),
            ip in any::<[u8; 16]>(),
            sport in any::<u16>(),
            junk in proptest::collection::vec(any::<u8>(), 0..40),
        ) {
            let (line, want) = if v6 {
                let src = Ipv6Addr::from(ip);
                (format!("PROXY TCP6 {src} ::1 {sport} 61613\r\n"), SocketAddr::new(src.into(), sport))
            } else {
                let src = Ipv4Addr::new(ip[0], ip[1], ip[2], ip[3]);
                (format!("PROXY TCP4 {src} 127.0.0.1 {sport} 61613\r\n"), SocketAddr::new(src.into(), sport))
            };
            let mut bytes = line.into_bytes();
            let len = bytes.len();
            bytes.extend_from_slice(&junk);
            prop_assert_eq!(parse(&bytes), Ok(Some((ProxyHeader::Proxied(want), len))));
            for cut in 0..len {
                prop_assert_eq!(parse(&bytes[..cut]), Ok(None));
            }
        }

        /// Random v2 TCP4 headers round-trip.
        #[test]
        fn v2_round_trips(src in any::<[u8; 4]>(), sport in any::<u16>(), tlv_len in 0usize..64) {
            let mut block = v4_block(src, sport);
            block.resize(12 + tlv_len, 0xab);
            let bytes = v2(0x21, 0x11, &block);
            prop_assert_eq!(
                parse(&bytes),
                Ok(Some((ProxyHeader::Proxied(SocketAddr::new(src.into(), sport)), bytes.len())))
            );
        }
    }
}
