//! The plain WebSocket broadcast protocol (e.g. the `ws` package's broadcast example): no
//! join, every text sent is a room message and every message received a delivery.

use futures_util::SinkExt;
use tokio_tungstenite::tungstenite::Message;

use super::link::{Closed, Credential, Dial, Handler, Link, OpenError, Target};
use super::transport::{next_ws_payload, ws_closed, ws_open, Ws};
use crate::checker::Stream;

/// A connection to a broadcast server.
pub struct WsBroadcast {
    ws: Box<Ws>,
    /// A join that needs no answer: reported by the next `read`.
    joined_pending: bool,
}

impl WsBroadcast {
    /// Opens the server's path (`/` by default) as a guest: such servers know no users.
    pub(super) async fn open(dial: &Dial<'_>) -> Result<Self, OpenError> {
        let path = dial.targets.path("/");
        let ws = ws_open(dial, path, &Credential::Guest, None).await?;
        Ok(Self {
            ws: Box::new(ws),
            joined_pending: false,
        })
    }
}

impl Link for WsBroadcast {
    async fn join(&mut self, _room: &str, _dms: bool, _since: Option<u64>) -> Result<(), Closed> {
        // One server, one room: connected is joined.
        self.joined_pending = true;
        Ok(())
    }

    async fn send(&mut self, to: Target<'_>, body: &str, _seq: u64) -> Result<(), Closed> {
        match to {
            Target::Room(_) => self.ws.send(Message::text(body)).await.map_err(ws_closed),
            Target::User(_) => Err(Closed::new("this protocol has no direct messages")),
        }
    }

    async fn read(&mut self, h: &mut impl Handler) -> Result<(), Closed> {
        if self.joined_pending {
            self.joined_pending = false;
            h.on_joined();
            return Ok(());
        }
        if let Some(payload) = next_ws_payload(&mut self.ws).await? {
            h.on_message(Stream::Room, None, &payload);
        }
        Ok(())
    }

    async fn close(&mut self) {
        // The WebSocket's own close (with a close frame), not `SinkExt::close` on the box.
        let _ = (*self.ws).close(None).await;
    }
}
