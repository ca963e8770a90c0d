//! tokio-tungstenite helpers shared by the end-to-end test files.
#![allow(dead_code)] // each test file uses a different subset

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use parley_tests::ServerProcess;
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// Bound for one network wait.
pub const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// A client WebSocket over plain TCP.
pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Handshake response as tungstenite reports it.
pub type Response = tokio_tungstenite::tungstenite::handshake::client::Response;

/// A client config that accepts messages and frames well beyond 16 MiB.
pub fn large_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .max_message_size(Some(64 << 20))
        .max_frame_size(Some(64 << 20))
}

/// Connects to `path` on `server`, returning the stream and the 101 response.
pub async fn connect(server: &ServerProcess, path: &str) -> (Ws, Response) {
    let url = server.ws_url(path);
    let handshake =
        tokio_tungstenite::connect_async_with_config(url.as_str(), Some(large_config()), true);
    match timeout(IO_TIMEOUT, handshake).await {
        Err(_) => panic!("WebSocket handshake with {url} timed out"),
        Ok(Err(e)) => panic!("WebSocket handshake with {url} failed: {e}"),
        Ok(Ok(pair)) => pair,
    }
}

/// Sends one message (bounded by `limit`).
pub async fn send_within(ws: &mut Ws, msg: Message, limit: Duration) {
    timeout(limit, ws.send(msg))
        .await
        .expect("timed out sending a message")
        .expect("send failed");
}

/// Sends one message (bounded by [`IO_TIMEOUT`]).
pub async fn send(ws: &mut Ws, msg: Message) {
    send_within(ws, msg, IO_TIMEOUT).await;
}

/// Receives the next message other than a server ping (bounded by `limit`).
pub async fn recv_within(ws: &mut Ws, limit: Duration) -> Message {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let next = tokio::time::timeout_at(deadline, ws.next())
            .await
            .unwrap_or_else(|_| panic!("no message from the server within {limit:?}"));
        match next {
            None => panic!("server ended the stream, expected a message"),
            Some(Err(e)) => panic!("WebSocket error while waiting for a message: {e}"),
            // Unsolicited pings (keep-alive) are answered by tungstenite itself.
            Some(Ok(Message::Ping(_))) => continue,
            Some(Ok(msg)) => return msg,
        }
    }
}

/// Receives the next message other than a server ping (bounded by [`IO_TIMEOUT`]).
pub async fn recv(ws: &mut Ws) -> Message {
    recv_within(ws, IO_TIMEOUT).await
}

/// Polls the stream until it ends (flushing any queued close reply); panics on data or timeout.
pub async fn drain_to_end(ws: &mut Ws, limit: Duration) {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Err(_) => panic!("stream did not end within {limit:?}"),
            Ok(None) => return,
            // The socket going away after the close handshake is also an end.
            Ok(Some(Err(_))) => return,
            Ok(Some(Ok(Message::Ping(_)))) => continue,
            Ok(Some(Ok(msg))) => panic!("expected the stream to end, got {msg:?}"),
        }
    }
}

/// Asserts a text round trip works on `ws`.
pub async fn assert_echo(ws: &mut Ws, text: &str) {
    send(ws, Message::text(text)).await;
    match recv(ws).await {
        Message::Text(t) => assert_eq!(t.as_str(), text),
        other => panic!("expected Text({text:?}) echo, got {other:?}"),
    }
}
