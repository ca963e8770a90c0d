//! A session's bounded queues from the hub to its connection's task, in one allocation that
//! holds no storage while empty: notices (answers, acknowledgements) and deliveries, each with
//! its own bounds, notices first; and a companion both sides share (the hub's eviction flag).
//!
//! tokio's `mpsc` allocates its cache-padded channel and a first block of 32 slots up front,
//! about 2 KiB per queue; with two queues per connection that was a quarter of an idle
//! connection's memory. Here an idle session's queues are one small allocation (one lock, one
//! waker), and message storage exists only while messages wait. One consumer; senders are
//! cheap to clone.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

/// A drained queue keeps at most this many slots; a burst's larger storage is freed.
const KEEP_SLOTS: usize = 16;

/// How many bytes a queued value keeps alive, for the queue's byte bound, and how many messages
/// it carries, for its count bound.
pub trait Weigh {
    /// Bytes, roughly.
    fn weight(&self) -> usize;

    /// Messages (a value may carry a run of them).
    fn count(&self) -> usize {
        1
    }
}

/// Queues each holding at most `capacity` messages and `max_bytes` beyond its first value,
/// with `companion` beside them.
pub fn channel<N, D, X>(
    capacity: usize,
    max_bytes: usize,
    companion: X,
) -> (Sender<N, D, X>, Receiver<N, D, X>) {
    let shared = Arc::new(Shared {
        capacity: u32::try_from(capacity).unwrap_or(u32::MAX),
        max_bytes: u32::try_from(max_bytes).unwrap_or(u32::MAX),
        state: Mutex::new(State {
            notices: Queue::default(),
            deliveries: Queue::default(),
            waker: None,
            senders: 1,
            receiver_gone: false,
        }),
        companion,
    });
    (Sender(shared.clone()), Receiver(shared))
}

/// What the receiver takes next: notices come first.
#[derive(Debug, PartialEq)]
pub enum Mail<N, D> {
    /// A notice.
    Notice(N),
    /// A delivery.
    Delivery(D),
}

/// One per session, so kept small: u32 bounds (4 GiB and 4 billion messages are more than any
/// queue is allowed).
struct Shared<N, D, X> {
    capacity: u32,
    max_bytes: u32,
    state: Mutex<State<N, D>>,
    companion: X,
}

struct State<N, D> {
    notices: Queue<N>,
    deliveries: Queue<D>,
    waker: Option<Waker>,
    /// u32, not usize: 8 bytes less in every session (see [`Shared`]).
    senders: u32,
    receiver_gone: bool,
}

/// One bounded queue.
struct Queue<T> {
    values: VecDeque<T>,
    /// Weight of `values`.
    bytes: usize,
    /// Messages in `values`.
    len: usize,
}

impl<T> Default for Queue<T> {
    fn default() -> Self {
        Self {
            values: VecDeque::new(),
            bytes: 0,
            len: 0,
        }
    }
}

impl<N, D, X> Shared<N, D, X> {
    fn lock(&self) -> MutexGuard<'_, State<N, D>> {
        // Nothing panics while holding the lock; recover anyway rather than spread a panic.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl<N, D> State<N, D> {
    /// The receiver waits: `cx` is the waker to wake (kept if it is the same task's).
    fn wake_me(&mut self, cx: &Context<'_>) {
        if !self.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            self.waker = Some(cx.waker().clone());
        }
    }
}

impl<T: Weigh> Queue<T> {
    fn pop(&mut self) -> Option<T> {
        let value = self.values.pop_front();
        if let Some(v) = &value {
            self.bytes -= v.weight();
            self.len -= v.count();
        }
        if self.values.is_empty() && self.values.capacity() > KEEP_SLOTS {
            self.values = VecDeque::new();
        }
        value
    }

