//! The opening handshake (RFC 6455 §4.2) and extension negotiation (RFC 7692 §5, §7.1).

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, Response, StatusCode, Version};
use sha1::{Digest, Sha1};

use crate::deflate::{DeflateConfig, DeflateParams};

/// Appended to the client's key before hashing (§1.3).
const ACCEPT_GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
/// Most headers [`parse_request`] accepts.
const MAX_HEADERS: usize = 64;

/// Which `Origin` headers the server accepts.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum OriginPolicy {
    /// Any origin, or none.
    #[default]
    AllowAny,
    /// Only these origins (compared case-insensitively, e.g. `https://chat.example`).
    /// Requests without an `Origin` header come from non-browser clients and are accepted.
    AllowList(Vec<String>),
}

impl OriginPolicy {
    fn allows(&self, origin: Option<&str>) -> bool {
        match (self, origin) {
            (Self::AllowAny, _) | (Self::AllowList(_), None) => true,
            (Self::AllowList(list), Some(origin)) => {
                list.iter().any(|o| o.eq_ignore_ascii_case(origin))
            }
        }
    }
}

/// What an endpoint accepts during the handshake.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct HandshakeConfig {
    /// Origin check.
    pub origin: OriginPolicy,
    /// Subprotocols the server speaks, most preferred first.
    pub subprotocols: Vec<String>,
    /// permessage-deflate, or `None` to decline every offer.
    pub deflate: Option<DeflateConfig>,
}

impl HandshakeConfig {
    /// Sets the origin policy.
    pub fn with_origin(mut self, origin: OriginPolicy) -> Self {
        self.origin = origin;
        self
    }

    /// Sets the subprotocols, most preferred first.
    pub fn with_subprotocols<S: Into<String>>(
        mut self,
        protocols: impl IntoIterator<Item = S>,
    ) -> Self {
        self.subprotocols = protocols.into_iter().map(Into::into).collect();
        self
    }

    /// Enables permessage-deflate.
    pub fn with_deflate(mut self, deflate: Option<DeflateConfig>) -> Self {
        self.deflate = deflate;
        self
    }
}

/// Why an opening request was refused; each maps to an HTTP answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HandshakeError {
    /// The request could not be parsed as HTTP/1.x.
    #[error("malformed HTTP request")]
    MalformedRequest,
    /// The opening request must be a GET (405).
    #[error("method must be GET")]
    MethodNotGet,
    /// HTTP/1.1 or later is required (400).
    #[error("HTTP/1.1 or later required")]
    HttpVersionTooOld,
    /// `Host` is required (400).
    #[error("missing Host header")]
    MissingHost,
    /// `Upgrade` must list `websocket` (400).
    #[error("Upgrade header must contain websocket")]
    NotWebSocketUpgrade,
    /// `Connection` must list `Upgrade` (400).
    #[error("Connection header must contain Upgrade")]
    MissingConnectionUpgrade,
    /// `Sec-WebSocket-Version` is missing or not 13 (426).
    #[error("Sec-WebSocket-Version must be 13")]
    UnsupportedVersion,
    /// `Sec-WebSocket-Key` is missing, repeated, or not 16 base64-encoded bytes (400).
    #[error("Sec-WebSocket-Key must be 16 base64-encoded bytes")]
    InvalidKey,
    /// The `Origin` is not allowed by the server's policy (403).
    #[error("origin not allowed")]
    OriginNotAllowed,
}

impl HandshakeError {
    /// The HTTP status this refusal is answered with.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::MethodNotGet => StatusCode::METHOD_NOT_ALLOWED,
            Self::UnsupportedVersion => StatusCode::UPGRADE_REQUIRED,
            Self::OriginNotAllowed => StatusCode::FORBIDDEN,
            _ => StatusCode::BAD_REQUEST,
        }
    }

    /// The complete HTTP answer: status, the headers the RFCs require, and the reason as text.
    pub fn response(&self) -> Response<String> {
        let mut builder = Response::builder()
            .status(self.status())
            .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
            .header(header::CONNECTION, "close");
        match self {
            Self::MethodNotGet => builder = builder.header(header::ALLOW, "GET"),
            Self::UnsupportedVersion => {
                builder = builder
                    .header(header::SEC_WEBSOCKET_VERSION, "13")
                    .header(header::UPGRADE, "websocket")
            }
            _ => {}
        }
        let mut body = self.to_string();
        body.push('\n');
        // Every header above is a valid static value, so building cannot fail.
        builder.body(body).unwrap_or_default()
    }
}

