//! SEND: checked when it arrives, made ready (routed by the server's rules), checked by the
//! broker, and only then accepted and published, so a refused SEND leaves nothing behind.

use std::sync::Arc;

use bytes::Bytes;

use super::{required, Refusal, Session, State, RESERVED_HEADERS};
use crate::broker::{is_room, Broker, BrokerEvent, Publish, Receipt};
use crate::codec;
use crate::destination::Destination;
use crate::frame::{Command, Frame};

/// A SEND ready to publish: where it goes after the server's routing, and the message.
pub(super) struct Outgoing {
    pub(super) destination: Destination,
    pub(super) publish: Publish,
    /// Its RECEIPT waits until the message is durable.
    defers_receipt: bool,
}

/// What [`Session::send_shared`] made of a SEND.
pub enum SharedSend {
    /// Not a plain room message: nothing was changed; apply it with [`Session::handle`].
    Exclusive,
    /// Checked and accepted: publish it; its RECEIPT, if any, travels with the message.
    Ready(Destination, Publish),
    /// Refused: the ERROR to send, then end the session with [`Session::close`].
    Refused(Bytes),
}

impl Session {
    /// The room a SEND goes to if [`Session::send_shared`] can take it: the session connected,
    /// the frame a SEND to `/topic/<room>` outside a transaction.
    pub fn shared_room<'f>(&self, frame: &'f Frame) -> Option<&'f str> {
        room_of_send(frame).filter(|_| self.state == State::Connected)
    }

    /// A plain room message, checked and accepted as [`Session::handle`] would, without the
    /// broker: for publishing in the room's turn while the broker is shared. The room must have
    /// been published to before (its turn exists), so accepting it creates nothing.
    pub fn send_shared(&mut self, frame: &Frame, now_ms: u64) -> SharedSend {
        let Some(Ok(destination)) = self.shared_room(frame).map(|_| parse_destination(frame))
        else {
            return SharedSend::Exclusive;
        };
        // Routed first (it changes nothing): only a message still for the room goes on here.
        let out = match self.prepare(frame, &destination, now_ms) {
            Ok(out) if matches!(&out.destination, Destination::Topic(t) if is_room(t)) => out,
            _ => return SharedSend::Exclusive,
        };
        match self
            .admit(frame, &destination, now_ms)
            .and_then(|()| self.accept(&out))
        {
            Ok(()) => SharedSend::Ready(out.destination, out.publish),
            Err(Refusal(why)) => {
                let receipt = frame.get("receipt").map(str::to_owned);
                SharedSend::Refused(self.error_frame(&why, receipt))
            }
        }
    }

    /// A SEND outside a transaction: every check first (the frame's, the rules', the broker's),
    /// then what it creates, then the publish.
    pub(super) fn send(
        &mut self,
        frame: &Frame,
        broker: &mut Broker,
        now_ms: u64,
        events: &mut dyn FnMut(BrokerEvent),
    ) -> Result<(), Refusal> {
        let destination = self.admit_send(frame, now_ms)?;
        let out = self.prepare(frame, &destination, now_ms)?;
        broker.check_publishes(self.id, &[(&out.destination, &out.publish)])?;
        self.accept(&out)?;
        self.publish(out, broker, events)
    }

    /// Checks a SEND when it arrives, in a transaction or not: its destination, the rules, the
    /// room body limit and the rate limit (the broker refuses it past the memory budget).
    pub(super) fn admit_send(
        &mut self,
        frame: &Frame,
        now_ms: u64,
    ) -> Result<Destination, Refusal> {
        let destination = parse_destination(frame)?;
        self.admit(frame, &destination, now_ms)?;
        Ok(destination)
    }

    /// [`Session::admit_send`]'s checks of a SEND to `destination`.
    fn admit(
        &mut self,
        frame: &Frame,
        destination: &Destination,
        now_ms: u64,
    ) -> Result<(), Refusal> {
        self.allowed(|access, who| access.send(who, destination))?;
        self.queue_allowed(destination)?;
        if matches!(destination, Destination::Topic(t) if is_room(t))
            && frame.body.len() > self.config.max_room_body
        {
            return Err(Refusal(format!(
                "body exceeds {} bytes, the limit for room messages",
                self.config.max_room_body
            )));
        }
        if !self.sends.take(now_ms, self.config.rate_limit) {
            return Err(Refusal(format!(
                "rate limited: more than {} messages per second",
                self.config.rate_limit
            )));
        }
        Ok(())
    }

    /// The message an admitted SEND publishes, routed by the server's rules (which may refuse
    /// it). Changes nothing.
    pub(super) fn prepare(
        &self,
        frame: &Frame,
        destination: &Destination,
        now_ms: u64,
    ) -> Result<Outgoing, Refusal> {
        let mut headers = Vec::new();
        for (name, value) in &frame.headers {
            let reserved = RESERVED_HEADERS.contains(&name.as_str()) || name == "content-length";
            // First occurrence wins, so repeats are not passed on.
            if !reserved && !headers.iter().any(|(n, _): &(String, String)| n == name) {
                headers.push((name.clone(), value.clone()));
            }
        }
        // A SEND outside a transaction is acknowledged only once a room message is durable:
        // the RECEIPT travels with the message to storage.
        let receipt = match (frame.get("receipt"), frame.get("transaction")) {
            (Some(id), None) => {
                let bytes = codec::encode(
                    &Frame::new(Command::Receipt).header("receipt-id", id),
                    self.version,
                );
                Some(Receipt(Arc::new(move |_| bytes.clone())))
            }
            _ => None,
        };
        let defers_receipt = receipt.is_some();
        let mut publish = Publish {
            headers,
            body: frame.body.clone(),
            now_ms,
            receipt,
            ..Publish::default()
        };
        let mut destination = destination.clone();
        self.allowed(|access, who| access.route(who, &mut destination, &mut publish))?;
        Ok(Outgoing {
            destination,
            publish,
            defers_receipt,
        })
    }

    /// Lets the server create what a checked SEND needs (a new room), just before it goes.
    pub(super) fn accept(&self, out: &Outgoing) -> Result<(), Refusal> {
        self.allowed(|access, who| access.accept(who, &out.destination))
    }

    /// Publishes a checked and accepted SEND (now, or at COMMIT).
    pub(super) fn publish(
        &mut self,
        out: Outgoing,
        broker: &mut Broker,
        events: &mut dyn FnMut(BrokerEvent),
    ) -> Result<(), Refusal> {
        let stored = broker
            .publish(self.id, &out.destination, out.publish, events)?
            .stored;
        if stored && out.defers_receipt {
            self.receipt_deferred = true;
        }
        Ok(())
    }
}

/// The room of a SEND to `/topic/<room>` outside a transaction: what a room's turn may take
/// ([`Session::shared_room`], once connected).
pub fn room_of_send(frame: &Frame) -> Option<&str> {
    if frame.command != Command::Send || frame.get("transaction").is_some() {
        return None;
    }
    let topic = frame.get("destination")?.strip_prefix("/topic/")?;
    is_room(topic).then_some(topic)
}

/// A SEND's `destination` header, parsed.
fn parse_destination(frame: &Frame) -> Result<Destination, Refusal> {
    Destination::parse(required(frame, "destination")?).map_err(|e| Refusal(e.to_string()))
}
