//! One bot's life: connect, join, send, edit and react on schedule, check what arrives, churn,
//! stop.

use std::collections::VecDeque;
use std::net::IpAddr;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio::time::{sleep_until, timeout, Instant};

use crate::auth::{register_and_login, TokenMinter};
use crate::body::{self, Stamp};
use crate::conn::{ChangeSend, Closed, Conn, Credential, OpenError, Targets};
use crate::receiving::Receiving;
use crate::scenario::{AuthMode, Protocol, Rate};
use crate::stats::{ErrorKind, Recorder};

/// The emoji every bot reacts with.
const EMOJI: &str = "👍";

/// How long a churning bot waits for its sends to be acknowledged before it hangs up.
const CHURN_ACK_WAIT: Duration = Duration::from_secs(2);

/// How often a bot hands its tally to the aggregator.
const FLUSH_EVERY: Duration = Duration::from_secs(1);

/// At most this much missed send schedule is made up after being held back by the in-flight cap.
const MAX_CATCH_UP: Duration = Duration::from_secs(1);

/// How many error messages are shown on stderr.
const ERROR_SAMPLES: usize = 10;

/// The run's stage, broadcast to every bot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Connect and send.
    Run,
    /// Stop sending; keep reading so in-flight messages are counted.
    Drain,
    /// Hang up.
    Stop,
}

/// What every bot of a run shares. Read-only but for the atomics.
pub struct Shared {
    /// Server addresses.
    pub targets: Targets,
    /// Source addresses, used round-robin by bot index; empty = let the kernel choose.
    pub sources: Vec<IpAddr>,
    /// Present when a group authenticates with minted tokens.
    pub minter: Option<TokenMinter>,
    /// `--token`: the one credential every bot uses instead of its group's `auth`.
    pub token: Option<String>,
    /// Limit on each connection attempt.
    pub connect_timeout: Duration,
    /// Bounds connection attempts in progress.
    pub connect_slots: Arc<Semaphore>,
    /// Bots connected now (the progress line's gauge).
    pub connected: Arc<AtomicI64>,
    /// The run's phase.
    pub phase: watch::Receiver<Phase>,
    /// Error messages printed so far (only the first [`ERROR_SAMPLES`] are).
    pub error_samples: AtomicUsize,
    /// Prints above the progress line.
    pub progress: indicatif::ProgressBar,
}

impl Shared {
    /// The source address of bot `id`: round-robin over the list, `None` when it is empty.
    fn source(&self, id: u32) -> Option<IpAddr> {
        (!self.sources.is_empty()).then(|| self.sources[id as usize % self.sources.len()])
    }

    fn sample_error(&self, name: &str, kind: ErrorKind, why: &str) {
        let n = self.error_samples.fetch_add(1, Ordering::Relaxed);
        if n < ERROR_SAMPLES {
            self.progress
                .suspend(|| eprintln!("{name}: {kind:?} error: {why}"));
        } else if n == ERROR_SAMPLES {
            self.progress
                .suspend(|| eprintln!("(further error messages are not shown)"));
        }
    }
}

/// What a group's bots do (from the scenario).
#[derive(Debug)]
pub struct Behaviour {
    /// Wire protocol.
    pub protocol: Protocol,
    /// How to authenticate.
    pub auth: AuthMode,
    /// Room send rate.
    pub rate: Rate,
    /// Send interval jitter (0..=1).
    pub jitter: f64,
    /// Body size.
    pub size: usize,
    /// Most unacknowledged sends.
    pub in_flight: u32,
    /// DMs per second.
    pub dm_rate: f64,
    /// Edits per second.
    pub edit_rate: f64,
    /// Reactions per second.
    pub react_rate: f64,
    /// Reconnect interval.
    pub churn: Option<Duration>,
    /// Reconnect after a lost connection and resume the room from the last id seen.
    pub reconnect: bool,
    /// Stop reading after joining.
    pub slow: bool,
}

