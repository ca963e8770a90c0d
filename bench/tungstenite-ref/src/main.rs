//! The hand-written server the benchmark's issue describes: tokio-tungstenite with default
//! buffers and one `tokio::sync::broadcast` channel. Every text message received is sent to
//! every client, the sender included. A client that falls more than the channel's capacity
//! behind silently loses the messages it missed (`RecvError::Lagged` is skipped), as such
//! servers usually do.
//!
//! Usage: `tungstenite-ref [ADDR]` (default `127.0.0.1:8083`).

use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::broadcast::{self, error::RecvError};
use tokio_tungstenite::tungstenite::Message;

/// Messages a receiver may fall behind before it starts losing them.
const CAPACITY: usize = 1024;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8083".to_owned());
    let listener = TcpListener::bind(&addr).await?;
    println!("tungstenite-ref on {addr}");
    let (tx, _) = broadcast::channel::<Message>(CAPACITY);
    loop {
        let (tcp, _) = listener.accept().await?;
        let tx = tx.clone();
        tokio::spawn(async move {
            let _ = tcp.set_nodelay(true);
            serve(tcp, tx).await;
        });
    }
}

async fn serve(tcp: TcpStream, tx: broadcast::Sender<Message>) {
    let Ok(ws) = tokio_tungstenite::accept_async(tcp).await else {
        return;
    };
    let (mut sink, mut stream) = ws.split();
    let mut rx = tx.subscribe();
    let writer = tokio::spawn(async move {
        loop {
            match rx.recv().await {
                Ok(msg) => {
                    if sink.send(msg).await.is_err() {
                        break;
                    }
                }
                // Fell behind: the missed messages are gone, carry on with the next one.
                Err(RecvError::Lagged(_)) => continue,
                Err(RecvError::Closed) => break,
            }
        }
    });
    while let Some(Ok(msg)) = stream.next().await {
        match msg {
            Message::Text(_) | Message::Binary(_) => {
                let _ = tx.send(msg);
            }
            Message::Close(_) => break,
            _ => {}
        }
    }
    writer.abort();
}