    /// Queues the values in order until one does not fit (returned); how many were queued.
    fn push_all(
        &mut self,
        values: impl IntoIterator<Item = T>,
        capacity: usize,
        max_bytes: usize,
    ) -> (usize, Result<(), T>) {
        let values = values.into_iter();
        // One allocation for a run whose length is known (a fan-out's), not a doubling series.
        let room = capacity.saturating_sub(self.len);
        self.values.reserve(values.size_hint().0.min(room));
        let mut queued = 0;
        for value in values {
            let (weight, count) = (value.weight(), value.count());
            let too_many = self.len + count > capacity;
            let too_heavy = self.bytes + weight > max_bytes && !self.values.is_empty();
            if too_many || too_heavy {
                return (queued, Err(value));
            }
            self.bytes += weight;
            self.len += count;
            self.values.push_back(value);
            queued += 1;
        }
        (queued, Ok(()))
    }
}

/// Why a message was not queued; the message comes back.
#[derive(Debug)]
pub enum TrySendError<T> {
    /// The queue holds `capacity` messages.
    Full(T),
    /// The receiver is gone.
    Closed(T),
}

/// The sending side; clone it for more senders.
pub struct Sender<N, D, X>(Arc<Shared<N, D, X>>);

impl<N: Weigh, D: Weigh, X> Sender<N, D, X> {
    /// Queues a notice without waiting, waking the receiver if it waits.
    pub fn try_send_notice(&self, notice: N) -> Result<(), TrySendError<N>> {
        self.send(|state| &mut state.notices, std::iter::once(notice))
            .map(|_| ())
    }

    /// Queues deliveries in order under one lock, waking the receiver once: how a fan-out
    /// hands one subscriber its share of a batch. Stops at the first value that does not fit
    /// and returns it (the values after it are left in the iterator); otherwise how many were
    /// queued.
    pub fn try_send_deliveries(
        &self,
        values: impl IntoIterator<Item = D>,
    ) -> Result<usize, TrySendError<D>> {
        self.send(|state| &mut state.deliveries, values)
    }

    fn send<T: Weigh>(
        &self,
        queue: impl FnOnce(&mut State<N, D>) -> &mut Queue<T>,
        values: impl IntoIterator<Item = T>,
    ) -> Result<usize, TrySendError<T>> {
        let mut state = self.0.lock();
        let mut values = values.into_iter();
        if state.receiver_gone {
            return match values.next() {
                Some(value) => Err(TrySendError::Closed(value)),
                None => Ok(0),
            };
        }
        let (capacity, max_bytes) = (self.0.capacity as usize, self.0.max_bytes as usize);
        let (queued, result) = queue(&mut state).push_all(values, capacity, max_bytes);
        let waker = if queued > 0 { state.waker.take() } else { None };
        drop(state);
        if let Some(waker) = waker {
            waker.wake();
        }
        result.map(|()| queued).map_err(TrySendError::Full)
    }
}

impl<N, D, X> Sender<N, D, X> {
    /// Notices waiting and their weight in bytes, then the same for deliveries.
    pub fn depth(&self) -> [(usize, usize); 2] {
        let state = self.0.lock();
        [
            (state.notices.len, state.notices.bytes),
            (state.deliveries.len, state.deliveries.bytes),
        ]
    }

    /// What the queues' two sides share.
    pub fn companion(&self) -> &X {
        &self.0.companion
    }
}

impl<N, D, X> Clone for Sender<N, D, X> {
    fn clone(&self) -> Self {
        self.0.lock().senders += 1;
        Self(self.0.clone())
    }
}

