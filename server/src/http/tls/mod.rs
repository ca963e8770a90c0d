//! TLS on the listeners: the settings, the handshake (under the handshake deadline, after the
//! connection's permit and address slot are taken), the encrypted stream endpoints read and
//! write ([`TlsIo`]), and reloading the certificate on SIGHUP or when its files change
//! (`certs.rs`).
//!
//! TLS 1.3 and 1.2 only (rustls has nothing older), through the `ring` provider. HTTPS offers
//! ALPN `http/1.1` alone; STOMP over TLS negotiates no ALPN (clients offering some are not
//! refused for it).

mod certs;

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::{header, HeaderValue, Response};
use rustls::ServerConfig;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt as _, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use self::certs::Certificates;
use crate::ws::ReadReady;

/// What `--tls-cert`, `--tls-key` and their companions resolve to.
#[derive(Clone, Debug)]
pub struct TlsSettings {
    /// PEM certificate chain, leaf first.
    pub cert: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// Where STOMP over TLS listens, if it does.
    pub stomp_tls: Option<SocketAddr>,
    /// `Strict-Transport-Security: max-age` on HTTPS answers; zero sends none.
    pub hsts_max_age: Duration,
    /// How often the files' modification times are looked at; zero: only SIGHUP reloads.
    pub check_interval: Duration,
}

/// A request that came over TLS (a request extension set by the HTTPS listener): its cookies
/// are `Secure`, and links built from it say `https`.
#[derive(Clone, Copy, Debug)]
pub struct OverTls;

/// The TLS side of the listeners, shared by every connection.
pub struct Tls {
    https: TlsAcceptor,
    stomp: TlsAcceptor,
    certs: Arc<Certificates>,
    handshake_timeout: Duration,
    hsts: Option<HeaderValue>,
    check_interval: Duration,
}

impl Tls {
    /// Loads the certificate (refusing a bad one: the start fails) and builds the acceptors.
    pub fn new(settings: &TlsSettings, handshake_timeout: Duration) -> anyhow::Result<Arc<Self>> {
        // rustls marks `ring` deprecated only for lacking post-quantum key exchange; aws-lc-rs
        // (which has it) needs a C toolchain and CMake to build.
        #[allow(deprecated)]
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let (certs, not_after) = Certificates::load(
            settings.cert.clone(),
            settings.key.clone(),
            provider.clone(),
        )?;
        info!(
            cert = %settings.cert.display(),
            not_after = %httpdate::fmt_http_date(not_after),
            "TLS certificate loaded"
        );
        let certs = Arc::new(certs);
        let config = |alpn: &[&[u8]]| -> anyhow::Result<TlsAcceptor> {
            let mut config = ServerConfig::builder_with_provider(provider.clone())
                .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
                .with_no_client_auth()
                .with_cert_resolver(certs.clone());
            config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
            Ok(TlsAcceptor::from(Arc::new(config)))
        };
        let max_age = settings.hsts_max_age.as_secs();
        Ok(Arc::new(Self {
            https: config(&[b"http/1.1"])?,
            stomp: config(&[])?,
            certs,
            handshake_timeout,
            hsts: (max_age > 0)
                .then(|| HeaderValue::from_str(&format!("max-age={max_age}")).ok())
                .flatten(),
            check_interval: settings.check_interval,
        }))
    }

    /// Reads the certificate files again; new handshakes get the new pair if it passes the
    /// checks, else the served one stays and the log says why. `why` names the trigger.
    pub async fn reload(self: &Arc<Self>, why: &'static str) -> bool {
        let certs = self.certs.clone();
        match tokio::task::spawn_blocking(move || certs.reload()).await {
            Ok(Ok(not_after)) => {
                info!(
                    trigger = why,
                    not_after = %httpdate::fmt_http_date(not_after),
                    "TLS certificate reloaded: new handshakes present it"
                );
                true
            }
            Ok(Err(error)) => {
                warn!(
                    trigger = why,
                    error = format!("{error:#}"),
                    "new TLS certificate refused; still serving the previous one"
                );
                false
            }
            Err(error) => {
                warn!(%error, "TLS certificate reload failed");
                false
            }
        }
    }

    /// Reloads whenever the files change, looking every `check_interval`, until `stop`.
    pub async fn watch(self: Arc<Self>, stop: CancellationToken) {
        if self.check_interval.is_zero() {
            return;
        }
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(self.check_interval) => {}
            }
            let certs = self.certs.clone();
            if let Ok(true) = tokio::task::spawn_blocking(move || certs.changed()).await {
                self.reload("files changed").await;
            }
        }
    }

    /// Adds `Strict-Transport-Security` to an HTTPS answer, unless turned off.
    pub(super) fn add_hsts<B>(&self, resp: &mut Response<B>) {
        if let Some(hsts) = &self.hsts {
            resp.headers_mut()
                .insert(header::STRICT_TRANSPORT_SECURITY, hsts.clone());
        }
    }

    /// The HTTPS handshake on an accepted connection; `None` if it failed or took too long.
    pub(super) fn accept_https(
        &self,
        stream: TcpStream,
    ) -> impl Future<Output = Option<TlsIo>> + Send + '_ {
        handshake(&self.https, stream, self.handshake_timeout)
    }

    /// The STOMP-over-TLS handshake; while `draining`, the client is told to go elsewhere
    /// instead (as on plain TCP) and `None` returned.
    pub(super) async fn accept_stomp(&self, stream: TcpStream, draining: bool) -> Option<TlsIo> {
        let mut stream = handshake(&self.stomp, stream, self.handshake_timeout).await?;
        if draining {
            let refusal = b"ERROR\nmessage:server draining: connect to another node\n\n\0";
            let refuse = async {
                stream.write_all(refusal).await?;
                stream.shutdown().await
            };
            let _ = timeout(Duration::from_secs(1), refuse).await;
            return None;
        }
        Some(stream)
    }
}

async fn handshake(acceptor: &TlsAcceptor, stream: TcpStream, limit: Duration) -> Option<TlsIo> {
    match timeout(limit, acceptor.accept(stream)).await {
        Ok(Ok(stream)) => Some(TlsIo {
            stream: Box::new(stream),
            // The handshake's last read may have brought application data too.
            more: true,
        }),
        Ok(Err(error)) => {
            debug!(%error, "TLS handshake failed");
            None
        }
        Err(_) => {
            debug!("TLS handshake timed out");
            None
        }
    }
}

/// An established TLS connection. Boxed: a connection's task moves it through its phases (HTTP,
/// then the WebSocket) as a pointer, and plain TCP connections never carry its size.
pub struct TlsIo {
    stream: Box<TlsStream<TcpStream>>,
    /// rustls holds decrypted bytes not yet read, so a read must not wait for the socket.
    /// Kept by every read; lets an idle connection wait on the socket without a read buffer,
    /// as a plain TCP one does (`ReadReady`).
    more: bool,
}

impl ReadReady for TlsIo {
    fn poll_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.more {
            Poll::Ready(Ok(()))
        } else {
            self.stream.get_ref().0.poll_read_ready(cx)
        }
    }
}

impl AsyncRead for TlsIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let polled = Pin::new(&mut *this.stream).poll_read(cx, buf);
        // tokio-rustls hands out one record's plaintext per read: ask rustls what is left (it
        // processes only records already read; nothing touches the socket).
        this.more = match this.stream.get_mut().1.process_new_packets() {
            Ok(state) => state.plaintext_bytes_to_read() > 0 || state.peer_has_closed(),
            Err(_) => true, // the next read reports it
        };
        polled
    }
}

impl AsyncWrite for TlsIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.stream).poll_shutdown(cx)
    }
}
