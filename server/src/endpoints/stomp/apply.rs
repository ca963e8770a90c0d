//! Applying a read's client frames, in order, stopping at the first that closes the session:
//! plain room SENDs publish in their room's turn while the broker is shared (so rooms publish
//! at the same time); every other frame, and a SEND a turn cannot take, with the broker alone.

use bytes::Bytes;
use parley_stomp::broker::{Broker, BrokerError, BrokerEvent, Publish, SessionId};
use parley_stomp::destination::Destination;
use parley_stomp::session::{room_of_send, Flow, Session, SharedSend};
use parley_stomp::{Command, Frame};

use super::transport::Transport;
use super::{chat, subscriptions, Conn};
use crate::clock::now_ms;
use crate::hub::{catch_up_range, Hub, Outcome, Publisher, SentKey, Step};

/// A frame on its way through [`Hub::publish_each`].
enum Item {
    /// As read.
    Frame(Frame),
    /// A checked room message the turn handed back (a subscriber acknowledges, say).
    Ready(Destination, Publish, Option<SentKey>, Option<String>),
    /// The ERROR of a SEND refused in its turn: closing the session needs the broker alone.
    Refused(Bytes),
}

/// What applying one read's frames gathers for afterwards.
struct Applying<'a> {
    hub: &'a Hub,
    session: &'a mut Session,
    replies: Vec<Bytes>,
    catch_ups: Vec<(String, String, u64, u64)>,
    retried: Vec<chat::Retried>,
    sends: u64,
    flow: Flow,
}

impl<T: Transport> Conn<T> {
    /// Applies client frames, stopping at the first that closes the session: a publisher's
    /// frames from one read are fanned out together, so each subscriber is woken once for those
    /// to one room. Replies (CONNECTED, RECEIPT, ERROR) are queued on the transport; catch-ups
    /// start.
    pub(super) async fn apply(&mut self, frames: &mut Vec<Frame>) -> Flow {
        let hub = self.hub.hub().clone();
        if hub.is_clustered() {
            let (keys, rooms) = subscriptions(&self.session, frames);
            Box::pin(hub.prepare_rooms(rooms)).await;
            if !keys.is_empty() {
                self.live_wait.get_or_insert_default().extend(keys);
            }
        }
        // Boxed, and only for DMs: every idle connection's future is as large as its largest wait.
        let found = match chat::has_direct(frames) {
            true => Box::pin(chat::find_recipients(&hub, frames)).await,
            false => Ok(()),
        };
        if let Err(why) = found {
            let receipt = frames
                .first()
                .and_then(|f| f.get("receipt"))
                .map(str::to_owned);
            let error = self.session.error_frame(&why, receipt);
            self.transport.queue_frame(&[error], true);
            frames.clear();
            return Flow::Close;
        }
        if hub.is_clustered() {
            Box::pin(chat::recall_sent(&hub, &self.session, frames)).await;
        }
        let mut applying = Applying {
            hub: &hub,
            session: &mut self.session,
            replies: Vec::new(),
            catch_ups: Vec::new(),
            retried: Vec::new(),
            sends: 0,
            flow: Flow::Continue,
        };
        let id = self.hub.id();
        // A run of frames no turn takes (SUBSCRIBEs, ACKs) is applied under one hold.
        let alone_too = |item: &Item| match item {
            Item::Frame(frame) => room_of_send(frame).is_none(),
            _ => true,
        };
        hub.publish_each(
            frames.drain(..).map(Item::Frame),
            alone_too,
            |item, publisher| applying.step(id, item, publisher),
        );
        let Applying {
            replies,
            catch_ups,
            retried,
            sends,
            flow,
            ..
        } = applying;
        for reply in replies {
            self.transport.queue_frame(&[reply], true);
        }
        hub.stats
            .messages_in
            .fetch_add(sends, std::sync::atomic::Ordering::Relaxed);
        self.hub.count_messages_in(sends);
        for (room, subscription, since, last) in catch_ups {
            self.hub.replay(room, subscription, since, last);
        }
        for chat::Retried(key, receipt) in retried {
            if let Some(receipt) = receipt {
                hub.acknowledge_again(&self.hub, key, receipt);
            }
        }
        flow
    }
}