/// One bot.
pub struct Bot {
    /// Global index: the sender id in stamps.
    pub id: u32,
    /// User name.
    pub name: String,
    /// The room it joins.
    pub room: String,
    /// Who its DMs go to (the next bot of the group).
    pub dm_to: String,
    /// Its group's behaviour.
    pub behaviour: Arc<Behaviour>,
}

/// How a connection ended.
enum Ended {
    /// Time to reconnect (churn).
    Churn,
    /// The run is over.
    Stopped,
    /// The server closed it, or it broke.
    Lost,
    /// The server hung up over a refusal the bots expect (STOMP): reconnect and resume.
    Refused,
}

/// A tiny xorshift generator: jitter needs speed and spread, not quality.
struct Rng(u64);

impl Rng {
    fn new(seed: u32) -> Self {
        Self(u64::from(seed).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }

    /// `d` scaled by a random factor in `1 ± jitter`.
    fn jittered(&mut self, d: Duration, jitter: f64) -> Duration {
        d.mul_f64(1.0 + jitter * (2.0 * self.unit() - 1.0))
    }
}

/// Sequence numbers a bot has used; they survive reconnects so receivers see one stream.
#[derive(Default)]
struct Sequences {
    room: u64,
    dm: u64,
    /// Changes are numbered for their acknowledgements only.
    changes: u64,
}

/// What a bot sends on its own schedule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Send {
    Room,
    Dm,
    Edit,
    React,
}

/// When a bot next sends one kind of thing.
struct Timer {
    /// `None`: never.
    interval: Option<Duration>,
    next: Instant,
}

impl Timer {
    /// Every `interval`, starting at a random point of the first (so bots do not send in
    /// lockstep).
    fn new(interval: Option<Duration>, now: Instant, rng: &mut Rng) -> Self {
        let far = now + Duration::from_secs(86_400 * 365);
        let next = interval.map_or(far, |i| now + i.mul_f64(rng.unit()));
        Self { interval, next }
    }

    /// One per second at `rate` (0: never).
    fn per_second(rate: f64, now: Instant, rng: &mut Rng) -> Self {
        Self::new(
            (rate > 0.0).then(|| Duration::from_secs_f64(1.0 / rate)),
            now,
            rng,
        )
    }

    fn on(&self) -> bool {
        self.interval.is_some()
    }

    fn advance(&mut self, rng: &mut Rng, jitter: f64) {
        self.next = next_send(self.next, self.interval, rng, jitter);
    }
}

