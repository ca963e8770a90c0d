//! Publishing a session's sends without the broker to one's self: plain room messages go in
//! their room's turn while the broker is shared, so publishes to different rooms run at the same
//! time; anything else (a first message, a DM, a queue, cluster mode) takes the broker alone.

use parley_stomp::broker::{BrokerError, BrokerEvent, Publish, Published, SessionId, Shared, Turn};
use parley_stomp::destination::Destination;

use super::session::DELIVERY_BATCH;
use super::{Effects, Hub, HubInner};
use crate::metrics;

/// What one step of [`Hub::publish_each`] came to.
pub enum Step<T, R> {
    /// Its result.
    Done(R),
    /// Handed back, to be stepped again with the broker held alone.
    Alone(T),
}

/// What [`Publisher::publish`] came to.
pub enum Outcome {
    /// Published or refused, as [`parley_stomp::broker::Broker::publish`] would have.
    Done(Result<Published, BrokerError>),
    /// Not done: it needs the broker alone; hand the step back with [`Step::Alone`].
    Alone(Publish),
}

/// Publishes one step's message, for [`Hub::publish_each`].
pub enum Publisher<'a, 'b> {
    /// The broker is shared: plain room messages only.
    Shared(&'a mut SharedRun<'b>),
    /// The broker is held alone: anything.
    Alone {
        broker: &'a mut parley_stomp::broker::Broker,
        events: &'a mut dyn FnMut(BrokerEvent),
    },
}

/// Sends published while the broker is shared, one room's turn at a time.
pub struct SharedRun<'b> {
    hub: &'b Hub,
    inner: &'b HubInner,
    /// The room's turn, with what it published (handed on before the turn ends).
    turn: Option<Turn<'b>>,
    started: Option<std::time::Instant>,
}

impl Publisher<'_, '_> {
    /// Takes the turn of the room `destination` names, so what the step checks before publishing
    /// (a client id seen before, say) cannot change until it has published.
    pub fn enter(&mut self, destination: &Destination) {
        if let Destination::Topic(room) = destination {
            self.enter_room(room);
        }
    }

    /// Takes the turn of `room` ([`Publisher::enter`]).
    pub fn enter_room(&mut self, room: &str) {
        if let Self::Shared(run) = self {
            run.enter(room);
        }
    }

    /// Whether a plain message to the room entered last can be published here: the broker is
    /// held alone, or the room has a turn (it is numbered here and has been published to).
    pub fn in_turn(&self) -> bool {
        match self {
            Self::Alone { .. } => true,
            Self::Shared(run) => run.turn.is_some(),
        }
    }

    /// Publishes `publish` from `session` to `destination`, or hands it back when that needs the
    /// broker alone.
    pub fn publish(
        &mut self,
        session: SessionId,
        destination: &Destination,
        publish: Publish,
    ) -> Outcome {
        self.enter(destination);
        match self {
            Self::Alone { broker, events } => {
                Outcome::Done(broker.publish(session, destination, publish, &mut **events))
            }
            Self::Shared(run) => run.publish(session, destination, publish),
        }
    }
}

impl<'b> SharedRun<'b> {
    fn enter(&mut self, room: &str) {
        if self.turn.as_ref().is_some_and(|turn| turn.room() == room) {
            return;
        }
        self.finish();
        self.turn = self.inner.broker.turn(room);
        self.started = metrics::start();
    }

    fn publish(
        &mut self,
        session: SessionId,
        destination: &Destination,
        publish: Publish,
    ) -> Outcome {
        let Some(turn) = &mut self.turn else {
            return Outcome::Alone(publish);
        };
        let (hub, inner) = (self.hub, self.inner);
        let (mut presence, mut forwards, mut watch_changes) = (Vec::new(), Vec::new(), Vec::new());
        // The turn keeps its deliveries; the broker's events here only store.
        let mut pending = Vec::new();
        let mut effects = Effects {
            pending: &mut pending,
            forwards: &mut forwards,
            watch_changes: &mut watch_changes,
        };
        let shared =
            inner
                .broker
                .publish_in_turn(turn, session, destination, publish, &mut |event| {
                    hub.dispatch(&inner.outboxes, event, &mut presence, &mut effects)
                });
        // A shared publish only stores.
        debug_assert!(pending.is_empty() && presence.is_empty());
        debug_assert!(forwards.is_empty() && watch_changes.is_empty());
        // A subscriber takes at most one batch at a time (and copies small messages into its
        // output): a turn's runs stay within one, and within an outbox's capacity.
        if turn.waiting() >= DELIVERY_BATCH.min(hub.settings.outbox_capacity) {
            hub.deliver_turn(&inner.outboxes, turn);
        }
        match shared {
            Shared::Published(published) => Outcome::Done(Ok(published)),
            Shared::Refused(why) => Outcome::Done(Err(why)),
            Shared::Exclusive(publish) => Outcome::Alone(publish),
        }
    }

    /// Hands the turn's deliveries to their outboxes, then ends the turn.
    fn finish(&mut self) {
        if let Some(mut turn) = self.turn.take() {
            if self.hub.deliver_turn(&self.inner.outboxes, &mut turn) {
                metrics::observe_since(&metrics::handles().fanout, self.started);
            }
        }
    }
}

impl Hub {
    /// Steps through `items` in order, one result each: while the broker is shared, each step
    /// publishing plain room messages in their rooms' turns; a step that hands its item back
    /// ([`Step::Alone`]) is stepped again with the broker held alone, and so are the items after
    /// it that `alone_too` says need it anyway (a run of subscriptions takes the lock once);
    /// then sharing resumes. Each turn's deliveries reach each subscriber as one batch.
    pub fn publish_each<T, R>(
        &self,
        items: impl IntoIterator<Item = T>,
        alone_too: impl Fn(&T) -> bool,
        mut step: impl FnMut(T, &mut Publisher<'_, '_>) -> Step<T, R>,
    ) -> Vec<R> {
        let mut items = items.into_iter().peekable();
        let mut results = Vec::new();
        loop {
            // Straight to the broker alone when the next item needs it anyway (a read of only
            // SUBSCRIBEs, say): no shared pass that would hand it back.
            let mut alone = items.next_if(&alone_too);
            if alone.is_none() {
                let inner = self.read();
                // Read with the broker held, as `apply` does, so no room message is numbered
                // after the journal kept a failed batch.
                inner.broker.set_storage_failing(self.journal.is_failing());
                let mut run = SharedRun {
                    hub: self,
                    inner: &inner,
                    turn: None,
                    started: None,
                };
                for item in items.by_ref() {
                    match step(item, &mut Publisher::Shared(&mut run)) {
                        Step::Done(result) => results.push(result),
                        Step::Alone(item) => {
                            alone = Some(item);
                            break;
                        }
                    }
                }
                run.finish();
            }
            let Some(first) = alone else {
                return results;
            };
            self.apply(|broker, events| {
                let mut next = Some(first);
                while let Some(mut item) = next.take() {
                    // The broker held alone publishes anything: two steps at most.
                    let result = loop {
                        match step(item, &mut Publisher::Alone { broker, events }) {
                            Step::Done(result) => break result,
                            Step::Alone(again) => item = again,
                        }
                    };
                    results.push(result);
                    next = items.next_if(&alone_too);
                }
            });
        }
    }
}
