//! Connections accepted on STOMP's own ports: the TCP port (plain, or behind a PROXY header
//! from a trusted balancer) and the TLS port, admitted under the per-address cap and served by
//! the STOMP endpoint. Each wait is boxed in a statement of its own, so the
//! connection's task carries none of their state for its life.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::AsyncWriteExt as _;
use tokio::net::TcpStream;
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::timeout;
use tracing::debug;

use super::per_ip::IpSlot;
use super::proxy::canonical;
use super::response::{refuse, STOMP_TOO_MANY};
use super::Server;
use crate::endpoints::stomp::Caller;
use crate::metrics;

impl Server {
    /// STOMP over TCP, unless the node is draining. A trusted balancer's PROXY header names
    /// the client; the client's address must have room under its connection cap.
    ///
    /// The task keeps this future for the connection's life, so it holds only the session's
    /// boxed future, the permit and the address's slot: admission is a boxed future before it.
    pub(super) fn serve_stomp_tcp(
        self: Arc<Self>,
        stream: TcpStream,
        peer: SocketAddr,
        permit: OwnedSemaphorePermit,
    ) -> impl Future<Output = ()> + Send + 'static {
        let admission = Box::pin(self.clone().admit_stomp_tcp(stream, peer));
        async move {
            // Held, not used: released when the connection ends.
            let _ = &permit;
            let Some((stream, leftover, caller, _slot)) = admission.await else {
                return;
            };
            let shutdown = self.shutdown.clone();
            let session = Box::pin(self.stomp.serve_tcp(stream, leftover, caller, shutdown));
            session.await;
        }
    }

    /// A STOMP TCP connection's admission: refused while draining, its PROXY header read
    /// when a trusted balancer sends one, then a place under the client's address cap.
    async fn admit_stomp_tcp(
        self: Arc<Self>,
        mut stream: TcpStream,
        peer: SocketAddr,
    ) -> Option<(TcpStream, BytesMut, Caller, IpSlot)> {
        if self.draining.is_cancelled() {
            let refusal = b"ERROR\nmessage:server draining: connect to another node\n\n\0";
            let _ = timeout(Duration::from_secs(1), stream.write_all(refusal)).await;
            return None;
        }
        let peer = canonical(peer.ip());
        let trusted = &self.settings.trusted;
        let (client, leftover) = if trusted.trusts(peer) {
            match trusted.read_header(&mut stream, peer).await {
                Ok(found) => found,
                Err(error) => {
                    debug!(%peer, %error, "PROXY header refused");
                    return None;
                }
            }
        } else {
            (peer, BytesMut::new())
        };
        let Some(slot) = self.per_ip.try_acquire(client) else {
            // Not a warning: a hostile client makes one per attempt.
            metrics::handles().refused_connections[1].increment(1);
            debug!(%client, "per-address connection cap reached; refusing STOMP");
            refuse(stream, STOMP_TOO_MANY).await;
            return None;
        };
        let caller = Caller {
            pre: None,
            peer: client,
        };
        Some((stream, leftover, caller, slot))
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
