//! A client of the raw JSON protocol at `/ws`, shared by the test files that speak it.
#![allow(dead_code)] // each test file uses a different subset

use futures_util::{SinkExt, StreamExt};
use parley_tests::stomp::WAIT;
use parley_tests::ServerProcess;
use serde_json::Value;
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// A WebSocket to `/ws`.
pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Connects to `/ws?name=<name>`.
pub async fn raw(server: &ServerProcess, name: &str) -> Ws {
    raw_at(server.addr(), name).await
}

/// Connects to `ws://<addr>/ws?name=<name>` (a node, or a balancer in front of nodes).
pub async fn raw_at(addr: std::net::SocketAddr, name: &str) -> Ws {
    let url = format!("ws://{addr}/ws?name={name}");
    timeout(WAIT, tokio_tungstenite::connect_async(url))
        .await
        .expect("connect timed out")
        .expect("connect")
        .0
}

/// Sends one JSON message.
pub async fn send(ws: &mut Ws, value: Value) {
    ws.send(Message::text(value.to_string()))
        .await
        .expect("send");
}

/// The next message of type `kind` within `limit` (others skipped), or `None`.
pub async fn next_of(ws: &mut Ws, kind: &str, limit: std::time::Duration) -> Option<Value> {
    timeout(limit, async {
        loop {
            let v = recv(ws).await;
            if v["type"] == kind {
                return v;
            }
        }
    })
    .await
    .ok()
}

/// The next JSON message (pings and pongs skipped); checks that `type` comes first.
pub async fn recv(ws: &mut Ws) -> Value {
    loop {
        match timeout(WAIT, ws.next())
            .await
            .expect("nothing received")
            .expect("stream ended")
            .expect("ws error")
        {
            Message::Text(t) => {
                assert!(t.starts_with("{\"type\":"), "`type` comes first: {t}");
                return serde_json::from_str(&t).expect("server sent invalid JSON");
            }
            Message::Ping(_) | Message::Pong(_) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
}
