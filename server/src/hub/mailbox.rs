//! Bounded queues from the hub to a connection's task that hold no storage while empty.
//!
//! tokio's `mpsc` allocates its cache-padded channel and a first block of 32 slots up front,
//! about 2 KiB per queue; with two queues per connection that was a quarter of an idle
//! connection's memory. Here an empty queue is one small allocation, and message storage
//! exists only while messages wait. One consumer; senders are cheap to clone.

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

/// A queue holding at most `capacity` messages and `max_bytes` beyond its first value.
pub fn channel<T: Weigh>(capacity: usize, max_bytes: usize) -> (Sender<T>, Receiver<T>) {
    let shared = Arc::new(Shared {
        capacity,
        max_bytes,
        state: Mutex::new(State {
            bytes: 0,
            len: 0,
            queue: VecDeque::new(),
            waker: None,
            senders: 1,
            receiver_gone: false,
        }),
    });
    (Sender(shared.clone()), Receiver(shared))
}

struct Shared<T> {
    capacity: usize,
    max_bytes: usize,
    state: Mutex<State<T>>,
}

struct State<T> {
    queue: VecDeque<T>,
    /// Weight of `queue`.
    bytes: usize,
    /// Messages in `queue`.
    len: usize,
    waker: Option<Waker>,
    senders: usize,
    receiver_gone: bool,
}