/// A validated opening request and what was negotiated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    /// The `Sec-WebSocket-Accept` value.
    pub accept: String,
    /// The chosen subprotocol.
    pub subprotocol: Option<String>,
    /// The accepted permessage-deflate parameters.
    pub deflate: Option<DeflateParams>,
    /// The `Sec-WebSocket-Extensions` answer for what was accepted.
    pub extensions: Option<String>,
}

impl Accepted {
    /// The `101 Switching Protocols` answer.
    pub fn response(&self) -> Response<()> {
        let mut resp = Response::new(());
        *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        let headers = resp.headers_mut();
        headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
        // All values below are base64, a token the client sent, or ASCII we format ourselves.
        if let Ok(v) = HeaderValue::from_str(&self.accept) {
            headers.insert(header::SEC_WEBSOCKET_ACCEPT, v);
        }
        if let Some(Ok(v)) = self.subprotocol.as_deref().map(HeaderValue::from_str) {
            headers.insert(header::SEC_WEBSOCKET_PROTOCOL, v);
        }
        if let Some(Ok(v)) = self.extensions.as_deref().map(HeaderValue::from_str) {
            headers.insert(header::SEC_WEBSOCKET_EXTENSIONS, v);
        }
        resp
    }
}

/// `Sec-WebSocket-Accept` for a client's `Sec-WebSocket-Key` (§4.2.2).
pub fn accept_key(key: &[u8]) -> String {
    let mut sha = Sha1::new();
    sha.update(key);
    sha.update(ACCEPT_GUID);
    BASE64.encode(sha.finalize())
}

/// Validates an opening request and negotiates subprotocol and extensions.
pub fn accept<B>(req: &Request<B>, config: &HandshakeConfig) -> Result<Accepted, HandshakeError> {
    accept_parts(req.method(), req.version(), req.headers(), config)
}

/// [`accept`] over the request's parts.
pub fn accept_parts(
    method: &Method,
    version: Version,
    headers: &HeaderMap,
    config: &HandshakeConfig,
) -> Result<Accepted, HandshakeError> {
    if method != Method::GET {
        return Err(HandshakeError::MethodNotGet);
    }
    if version < Version::HTTP_11 {
        return Err(HandshakeError::HttpVersionTooOld);
    }
    if !headers.contains_key(header::HOST) {
        return Err(HandshakeError::MissingHost);
    }
    if !has_token(headers, &header::UPGRADE, "websocket") {
        return Err(HandshakeError::NotWebSocketUpgrade);
    }
    if !has_token(headers, &header::CONNECTION, "upgrade") {
        return Err(HandshakeError::MissingConnectionUpgrade);
    }
    let mut versions = headers.get_all(header::SEC_WEBSOCKET_VERSION).iter();
    match (versions.next(), versions.next()) {
        (Some(v), None) if v.as_bytes().trim_ascii() == b"13" => {}
        _ => return Err(HandshakeError::UnsupportedVersion),
    }
    let mut keys = headers.get_all(header::SEC_WEBSOCKET_KEY).iter();
    let key = match (keys.next(), keys.next()) {
        (Some(k), None) => k.as_bytes().trim_ascii(),
        _ => return Err(HandshakeError::InvalidKey),
    };
    match BASE64.decode(key) {
        Ok(raw) if raw.len() == 16 => {}
        _ => return Err(HandshakeError::InvalidKey),
    }
    let origin = match headers.get(header::ORIGIN).map(|v| v.to_str()) {
        None => None,
        Some(Ok(o)) => Some(o),
        Some(Err(_)) => return Err(HandshakeError::OriginNotAllowed),
    };
    if !config.origin.allows(origin) {
        return Err(HandshakeError::OriginNotAllowed);
    }
    let negotiated = config
        .deflate
        .as_ref()
        .and_then(|cfg| negotiate_deflate(headers, cfg));
    let (deflate, extensions) = negotiated.map_or((None, None), |(p, a)| (Some(p), Some(a)));
    Ok(Accepted {
        accept: accept_key(key),
        subprotocol: choose_subprotocol(headers, &config.subprotocols),
        deflate,
        extensions,
    })
}

