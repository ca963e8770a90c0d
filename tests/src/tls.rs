//! TLS for the suites: a test CA and server certificates made with the `openssl` CLI, and a
//! rustls client that trusts that CA alone (so a test sees exactly which certificate a
//! handshake presented).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::AsyncWriteExt as _;
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use crate::auth::{openssl, scratch_dir};
use crate::http::{read_response, request_bytes, Response, HTTP_TIMEOUT};

/// A certificate authority for one test, and the server certificates it issues.
pub struct TestCa {
    dir: PathBuf,
    /// The CA's certificate (PEM), for clients to trust.
    pub cert: PathBuf,
    key: PathBuf,
}

/// A server certificate and its key, as files.
#[derive(Clone, Debug)]
pub struct Pair {
    /// The PEM certificate.
    pub cert: PathBuf,
    /// The PEM private key.
    pub key: PathBuf,
}

impl Pair {
    /// The certificate's DER bytes, to compare with what a handshake presented.
    pub fn der(&self) -> Vec<u8> {
        CertificateDer::from_pem_file(&self.cert)
            .expect("read the certificate")
            .to_vec()
    }

    /// Puts this pair where a server reads its certificate from, each file replaced whole
    /// (written aside, then renamed), as deployment tools do.
    pub fn install(&self, at: &Pair) {
        for (from, to) in [(&self.cert, &at.cert), (&self.key, &at.key)] {
            let aside = to.with_extension("new");
            std::fs::copy(from, &aside).expect("copy a certificate file");
            std::fs::rename(&aside, to).expect("rename a certificate file");
        }
    }
}

impl TestCa {
    /// A new CA (EC P-256, valid for 30 days) in a scratch directory.
    pub fn new() -> TestCa {
        let dir = scratch_dir();
        let (cert, key) = (dir.join("ca.pem"), dir.join("ca.key"));
        openssl(&[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            path(&key),
            "-out",
            path(&cert),
            "-days",
            "30",
            "-subj",
            "/CN=Parley test CA",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ]);
        TestCa { dir, cert, key }
    }

    /// A server certificate for `127.0.0.1` and `localhost`, valid from now for `days` (a
    /// negative number gives one that expired already), with a key of its own.
    pub fn issue(&self, name: &str, days: i32) -> Pair {
        let pair = Pair {
            cert: self.dir.join(format!("{name}.pem")),
            key: self.dir.join(format!("{name}.key")),
        };
        let csr = self.dir.join(format!("{name}.csr"));
        let ext = self.dir.join(format!("{name}.ext"));
        std::fs::write(
            &ext,
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n\
             extendedKeyUsage=serverAuth\n",
        )
        .expect("write the extensions file");
        openssl(&[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            path(&pair.key),
            "-out",
            path(&csr),
            "-subj",
            &format!("/CN={name}"),
        ]);
        openssl(&[
            "x509",
            "-req",
            "-in",
            path(&csr),
            "-CA",
            path(&self.cert),
            "-CAkey",
            path(&self.key),
            "-set_serial",
            &serial(),
            "-days",
            &days.to_string(),
            "-extfile",
            path(&ext),
            "-out",
            path(&pair.cert),
        ]);
        pair
    }

    /// Where a server should read its certificate from: `name` issued, copied to files of
    /// their own that tests replace.
    pub fn served(&self, name: &str) -> Pair {
        let at = Pair {
            cert: self.dir.join("served.pem"),
            key: self.dir.join("served.key"),
        };
        self.issue(name, 30).install(&at);
        at
    }

    /// A client trusting this CA only, offering `alpn`.
    pub fn client(&self, alpn: &[&[u8]]) -> TlsConnector {
        self.client_with(alpn, &[&rustls::version::TLS13, &rustls::version::TLS12])
    }

    /// A client trusting this CA only, offering `alpn` and `versions`.
    pub fn client_with(
        &self,
        alpn: &[&[u8]],
        versions: &[&'static rustls::SupportedProtocolVersion],
    ) -> TlsConnector {
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_file(&self.cert).expect("read the CA"))
            .expect("trust the CA");
        // The server's provider; deprecated only for lacking post-quantum key exchange.
        #[allow(deprecated)]
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(versions)
            .expect("protocol versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        TlsConnector::from(Arc::new(config))
    }
}

impl Default for TestCa {
    fn default() -> Self {
        Self::new()
    }
}

/// A TLS connection to `addr` (as `127.0.0.1`); `Err` says why the handshake failed.
pub async fn try_connect(
    connector: &TlsConnector,
    addr: SocketAddr,
) -> Result<TlsStream<TcpStream>, String> {
    let tcp = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect to {addr}: {e}"))?;
    let name = ServerName::IpAddress(addr.ip().into());
    match timeout(HTTP_TIMEOUT, connector.connect(name, tcp)).await {
        Ok(Ok(stream)) => Ok(stream),
        Ok(Err(e)) => Err(format!("TLS handshake with {addr}: {e}")),
        Err(_) => Err(format!("TLS handshake with {addr} timed out")),
    }
}

/// A TLS connection to `addr`, panicking if the handshake fails.
pub async fn connect(connector: &TlsConnector, addr: SocketAddr) -> TlsStream<TcpStream> {
    try_connect(connector, addr)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

/// The certificate the server presented on `stream`.
pub fn leaf(stream: &TlsStream<TcpStream>) -> Vec<u8> {
    stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|certs| certs.first())
        .expect("the server presents a certificate")
        .to_vec()
}

/// The certificate a new handshake with `addr` gets.
pub async fn served_leaf(connector: &TlsConnector, addr: SocketAddr) -> Vec<u8> {
    leaf(&connect(connector, addr).await)
}

/// One HTTPS request (as [`crate::http::request`]), and the ALPN protocol negotiated.
pub async fn request(
    connector: &TlsConnector,
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (Response, Option<Vec<u8>>) {
    let mut stream = connect(connector, addr).await;
    let alpn = stream.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
    let bytes = request_bytes(addr, method, path, headers, body);
    let exchange = async {
        stream.write_all(&bytes).await.expect("write the request");
        read_response(&mut stream, method == "HEAD").await
    };
    let response = timeout(HTTP_TIMEOUT, exchange)
        .await
        .unwrap_or_else(|_| panic!("{method} {path}: no response within {HTTP_TIMEOUT:?}"));
    (response, alpn)
}

fn serial() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(1);
    (u64::from(std::process::id()) * 1000 + NEXT.fetch_add(1, Ordering::Relaxed)).to_string()
}

fn path(p: &Path) -> &str {
    p.to_str().expect("scratch paths are UTF-8")
}
