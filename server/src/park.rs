//! Parked connections: an idle connection's state waits with no task and no future, in a cell
//! that whatever it waits on wakes; the first wake runs it again in a new task.
//!
//! A tokio task (256 B) and the awaiting futures inside it (about 0.2 KiB) are most of what an
//! idle connection costs beyond its own state. A connection that has been quiet for a while
//! ([`Parkable`] decides when) ends its task with its state boxed. Its socket, its session's
//! mailbox and its timer then hold this cell's waker instead of a task's: any of them waking it
//! spawns a task that resumes the connection where it stopped. Until then the connection costs
//! its state and one cell (160 B).
//!
//! Waking is race-free without holding the cell's lock while polling: a wake that finds the
//! cell empty marks it woken, and the parker, finding the mark where it would put the state,
//! runs the connection again instead.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use tokio::runtime::Handle;
use tracing::debug;

use crate::logs::{self, ConnLog, Logged};

/// A connection that read and wrote no frame for this long (heart-beats, pings and pongs
/// aside) parks, where its endpoint and socket allow it: long enough that a connection in a
/// conversation (or receiving a room's messages) stays running; each wake of a parked one
/// costs a task spawn.
pub const PARK_AFTER: Duration = Duration::from_secs(2);

/// Connections parked now, for `/metrics`.
static PARKED: AtomicUsize = AtomicUsize::new(0);

/// How many connections wait parked now.
pub fn parked() -> usize {
    PARKED.load(Ordering::Relaxed)
}

/// A connection that can wait parked.
pub trait Parkable: Send + 'static {
    /// Registers `cx`'s waker with everything the connection waits on (socket, mailbox, timer);
    /// `Ready` when one of them is ready already, and then it is not parked.
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<()>;

    /// The connection's future from where it parked: it ends with the connection parked again
    /// (`Some`) or done.
    fn resume(self: Box<Self>) -> Resumed;
}

/// A parked connection's state.
pub type Parked = Box<dyn Parkable>;

/// A resumed connection's future.
pub type Resumed = Pin<Box<dyn Future<Output = Option<Parked>> + Send>>;

/// A connection's task: `connection` logging as `log`. When it ends parked, its state and
/// `keep` (what must live as long as the connection: its place under the connection limits)
/// wait until woken, then go on in a task of their own.
pub fn task<F, K>(log: ConnLog, connection: F) -> Logged<impl Future<Output = ()> + Send>
where
    F: Future<Output = Option<(Parked, K)>> + Send,
    K: Send + 'static,
{
    // A function, not a closure capturing anything: the task holds nothing more.
    Logged::new(log, futures_util::FutureExt::map(connection, park::<K>))
}

/// What waits in a cell: the connection, what it keeps, its log, and where to run it again.
struct Sleeper<K> {
    conn: Parked,
    keep: K,
    log: ConnLog,
    runtime: Handle,
}

/// Where a parked connection waits; its waker is the one its sources hold. 136 bytes with `K`
/// as the HTTP server's: with the `Arc`'s counts, one 152-byte allocation (a 160-byte block).
struct ParkCell<K>(Mutex<Slot<K>>);

/// What a cell holds.
enum Slot<K> {
    /// The parker is still polling.
    Empty,
    /// Woken: while the parker was polling (it runs the connection again), or after the
    /// connection was taken to run again (stale wakes, which leave it so).
    Woken,
    /// The connection, parked.
    Parked(Sleeper<K>),
}

impl<K> ParkCell<K> {
    fn lock(&self) -> std::sync::MutexGuard<'_, Slot<K>> {
        // Nothing panics holding it; recover anyway rather than spread a panic.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Parks what a connection's task ended with (nothing if it ended done). Runs in that task,
/// its log current.
fn park<K: Send + 'static>(ended: Option<(Parked, K)>) {
    let Some((conn, keep)) = ended else {
        return debug!("connection closed");
    };
    // Always set in a connection's task; were it not, the connection still must not be lost.
    let log = logs::detach_current()
        .unwrap_or_else(|| ConnLog::new(0, std::net::SocketAddr::from(([0, 0, 0, 0], 0))));
    let runtime = Handle::current();
    sleep(Sleeper {
        conn,
        keep,
        log,
        runtime,
    });
}

/// Puts `sleeper` in a new cell, or runs it again at once if something it waits on is ready.
fn sleep<K: Send + 'static>(mut sleeper: Sleeper<K>) {
    let cell = Arc::new(ParkCell(Mutex::new(Slot::Empty)));
    let waker = Waker::from(cell.clone());
    let ready = logs::as_conn(&sleeper.log, || {
        sleeper
            .conn
            .poll_ready(&mut Context::from_waker(&waker))
            .is_ready()
    });
    if ready {
        return wake_up(sleeper);
    }
    let mut slot = cell.lock();
    // Woken while polling (before the state was in the cell): nobody else will run it.
    if let Slot::Woken = *slot {
        drop(slot);
        return wake_up(sleeper);
    }
    *slot = Slot::Parked(sleeper);
    PARKED.fetch_add(1, Ordering::Relaxed);
}

