//! One timer wheel for every connection's deadlines (idle pings and timeouts, heart-beats, token
//! expiry, write timeouts): a waiting connection keeps a 24-byte [`Timer`] and a slot in one
//! shared table instead of a timer future of its own, and the wheel's thread wakes it when its
//! tick comes.
//!
//! A deadline is met at most one [`TICK`] late (plus the thread's own scheduling), never early. Slots are a slab with a linked
//! list per bucket, so setting, moving and dropping a timer are O(1) under one short lock; a
//! timer already set for no later than it needs costs no lock at all, which is the common case
//! of a connection whose deadline only moves later.

use std::future::{poll_fn, Future};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

/// The wheel's resolution.
pub const TICK: Duration = Duration::from_nanos(TICK_NANOS);
const TICK_NANOS: u64 = 10_000_000;
/// One bucket per tick: a horizon of ≈ 82 s. A later deadline waits in the horizon's bucket
/// and is set again when that fires (one early wake-up per horizon).
const BUCKETS: u64 = 8192;
/// No slot, or the end of a bucket's list.
const NONE: u32 = u32::MAX;

/// A connection's place in the wheel: which slot it holds and for which tick it is set.
#[derive(Debug)]
pub struct Timer {
    slot: u32,
    /// The tick it is set for; 0 when it is not set (ticks start at 1).
    tick: u64,
    /// Which task it wakes (`Waker::data`), to notice when the waiting moved elsewhere.
    waker: usize,
}

impl Default for Timer {
    fn default() -> Self {
        Self {
            slot: NONE,
            tick: 0,
            waker: 0,
        }
    }
}

impl Timer {
    /// Ready once `deadline` has passed; until then the wheel wakes `cx` at it.
    pub fn poll_at(&mut self, deadline: Instant, cx: &mut Context<'_>) -> Poll<()> {
        if Instant::now() >= deadline {
            return Poll::Ready(());
        }
        wheel().set(self, deadline, cx.waker());
        Poll::Pending
    }
}

/// How [`Timer::until`] ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Due {
    /// The deadline passed.
    Deadline,
    /// Shutdown began.
    ShuttingDown,
}

impl Timer {
    /// Waits for `deadline`, or for `shutdown`: a connection waiting here keeps no future for
    /// the shutdown signal, whose [`wake_all`] wakes it.
    pub fn until<'a>(
        &'a mut self,
        deadline: Instant,
        shutdown: &'a CancellationToken,
    ) -> impl Future<Output = Due> + Send + 'a {
        poll_fn(move |cx| self.poll_until(deadline, shutdown, cx))
    }

    /// One poll of [`Timer::until`], for waits that watch other things too.
    pub fn poll_until(
        &mut self,
        deadline: Instant,
        shutdown: &CancellationToken,
        cx: &mut Context<'_>,
    ) -> Poll<Due> {
        // Set before the check: a shutdown after the check wakes the timer.
        let due = self.poll_at(deadline, cx);
        if shutdown.is_cancelled() {
            return Poll::Ready(Due::ShuttingDown);
        }
        due.map(|()| Due::Deadline)
    }
}

/// Calls [`wake_all`] once `shutdown` is cancelled, so connections waiting on timers see it.
pub async fn wake_all_at(shutdown: CancellationToken) {
    shutdown.cancelled().await;
    wake_all();
}

impl Drop for Timer {
    fn drop(&mut self) {
        if self.slot != NONE {
            wheel().free(self.slot);
        }
    }
}

/// Wakes every task waiting on a timer, now (they find out why themselves): how a shutdown
/// reaches connections that wait with no future of their own for it.
pub fn wake_all() {
    let wakers: Vec<Waker> = wheel()
        .lock()
        .chunks
        .iter()
        .flat_map(|chunk| chunk.iter())
        .filter_map(|e| e.waker.clone())
        .collect();
    wakers.into_iter().for_each(Waker::wake);
}

#[derive(Default)]
struct Entry {
    waker: Option<Waker>,
    /// The tick it fires at; 0 once fired, or while free.
    tick: u64,
    prev: u32,
    /// The next in its bucket, or in the free list.
    next: u32,
}

/// Slots come in chunks of this many, so the table grows without a doubling's spare half.
const CHUNK: usize = 1024;

struct Slots {
    heads: Box<[u32]>,
    chunks: Vec<Box<[Entry]>>,
    /// Slots handed out so far (freed ones wait in the free list).
    len: u32,
    free: u32,
}

