//! A minimal HTTP/1.1 client over a tokio `TcpStream`: one request per connection
//! (`Connection: close`), `Content-Length`, chunked and read-to-EOF bodies, every wait bounded.
//! Written here so the auth tests control every header (Origin, Cookie, Host) and trust no
//! HTTP library.

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

/// Bound for one whole request/response exchange.
pub const HTTP_TIMEOUT: Duration = Duration::from_secs(20);

/// A complete HTTP response.
#[derive(Debug, Clone)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Header fields in order, names as sent.
    pub headers: Vec<(String, String)>,
    /// The body, de-chunked.
    pub body: Vec<u8>,
}

impl Response {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.header_values(name).into_iter().next()
    }

    /// Every value of header `name` (case-insensitive), in order.
    pub fn header_values(&self, name: &str) -> Vec<&str> {
        crate::header_values(&self.headers, name)
    }

    /// The body as (lossy) text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body parsed as JSON; panics with the status and body when it is not JSON.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "response {} body is not JSON ({e}): {:?}",
                self.status,
                self.text()
            )
        })
    }

    /// The `Set-Cookie` for cookie `name`, parsed.
    pub fn set_cookie(&self, name: &str) -> Option<SetCookie> {
        self.header_values("set-cookie")
            .into_iter()
            .filter_map(SetCookie::parse)
            .find(|c| c.name == name)
    }

    /// Panics with the whole response unless the status is `status`.
    #[track_caller]
    pub fn assert_status(&self, status: u16, what: &str) -> &Response {
        assert_eq!(
            self.status,
            status,
            "{what}: expected HTTP {status}, got {} {:?} body {:?}",
            self.status,
            self.headers,
            self.text()
        );
        self
    }
}

/// A parsed `Set-Cookie` header.
#[derive(Debug, Clone)]
pub struct SetCookie {
    /// Cookie name.
    pub name: String,
    /// Cookie value.
    pub value: String,
    /// Attributes (`HttpOnly`, `Path=/`, ...) as `(name, value)`; flags have an empty value.
    pub attributes: Vec<(String, String)>,
}

impl SetCookie {
    /// Parses `name=value; Attr; Attr=v`.
    pub fn parse(header: &str) -> Option<SetCookie> {
        let mut parts = header.split(';');
        let (name, value) = parts.next()?.trim().split_once('=')?;
        let attributes = parts
            .map(|a| {
                let a = a.trim();
                match a.split_once('=') {
                    Some((n, v)) => (n.trim().to_string(), v.trim().to_string()),
                    None => (a.to_string(), String::new()),
                }
            })
            .collect();
        Some(SetCookie {
            name: name.trim().to_string(),
            value: value.trim().to_string(),
            attributes,
        })
    }

