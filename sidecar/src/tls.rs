//! TLS for the sidecar's two servers (the HTTP API/UI and the agent WebSocket): `tls_cert` and
//! `tls_key` (PEM files) become one rustls `ServerConfig` (ring provider, as the agent's client;
//! no OpenSSL), checked before any port is bound so a bad file is a startup error naming it.
//! [`Acceptor`] turns an accepted TCP connection into a [`Stream`] (plain or TLS, with a
//! handshake deadline); [`Listener`] pairs a `TcpListener` with it for the agent server, and
//! [`HttpListener`] is the same as an axum listener, doing handshakes off the accept loop so a
//! slow client never holds the others.

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tracing::debug;

/// How long a client has to finish the TLS handshake.
const HANDSHAKE_DEADLINE: Duration = Duration::from_secs(10);

/// Why the certificate or key cannot be used; each names the file.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("tls_cert is set ({0}) but tls_key is not: set both, or neither")]
    NoKey(PathBuf),
    #[error("tls_key is set ({0}) but tls_cert is not: set both, or neither")]
    NoCert(PathBuf),
    #[error("cannot read the TLS {what} {path}: {reason}")]
    Read { what: &'static str, path: PathBuf, reason: String },
    #[error("the TLS certificate file {path} holds no usable PEM certificate{detail}")]
    NoCertificate { path: PathBuf, detail: String },
    #[error("the TLS key file {path} holds no usable PEM private key ({detail})")]
    BadKey { path: PathBuf, detail: String },
    #[error("the TLS certificate {cert} and key {key} cannot be used together: {reason}")]
    Mismatch { cert: PathBuf, key: PathBuf, reason: String },
}

/// Reads `cert` (a PEM chain, the server's certificate first) and `key` (a PEM private key:
/// PKCS#8, PKCS#1 or SEC1) into a server configuration.
pub fn server_config(cert: &Path, key: &Path) -> Result<rustls::ServerConfig, TlsError> {
    let read = |what: &'static str, path: &Path| {
        std::fs::read(path).map_err(|e| TlsError::Read {
            what,
            path: path.to_owned(),
            reason: e.to_string(),
        })
    };
    let cert_pem = read("certificate", cert)?;
    let key_pem = read("key", key)?;
    let chain = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::NoCertificate { path: cert.to_owned(), detail: format!(": {e}") })?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate { path: cert.to_owned(), detail: String::new() });
    }
    let private = PrivateKeyDer::from_pem_slice(&key_pem)
        .map_err(|e| TlsError::BadKey { path: key.to_owned(), detail: e.to_string() })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mismatch = |e: rustls::Error| TlsError::Mismatch {
        cert: cert.to_owned(),
        key: key.to_owned(),
        reason: e.to_string(),
    };
    rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(mismatch)?
        .with_no_client_auth()
        .with_single_cert(chain, private)
        .map_err(mismatch)
}

/// The acceptor for the settings: TLS when both files are set, plain when neither is.
pub fn acceptor(cert: Option<&Path>, key: Option<&Path>) -> Result<Acceptor, TlsError> {
    match (cert, key) {
        (None, None) => Ok(Acceptor::plain()),
        (Some(cert), None) => Err(TlsError::NoKey(cert.to_owned())),
        (None, Some(key)) => Err(TlsError::NoCert(key.to_owned())),
        (Some(cert), Some(key)) => Ok(Acceptor::tls(server_config(cert, key)?)),
    }
}

/// Turns accepted TCP connections into [`Stream`]s: as they are, or after a TLS handshake.
#[derive(Clone, Default)]
pub struct Acceptor(Option<tokio_rustls::TlsAcceptor>);

impl std::fmt::Debug for Acceptor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.is_tls() { "Acceptor(tls)" } else { "Acceptor(plain)" })
    }
}

impl Acceptor {
    pub fn plain() -> Acceptor {
        Acceptor(None)
    }

    pub fn tls(config: rustls::ServerConfig) -> Acceptor {
        Acceptor(Some(Arc::new(config).into()))
    }

    pub fn is_tls(&self) -> bool {
        self.0.is_some()
    }

    /// The connection as a stream; the TLS handshake has [`HANDSHAKE_DEADLINE`].
    pub async fn accept(&self, tcp: TcpStream) -> io::Result<Stream> {
        let _ = tcp.set_nodelay(true);
        let Some(tls) = &self.0 else { return Ok(Stream::Plain(tcp)) };
        match tokio::time::timeout(HANDSHAKE_DEADLINE, tls.accept(tcp)).await {
            Ok(Ok(stream)) => Ok(Stream::Tls(Box::new(stream))),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(io::Error::new(io::ErrorKind::TimedOut, "no TLS handshake in time")),
        }
    }
}