struct Wheel {
    origin: Instant,
    /// Every tick up to this one has fired.
    fired: AtomicU64,
    slots: Mutex<Slots>,
}

fn wheel() -> &'static Wheel {
    static WHEEL: OnceLock<Wheel> = OnceLock::new();
    WHEEL.get_or_init(|| {
        std::thread::Builder::new()
            .name("parley-timers".into())
            .spawn(|| loop {
                // To the next tick's boundary, not a fixed `TICK`: sleeps overshoot, and
                // a drifting thread would fire a deadline up to two ticks late.
                std::thread::sleep(wheel().until_next_tick());
                wheel().turn();
            })
            .expect("the timer thread starts");
        Wheel {
            origin: Instant::now(),
            fired: AtomicU64::new(0),
            slots: Mutex::new(Slots {
                heads: vec![NONE; BUCKETS as usize].into_boxed_slice(),
                chunks: Vec::new(),
                len: 0,
                free: NONE,
            }),
        }
    })
}

impl Wheel {
    fn lock(&self) -> MutexGuard<'_, Slots> {
        // Nothing panics while holding it; recover rather than spread a panic.
        self.slots.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The tick by which `at` has passed.
    fn tick_of(&self, at: Instant) -> u64 {
        // In u64 nanoseconds (584 years), not `as_nanos`'s slower u128.
        let since = at.saturating_duration_since(self.origin);
        let nanos = (since.as_secs().saturating_mul(1_000_000_000))
            .saturating_add(u64::from(since.subsec_nanos()));
        nanos.div_ceil(TICK_NANOS)
    }

    /// How long until the next tick to fire has passed (a microsecond past its end, so the
    /// turn finds it over).
    fn until_next_tick(&self) -> Duration {
        let next = self.fired.load(Ordering::Acquire) + 1;
        let at = self.origin + Duration::from_nanos(next.saturating_mul(TICK_NANOS) + 1_000);
        at.saturating_duration_since(Instant::now())
    }

    /// Sets `timer` to wake `waker` at `deadline` (in the future).
    fn set(&self, timer: &mut Timer, deadline: Instant, waker: &Waker) {
        let due = self.tick_of(deadline);
        let fired = self.fired.load(Ordering::Acquire);
        let same_task = timer.waker == waker.data() as usize;
        if timer.tick > fired && timer.tick <= due && same_task {
            return; // it fires in time already (early wake-ups are harmless)
        }
        let mut slots = self.lock();
        // Read again under the lock, which `turn` holds while it fires and moves `fired`: a
        // tick it has passed would not come round again for a whole horizon.
        let fired = self.fired.load(Ordering::Acquire);
        let tick = due.clamp(fired + 1, fired + BUCKETS - 1);
        if timer.slot == NONE {
            timer.slot = slots.alloc();
        } else {
            slots.unlink(timer.slot);
        }
        let entry = &mut slots[timer.slot];
        match &mut entry.waker {
            Some(w) if w.will_wake(waker) => {}
            w => *w = Some(waker.clone()),
        }
        slots.link(timer.slot, tick);
        timer.tick = tick;
        timer.waker = waker.data() as usize;
    }

    fn free(&self, slot: u32) {
        let mut slots = self.lock();
        slots.unlink(slot);
        let free = slots.free;
        let entry = &mut slots[slot];
        entry.waker = None;
        entry.next = free;
        slots.free = slot;
    }

    /// Fires every bucket whose tick has come, waking outside the lock.
    fn turn(&self) {
        let now = self.tick_of(Instant::now()).saturating_sub(1);
        let mut due = Vec::new();
        {
            let mut slots = self.lock();
            let fired = self.fired.load(Ordering::Relaxed);
            // After a long stall, one pass over the wheel covers every bucket.
            for tick in (fired + 1..=now).take(BUCKETS as usize) {
                slots.fire(tick, now, &mut due);
            }
            self.fired.store(now.max(fired), Ordering::Release);
        }
        due.into_iter().for_each(Waker::wake);
    }
}

impl std::ops::Index<u32> for Slots {
    type Output = Entry;

    fn index(&self, slot: u32) -> &Entry {
        &self.chunks[slot as usize / CHUNK][slot as usize % CHUNK]
    }
}

impl std::ops::IndexMut<u32> for Slots {
    fn index_mut(&mut self, slot: u32) -> &mut Entry {
        &mut self.chunks[slot as usize / CHUNK][slot as usize % CHUNK]
    }
}

