//! The sockets every protocol shares: TCP connect (source address, shrunk receive buffer),
//! the WebSocket handshake, reading a WebSocket's data messages, and HTTP/1.1 connections
//! (SockJS, SSE, Engine.IO long-polling).

use std::io;
use std::net::{IpAddr, SocketAddr};

use bytes::Bytes;
use futures_util::StreamExt;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::WebSocketStream;

use super::link::{Closed, Credential, Dial, OpenError};
use crate::stats::ErrorKind;

/// A client WebSocket over plain TCP.
pub(super) type Ws = WebSocketStream<TcpStream>;

/// Opens a TCP connection, bound to `source` first when given (so many source addresses
/// multiply the available ephemeral ports).
///
/// `rcvbuf` shrinks the socket's receive buffer (a slow consumer: the server's own queue, not
/// the kernels' buffers, should fill up).
pub async fn tcp_connect(
    target: SocketAddr,
    source: Option<IpAddr>,
    rcvbuf: Option<u32>,
) -> io::Result<TcpStream> {
    let socket = if target.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    if let Some(size) = rcvbuf {
        socket.set_recv_buffer_size(size)?;
    }
    if let Some(ip) = source {
        socket.bind(SocketAddr::new(ip, 0))?;
    }
    let stream = socket.connect(target).await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// The WebSocket handshake on `path` of the server's HTTP address, offering `subprotocol` and
/// sending a token `credential` as a bearer `Authorization`.
pub(super) async fn ws_open(
    dial: &Dial<'_>,
    path: &str,
    credential: &Credential,
    subprotocol: Option<&'static str>,
) -> Result<Ws, OpenError> {
    let http = dial.targets.http;
    let mut request = format!("ws://{http}{path}")
        .into_client_request()
        .map_err(OpenError::connect)?;
    if let Some(p) = subprotocol {
        request
            .headers_mut()
            .insert("Sec-WebSocket-Protocol", HeaderValue::from_static(p));
    }
    if let Credential::Token(token) = credential {
        let value =
            HeaderValue::from_str(&format!("Bearer {token}")).map_err(OpenError::connect)?;
        request.headers_mut().insert("Authorization", value);
    }
    let tcp = tcp_connect(http, dial.source, dial.rcvbuf)
        .await
        .map_err(OpenError::connect)?;
    match tokio_tungstenite::client_async_with_config(request, tcp, Some(ws_config())).await {
        Ok((ws, _)) => Ok(ws),
        Err(tungstenite::Error::Http(response)) => {
            let status = response.status().as_u16();
            let kind = if status == 401 || status == 403 {
                ErrorKind::Auth
            } else {
                ErrorKind::Connect
            };
            let body = response
                .body()
                .as_deref()
                .map(String::from_utf8_lossy)
                .unwrap_or_default();
            Err(OpenError {
                kind,
                why: format!("HTTP {status} {}", body.trim()),
            })
        }
        Err(e) => Err(OpenError::connect(format!("handshake: {e}"))),
    }
}

/// Bots read small messages on many sockets: tungstenite zero-fills its whole read buffer
/// before every read (128 KiB by default), which cost the bots half their CPU and, with it, the
/// latency they measure; 8 KiB still holds dozens of chat messages per read.
fn ws_config() -> tungstenite::protocol::WebSocketConfig {
    tungstenite::protocol::WebSocketConfig::default().read_buffer_size(8 * 1024)
}

/// The next data message's payload; `Ok(None)` for control frames (tungstenite answers pings).
pub(super) async fn next_ws_payload(ws: &mut Ws) -> Result<Option<bytes::Bytes>, Closed> {
    match ws.next().await {
        None => Err(Closed::new("server closed the connection")),
        Some(Err(e)) => Err(ws_closed(e)),
        Some(Ok(Message::Text(t))) => Ok(Some(bytes::Bytes::from(t))),
        Some(Ok(Message::Binary(b))) => Ok(Some(b)),
        Some(Ok(Message::Close(frame))) => Err(Closed::new(match frame {
            Some(f) => format!("closed {}: {}", u16::from(f.code), f.reason),
            None => "closed".into(),
        })),
        Some(Ok(_)) => Ok(None),
    }
}

pub(super) fn ws_closed(e: tungstenite::Error) -> Closed {
    Closed::new(e.to_string())
}

pub(super) fn io_closed(e: io::Error) -> Closed {
    Closed::new(e.to_string())
}

/// An HTTP/1.1 connection to the server, its driver on a task of its own.
pub(super) async fn http_connect(
    dial: &Dial<'_>,
    http: SocketAddr,
) -> Result<SendRequest<Full<Bytes>>, OpenError> {
    let tcp = tcp_connect(http, dial.source, dial.rcvbuf)
        .await
        .map_err(OpenError::connect)?;
    let (sender, connection) = http1::handshake(TokioIo::new(tcp))
        .await
        .map_err(OpenError::connect)?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(sender)
}

/// One HTTP/1.1 connection to the server for a fallback transport's requests (SockJS,
/// Engine.IO long-polling), one request at a time.
pub(super) struct HttpConn {
    sender: SendRequest<Full<Bytes>>,
    host: String,
}

impl HttpConn {
    /// Connects to the server's HTTP address.
    pub(super) async fn open(dial: &Dial<'_>) -> Result<Self, OpenError> {
        let http = dial.targets.http;
        Ok(Self {
            sender: http_connect(dial, http).await?,
            host: http.to_string(),
        })
    }

    /// Sends a request with a `(content type, body)`, or none; the response's body streams.
    pub(super) async fn request(
        &mut self,
        method: Method,
        uri: &str,
        body: Option<(&'static str, Bytes)>,
    ) -> Result<Response<Incoming>, String> {
        let mut request = Request::builder()
            .method(method)
            .uri(uri)
            .header("host", &self.host);
        if let Some((content_type, _)) = &body {
            request = request.header("content-type", *content_type);
        }
        let request = request
            .body(Full::new(body.map(|(_, b)| b).unwrap_or_default()))
            .map_err(|e| e.to_string())?;
        self.sender
            .send_request(request)
            .await
            .map_err(|e| e.to_string())
    }

    /// A request answered whole: its status and body (read to the end, so the connection is
    /// ready for the next request).
    pub(super) async fn exchange(
        &mut self,
        method: Method,
        uri: &str,
        body: Option<(&'static str, Bytes)>,
    ) -> Result<(StatusCode, Bytes), String> {
        let response = self.request(method, uri, body).await?;
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?;
        Ok((status, body.to_bytes()))
    }
}