impl<T> Shared<T> {
    fn lock(&self) -> MutexGuard<'_, State<T>> {
        // Nothing panics while holding the lock; recover anyway rather than spread a panic.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl<T: Weigh> State<T> {
    fn pop(&mut self) -> Option<T> {
        let value = self.queue.pop_front();
        if let Some(v) = &value {
            self.bytes -= v.weight();
            self.len -= v.count();
        }
        if self.queue.is_empty() && self.queue.capacity() > KEEP_SLOTS {
            self.queue = VecDeque::new();
        }
        value
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
pub struct Sender<T>(Arc<Shared<T>>);

impl<T: Weigh> Sender<T> {
    /// Queues `value` without waiting, waking the receiver if it waits.
    pub fn try_send(&self, value: T) -> Result<(), TrySendError<T>> {
        self.try_send_all(std::iter::once(value)).map(|_| ())
    }

    /// Queues the values in order under one lock, waking the receiver once: how a fan-out hands
    /// one subscriber its share of a batch. Stops at the first value that does not fit and
    /// returns it (the values after it are left in the iterator); otherwise how many were
    /// queued.
    pub fn try_send_all(
        &self,
        values: impl IntoIterator<Item = T>,
    ) -> Result<usize, TrySendError<T>> {
        let values = values.into_iter();
        let mut state = self.0.lock();
        // One allocation for a run whose length is known (a fan-out's), not a doubling series.
        let room = self.0.capacity.saturating_sub(state.len);
        state.queue.reserve(values.size_hint().0.min(room));
        let mut queued = 0;
        let mut result = Ok(());
        for value in values {
            if state.receiver_gone {
                result = Err(TrySendError::Closed(value));
                break;
            }
            let (weight, count) = (value.weight(), value.count());
            let too_many = state.len + count > self.0.capacity;
            let too_heavy = state.bytes + weight > self.0.max_bytes && !state.queue.is_empty();
            if too_many || too_heavy {
                result = Err(TrySendError::Full(value));
                break;
            }
            state.bytes += weight;
            state.len += count;
            state.queue.push_back(value);
            queued += 1;
        }
        let waker = if queued > 0 { state.waker.take() } else { None };
        drop(state);
        if let Some(waker) = waker {
            waker.wake();
        }
        result.map(|()| queued)
    }
}

impl<T> Sender<T> {
    /// Messages waiting, and their weight in bytes.
    pub fn depth(&self) -> (usize, usize) {
        let state = self.0.lock();
        (state.len, state.bytes)
    }
}

impl<T> Clone for Sender<T> {
    fn clone(&self) -> Self {
        self.0.lock().senders += 1;
        Self(self.0.clone())
    }
}

impl<T> Drop for Sender<T> {
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
pub struct Receiver<T>(Arc<Shared<T>>);

impl<T: Weigh> Receiver<T> {
    /// [`Receiver::poll_recv`] as a future.
    #[cfg(test)]
    pub async fn recv(&mut self) -> Option<T> {
        std::future::poll_fn(|cx| self.poll_recv(cx)).await
    }

    /// The next message; `None` once every sender is gone and the queue is empty. Polled by
    /// hand ([`HubSession::next`](super::HubSession::next)), so a waiting connection keeps no
    /// future for it.
    pub fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<T>> {
        let mut state = self.0.lock();
        if let Some(value) = state.pop() {
            return Poll::Ready(Some(value));
        }
        if state.senders == 0 {
            return Poll::Ready(None);
        }
        if !state
            .waker
            .as_ref()
            .is_some_and(|w| w.will_wake(cx.waker()))
        {
            state.waker = Some(cx.waker().clone());
        }
        Poll::Pending
    }

    /// The next message if one is queued.
    pub fn try_recv(&mut self) -> Option<T> {
        self.0.lock().pop()
    }

    /// Queued values carrying at most `max` messages in all, oldest first, under one lock: the
    /// queue's own storage when it holds no more than that. What the caller does not use goes
    /// back with [`Receiver::put_back`].
    pub fn take(&mut self, max: usize) -> VecDeque<T> {
        let mut state = self.0.lock();
        if state.len <= max {
            (state.bytes, state.len) = (0, 0);
            return std::mem::take(&mut state.queue);
        }
        let mut taken = VecDeque::new();
        let mut messages = 0;
        while let Some(next) = state.queue.front() {
            if messages + next.count() > max {
                break;
            }
            messages += next.count();
            taken.extend(state.pop());
        }
        taken
    }

    /// Returns what a [`Receiver::take`] did not use, ahead of anything queued since; an empty
    /// batch's storage is kept for the next run when it is small (as a drained queue's is).
    pub fn put_back(&mut self, mut rest: VecDeque<T>) {
        let mut state = self.0.lock();
        if rest.is_empty() {
            if state.queue.capacity() == 0 && rest.capacity() <= KEEP_SLOTS {
                std::mem::swap(&mut state.queue, &mut rest);
            }
        } else {
            state.bytes += rest.iter().map(Weigh::weight).sum::<usize>();
            state.len += rest.iter().map(Weigh::count).sum::<usize>();
            rest.extend(state.queue.drain(..));
            std::mem::swap(&mut state.queue, &mut rest);
        }
        drop(state);
        // Freed outside the lock.
        drop(rest);
    }
}

impl<T> Drop for Receiver<T> {
    fn drop(&mut self) {
        let mut state = self.0.lock();
        state.receiver_gone = true;
        state.waker = None;
        let queued = std::mem::take(&mut state.queue);
        drop(state);
        drop(queued);
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

    #[test]
    fn holds_at_most_max_bytes_beyond_the_first_message() {
        let (tx, mut rx) = channel::<u32>(100, 10);
        tx.try_send(50).unwrap();
        assert!(
            matches!(tx.try_send(1), Err(TrySendError::Full(1))),
            "past 10 bytes"
        );
        assert_eq!(rx.try_recv(), Some(50));
        tx.try_send(6).unwrap();
        tx.try_send(4).unwrap();
        assert!(matches!(tx.try_send(1), Err(TrySendError::Full(1))));
        assert_eq!(rx.try_recv(), Some(6));
        tx.try_send(5).unwrap();
    }

    #[test]
    fn holds_at_most_capacity_and_keeps_order() {
        let (tx, mut rx) = channel::<u32>(2, usize::MAX);
        tx.try_send(1).unwrap();
        tx.try_send(2).unwrap();
        assert!(matches!(tx.try_send(3), Err(TrySendError::Full(3))));
        assert_eq!(rx.try_recv(), Some(1));
        tx.try_send(4).unwrap();
        assert_eq!(rx.try_recv(), Some(2));
        assert_eq!(rx.try_recv(), Some(4));
        assert_eq!(rx.try_recv(), None);
    }

    #[test]
    fn a_run_is_queued_in_order_until_one_does_not_fit() {
        let (tx, mut rx) = channel::<u32>(3, usize::MAX);
        let mut values = [1, 2, 3, 4, 5].into_iter();
        assert!(matches!(
            tx.try_send_all(values.by_ref()),
            Err(TrySendError::Full(4))
        ));
        assert_eq!(values.next(), Some(5), "what follows is left");
        assert_eq!(tx.try_send_all([]).unwrap(), 0);
        assert_eq!(
            [rx.try_recv(), rx.try_recv(), rx.try_recv()],
            [Some(1), Some(2), Some(3)]
        );
        assert_eq!(tx.try_send_all([6, 7]).unwrap(), 2);
    }

    #[test]
    fn a_batch_taken_at_once_keeps_its_order_and_what_is_put_back_comes_first() {
        let (tx, mut rx) = channel::<u32>(10, 100);
        tx.try_send_all([1, 2, 3, 4, 5]).unwrap();
        let mut first = rx.take(3);
        assert_eq!(first, [1, 2, 3]);
        assert_eq!(first.pop_front(), Some(1));
        tx.try_send(6).unwrap();
        rx.put_back(first);
        let all = rx.take(10);
        assert_eq!(all, [2, 3, 4, 5, 6]);
        assert_eq!(rx.0.lock().bytes, 0);
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
        let (tx, mut rx) = channel::<Run>(10, usize::MAX);
        assert!(
            matches!(tx.try_send(Run(12)), Err(TrySendError::Full(Run(12)))),
            "a run longer than the capacity never fits"
        );
        tx.try_send_all([Run(4), Run(4), Run(2)]).unwrap();
        assert_eq!(tx.depth().0, 10);
        assert!(matches!(tx.try_send(Run(1)), Err(TrySendError::Full(_))));
        assert_eq!(rx.take(3), [], "no more than asked for");
        assert_eq!(rx.take(5), [Run(4)]);
        assert_eq!(rx.take(6), [Run(4), Run(2)]);
    }

    #[test]
    fn senders_see_a_dropped_receiver() {
        let (tx, rx) = channel::<u32>(4, usize::MAX);
        tx.try_send(1).unwrap();
        drop(rx);
        assert!(matches!(tx.try_send(2), Err(TrySendError::Closed(2))));
    }

    #[test]
    fn storage_is_freed_once_a_burst_is_drained() {
        let (tx, mut rx) = channel::<u32>(1000, usize::MAX);
        for i in 0..500 {
            tx.try_send(i).unwrap();
        }
        while rx.try_recv().is_some() {}
        assert_eq!(rx.0.lock().queue.capacity(), 0);
    }

    #[tokio::test]
    async fn a_waiting_receiver_wakes_on_send_and_ends_when_senders_go() {
        let (tx, mut rx) = channel::<u32>(4, usize::MAX);
        let extra = tx.clone();
        let reader = tokio::spawn(async move {
            let mut got = Vec::new();
            while let Some(v) = rx.recv().await {
                got.push(v);
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
        assert_eq!(got, vec![7, 8]);
    }
}
