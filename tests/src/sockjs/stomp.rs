//! STOMP over one SockJS session ([`SockJsStomp`]): a task keeps one receiving request open at a
//! time, as a browser's SockJS client does, and hands over what arrives; sends go by `xhr_send`.
//!
//! Nothing here panics on a lost connection: a session whose node died is what the cluster
//! suites look at, so a receiving request that fails is reported ([`Event::Lost`]).

use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::{sleep, timeout, Instant};

use super::session::{Session, SockJsUrl, Transport};
use super::SockFrame;
use crate::stomp::{parse_frame, Frame};

/// What a STOMP-over-SockJS client hears.
#[derive(Debug)]
pub enum Event {
    /// `o`: a receiving request opened the session (again, after its node died).
    Open,
    /// A STOMP frame.
    Frame(Frame),
    /// `c[…]`: the session is over.
    Closed(u16, String),
    /// A receiving request failed or was cut; the client tries again.
    Lost(String),
}

/// A STOMP client over one SockJS session received over `xhr` or `xhr_streaming`.
pub struct SockJsStomp {
    /// The session's URLs.
    pub url: SockJsUrl,
    events: mpsc::UnboundedReceiver<Event>,
    task: JoinHandle<()>,
}

impl SockJsStomp {
    /// Starts receiving on `url` (opening the session) with `transport`.
    pub fn start(url: SockJsUrl, transport: Transport) -> SockJsStomp {
        let (tx, events) = mpsc::unbounded_channel();
        let task = tokio::spawn(receive(url.clone(), transport, tx));
        SockJsStomp { url, events, task }
    }

    /// Opens the session and CONNECTs as guest `login`; panics unless `o` then CONNECTED.
    pub async fn connect(url: SockJsUrl, transport: Transport, login: &str) -> SockJsStomp {
        let mut client = Self::start(url, transport);
        match client.next(Duration::from_secs(10)).await {
            Some(Event::Open) => {}
            other => panic!("{:?}: expected the open frame, got {other:?}", client.url),
        }
        client.stomp_connect(login).await;
        client
    }

    /// CONNECT as `login` on the open session; panics unless CONNECTED.
    pub async fn stomp_connect(&mut self, login: &str) {
        let connect = format!("CONNECT\naccept-version:1.2\nhost:/\nlogin:{login}\n\n\0");
        self.send_raw(&connect)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let frame = self.frame(Duration::from_secs(10)).await;
        assert_eq!(frame.command, "CONNECTED", "{frame:?}");
    }

    /// Sends one STOMP frame in one `xhr_send`.
    pub async fn send(&self, command: &str, headers: &[(&str, &str)], body: &str) {
        let mut frame = format!("{command}\n");
        for (name, value) in headers {
            frame.push_str(&format!("{name}:{value}\n"));
        }
        frame.push_str(&format!("content-length:{}\n\n{body}\0", body.len()));
        self.send_raw(&frame)
            .await
            .unwrap_or_else(|e| panic!("{:?}: {command}: {e}", self.url));
    }

    /// `xhr_send` of `text` as one message.
    pub async fn send_raw(&self, text: &str) -> Result<(), String> {
        self.url.send(&[text]).await
    }

    /// SUBSCRIBE to `destination` (catching up after `since`, if given); waits for the
    /// RECEIPT and returns the MESSAGEs that came before it (a catch-up's replay may).
    pub async fn subscribe(&mut self, destination: &str, since: Option<u64>) -> Vec<Frame> {
        let since = since.map(|s| s.to_string());
        let mut headers = vec![
            ("id", "s"),
            ("destination", destination),
            ("receipt", "sub"),
        ];
        if let Some(since) = &since {
            headers.push(("since", since));
        }
        self.send("SUBSCRIBE", &headers, "").await;
        let mut early = Vec::new();
        loop {
            let frame = self.frame(Duration::from_secs(10)).await;
            match frame.command.as_str() {
                "RECEIPT" => return early,
                "MESSAGE" => early.push(frame),
                _ => panic!("{:?}: SUBSCRIBE answered {frame:?}", self.url),
            }
        }
    }

    /// The next event within `limit`.
    pub async fn next(&mut self, limit: Duration) -> Option<Event> {
        timeout(limit, self.events.recv()).await.ok().flatten()
    }

    /// The next STOMP frame within `limit`; panics on anything else.
    pub async fn frame(&mut self, limit: Duration) -> Frame {
        match self.next(limit).await {
            Some(Event::Frame(frame)) => frame,
            other => panic!("{:?}: expected a STOMP frame, got {other:?}", self.url),
        }
    }
}

impl Drop for SockJsStomp {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The receiving loop: the session's frames, one receiving request after another, until the
/// session closes or the client is dropped.
async fn receive(url: SockJsUrl, transport: Transport, tx: mpsc::UnboundedSender<Event>) {
    let mut session = match Session::start(url, transport).await {
        Ok(session) => session,
        Err(why) => {
            let _ = tx.send(Event::Lost(why));
            return;
        }
    };
    let mut stomp = Vec::new();
    loop {
        let started = Instant::now();
        let outcome = match session.next_frame().await {
            Ok(frame) => forward(frame, &mut stomp, &tx),
            Err(why) => {
                // A request that failed at once is not retried in a tight loop.
                if started.elapsed() < Duration::from_millis(50) {
                    sleep(Duration::from_millis(50)).await;
                }
                tx.send(Event::Lost(why)).map_err(|_| ())
            }
        };
        if outcome.is_err() {
            return;
        }
    }
}

/// Passes one SockJS frame on; `Err` when the session is over or nobody listens.
fn forward(
    frame: SockFrame,
    stomp: &mut Vec<u8>,
    tx: &mpsc::UnboundedSender<Event>,
) -> Result<(), ()> {
    match frame {
        SockFrame::Heartbeat => Ok(()),
        SockFrame::Open => {
            // A fresh session: a fresh STOMP stream.
            stomp.clear();
            tx.send(Event::Open).map_err(|_| ())
        }
        SockFrame::Close(code, reason) => {
            let _ = tx.send(Event::Closed(code, reason));
            Err(())
        }
        SockFrame::Messages(messages) => {
            for message in messages {
                stomp.extend_from_slice(message.as_bytes());
            }
            loop {
                let eols = stomp.iter().take_while(|&&b| b == b'\n' || b == b'\r');
                let skip = eols.count();
                stomp.drain(..skip);
                let Some((frame, used)) = parse_frame(stomp) else {
                    return Ok(());
                };
                stomp.drain(..used);
                tx.send(Event::Frame(frame)).map_err(|_| ())?;
            }
        }
    }
}