/// Parses a raw HTTP/1.x request head, for callers that do not sit behind an HTTP server.
///
/// Returns `Ok(None)` until the whole head has arrived, then the request and its length.
pub fn parse_request(buf: &[u8]) -> Result<Option<(Request<()>, usize)>, HandshakeError> {
    let mut raw = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut raw);
    let len = match parsed.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(_) => return Err(HandshakeError::MalformedRequest),
    };
    let bad = |_| HandshakeError::MalformedRequest;
    let mut builder = Request::builder()
        .method(Method::from_bytes(parsed.method.unwrap_or_default().as_bytes()).map_err(bad)?)
        .uri(parsed.path.unwrap_or_default())
        .version(if parsed.version == Some(0) {
            Version::HTTP_10
        } else {
            Version::HTTP_11
        });
    for h in parsed.headers.iter() {
        builder = builder.header(h.name, h.value);
    }
    let req = builder
        .body(())
        .map_err(|_| HandshakeError::MalformedRequest)?;
    Ok(Some((req, len)))
}

/// True if any `name` header's comma-separated list holds `token` (case-insensitive).
fn has_token(headers: &HeaderMap, name: &header::HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b','))
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
}

/// The server's most preferred subprotocol that the client also offered.
fn choose_subprotocol(headers: &HeaderMap, preferred: &[String]) -> Option<String> {
    let offered: Vec<&[u8]> = headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b','))
        .map(<[u8]>::trim_ascii)
        .collect();
    preferred
        .iter()
        .find(|p| offered.contains(&p.as_bytes()))
        .cloned()
}

/// One extension offer: its name and `(param, value)` pairs.
type Offer<'a> = (&'a str, Vec<(&'a str, Option<String>)>);

/// Splits `Sec-WebSocket-Extensions` into offers (RFC 6455 §9.1 grammar); `None` if malformed.
fn parse_extensions(value: &str) -> Option<Vec<Offer<'_>>> {
    let mut offers = Vec::new();
    for ext in split_outside_quotes(value, ',') {
        let mut parts = split_outside_quotes(ext, ';').into_iter().map(str::trim);
        let name = parts.next().filter(|n| is_token(n))?;
        let mut params = Vec::new();
        for param in parts {
            let (key, value) = match param.split_once('=') {
                Some((k, v)) => (k.trim(), Some(unquote(v.trim())?)),
                None => (param, None),
            };
            if !is_token(key) {
                return None;
            }
            params.push((key, value));
        }
        offers.push((name, params));
    }
    Some(offers)
}

fn split_outside_quotes(s: &str, sep: char) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut start, mut quoted, mut escaped) = (0, false, false);
    for (i, c) in s.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            c if c == sep && !quoted => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out
}

fn unquote(v: &str) -> Option<String> {
    match v.strip_prefix('"').and_then(|v| v.strip_suffix('"')) {
        Some(inner) => {
            let mut out = String::with_capacity(inner.len());
            let mut chars = inner.chars();
            while let Some(c) = chars.next() {
                out.push(if c == '\\' { chars.next()? } else { c });
            }
            is_token(&out).then_some(out)
        }
        None => is_token(v).then(|| v.to_owned()),
    }
}

fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// Accepts the first permessage-deflate offer we can honour (RFC 7692 §5, §7.1).
/// Returns the parameters and the `Sec-WebSocket-Extensions` answer.
fn negotiate_deflate(headers: &HeaderMap, cfg: &DeflateConfig) -> Option<(DeflateParams, String)> {
    let mut joined = String::new();
    for v in headers.get_all(header::SEC_WEBSOCKET_EXTENSIONS) {
        if !joined.is_empty() {
            joined.push(',');
        }
        joined.push_str(v.to_str().ok()?);
    }
    let offers = parse_extensions(&joined)?;
    offers
        .iter()
        .filter(|(name, _)| name.eq_ignore_ascii_case("permessage-deflate"))
        .find_map(|(_, params)| negotiate_offer(params, cfg))
}

