//! The `/echo` endpoint (off unless `--echo`): every WebSocket message goes back as it came.
//! It exists for conformance testing (the Autobahn suite drives it).

use std::convert::Infallible;
use std::future::Future;

use bytes::Bytes;

use parley_protocol::{Connection, Event};

use crate::ws::{Endpoint, Outbound};

/// Echoes text as text, binary as binary.
pub struct Echo;

impl Endpoint for Echo {
    type Ready = Infallible;

    fn on_event(&mut self, conn: &mut Connection, event: Event) {
        if let Event::Message(message) = event {
            // After our close frame went out, nothing more may be sent; dropping is correct.
            let _ = conn.send(&message);
        }
    }

    async fn after_events(&mut self, _conn: &mut Connection) {}

    fn outbound(&mut self) -> impl Future<Output = Outbound> + Send {
        std::future::pending()
    }

    fn write_ready(&mut self, ready: Infallible, _: impl FnMut(&Bytes)) {
        match ready {}
    }
}