impl Slots {
    fn alloc(&mut self) -> u32 {
        if self.free != NONE {
            let slot = self.free;
            self.free = self[slot].next;
            return slot;
        }
        if self.len as usize == self.chunks.len() * CHUNK {
            self.chunks
                .push((0..CHUNK).map(|_| Entry::default()).collect());
        }
        self.len = self.len.checked_add(1).expect("fewer than 4 G timers");
        self.len - 1
    }

    fn link(&mut self, slot: u32, tick: u64) {
        let bucket = (tick % BUCKETS) as usize;
        let head = self.heads[bucket];
        if head != NONE {
            self[head].prev = slot;
        }
        let entry = &mut self[slot];
        (entry.tick, entry.prev, entry.next) = (tick, NONE, head);
        self.heads[bucket] = slot;
    }

    /// Takes `slot` out of its bucket, if it is in one.
    fn unlink(&mut self, slot: u32) {
        let Entry {
            tick, prev, next, ..
        } = self[slot];
        if tick == 0 {
            return;
        }
        if prev == NONE {
            self.heads[(tick % BUCKETS) as usize] = next;
        } else {
            self[prev].next = next;
        }
        if next != NONE {
            self[next].prev = prev;
        }
        self[slot].tick = 0;
    }

    /// Takes out of `tick`'s bucket what is due by `now`, adding its wakers to `due`.
    fn fire(&mut self, tick: u64, now: u64, due: &mut Vec<Waker>) {
        let mut slot = self.heads[(tick % BUCKETS) as usize];
        while slot != NONE {
            let entry = &self[slot];
            let next = entry.next;
            if entry.tick <= now {
                self.unlink(slot);
                due.extend(self[slot].waker.clone());
            }
            slot = next;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn fires_at_its_deadline_not_before() {
        for wait in [0, 5, 30, 120] {
            let start = Instant::now();
            let deadline = start + Duration::from_millis(wait);
            let mut timer = Timer::default();
            poll_fn(|cx| timer.poll_at(deadline, cx)).await;
            let took = start.elapsed();
            assert!(took >= Duration::from_millis(wait), "{wait} ms: {took:?}");
            assert!(
                took < Duration::from_millis(wait + 200),
                "{wait} ms: {took:?}"
            );
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn many_timers_set_and_moved_from_two_threads_all_fire() {
        let tasks: Vec<_> = (0..400u64)
            .map(|n| {
                tokio::spawn(async move {
                    let mut timer = Timer::default();
                    // Set far, then moved earlier, then later again: each a relink.
                    for wait in [3_000, n % 40, n % 40 + 15] {
                        let deadline = Instant::now() + Duration::from_millis(wait);
                        let _ = poll_fn(|cx| Poll::Ready(timer.poll_at(deadline, cx))).await;
                    }
                    let deadline = Instant::now() + Duration::from_millis(n % 50);
                    poll_fn(|cx| timer.poll_at(deadline, cx)).await;
                    assert!(Instant::now() >= deadline);
                })
            })
            .collect();
        let all = futures_util::future::join_all(tasks);
        let done = tokio::time::timeout(Duration::from_secs(5), all).await;
        assert!(done.is_ok(), "a timer never fired");
    }

    #[test]
    fn buckets_link_move_fire_and_free() {
        let mut slots = Slots {
            heads: vec![NONE; BUCKETS as usize].into_boxed_slice(),
            chunks: Vec::new(),
            len: 0,
            free: NONE,
        };
        let (a, b, c) = (slots.alloc(), slots.alloc(), slots.alloc());
        let waker = futures_waker();
        for (slot, tick) in [(a, 5), (b, 5), (c, 5 + BUCKETS)] {
            slots[slot].waker = Some(waker.clone());
            slots.link(slot, tick);
        }
        // Moved: out of tick 5's bucket.
        slots.unlink(b);
        slots.link(b, 7);
        let mut due = Vec::new();
        slots.fire(5, 6, &mut due);
        assert_eq!(
            due.len(),
            1,
            "only a: c shares the bucket but is a turn later"
        );
        assert_eq!(slots[a].tick, 0);
        assert_eq!(slots[c].tick, 5 + BUCKETS);
        slots.fire(7, 7, &mut due);
        assert_eq!(due.len(), 2);
        // Freed slots are taken again before the table grows.
        slots.unlink(c);
        slots[c].next = slots.free;
        slots.free = c;
        assert_eq!(slots.alloc(), c);
        assert_eq!(slots.len, 3);
    }

    fn futures_waker() -> Waker {
        Waker::noop().clone()
    }
}
