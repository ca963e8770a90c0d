//! Connections accepted on STOMP's own ports: the TCP port (plain, or behind a PROXY header
//! from a trusted balancer) and the TLS port, admitted under the per-address cap and served by
//! the STOMP endpoint. Each wait is boxed in a statement of its own, so the
//! connection's task carries none of their state for its life.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::AsyncWriteExt as _;
use tokio::net::TcpStream;
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::timeout;
use tracing::debug;

use super::proxy::canonical;
use super::response::{refuse, STOMP_TOO_MANY};
use super::Server;
use crate::endpoints::stomp::Caller;
use crate::metrics;

impl Server {
    /// STOMP over TCP, unless the node is draining. A trusted balancer's PROXY header names
    /// the client; the client's address must have room under its connection cap.
    pub(super) async fn serve_stomp_tcp(
        self: Arc<Self>,
        mut stream: TcpStream,
        peer: SocketAddr,
        _permit: OwnedSemaphorePermit,
    ) {
        if self.draining.is_cancelled() {
            let refusal = b"ERROR\nmessage:server draining: connect to another node\n\n\0";
            let _ = timeout(Duration::from_secs(1), stream.write_all(refusal)).await;
            return;
        }
        let peer = canonical(peer.ip());
        let trusted = &self.settings.trusted;
        let (client, leftover) = if trusted.trusts(peer) {
            // Boxed: a wait at the start only, whose state the task must not carry for life.
            let header = Box::pin(trusted.read_header(&mut stream, peer));
            match header.await {
                Ok(found) => found,
                Err(error) => {
                    debug!(%peer, %error, "PROXY header refused");
                    return;
                }
            }
        } else {
            (peer, BytesMut::new())
        };
        let Some(_slot) = self.per_ip.try_acquire(client) else {
            // Not a warning: a hostile client makes one per attempt.
            metrics::handles().refused_connections[1].increment(1);
            debug!(%client, "per-address connection cap reached; refusing STOMP");
            let refusal = Box::pin(refuse(stream, STOMP_TOO_MANY));
            return refusal.await;
        };
        let caller = Caller {
            pre: None,
            peer: client,
        };
        let shutdown = self.shutdown.clone();
        let session = Box::pin(self.stomp.serve_tcp(stream, leftover, caller, shutdown));
        session.await;
    }

    /// STOMP over TLS, unless the node is draining. No PROXY header is read (a balancer in
    /// front passes TLS through untouched): a trusted proxy's connections are counted under
    /// no address, as its HTTP ones are.
    pub(super) async fn serve_stomp_tls(
        self: Arc<Self>,
        stream: TcpStream,
        peer: SocketAddr,
        _permit: OwnedSemaphorePermit,
    ) {
        let Some(tls) = self.tls.clone() else {
            return;
        };
        let client = canonical(peer.ip());
        let _slot = if self.settings.trusted.trusts(client) {
            None
        } else {
            let Some(slot) = self.per_ip.try_acquire(client) else {
                metrics::handles().refused_connections[1].increment(1);
                debug!(%client, "per-address connection cap reached; refusing STOMP over TLS");
                return;
            };
            Some(slot)
        };
        let draining = self.draining.is_cancelled();
        let handshake = Box::pin(tls.accept_stomp(stream, draining));
        let Some(stream) = handshake.await else {
            return;
        };
        let caller = Caller {
            pre: None,
            peer: client,
        };
        let shutdown = self.shutdown.clone();
        let session = Box::pin(
            self.stomp
                .serve_tcp(stream, BytesMut::new(), caller, shutdown),
        );
        session.await;
    }
}
