//! Where the sidecar is and how to reach it: the `SP_WEBSOCKET_URL` parsed once, then for each
//! attempt a name lookup with our stub resolver (the static binary has no NSS; see
//! `resolve`), TCP, TLS with rustls for `wss://`, and the WebSocket
//! handshake.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};
use rustls_pki_types::pem::PemObject as _;
use saltpeter_protocol::Token;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::http::Uri;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

#[derive(Clone, Debug)]
pub struct Endpoint {
    /// The URL as given, token included (an original server ignores the query).
    pub url: String,
    pub tls: bool,
    pub host: String,
    pub port: u16,
    pub token: Option<Token>,
    pub ca_file: Option<std::path::PathBuf>,
}

/// A byte stream the WebSocket runs over: plain TCP or TLS.
pub trait Transport: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Transport for T {}

pub type Socket = WebSocketStream<Box<dyn Transport>>;

impl Endpoint {
    /// Parses `ws://` or `wss://` URLs; a `token=` in the query is the token unless `SP_TOKEN`
    /// gives one.
    pub fn parse(url: &str, token: Option<Token>) -> Result<Endpoint, String> {
        let uri: Uri = url.parse().map_err(|e| format!("not a URL ({e})"))?;
        let tls = match uri.scheme_str() {
            Some("ws") => false,
            Some("wss") => true,
            Some(other) => return Err(format!("scheme `{other}` is not ws or wss")),
            None => return Err("no scheme (expected ws:// or wss://)".to_owned()),
        };
        let host = uri.host().filter(|h| !h.is_empty()).ok_or("no host")?;
        let host = host.trim_start_matches('[').trim_end_matches(']').to_owned();
        let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
        let from_query = uri
            .query()
            .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("token=")).map(Token::new));
        Ok(Endpoint {
            url: url.to_owned(),
            tls,
            host,
            port,
            token: token.or(from_query),
            ca_file: None,
        })
    }

    /// One connection attempt, bounded by `limit`.
    pub async fn connect(&self, limit: Duration) -> anyhow::Result<Socket> {
        tokio::time::timeout(limit, self.connect_inner())
            .await
            .map_err(|_| anyhow!("no connection to {}:{} within {limit:?}", self.host, self.port))?
    }

    async fn connect_inner(&self) -> anyhow::Result<Socket> {
        let addr = self.resolve().await?;
        let tcp = TcpStream::connect(addr).await.with_context(|| format!("connect to {addr}"))?;
        tcp.set_nodelay(true).ok();
        let stream: Box<dyn Transport> = if self.tls {
            let config = Arc::new(self.tls_config()?);
            let name = rustls_pki_types::ServerName::try_from(self.host.clone())
                .with_context(|| format!("`{}` as a TLS server name", self.host))?;
            let tls = tokio_rustls::TlsConnector::from(config)
                .connect(name, tcp)
                .await
                .with_context(|| format!("TLS handshake with {}", self.host))?;
            Box::new(tls)
        } else {
            Box::new(tcp)
        };
        let mut config = WebSocketConfig::default();
        config.max_message_size = Some(saltpeter_protocol::MAX_FRAME_BYTES * 4);
        let (ws, _) = tokio_tungstenite::client_async_with_config(&self.url, stream, Some(config))
            .await
            .with_context(|| format!("WebSocket handshake with {}", self.url))?;
        Ok(ws)
    }

    async fn resolve(&self) -> anyhow::Result<SocketAddr> {
        let ips = crate::resolve::lookup(&self.host, &crate::resolve::SYSTEM)
            .await
            .with_context(|| format!("resolve `{}`", self.host))?;
        let ip = ips.first().ok_or_else(|| anyhow!("`{}` has no address", self.host))?;
        Ok(SocketAddr::new(*ip, self.port))
    }

    fn tls_config(&self) -> anyhow::Result<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        if let Some(path) = &self.ca_file {
            let pem = fs_read(path)?;
            for cert in rustls_pki_types::CertificateDer::pem_slice_iter(&pem) {
                roots.add(cert.with_context(|| format!("read {}", path.display()))?)?;
            }
        } else {
            for cert in rustls_native_certs::load_native_certs().certs {
                roots.add(cert).ok();
            }
        }
        if roots.is_empty() {
            bail!("no CA certificates to verify {} (set SP_CA_FILE)", self.host);
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        Ok(rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth())
    }
}

fn fs_read(path: &std::path::Path) -> anyhow::Result<Vec<u8>> {
    #[allow(clippy::disallowed_methods)]
    std::fs::read(path).with_context(|| format!("read {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_urls_and_tokens() {
        let e = Endpoint::parse("wss://sp.example.com/agents?token=abc", None).unwrap();
        assert_eq!((e.tls, e.host.as_str(), e.port), (true, "sp.example.com", 443));
        assert_eq!(e.token.unwrap().as_str(), "abc");
        let e = Endpoint::parse("ws://[::1]:8889", Some(Token::new("env"))).unwrap();
        assert_eq!((e.tls, e.host.as_str(), e.port), (false, "::1", 8889));
        assert_eq!(e.token.unwrap().as_str(), "env");
        for bad in ["http://x", "x:1", "ws://", "not a url"] {
            assert!(Endpoint::parse(bad, None).is_err(), "{bad}");
        }
    }
}