impl Bot {
    /// Runs the bot until the run stops; `permit` is its first connection slot.
    pub async fn run(self, shared: Arc<Shared>, recorder: Recorder, permit: OwnedSemaphorePermit) {
        let echo_acks = self.behaviour.protocol.acks_by_echo();
        let mut rx = Receiving::new(self.id, &self.name, echo_acks, recorder);
        let mut backoff = Duration::from_millis(100);
        let mut rng = Rng::new(self.id);
        let mut seqs = Sequences::default();
        let mut credential = None;
        let mut permit = Some(permit);
        let source = shared.source(self.id);
        let mut phase = shared.phase.clone();
        loop {
            if *phase.borrow() != Phase::Run {
                break;
            }
            let slot = match permit.take() {
                Some(p) => p,
                None => match Arc::clone(&shared.connect_slots).acquire_owned().await {
                    Ok(p) => p,
                    Err(_) => break,
                },
            };
            rx.reconnecting();
            let attempt = timeout(
                shared.connect_timeout,
                self.connect(&shared, source, &mut credential, &mut rx),
            )
            .await;
            drop(slot);
            let conn = match attempt {
                Ok(Ok(conn)) => conn,
                failed => {
                    let e = failed.unwrap_or_else(|_| {
                        Err(OpenError {
                            kind: ErrorKind::Connect,
                            why: format!("no join within {:?}", shared.connect_timeout),
                        })
                    });
                    if let Err(e) = e {
                        rx.recorder.error(e.kind);
                        shared.sample_error(&self.name, e.kind, &e.why);
                    }
                    rx.recorder.counters().connect_failures += 1;
                    match self.behaviour.churn {
                        // A churning bot tries again at its next cycle.
                        Some(every) => {
                            tokio::select! {
                                _ = tokio::time::sleep(rng.jittered(every, self.behaviour.jitter)) => continue,
                                _ = wait_for(&mut phase, Phase::Stop) => break,
                            }
                        }
                        // A resuming bot keeps trying while the run lasts (a node restarting).
                        None if rx.resuming => {
                            tokio::select! {
                                _ = tokio::time::sleep(rng.jittered(backoff, 0.5)) => {}
                                _ = wait_for(&mut phase, Phase::Stop) => break,
                            }
                            backoff = (backoff * 2).min(Duration::from_secs(2));
                            continue;
                        }
                        None => break,
                    }
                }
            };
            backoff = Duration::from_millis(100);
            rx.recorder.counters().connects += 1;
            shared.connected.fetch_add(1, Ordering::Relaxed);
            let ended = self
                .session(conn, &mut rx, &mut rng, &mut seqs, &mut phase)
                .await;
            shared.connected.fetch_sub(1, Ordering::Relaxed);
            if let Some((kind, why)) = rx.last_error.take() {
                shared.sample_error(&self.name, kind, &why);
            }
            match ended {
                Ended::Churn => rx.recorder.counters().reconnects += 1,
                // Straight back, continuing where this connection left off.
                Ended::Refused => {
                    rx.resuming = true;
                    rx.recorder.counters().reconnects += 1;
                }
                Ended::Lost if self.behaviour.reconnect => {
                    // Back with backoff, continuing where this connection left off.
                    rx.resuming = true;
                    rx.recorder.counters().reconnects += 1;
                    tokio::select! {
                        _ = tokio::time::sleep(rng.jittered(backoff, 0.5)) => {}
                        _ = wait_for(&mut phase, Phase::Stop) => break,
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                }
                Ended::Stopped | Ended::Lost => break,
            }
        }
        rx.recorder.flush();
    }

    /// Authenticates, connects and joins; deliveries that race the join confirmation are
    /// already checked.
    async fn connect(
        &self,
        shared: &Shared,
        source: Option<IpAddr>,
        credential: &mut Option<Credential>,
        rx: &mut Receiving,
    ) -> Result<Conn, OpenError> {
        let b = &self.behaviour;
        if let (None, Some(token)) = (&credential, &shared.token) {
            *credential = Some(Credential::Token(token.clone()));
        }
        if credential.is_none() {
            *credential = Some(match b.auth {
                AuthMode::Guest => Credential::Guest,
                AuthMode::Token => {
                    let minter = shared.minter.as_ref().ok_or_else(|| OpenError {
                        kind: ErrorKind::Auth,
                        why: "auth = \"token\" needs --jwt-secret-file".into(),
                    })?;
                    Credential::Token(minter.mint(&self.name).map_err(|e| OpenError {
                        kind: ErrorKind::Auth,
                        why: format!("minting a token: {e}"),
                    })?)
                }
                AuthMode::Register => {
                    register_and_login(shared.targets.http, source, &self.name).await?
                }
            });
        }
        let credential = credential.as_ref().expect("set just above");
        let mut conn = Conn::open(
            b.protocol,
            &shared.targets,
            source,
            &self.name,
            credential,
            b.slow,
        )
        .await?;
        let lost = |e: crate::conn::Closed| OpenError {
            kind: ErrorKind::Connect,
            why: format!("while joining: {}", e.why),
        };
        let since = (rx.resuming && rx.last_room_id > 0).then_some(rx.last_room_id);
        conn.join(&self.room, b.dm_rate > 0.0, since)
            .await
            .map_err(lost)?;
        while !rx.joined {
            conn.read(rx).await.map_err(lost)?;
        }
        Ok(conn)
    }

    /// Drives one connection until churn, the end of the run, or a close.
    async fn session(
        &self,
        mut conn: Conn,
        rx: &mut Receiving,
        rng: &mut Rng,
        seqs: &mut Sequences,
        phase: &mut watch::Receiver<Phase>,
    ) -> Ended {
        let b = &self.behaviour;
        if b.slow {
            // A slow consumer never reads again: the server's queue for it fills up.
            wait_for(phase, Phase::Stop).await;
            conn.close().await;
            return Ended::Stopped;
        }
        let now = Instant::now();
        let far = now + Duration::from_secs(86_400 * 365);
        let room_interval = match b.rate {
            Rate::PerSecond(r) => Some(Duration::from_secs_f64(1.0 / r)),
            Rate::Max => Some(Duration::ZERO),
            Rate::Listen => None,
        };
        // In the order of [`SENDS`].
        let mut timers = [
            Timer::new(room_interval, now, rng),
            Timer::per_second(b.dm_rate, now, rng),
            Timer::per_second(b.edit_rate, now, rng),
            Timer::per_second(b.react_rate, now, rng),
        ];
        let churn_at = b.churn.map(|c| now + rng.jittered(c, b.jitter));
        let mut hang_up_by: Option<Instant> = None;
        let mut flush_at = now + FLUSH_EVERY;
        let mut text = String::with_capacity(b.size + 32);
        loop {
            let current = *phase.borrow();
            if current == Phase::Stop {
                conn.close().await;
                return Ended::Stopped;
            }
            if let Some(deadline) = hang_up_by {
                if rx.in_flight == 0 || Instant::now() >= deadline {
                    conn.close().await;
                    return Ended::Churn;
                }
            }
            let sending = current == Phase::Run && hang_up_by.is_none();
            let next = self.next_due(&timers, rx, sending);
            tokio::select! {
                read = conn.read(rx) => {
                    if let Err(closed) = read {
                        if closed.refused {
                            return Ended::Refused;
                        }
                        if *phase.borrow() != Phase::Stop && !closed.announced {
                            rx.recorder.error(ErrorKind::ClosedByServer);
                            rx.last_error = Some((ErrorKind::ClosedByServer, closed.why));
                        }
                        return Ended::Lost;
                    }
                }
                _ = due(next.map_or(far, |(_, at)| at)), if next.is_some() => {
                    let Some((i, _)) = next else { continue };
                    if self.fire(SENDS[i], &mut conn, rx, seqs, &mut text).await.is_err() {
                        return Ended::Lost;
                    }
                    timers[i].advance(rng, b.jitter);
                }
                _ = sleep_until(churn_at.unwrap_or(far)), if churn_at.is_some() && hang_up_by.is_none() => {
                    hang_up_by = Some(Instant::now() + CHURN_ACK_WAIT);
                }
                _ = sleep_until(hang_up_by.unwrap_or(far)), if hang_up_by.is_some() => {}
                // Only armed with something to report, so 20,000 idle bots do not wake up every
                // second for nothing.
                _ = sleep_until(flush_at), if rx.recorder.has_data() => {
                    rx.recorder.flush();
                    flush_at = Instant::now() + FLUSH_EVERY;
                }
                changed = phase.changed() => {
                    if changed.is_err() {
                        conn.close().await;
                        return Ended::Stopped;
                    }
                }
            }
        }
    }

    /// The earliest send due (its index in [`SENDS`] and time) among those allowed now:
    /// messages and DMs within the in-flight cap, changes within it per kind.
    fn next_due(
        &self,
        timers: &[Timer; 4],
        rx: &Receiving,
        sending: bool,
    ) -> Option<(usize, Instant)> {
        let cap = self.behaviour.in_flight;
        let alone = self.behaviour.protocol.refusal_closes();
        let idle = rx.in_flight == 0 && rx.pending.iter().all(VecDeque::is_empty);
        if rx.dm_waiting {
            return None;
        }
        let allowed = |what: Send| match what {
            Send::Dm if alone => idle,
            Send::Room | Send::Dm => rx.in_flight < cap,
            Send::Edit => rx.pending[0].len() < cap as usize,
            Send::React => rx.pending[1].len() < cap as usize,
        };
        (0..SENDS.len())
            .filter(|i| sending && timers[*i].on() && allowed(SENDS[*i]))
            .map(|i| (i, timers[i].next))
            .min_by_key(|(_, at)| *at)
    }

    /// Sends one thing on schedule; a change with nothing to change yet (no message of its own
    /// seen back, nothing received) is skipped.
    async fn fire(
        &self,
        what: Send,
        conn: &mut Conn,
        rx: &mut Receiving,
        seqs: &mut Sequences,
        text: &mut String,
    ) -> Result<(), Closed> {
        let b = &self.behaviour;
        let now_us = body::now_us();
        match what {
            Send::Room | Send::Dm => {
                let seq = if what == Send::Room {
                    &mut seqs.room
                } else {
                    &mut seqs.dm
                };
                *seq += 1;
                let seq = *seq;
                body::encode(
                    text,
                    Stamp {
                        sender: self.id,
                        seq,
                        sent_us: now_us,
                    },
                    b.size,
                );
                // Counted before the send is awaited: a run that ends during a slow send (a
                // SockJS POST) may still see its acknowledgement, which must not outnumber sends.
                rx.in_flight += 1;
                rx.dm_waiting = what == Send::Dm && b.protocol.refusal_closes();
                rx.recorder.counters().sent += 1;
                if what == Send::Room {
                    conn.send_room(&self.room, text, seq).await?;
                } else {
                    conn.send_dm(&self.dm_to, text, seq).await?;
                }
            }
            Send::Edit => {
                let Some((target, stamp)) = rx.own_last else {
                    return Ok(());
                };
                // The same stamp, padded differently: still the same message to the checks.
                body::encode_with(text, stamp, b.size, 'e');
                seqs.changes += 1;
                rx.pending[0].push_back(now_us);
                rx.recorder.counters().edits.sent += 1;
                conn.change(&self.room, target, ChangeSend::Edit(text), seqs.changes)
                    .await?;
            }
            Send::React => {
                let Some(target) = rx.room_last else {
                    return Ok(());
                };
                let on = rx.reacted != Some((target, true));
                seqs.changes += 1;
                rx.pending[1].push_back(now_us);
                rx.recorder.counters().reactions.sent += 1;
                rx.reacted = Some((target, on));
                conn.change(
                    &self.room,
                    target,
                    ChangeSend::React(EMOJI, on),
                    seqs.changes,
                )
                .await?;
            }
        }
        Ok(())
    }
}

/// Every kind of scheduled send, in the order of a session's timers.
const SENDS: [Send; 4] = [Send::Room, Send::Dm, Send::Edit, Send::React];

/// The next send time after one at `last`: the schedule advances by a jittered interval, but
/// never lags now by more than [`MAX_CATCH_UP`] (no burst after a long hold-back).
fn next_send(last: Instant, interval: Option<Duration>, rng: &mut Rng, jitter: f64) -> Instant {
    let interval = interval.unwrap_or_default();
    let now = Instant::now();
    if interval.is_zero() {
        return now;
    }
    let next = last + rng.jittered(interval, jitter);
    next.max(now.checked_sub(MAX_CATCH_UP).unwrap_or(now))
}

/// Resolves at `at`; at once, without a timer, when `at` has passed (timers tick in whole
/// milliseconds, which would cap a bot at 1,000 sends per second).
async fn due(at: Instant) {
    if at > Instant::now() {
        sleep_until(at).await;
    }
}

/// Resolves when the phase reaches `target` (or the run's controller is gone).
async fn wait_for(phase: &mut watch::Receiver<Phase>, target: Phase) {
    let _ = phase.wait_for(|p| *p == target).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_in_bounds() {
        let mut rng = Rng::new(7);
        let base = Duration::from_millis(100);
        let mut seen_low = false;
        let mut seen_high = false;
        for _ in 0..10_000 {
            let d = rng.jittered(base, 0.5);
            assert!(d >= Duration::from_millis(50) && d <= Duration::from_millis(150));
            seen_low |= d < Duration::from_millis(60);
            seen_high |= d > Duration::from_millis(140);
        }
        assert!(seen_low && seen_high);
        assert_eq!(rng.jittered(base, 0.0), base);
    }
}