/// Accepts one offer, or declines it (`None`) if it is invalid or asks what we cannot do.
fn negotiate_offer(
    params: &[(&str, Option<String>)],
    cfg: &DeflateConfig,
) -> Option<(DeflateParams, String)> {
    let (mut snct, mut cnct) = (false, false);
    let (mut server_bits, mut client_bits) = (None, None);
    for (i, (name, value)) in params.iter().enumerate() {
        if params[..i]
            .iter()
            .any(|(n, _)| n.eq_ignore_ascii_case(name))
        {
            return None; // §7: a repeated parameter makes the offer invalid.
        }
        match (name.to_ascii_lowercase().as_str(), value.as_deref()) {
            ("server_no_context_takeover", None) => snct = true,
            ("client_no_context_takeover", None) => cnct = true,
            ("server_max_window_bits", Some(v)) => server_bits = Some(window_bits(v)?),
            ("client_max_window_bits", None) => client_bits = Some(15),
            ("client_max_window_bits", Some(v)) => client_bits = Some(window_bits(v)?),
            _ => return None,
        }
    }
    // zlib cannot produce a raw stream with a 256-byte window, so an offer demanding 8 from
    // us is declined rather than honoured falsely.
    if server_bits == Some(8) {
        return None;
    }
    let our_server_bits = cfg.server_max_window_bits.clamp(9, 15);
    let params = DeflateParams {
        server_no_context_takeover: snct || cfg.server_no_context_takeover,
        client_no_context_takeover: cnct || cfg.client_no_context_takeover,
        // Compressing with a smaller window than allowed is always safe, so our own limit
        // applies whether or not the client asked for one.
        server_max_window_bits: server_bits.map_or(our_server_bits, |b| b.min(our_server_bits)),
        client_max_window_bits: client_bits
            .map_or(15, |b| b.min(cfg.client_max_window_bits.clamp(9, 15))),
        level: cfg.level.min(9),
    };
    let mut answer = String::from("permessage-deflate");
    if params.server_no_context_takeover {
        answer.push_str("; server_no_context_takeover");
    }
    if params.client_no_context_takeover {
        answer.push_str("; client_no_context_takeover");
    }
    // The window parameters may only be answered when the offer carried them (§7.1.2).
    if server_bits.is_some() {
        answer.push_str(&format!(
            "; server_max_window_bits={}",
            params.server_max_window_bits
        ));
    }
    if client_bits.is_some() && params.client_max_window_bits < 15 {
        answer.push_str(&format!(
            "; client_max_window_bits={}",
            params.client_max_window_bits
        ));
    }
    Some((params, answer))
}