impl Applying<'_> {
    fn step(
        &mut self,
        id: SessionId,
        item: Item,
        publisher: &mut Publisher<'_, '_>,
    ) -> Step<Item, ()> {
        if self.flow == Flow::Close {
            return Step::Done(()); // dropped: the session is closing
        }
        if let Publisher::Alone { broker, events } = publisher {
            self.alone(id, item, broker, &mut **events);
            return Step::Done(());
        }
        match item {
            Item::Frame(frame) => self.shared(id, frame, publisher),
            other => Step::Alone(other),
        }
    }

    /// With the broker shared: a plain room SEND in its room's turn; anything else handed back.
    fn shared(
        &mut self,
        id: SessionId,
        mut frame: Frame,
        publisher: &mut Publisher<'_, '_>,
    ) -> Step<Item, ()> {
        let Some(room) = self.session.shared_room(&frame) else {
            return Step::Alone(Item::Frame(frame));
        };
        // In the room's turn, so a retry racing its first send sees it.
        publisher.enter_room(room);
        // No turn: the room's first message (it may create the room) or cluster mode. A bad
        // header: the broker held alone answers it, as for any frame.
        if !publisher.in_turn() || chat::check_send(&mut frame).is_err() {
            return Step::Alone(Item::Frame(frame));
        }
        trace(self.session, &frame);
        let key = match chat::sent_key(self.hub, self.session, &frame) {
            Some(Err(retry)) => {
                self.retried.push(retry);
                return Step::Done(());
            }
            Some(Ok(key)) => Some(key),
            None => None,
        };
        let (destination, publish) = match self.session.send_shared(&frame, now_ms()) {
            SharedSend::Exclusive => return Step::Alone(Item::Frame(frame)),
            SharedSend::Refused(error) => return Step::Alone(Item::Refused(error)),
            SharedSend::Ready(destination, publish) => (destination, publish),
        };
        let receipt = frame.get("receipt").map(str::to_owned);
        match publisher.publish(id, &destination, publish) {
            Outcome::Done(published) => match self.published(published.map(|p| p.id), key, receipt)
            {
                None => Step::Done(()),
                Some(error) => Step::Alone(Item::Refused(error)),
            },
            Outcome::Alone(publish) => Step::Alone(Item::Ready(destination, publish, key, receipt)),
        }
    }

    /// With the broker held alone: any frame, or what a turn handed back.
    fn alone(
        &mut self,
        id: SessionId,
        item: Item,
        broker: &mut Broker,
        events: &mut dyn FnMut(BrokerEvent),
    ) {
        let error = match item {
            Item::Frame(frame) => {
                self.flow = self.frame(frame, broker, events);
                None
            }
            Item::Ready(destination, publish, key, receipt) => {
                let published = broker.publish(id, &destination, publish, events);
                self.published(published.map(|p| p.id), key, receipt)
            }
            Item::Refused(error) => Some(error),
        };
        if let Some(error) = error {
            self.replies.push(error);
            self.session.close(broker, events);
            self.flow = Flow::Close;
        }
    }

    /// A room message published (its RECEIPT travels with it), or the ERROR of its refusal.
    fn published(
        &mut self,
        published: Result<u64, BrokerError>,
        key: Option<SentKey>,
        receipt: Option<String>,
    ) -> Option<Bytes> {
        match published {
            Ok(id) => {
                if let Some(key) = key {
                    self.hub.remember(&key, id);
                }
                self.sends += 1;
                None
            }
            Err(why) => Some(self.session.error_frame(&why.to_string(), receipt)),
        }
    }

    /// One frame through the session with the broker held alone.
    fn frame(
        &mut self,
        mut frame: Frame,
        broker: &mut Broker,
        events: &mut dyn FnMut(BrokerEvent),
    ) -> Flow {
        let (hub, session) = (self.hub, &mut *self.session);
        if let Err(why) = chat::check_send(&mut frame) {
            let receipt = frame.get("receipt").map(str::to_owned);
            self.replies.push(session.error_frame(&why, receipt));
            return Flow::Close;
        }
        trace(session, &frame);
        let is_send = frame.command == Command::Send;
        let sent = match chat::Sent::before(hub, broker, session, &frame) {
            Some(Err(retry)) => {
                self.retried.push(retry);
                return Flow::Continue;
            }
            Some(Ok(sent)) => Some(sent),
            None => None,
        };
        let version = session.version();
        let catch_up = parley_stomp::session::catch_up(&frame, version);
        if session.handle(frame, broker, now_ms(), &mut self.replies, events) == Flow::Close {
            return Flow::Close;
        }
        if let Some(sent) = sent {
            sent.after(hub, broker);
        }
        self.sends += u64::from(is_send);
        if let Some((room, subscription, since)) = catch_up {
            if let Some((since, last)) = catch_up_range(broker, &room, since) {
                self.catch_ups.push((room, subscription, since, last));
            }
        }
        Flow::Continue
    }
}

/// Logs a frame's command and destination; never the headers: CONNECT carries passwords and
/// tokens.
fn trace(session: &Session, frame: &Frame) {
    tracing::trace!(
        user = session.user().map(|u| &**u),
        command = frame.command.as_str(),
        destination = frame.get("destination"),
        "STOMP frame"
    );
}