/// An accepted connection, plain or TLS.
#[derive(Debug)]
pub enum Stream {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Stream::Plain(s) => s.is_write_vectored(),
            Stream::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// A bound TCP listener and how its connections are accepted.
#[derive(Debug)]
pub struct Listener {
    pub tcp: TcpListener,
    pub acceptor: Acceptor,
}

impl From<TcpListener> for Listener {
    fn from(tcp: TcpListener) -> Listener {
        Listener { tcp, acceptor: Acceptor::plain() }
    }
}

impl Listener {
    pub fn new(tcp: TcpListener, acceptor: Acceptor) -> Listener {
        Listener { tcp, acceptor }
    }

    /// The same connections as an axum listener: the handshakes run in their own tasks, and
    /// the accept loop stops when the returned listener is dropped.
    pub fn into_http(self) -> HttpListener {
        let addr = self.tcp.local_addr();
        if !self.acceptor.is_tls() {
            return HttpListener { inner: Inner::Plain(self.tcp) };
        }
        let (tx, rx) = mpsc::channel(64);
        tokio::spawn(handshakes(self, tx));
        HttpListener { inner: Inner::Tls { rx, addr: addr.map_err(|e| e.to_string()) } }
    }
}

/// Accepts TCP connections and hands each to `tx` once its handshake is done, until `tx`'s
/// receiver is gone.
async fn handshakes(listener: Listener, tx: mpsc::Sender<(Stream, SocketAddr)>) {
    loop {
        let (tcp, peer) = tokio::select! {
            () = tx.closed() => return,
            accepted = listener.tcp.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    debug!(error = %e, "Cannot accept an HTTP connection.");
                    // Out of file descriptors and the like: do not spin.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let (acceptor, tx) = (listener.acceptor.clone(), tx.clone());
        tokio::spawn(async move {
            match acceptor.accept(tcp).await {
                Ok(stream) => {
                    let _ = tx.send((stream, peer)).await;
                }
                Err(e) => debug!(%peer, error = %e, "A TLS handshake on the HTTP port failed."),
            }
        });
    }
}

/// The HTTP API's listener for `axum::serve`.
pub struct HttpListener {
    inner: Inner,
}

enum Inner {
    Plain(TcpListener),
    Tls { rx: mpsc::Receiver<(Stream, SocketAddr)>, addr: Result<SocketAddr, String> },
}

impl axum::serve::Listener for HttpListener {
    type Io = Stream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Stream, SocketAddr) {
        match &mut self.inner {
            Inner::Plain(tcp) => {
                let (stream, addr) = axum::serve::Listener::accept(tcp).await;
                (Stream::Plain(stream), addr)
            }
            Inner::Tls { rx, .. } => match rx.recv().await {
                Some(accepted) => accepted,
                None => std::future::pending().await,
            },
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        match &self.inner {
            Inner::Plain(tcp) => tcp.local_addr(),
            Inner::Tls { addr, .. } => addr.clone().map_err(io::Error::other),
        }
    }
}

/// TLS for the `saltpeter` subcommands that call a daemon's API over `https://`: the CA in
/// `SALTPETER_CA_FILE` (PEM) when set, else the web's public roots.
pub fn api_client_tls() -> anyhow::Result<ureq::tls::TlsConfig> {
    use anyhow::Context as _;
    let builder = ureq::tls::TlsConfig::builder();
    let Some(path) = std::env::var_os("SALTPETER_CA_FILE").filter(|p| !p.is_empty()) else {
        return Ok(builder.build());
    };
    let path = PathBuf::from(path);
    let pem = std::fs::read(&path)
        .with_context(|| format!("read SALTPETER_CA_FILE {}", path.display()))?;
    let certs = ureq::tls::parse_pem(&pem)
        .filter_map(|item| match item {
            Ok(ureq::tls::PemItem::Certificate(cert)) => Some(Ok(cert)),
            Ok(_) => None,
            Err(e) => Some(Err(e)),
        })
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("SALTPETER_CA_FILE {} is not PEM", path.display()))?;
    if certs.is_empty() {
        anyhow::bail!("SALTPETER_CA_FILE {} holds no PEM certificate", path.display());
    }
    Ok(builder.root_certs(ureq::tls::RootCerts::new_with_certs(&certs)).build())
}

#[cfg(test)]
mod tests;