    /// The value of attribute `name` (case-insensitive); `Some("")` for a flag.
    pub fn attribute(&self, name: &str) -> Option<&str> {
        self.attributes
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Sends `method path` to `addr` with `headers` and an optional body; returns the response.
/// `Host: <addr>` (so the server's own origin is `http://<addr>`), `Connection: close` and
/// `Content-Length` are added unless given.
pub async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> Response {
    timeout(
        HTTP_TIMEOUT,
        request_inner(addr, method, path, headers, body),
    )
    .await
    .unwrap_or_else(|_| panic!("{method} {path}: no complete response within {HTTP_TIMEOUT:?}"))
}

/// [`request`] with a JSON body (`Content-Type: application/json`).
pub async fn request_json(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &Value,
) -> Response {
    let mut all = vec![("Content-Type", "application/json")];
    all.extend_from_slice(headers);
    let bytes = body.to_string().into_bytes();
    request(addr, method, path, &all, Some(&bytes)).await
}

/// `GET path` with `headers`.
pub async fn get(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Response {
    request(addr, "GET", path, headers, None).await
}

/// `GET path` every 100 ms until it answers `status`, within `within`; that answer. Panics
/// with the last answer when it never does.
pub async fn until_status(addr: SocketAddr, path: &str, status: u16, within: Duration) -> Response {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let response = get(addr, path, &[]).await;
        if response.status == status {
            return response;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "GET {path} still answers {} {:?} after {within:?}, not {status}",
            response.status,
            response.text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `POST path` with a JSON body.
pub async fn post_json(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
    body: &Value,
) -> Response {
    request_json(addr, "POST", path, headers, body).await
}

/// `DELETE path` with `headers`.
pub async fn delete(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Response {
    request(addr, "DELETE", path, headers, None).await
}

async fn request_inner(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> Response {
    let mut stream = TcpStream::connect(addr)
        .await
        .unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
    stream.set_nodelay(true).expect("set TCP_NODELAY");
    let bytes = request_bytes(addr, method, path, headers, body.unwrap_or_default());
    crate::logs::note_path(path);
    crate::logs::note_headers(headers);
    crate::logs::note_body(body.unwrap_or_default());
    stream
        .write_all(&bytes)
        .await
        .unwrap_or_else(|e| panic!("{method} {path}: write failed: {e}"));
    let response = read_response(&mut stream, method == "HEAD").await;
    if crate::logs::log_dir().is_some() {
        let headers: Vec<(&str, &str)> = response
            .headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect();
        crate::logs::note_headers(&headers);
        crate::logs::note_body(&response.body);
    }
    response
}

/// The bytes of request `method path` to `addr` with `headers` and `body`: `Host: <addr>`,
/// `Connection: close` and (for a body, or a method that carries one) `Content-Length` are
/// added unless given.
pub fn request_bytes(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Vec<u8> {
    let has = |name: &str| headers.iter().any(|(n, _)| n.eq_ignore_ascii_case(name));
    let mut req = format!("{method} {path} HTTP/1.1\r\n");
    if !has("host") {
        req.push_str(&format!("Host: {addr}\r\n"));
    }
    if !has("connection") {
        req.push_str("Connection: close\r\n");
    }
    if !has("content-length") && (!body.is_empty() || matches!(method, "POST" | "PUT" | "PATCH")) {
        req.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    for (name, value) in headers {
        req.push_str(&format!("{name}: {value}\r\n"));
    }
    req.push_str("\r\n");
    let mut bytes = req.into_bytes();
    bytes.extend_from_slice(body);
    bytes
}

/// A response head (without its blank line): the status and the header fields in order, names
/// as sent; `Err` names a bad status line.
pub fn parse_head(head: &[u8]) -> Result<(u16, Vec<(String, String)>), String> {
    let head = String::from_utf8_lossy(head);
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status: u16 = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad status line {status_line:?}"))?;
    let headers = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
        .collect();
    Ok((status, headers))
}

/// Reads one response from `stream` (the caller bounds the time).
pub async fn read_response<S: AsyncRead + Unpin>(stream: &mut S, head_only: bool) -> Response {
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 8192];
    let head_end = loop {
        if let Some(pos) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break pos;
        }
        let n = stream.read(&mut chunk).await.unwrap_or(0);
        assert!(
            n != 0,
            "connection closed before a complete response head; got {:?}",
            String::from_utf8_lossy(&buf)
        );
        buf.extend_from_slice(&chunk[..n]);
    };
    let (status, headers) = parse_head(&buf[..head_end]).unwrap_or_else(|why| panic!("{why}"));
    let mut rest = buf[head_end + 4..].to_vec();
    let find = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    };
    let no_body = head_only || status == 204 || status == 304 || (100..200).contains(&status);
    let body = if no_body {
        Vec::new()
    } else if find("transfer-encoding").is_some_and(|v| v.to_ascii_lowercase().contains("chunked"))
    {
        read_chunked(stream, rest).await
    } else if let Some(len) = find("content-length") {
        let len: usize = len
            .parse()
            .unwrap_or_else(|_| panic!("bad Content-Length {len:?}"));
        while rest.len() < len {
            let n = stream.read(&mut chunk).await.unwrap_or(0);
            assert!(n != 0, "connection closed inside a {len}-byte body");
            rest.extend_from_slice(&chunk[..n]);
        }
        rest.truncate(len);
        rest
    } else {
        // No framing: the body runs to EOF (we sent `Connection: close`).
        loop {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => break rest,
                Ok(n) => rest.extend_from_slice(&chunk[..n]),
            }
        }
    };
    Response {
        status,
        headers,
        body,
    }
}

async fn read_chunked<S: AsyncRead + Unpin>(stream: &mut S, mut buf: Vec<u8>) -> Vec<u8> {
    let mut body = Vec::new();
    let mut chunk = vec![0u8; 8192];
    loop {
        // A size line.
        let line_end = loop {
            if let Some(pos) = buf.windows(2).position(|w| w == b"\r\n") {
                break pos;
            }
            let n = stream.read(&mut chunk).await.unwrap_or(0);
            assert!(n != 0, "connection closed inside a chunk size line");
            buf.extend_from_slice(&chunk[..n]);
        };
        let line = String::from_utf8_lossy(&buf[..line_end]).into_owned();
        let size_hex = line.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_hex, 16)
            .unwrap_or_else(|_| panic!("bad chunk size line {line:?}"));
        buf.drain(..line_end + 2);
        if size == 0 {
            // Trailers (ignored) up to the final empty line.
            loop {
                if let Some(pos) = buf.windows(2).position(|w| w == b"\r\n") {
                    if pos == 0 {
                        return body;
                    }
                    buf.drain(..pos + 2);
                    continue;
                }
                match stream.read(&mut chunk).await {
                    Ok(0) | Err(_) => return body,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            }
        }
        while buf.len() < size + 2 {
            let n = stream.read(&mut chunk).await.unwrap_or(0);
            assert!(n != 0, "connection closed inside a {size}-byte chunk");
            buf.extend_from_slice(&chunk[..n]);
        }
        body.extend_from_slice(&buf[..size]);
        buf.drain(..size + 2);
    }
}

/// An unlabelled metric's value on a `--metrics` listener's `/metrics`.
pub async fn metric(metrics: SocketAddr, name: &str) -> f64 {
    let text = get(metrics, "/metrics", &[]).await.text();
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in\n{text}"))
}

/// Waits (up to 10 s) until [`metric`] `name` is `want`.
pub async fn until_metric(metrics: SocketAddr, name: &str, want: f64) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let got = metric(metrics, name).await;
        if got == want {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{name} is {got}, expected {want}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
