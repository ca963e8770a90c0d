//! The bots' HTTP client: one-shot HTTP/1.1 requests to the server's JSON API, and the STOMP TCP
//! address learned from `/api/info`.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use anyhow::{bail, Context};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::conn::tcp_connect;

/// How long learning the server's settings may take before the run gives up.
const INFO_TIMEOUT: Duration = Duration::from_secs(10);

/// A server's answer.
pub struct Response {
    /// The HTTP status code.
    pub status: u16,
    /// The body, as text.
    pub body: String,
    /// `Retry-After`, or 1 s when absent.
    pub retry_after: Duration,
}

/// A request that got no usable answer.
#[derive(Debug)]
pub struct RequestFailed {
    /// What happened, naming the request.
    pub why: String,
}

impl fmt::Display for RequestFailed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.why)
    }
}

impl std::error::Error for RequestFailed {}

/// A one-shot HTTP/1.1 request (`Connection: close`) from `source`, with a JSON body if given.
pub async fn request(
    http: SocketAddr,
    source: Option<IpAddr>,
    method: &str,
    path: &str,
    json: Option<&str>,
) -> Result<Response, RequestFailed> {
    let failed = |e: std::io::Error| RequestFailed {
        why: format!("{method} {path}: {e}"),
    };
    let mut tcp = tcp_connect(http, source, None).await.map_err(failed)?;
    let mut request = format!("{method} {path} HTTP/1.1\r\nHost: {http}\r\n");
    if let Some(json) = json {
        request.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            json.len()
        ));
    }
    request.push_str("Connection: close\r\n\r\n");
    request.push_str(json.unwrap_or(""));
    tcp.write_all(request.as_bytes()).await.map_err(failed)?;
    let mut answer = Vec::new();
    tcp.read_to_end(&mut answer).await.map_err(failed)?;
    parse_response(&answer).ok_or_else(|| RequestFailed {
        why: format!("{method} {path}: malformed HTTP answer"),
    })
}

fn parse_response(answer: &[u8]) -> Option<Response> {
    let text = String::from_utf8_lossy(answer);
    let (head, body) = text.split_once("\r\n\r\n")?;
    let mut lines = head.lines();
    let status = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let retry_after = lines
        .filter_map(|l| l.split_once(':'))
        .find(|(name, _)| name.eq_ignore_ascii_case("retry-after"))
        .and_then(|(_, v)| v.trim().parse().ok())
        .map_or(Duration::from_secs(1), Duration::from_secs);
    Some(Response {
        status,
        body: body.to_owned(),
        retry_after,
    })
}

/// The STOMP-over-TCP address the server at `http` says it listens on (`GET /api/info`).
pub async fn stomp_tcp_address(http: SocketAddr) -> anyhow::Result<SocketAddr> {
    let context = || format!("learning the STOMP TCP address from http://{http}/api/info");
    let asked = request(http, None, "GET", "/api/info", None);
    let answer = match tokio::time::timeout(INFO_TIMEOUT, asked).await {
        Ok(answer) => answer.with_context(context)?,
        Err(_) => bail!("{}: no answer within {INFO_TIMEOUT:?}", context()),
    };
    if answer.status != 200 {
        bail!("{}: HTTP {}", context(), answer.status);
    }
    stomp_tcp_from_info(&answer.body, http).with_context(context)
}

/// The `stomp_tcp` of an `/api/info` answer; an unspecified IP (a server bound to every
/// interface) means the address the bots reach it at over HTTP.
fn stomp_tcp_from_info(body: &str, http: SocketAddr) -> anyhow::Result<SocketAddr> {
    let info: serde_json::Value = serde_json::from_str(body).context("the answer is not JSON")?;
    let address = match info.get("stomp_tcp") {
        Some(serde_json::Value::String(a)) => a,
        Some(serde_json::Value::Null) => {
            bail!("the server has STOMP over TCP off (\"stomp_tcp\": null)")
        }
        _ => bail!("the answer has no \"stomp_tcp\" (an older server?): pass --stomp-tcp"),
    };
    let mut address: SocketAddr = address
        .parse()
        .with_context(|| format!("\"stomp_tcp\": {address:?} is not ADDR:PORT"))?;
    if address.ip().is_unspecified() {
        address.set_ip(http.ip());
    }
    Ok(address)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_http_answers() {
        let r = parse_response(b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 2\r\n\r\n{}")
            .unwrap();
        assert_eq!(
            (r.status, r.body.as_str(), r.retry_after),
            (503, "{}", Duration::from_secs(2))
        );
        let r = parse_response(b"HTTP/1.1 201 Created\r\n\r\n").unwrap();
        assert_eq!((r.status, r.retry_after), (201, Duration::from_secs(1)));
        assert!(parse_response(b"garbage").is_none());
    }

    #[test]
    fn the_stomp_tcp_address_comes_from_info() {
        let http: SocketAddr = "10.0.0.5:8080".parse().unwrap();
        let info = |stomp: &str| {
            format!(r#"{{"guests":true,"registration":"open","rooms":{{}},"stomp_tcp":{stomp}}}"#)
        };
        let learned = |body: &str| stomp_tcp_from_info(body, http).map_err(|e| e.to_string());
        assert_eq!(
            learned(&info(r#""127.0.0.1:41234""#)),
            Ok("127.0.0.1:41234".parse().unwrap())
        );
        // Bound to every interface: reached where the HTTP address is.
        assert_eq!(
            learned(&info(r#""0.0.0.0:61613""#)),
            Ok("10.0.0.5:61613".parse().unwrap())
        );
        assert!(learned(&info("null")).unwrap_err().contains("off"));
        assert!(learned(r#"{"guests":true}"#)
            .unwrap_err()
            .contains("--stomp-tcp"));
        assert!(learned(&info(r#""nope""#)).is_err());
        assert!(learned("<html>").is_err());
    }
}