impl<N, D, X> Drop for Sender<N, D, X> {
    fn drop(&mut self) {
        let mut state = self.0.lock();
        state.senders -= 1;
        let waker = if state.senders == 0 {
            state.waker.take()
        } else {
            None
        };
        drop(state);
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

/// The receiving side.
pub struct Receiver<N, D, X>(Arc<Shared<N, D, X>>);

impl<N: Weigh, D: Weigh, X> Receiver<N, D, X> {
    /// [`Receiver::poll_recv`] as a future.
    #[cfg(test)]
    pub async fn recv(&mut self) -> Option<Mail<N, D>> {
        std::future::poll_fn(|cx| self.poll_recv(cx)).await
    }

    /// The next notice or, with none waiting, the next delivery; `None` once every sender is
    /// gone and both queues are empty. Polled by hand
    /// ([`HubSession::next`](super::HubSession::next)), so a waiting connection keeps no
    /// future for it.
    pub fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<Mail<N, D>>> {
        let mut state = self.0.lock();
        if let Some(notice) = state.notices.pop() {
            return Poll::Ready(Some(Mail::Notice(notice)));
        }
        if let Some(delivery) = state.deliveries.pop() {
            return Poll::Ready(Some(Mail::Delivery(delivery)));
        }
        if state.senders == 0 {
            return Poll::Ready(None);
        }
        state.wake_me(cx);
        Poll::Pending
    }

    /// `Ready` when [`Receiver::poll_recv`] would be, taking nothing; else `cx` is woken when
    /// it may be.
    pub fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let mut state = self.0.lock();
        if !state.notices.values.is_empty()
            || !state.deliveries.values.is_empty()
            || state.senders == 0
        {
            return Poll::Ready(());
        }
        state.wake_me(cx);
        Poll::Pending
    }

    /// The next notice or delivery if one is queued, as [`Receiver::poll_recv`] orders them.
    pub fn try_recv(&mut self) -> Option<Mail<N, D>> {
        let mut state = self.0.lock();
        match state.notices.pop() {
            Some(notice) => Some(Mail::Notice(notice)),
            None => state.deliveries.pop().map(Mail::Delivery),
        }
    }

    /// Queued deliveries carrying at most `max` messages in all, oldest first, under one lock:
    /// the queue's own storage when it holds no more than that. What the caller does not use
    /// goes back with [`Receiver::put_back`].
    pub fn take(&mut self, max: usize) -> VecDeque<D> {
        let mut state = self.0.lock();
        let queue = &mut state.deliveries;
        if queue.len <= max {
            (queue.bytes, queue.len) = (0, 0);
            return std::mem::take(&mut queue.values);
        }
        let mut taken = VecDeque::new();
        let mut messages = 0;
        while let Some(next) = queue.values.front() {
            if messages + next.count() > max {
                break;
            }
            messages += next.count();
            taken.extend(queue.pop());
        }
        taken
    }

    /// Returns deliveries a [`Receiver::take`] did not use, ahead of anything queued since; an
    /// empty batch's storage is kept for the next run when it is small (as a drained queue's
    /// is).
    pub fn put_back(&mut self, mut rest: VecDeque<D>) {
        let mut state = self.0.lock();
        let queue = &mut state.deliveries;
        if rest.is_empty() {
            if queue.values.capacity() == 0 && rest.capacity() <= KEEP_SLOTS {
                std::mem::swap(&mut queue.values, &mut rest);
            }
        } else {
            queue.bytes += rest.iter().map(Weigh::weight).sum::<usize>();
            queue.len += rest.iter().map(Weigh::count).sum::<usize>();
            rest.extend(queue.values.drain(..));
            std::mem::swap(&mut queue.values, &mut rest);
        }
        drop(state);
        // Freed outside the lock.
        drop(rest);
    }
}

impl<N, D, X> Receiver<N, D, X> {
    /// One more sender, e.g. for a task that answers the session later.
    pub fn sender(&self) -> Sender<N, D, X> {
        self.0.lock().senders += 1;
        Sender(self.0.clone())
    }

