//! A TCP relay the test controls, between a node and a server it depends on (PostgreSQL): cut,
//! it drops every relayed connection and holds new ones silent — a server that went away
//! behind a dead network path — until restored.

use std::io::ErrorKind;
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// What the accept thread and the test share; a mutex held only to change it.
#[derive(Default)]
struct State {
    cut: bool,
    /// Both ends of every relayed connection (to shut down on a cut).
    relayed: Vec<TcpStream>,
    /// Connections accepted while cut, held without an answer.
    held: Vec<TcpStream>,
}

/// Relays connections to `target` from a free loopback port until dropped.
pub struct Relay {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Relay {
    /// Starts relaying to `target`.
    pub fn start(target: SocketAddr) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").expect("relay port");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("relay address");
        let state = Arc::new(Mutex::new(State::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let (s, st) = (state.clone(), stop.clone());
        let thread = std::thread::spawn(move || accept_loop(&listener, target, &s, &st));
        Relay {
            addr,
            state,
            stop,
            thread: Some(thread),
        }
    }

    /// Where to connect instead of the target.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Drops every relayed connection; new ones are accepted and get no answer.
    pub fn cut(&self) {
        let mut state = self.state.lock().expect("relay state");
        state.cut = true;
        for conn in state.relayed.drain(..) {
            let _ = conn.shutdown(Shutdown::Both);
        }
    }

    /// Relays again; the connections held meanwhile are closed (their clients retry).
    pub fn restore(&self) {
        let mut state = self.state.lock().expect("relay state");
        state.cut = false;
        for conn in state.held.drain(..) {
            let _ = conn.shutdown(Shutdown::Both);
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.cut();
        self.restore();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn accept_loop(
    listener: &TcpListener,
    target: SocketAddr,
    state: &Mutex<State>,
    stop: &AtomicBool,
) {
    while !stop.load(Ordering::Relaxed) {
        let client = match listener.accept() {
            Ok((client, _)) => client,
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
            Err(_) => continue,
        };
        let _ = client.set_nonblocking(false);
        let mut state = state.lock().expect("relay state");
        if state.cut {
            state.held.push(client);
            continue;
        }
        let Ok(server) = TcpStream::connect_timeout(&target, Duration::from_secs(2)) else {
            continue;
        };
        for (from, to) in [(&client, &server), (&server, &client)] {
            if let (Ok(mut from), Ok(mut to)) = (from.try_clone(), to.try_clone()) {
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut from, &mut to);
                    let _ = to.shutdown(Shutdown::Both);
                    let _ = from.shutdown(Shutdown::Both);
                });
            }
        }
        state.relayed.extend([client, server]);
    }
}