fn window_bits(v: &str) -> Option<u8> {
    // RFC 7692 §7.1.2: 1*DIGIT without leading zeros, 8 to 15.
    if v.starts_with('0') {
        return None;
    }
    v.parse::<u8>().ok().filter(|b| (8..=15).contains(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

    fn request(extra: &[(&str, &str)]) -> Request<()> {
        let mut b = Request::builder()
            .uri("/echo")
            .header("Host", "example.com")
            .header("Upgrade", "websocket")
            .header("Connection", "Upgrade")
            .header("Sec-WebSocket-Key", KEY)
            .header("Sec-WebSocket-Version", "13");
        for (k, v) in extra {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap()
    }

    fn without(name: &str) -> Request<()> {
        let mut req = request(&[]);
        req.headers_mut().remove(name);
        req
    }

    fn deflate_cfg() -> HandshakeConfig {
        HandshakeConfig::default().with_deflate(Some(DeflateConfig::default()))
    }

    fn extensions(offer: &str) -> Option<String> {
        accept(
            &request(&[("Sec-WebSocket-Extensions", offer)]),
            &deflate_cfg(),
        )
        .unwrap()
        .extensions
    }

    #[test]
    fn rfc_accept_key() {
        assert_eq!(accept_key(KEY.as_bytes()), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    }

    #[test]
    fn valid_request_is_accepted_with_101() {
        let accepted = accept(&request(&[]), &HandshakeConfig::default()).unwrap();
        let resp = accepted.response();
        assert_eq!(resp.status(), StatusCode::SWITCHING_PROTOCOLS);
        assert_eq!(
            resp.headers()["sec-websocket-accept"],
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
        assert_eq!(resp.headers()["upgrade"], "websocket");
        assert!(!resp.headers().contains_key("sec-websocket-protocol"));
        assert!(!resp.headers().contains_key("sec-websocket-extensions"));
    }

    #[test]
    fn token_lists_are_case_insensitive() {
        let mut req = request(&[]);
        req.headers_mut()
            .insert("upgrade", HeaderValue::from_static("WebSocket"));
        req.headers_mut().insert(
            "connection",
            HeaderValue::from_static("keep-alive, UPGRADE"),
        );
        assert!(accept(&req, &HandshakeConfig::default()).is_ok());
    }

    #[test]
    fn non_get_is_405_with_allow() {
        let mut req = request(&[]);
        *req.method_mut() = Method::POST;
        let err = accept(&req, &HandshakeConfig::default()).unwrap_err();
        assert_eq!(err, HandshakeError::MethodNotGet);
        assert_eq!(err.response().status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(err.response().headers()["allow"], "GET");
    }

    #[test]
    fn http_10_is_rejected() {
        let mut req = request(&[]);
        *req.version_mut() = Version::HTTP_10;
        assert_eq!(
            accept(&req, &HandshakeConfig::default()),
            Err(HandshakeError::HttpVersionTooOld)
        );
    }

    #[test]
    fn missing_pieces_are_400() {
        let cases = [
            ("host", HandshakeError::MissingHost),
            ("upgrade", HandshakeError::NotWebSocketUpgrade),
            ("connection", HandshakeError::MissingConnectionUpgrade),
            ("sec-websocket-key", HandshakeError::InvalidKey),
        ];
        for (header, expected) in cases {
            let err = accept(&without(header), &HandshakeConfig::default()).unwrap_err();
            assert_eq!(err, expected, "without {header}");
            assert_eq!(err.status(), StatusCode::BAD_REQUEST);
        }
    }

    #[test]
    fn key_must_decode_to_16_bytes() {
        for key in [
            "",
            "not base64!",
            "dGhlIHNhbXBsZQ==",
            "dGhlIHNhbXBsZSBub25jZSBub25jZQ==",
        ] {
            let mut req = request(&[]);
            req.headers_mut()
                .insert("sec-websocket-key", HeaderValue::from_str(key).unwrap());
            assert_eq!(
                accept(&req, &HandshakeConfig::default()),
                Err(HandshakeError::InvalidKey),
                "{key}"
            );
        }
        let req = request(&[("Sec-WebSocket-Key", KEY)]);
        assert_eq!(
            accept(&req, &HandshakeConfig::default()),
            Err(HandshakeError::InvalidKey),
            "repeated key"
        );
    }

    #[test]
    fn missing_or_other_version_is_426_naming_13() {
        let err = accept(
            &without("sec-websocket-version"),
            &HandshakeConfig::default(),
        )
        .unwrap_err();
        assert_eq!(err, HandshakeError::UnsupportedVersion);
        let mut req = request(&[]);
        req.headers_mut()
            .insert("sec-websocket-version", HeaderValue::from_static("8"));
        let err = accept(&req, &HandshakeConfig::default()).unwrap_err();
        let resp = err.response();
        assert_eq!(resp.status(), StatusCode::UPGRADE_REQUIRED);
        assert_eq!(resp.headers()["sec-websocket-version"], "13");
    }

    #[test]
    fn origin_policy() {
        let cfg = HandshakeConfig::default()
            .with_origin(OriginPolicy::AllowList(vec!["https://chat.example".into()]));
        assert!(accept(&request(&[("Origin", "https://CHAT.example")]), &cfg).is_ok());
        assert!(
            accept(&request(&[]), &cfg).is_ok(),
            "non-browser clients send no Origin"
        );
        let err = accept(&request(&[("Origin", "https://evil.example")]), &cfg).unwrap_err();
        assert_eq!(err.status(), StatusCode::FORBIDDEN);
        let any = HandshakeConfig::default();
        assert!(accept(&request(&[("Origin", "https://evil.example")]), &any).is_ok());
    }

    #[test]
    fn subprotocol_follows_server_preference() {
        let cfg = HandshakeConfig::default().with_subprotocols(["v12.stomp", "v11.stomp"]);
        let req = request(&[
            ("Sec-WebSocket-Protocol", "v10.stomp, v11.stomp"),
            ("Sec-WebSocket-Protocol", "v12.stomp"),
        ]);
        assert_eq!(
            accept(&req, &cfg).unwrap().subprotocol.as_deref(),
            Some("v12.stomp")
        );
        let req = request(&[("Sec-WebSocket-Protocol", "mqtt")]);
        assert_eq!(accept(&req, &cfg).unwrap().subprotocol, None);
    }

    #[test]
    fn deflate_is_never_answered_unoffered_or_when_disabled() {
        assert_eq!(
            accept(&request(&[]), &deflate_cfg()).unwrap().extensions,
            None
        );
        let req = request(&[("Sec-WebSocket-Extensions", "permessage-deflate")]);
        assert_eq!(
            accept(&req, &HandshakeConfig::default())
                .unwrap()
                .extensions,
            None
        );
        assert_eq!(extensions("x-webkit-deflate-frame"), None);
    }

    #[test]
    fn deflate_plain_offer() {
        assert_eq!(
            extensions("permessage-deflate").as_deref(),
            Some("permessage-deflate")
        );
    }

    #[test]
    fn deflate_parameters_are_honoured() {
        assert_eq!(
            extensions("permessage-deflate; server_no_context_takeover; server_max_window_bits=9")
                .as_deref(),
            Some("permessage-deflate; server_no_context_takeover; server_max_window_bits=9")
        );
        assert_eq!(
            extensions("permessage-deflate; client_max_window_bits; client_no_context_takeover")
                .as_deref(),
            Some("permessage-deflate; client_no_context_takeover")
        );
        assert_eq!(
            extensions("permessage-deflate; server_max_window_bits=\"12\"").as_deref(),
            Some("permessage-deflate; server_max_window_bits=12")
        );
    }

    #[test]
    fn deflate_declines_bad_offers_and_takes_the_next() {
        for bad in [
            "permessage-deflate; server_max_window_bits=8",
            "permessage-deflate; server_max_window_bits=16",
            "permessage-deflate; server_max_window_bits=09",
            "permessage-deflate; server_max_window_bits",
            "permessage-deflate; server_no_context_takeover=1",
            "permessage-deflate; unknown",
            "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
        ] {
            assert_eq!(extensions(bad), None, "{bad}");
            let with_fallback = format!("{bad}, permessage-deflate; client_max_window_bits");
            assert_eq!(
                extensions(&with_fallback).as_deref(),
                Some("permessage-deflate"),
                "{bad}"
            );
        }
    }

    #[test]
    fn client_window_is_limited_only_when_offered() {
        let cfg = HandshakeConfig::default().with_deflate(Some(DeflateConfig {
            client_max_window_bits: 10,
            ..DeflateConfig::default()
        }));
        let answer =
            |offer| accept(&request(&[("Sec-WebSocket-Extensions", offer)]), &cfg).unwrap();
        let a = answer("permessage-deflate; client_max_window_bits");
        assert_eq!(
            a.extensions.as_deref(),
            Some("permessage-deflate; client_max_window_bits=10")
        );
        assert_eq!(a.deflate.unwrap().client_max_window_bits, 10);
        let a = answer("permessage-deflate");
        assert_eq!(a.extensions.as_deref(), Some("permessage-deflate"));
        assert_eq!(a.deflate.unwrap().client_max_window_bits, 15);
    }

    #[test]
    fn parses_raw_requests_incrementally() {
        let raw = format!(
            "GET /echo HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        );
        for end in 0..raw.len() {
            assert!(parse_request(&raw.as_bytes()[..end]).unwrap().is_none());
        }
        let (req, len) = parse_request(raw.as_bytes()).unwrap().unwrap();
        assert_eq!(len, raw.len());
        assert!(accept(&req, &HandshakeConfig::default()).is_ok());
        assert_eq!(
            parse_request(b"\x00\x01 garbage\r\n\r\n").unwrap_err(),
            HandshakeError::MalformedRequest
        );
    }
}