    /// What the queues' two sides share.
    pub fn companion(&self) -> &X {
        &self.0.companion
    }
}

impl<N, D, X> Drop for Receiver<N, D, X> {
    fn drop(&mut self) {
        let mut state = self.0.lock();
        state.receiver_gone = true;
        state.waker = None;
        let notices = std::mem::take(&mut state.notices);
        let deliveries = std::mem::take(&mut state.deliveries);
        drop(state);
        drop((notices, deliveries));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// Test messages weigh their value in bytes.
    impl Weigh for u32 {
        fn weight(&self) -> usize {
            *self as usize
        }
    }

    /// A mailbox whose deliveries the test uses (notices are `u32`s too).
    fn one<D>(capacity: usize, max_bytes: usize) -> (Sender<u32, D, ()>, Receiver<u32, D, ()>) {
        channel(capacity, max_bytes, ())
    }

    impl<D: Weigh> Sender<u32, D, ()> {
        fn try_send(&self, value: D) -> Result<(), TrySendError<D>> {
            self.try_send_deliveries([value]).map(|_| ())
        }
    }

    impl<D: Weigh> Receiver<u32, D, ()> {
        fn next_delivery(&mut self) -> Option<D> {
            match self.try_recv()? {
                Mail::Delivery(delivery) => Some(delivery),
                Mail::Notice(notice) => panic!("a notice: {notice}"),
            }
        }
    }

    #[test]
    fn notices_come_first_and_each_queue_has_its_own_bounds() {
        let (tx, mut rx) = channel::<u32, u32, &str>(2, usize::MAX, "shared");
        tx.try_send_deliveries([1, 2]).unwrap();
        assert!(matches!(
            tx.try_send_deliveries([3]),
            Err(TrySendError::Full(3))
        ));
        tx.try_send_notice(10).unwrap();
        tx.try_send_notice(11).unwrap();
        assert!(matches!(
            tx.try_send_notice(12),
            Err(TrySendError::Full(12))
        ));
        assert_eq!(tx.depth(), [(2, 21), (2, 3)]);
        assert_eq!(rx.try_recv(), Some(Mail::Notice(10)));
        let later = rx.sender();
        assert_eq!(*later.companion(), "shared");
        later.try_send_notice(12).unwrap();
        let order: Vec<_> = std::iter::from_fn(|| rx.try_recv()).collect();
        assert_eq!(
            order,
            [
                Mail::Notice(11),
                Mail::Notice(12),
                Mail::Delivery(1),
                Mail::Delivery(2)
            ]
        );
        assert!(rx.take(10).is_empty(), "deliveries only, and none left");
    }

    #[test]
    fn holds_at_most_max_bytes_beyond_the_first_message() {
        let (tx, mut rx) = one::<u32>(100, 10);
        tx.try_send(50).unwrap();
        assert!(
            matches!(tx.try_send(1), Err(TrySendError::Full(1))),
            "past 10 bytes"
        );
        assert_eq!(rx.next_delivery(), Some(50));
        tx.try_send(6).unwrap();
        tx.try_send(4).unwrap();
        assert!(matches!(tx.try_send(1), Err(TrySendError::Full(1))));
        assert_eq!(rx.next_delivery(), Some(6));
        tx.try_send(5).unwrap();
    }

    #[test]
    fn holds_at_most_capacity_and_keeps_order() {
        let (tx, mut rx) = one::<u32>(2, usize::MAX);
        tx.try_send(1).unwrap();
        tx.try_send(2).unwrap();
        assert!(matches!(tx.try_send(3), Err(TrySendError::Full(3))));
        assert_eq!(rx.next_delivery(), Some(1));
        tx.try_send(4).unwrap();
        assert_eq!(rx.next_delivery(), Some(2));
        assert_eq!(rx.next_delivery(), Some(4));
        assert_eq!(rx.next_delivery(), None);
    }

    #[test]
    fn a_run_is_queued_in_order_until_one_does_not_fit() {
        let (tx, mut rx) = one::<u32>(3, usize::MAX);
        let mut values = [1, 2, 3, 4, 5].into_iter();
        assert!(matches!(
            tx.try_send_deliveries(values.by_ref()),
            Err(TrySendError::Full(4))
        ));
        assert_eq!(values.next(), Some(5), "what follows is left");
        assert_eq!(tx.try_send_deliveries([]).unwrap(), 0);
        assert_eq!(
            [rx.next_delivery(), rx.next_delivery(), rx.next_delivery()],
            [Some(1), Some(2), Some(3)]
        );
        assert_eq!(tx.try_send_deliveries([6, 7]).unwrap(), 2);
    }

    #[test]
    fn a_batch_taken_at_once_keeps_its_order_and_what_is_put_back_comes_first() {
        let (tx, mut rx) = one::<u32>(10, 100);
        tx.try_send_deliveries([1, 2, 3, 4, 5]).unwrap();
        let mut first = rx.take(3);
        assert_eq!(first, [1, 2, 3]);
        assert_eq!(first.pop_front(), Some(1));
        tx.try_send(6).unwrap();
        rx.put_back(first);
        let all = rx.take(10);
        assert_eq!(all, [2, 3, 4, 5, 6]);
        assert_eq!(rx.0.lock().deliveries.bytes, 0);
        rx.put_back(all);
        // What was put back weighs again: 20 bytes, so 80 more fit and 81 do not.
        assert!(matches!(tx.try_send(81), Err(TrySendError::Full(81))));
        tx.try_send(80).unwrap();
        assert_eq!(rx.take(10), [2, 3, 4, 5, 6, 80]);
    }

    /// A run of messages in one value.
    #[derive(Debug, PartialEq)]
    struct Run(usize);

    impl Weigh for Run {
        fn weight(&self) -> usize {
            self.0
        }
        fn count(&self) -> usize {
            self.0
        }
    }

    #[test]
    fn runs_count_every_message_they_carry() {
        let (tx, mut rx) = one::<Run>(10, usize::MAX);
        assert!(
            matches!(tx.try_send(Run(12)), Err(TrySendError::Full(Run(12)))),
            "a run longer than the capacity never fits"
        );
        tx.try_send_deliveries([Run(4), Run(4), Run(2)]).unwrap();
        assert_eq!(tx.depth()[1].0, 10);
        assert!(matches!(tx.try_send(Run(1)), Err(TrySendError::Full(_))));
        assert_eq!(rx.take(3), [], "no more than asked for");
        assert_eq!(rx.take(5), [Run(4)]);
        assert_eq!(rx.take(6), [Run(4), Run(2)]);
    }

    #[test]
    fn senders_see_a_dropped_receiver() {
        let (tx, rx) = one::<u32>(4, usize::MAX);
        tx.try_send(1).unwrap();
        drop(rx);
        assert!(matches!(tx.try_send(2), Err(TrySendError::Closed(2))));
    }

    #[test]
    fn storage_is_freed_once_a_burst_is_drained() {
        let (tx, mut rx) = one::<u32>(1000, usize::MAX);
        for i in 0..500 {
            tx.try_send(i).unwrap();
        }
        while rx.next_delivery().is_some() {}
        assert_eq!(rx.0.lock().deliveries.values.capacity(), 0);
    }

    #[tokio::test]
    async fn a_waiting_receiver_wakes_on_send_and_ends_when_senders_go() {
        let (tx, mut rx) = one::<u32>(4, usize::MAX);
        let extra = tx.clone();
        let reader = tokio::spawn(async move {
            let mut got = Vec::new();
            while let Some(mail) = rx.recv().await {
                got.push(mail);
            }
            got
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        tx.try_send(7).unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
        extra.try_send(8).unwrap();
        drop(tx);
        drop(extra);
        let got = tokio::time::timeout(Duration::from_secs(5), reader)
            .await
            .expect("receiver ended")
            .unwrap();
        assert_eq!(got, [Mail::Delivery(7), Mail::Delivery(8)]);
    }
}
