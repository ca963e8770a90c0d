//! Connections accepted on STOMP's own ports: the TCP port (plain, or behind a PROXY header
//! from a trusted balancer) and the TLS port, admitted under the per-address cap and served by
//! the STOMP endpoint. Admission and the TLS handshake are boxed, so the connection's task
//! carries none of their state for its life.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncWrite, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::timeout;
use tracing::debug;

use super::per_ip::IpSlot;
use super::proxy::canonical;
use super::response::{refuse, STOMP_TOO_MANY};
use super::tls::TlsIo;
use super::{Served, Server};
use crate::endpoints::stomp::Caller;
use crate::metrics;
use crate::ws::ReadReady;

/// An admitted STOMP connection: its stream, what was read past a PROXY header, who it is for,
/// and its place under the per-address cap (none for a trusted proxy's TLS connections).
type Admitted<S> = (S, BytesMut, Caller, Option<IpSlot>);

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
    ) -> impl Future<Output = Served> + Send + 'static {
        let admission = Box::pin(self.clone().admit_stomp_tcp(stream, peer));
        self.serve_stomp(admission, permit)
    }

    /// Serves a STOMP connection (TCP or TLS) once `admission` lets it in; `permit` is held
    /// until it ends. An `async move` block, not an `async fn`: the task is 256 B with it and
    /// 384 B with the `async fn` (which keeps moved-from locals beside its arguments).
    #[allow(clippy::manual_async_fn)] // on purpose: see above
    fn serve_stomp<S>(
        self: Arc<Self>,
        admission: Pin<Box<impl Future<Output = Option<Admitted<S>>> + Send + 'static>>,
        permit: OwnedSemaphorePermit,
    ) -> impl Future<Output = Served> + Send + 'static
    where
        S: ReadReady + AsyncWrite + Send + 'static,
    {
        async move {
            let _ = &permit;
            let (stream, leftover, caller, slot) = admission.await?;
            let session = Box::pin(self.stomp.serve_tcp(stream, leftover, caller));
            let parked = session.await?;
            Some((parked, self.kept(permit, slot)))
        }
    }

    /// A STOMP TCP connection's admission: refused while draining, its PROXY header read
    /// when a trusted balancer sends one, then a place under the client's address cap.
    async fn admit_stomp_tcp(
        self: Arc<Self>,
        mut stream: TcpStream,
        peer: SocketAddr,
    ) -> Option<Admitted<TcpStream>> {
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
        Some((stream, leftover, caller, Some(slot)))
    }

    /// STOMP over TLS, unless the node is draining. No PROXY header is read (a balancer in
    /// front passes TLS through untouched): a trusted proxy's connections are counted under
    /// no address, as its HTTP ones are. As over TCP, the task keeps only the session's boxed
    /// future, the permit and the address's slot.
    pub(super) fn serve_stomp_tls(
        self: Arc<Self>,
        stream: TcpStream,
        peer: SocketAddr,
        permit: OwnedSemaphorePermit,
    ) -> impl Future<Output = Served> + Send + 'static {
        let admission = Box::pin(self.clone().admit_stomp_tls(stream, peer));
        self.serve_stomp(admission, permit)
    }

    /// A STOMP TLS connection's admission: a place under the client's address cap (none for a
    /// trusted proxy), then the TLS handshake (which refuses while draining).
    async fn admit_stomp_tls(
        self: Arc<Self>,
        stream: TcpStream,
        peer: SocketAddr,
    ) -> Option<Admitted<TlsIo>> {
        let tls = self.tls.clone()?;
        let client = canonical(peer.ip());
        let slot = if self.settings.trusted.trusts(client) {
            None
        } else {
            let Some(slot) = self.per_ip.try_acquire(client) else {
                metrics::handles().refused_connections[1].increment(1);
                debug!(%client, "per-address connection cap reached; refusing STOMP over TLS");
                return None;
            };
            Some(slot)
        };
        let draining = self.draining.is_cancelled();
        let stream = tls.accept_stomp(stream, draining).await?;
        let caller = Caller {
            pre: None,
            peer: client,
        };
        Some((stream, BytesMut::new(), caller, slot))
    }
}