/// Runs a parked connection again, in a task of its own.
fn wake_up<K: Send + 'static>(sleeper: Sleeper<K>) {
    let Sleeper {
        conn,
        keep,
        log,
        runtime,
    } = sleeper;
    let resumed = async move { conn.resume().await.map(|conn| (conn, keep)) };
    // After a shutdown of the runtime the task is dropped unrun, and the connection with it.
    drop(runtime.spawn(task(log, resumed)));
}

impl<K: Send + 'static> Wake for ParkCell<K> {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        // Still polling, the parker finds the mark; parked, the connection is taken.
        let taken = std::mem::replace(&mut *self.lock(), Slot::Woken);
        if let Slot::Parked(sleeper) = taken {
            PARKED.fetch_sub(1, Ordering::Relaxed);
            wake_up(sleeper);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;
    use std::time::Duration;

    use tokio::sync::oneshot;

    use super::*;

    /// Events a test connection waits for, sent from any thread.
    #[derive(Default)]
    struct Source {
        pending: usize,
        waker: Option<Waker>,
    }

    /// A connection that parks until it has seen `rounds` events, then ends.
    struct Counting {
        source: Arc<Mutex<Source>>,
        seen: usize,
        rounds: usize,
        /// Wake the waker while polling, once, as tokio's budget does when it runs out.
        wake_while_polling: bool,
        polls: Arc<AtomicUsize>,
        done: Option<oneshot::Sender<usize>>,
    }

    impl Parkable for Counting {
        fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<()> {
            self.polls.fetch_add(1, Ordering::SeqCst);
            let mut source = self.source.lock().unwrap();
            if source.pending > 0 {
                return Poll::Ready(());
            }
            source.waker = Some(cx.waker().clone());
            if std::mem::take(&mut self.wake_while_polling) {
                cx.waker().wake_by_ref();
            }
            Poll::Pending
        }

        fn resume(mut self: Box<Self>) -> Resumed {
            Box::pin(async move {
                self.seen += std::mem::take(&mut self.source.lock().unwrap().pending);
                if self.seen < self.rounds {
                    return Some(self as Parked);
                }
                let _ = self.done.take().unwrap().send(self.seen);
                None
            })
        }
    }

    fn send_event(source: &Mutex<Source>) {
        let waker = {
            let mut source = source.lock().unwrap();
            source.pending += 1;
            source.waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    fn counting(rounds: usize, wake_while_polling: bool) -> (Counting, oneshot::Receiver<usize>) {
        let (done, finished) = oneshot::channel();
        let conn = Counting {
            source: Arc::default(),
            seen: 0,
            rounds,
            wake_while_polling,
            polls: Arc::default(),
            done: Some(done),
        };
        (conn, finished)
    }

    fn spawn_parked(conn: Counting) {
        let log = ConnLog::new(1, "127.0.0.1:1".parse().unwrap());
        let parked = async move { Some((Box::new(conn) as Parked, ())) };
        tokio::spawn(task(log, parked));
    }

    async fn until(what: &str, done: impl Fn() -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while !done() {
            assert!(tokio::time::Instant::now() < deadline, "never: {what}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Woken from threads that are not the runtime's (as the timer wheel's is), the connection
    /// runs again each time, parks in between, and is counted while parked.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_parked_connection_runs_again_each_time_it_is_woken() {
        let (conn, finished) = counting(3, false);
        let (source, polls) = (conn.source.clone(), conn.polls.clone());
        spawn_parked(conn);
        for round in 1..=3 {
            let waiting = || source.lock().unwrap().waker.is_some() && parked() >= 1;
            until(&format!("parked in round {round}"), waiting).await;
            let source = source.clone();
            std::thread::spawn(move || send_event(&source))
                .join()
                .unwrap();
        }
        let seen = tokio::time::timeout(Duration::from_secs(5), finished)
            .await
            .expect("the connection never finished")
            .unwrap();
        assert_eq!(seen, 3);
        assert!(polls.load(Ordering::SeqCst) >= 3);
    }

    /// A wake that comes while the parker is still polling (before the state is in the cell)
    /// is not lost: the connection runs again at once.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_wake_during_the_parking_poll_is_not_lost() {
        let (conn, finished) = counting(1, true);
        let (source, polls) = (conn.source.clone(), conn.polls.clone());
        spawn_parked(conn);
        // Run again by its own wake: polled a second time, and parked only then.
        until("polled twice", || polls.load(Ordering::SeqCst) >= 2).await;
        until("parked again", || source.lock().unwrap().waker.is_some()).await;
        send_event(&source);
        let seen = tokio::time::timeout(Duration::from_secs(5), finished)
            .await
            .expect("the connection never finished")
            .unwrap();
        assert_eq!(seen, 1);
    }
}
