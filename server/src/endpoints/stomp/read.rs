//! `SEND /app/read` (headers `room` — or `with` for a conversation — and `id`): marks a room or
//! conversation read for the session's account. Every session of the account hears it on
//! `/user/queue/read` (MESSAGE headers `room` or `with`, and `last-read`), this one too if it
//! subscribed; a `receipt` comes once the mark is stored.

use parley_stomp::{Command, Frame};

use super::transport::Transport;
use super::{Conn, Ending};

impl<T: Transport> Conn<T> {
    /// Stores the mark of a `SEND /app/read` and answers its receipt; a refusal is an ERROR
    /// (then the connection ends, as for every STOMP error).
    pub(super) async fn mark_read(&mut self, frame: Frame) -> Option<Ending> {
        let marked = match self.session.identity() {
            None => Err("not connected".to_owned()),
            Some(who) => {
                let who = who.clone();
                let hub = self.hub.hub().clone();
                match frame.get("id").map(str::parse::<u64>) {
                    Some(Ok(id)) => match frame.get("with") {
                        Some(with) => hub.mark_read_with(&who, with, id).await,
                        None => {
                            let room = frame.get("room").unwrap_or_default();
                            hub.mark_read(&who, room, id).await
                        }
                    }
                    .map_err(|refusal| format!("{}: {}", refusal.code, refusal.message)),
                    _ => Err(
                        "SEND to /app/read needs a room (or with) header and a numeric id"
                            .to_owned(),
                    ),
                }
            }
        };
        let receipt = frame.get("receipt").map(str::to_owned);
        let reply = match (marked, receipt) {
            (Err(why), receipt) => {
                let error = self.session.error_frame(&why, receipt);
                self.transport.queue_frame(&[error], true);
                return Some(Ending::Done);
            }
            (Ok(_), None) => return None,
            (Ok(_), Some(receipt)) => Frame::new(Command::Receipt).header("receipt-id", &receipt),
        };
        let reply = parley_stomp::codec::encode(&reply, self.session.version());
        self.transport.queue_frame(&[reply], true);
        None
    }
}
