//! Connecting to the master's local event sockets (AF_UNIX, or loopback TCP with
//! `ipc_mode: tcp`), with errors that say what to do.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpStream, UnixStream};

use super::config::IpcEndpoint;

/// Connecting to an event socket failed.
#[derive(Debug, thiserror::Error)]
pub enum IpcError {
    #[error(
        "permission denied on the master's event socket {endpoint}: run saltpeter as the \
         master's user (the one in `user:` of the master config, e.g. `salt` or root)"
    )]
    PermissionDenied { endpoint: String },
    #[error(
        "the master's event socket {endpoint} does not exist: is salt-master running, and is \
         `sock_dir` right in the master config?"
    )]
    Missing { endpoint: String },
    #[error("connect to the master's event socket {endpoint}")]
    Connect {
        endpoint: String,
        #[source]
        source: io::Error,
    },
}

impl IpcError {
    pub(crate) fn new(endpoint: &IpcEndpoint, source: io::Error) -> Self {
        let endpoint = endpoint.to_string();
        match source.kind() {
            io::ErrorKind::PermissionDenied => Self::PermissionDenied { endpoint },
            io::ErrorKind::NotFound => Self::Missing { endpoint },
            _ => Self::Connect { endpoint, source },
        }
    }
}

/// A connected event socket.
#[derive(Debug)]
pub(crate) enum IpcStream {
    Unix(UnixStream),
    Tcp(TcpStream),
}

impl IpcStream {
    pub(crate) async fn connect(endpoint: &IpcEndpoint) -> Result<Self, IpcError> {
        let res = match endpoint {
            IpcEndpoint::Unix(path) => UnixStream::connect(path).await.map(Self::Unix),
            IpcEndpoint::Tcp(addr) => TcpStream::connect(addr.as_str()).await.map(Self::Tcp),
        };
        res.map_err(|e| IpcError::new(endpoint, e))
    }
}

impl AsyncRead for IpcStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Unix(s) => Pin::new(s).poll_read(cx, buf),
            Self::Tcp(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for IpcStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Unix(s) => Pin::new(s).poll_write(cx, buf),
            Self::Tcp(s) => Pin::new(s).poll_write(cx, buf),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Unix(s) => Pin::new(s).poll_flush(cx),
            Self::Tcp(s) => Pin::new(s).poll_flush(cx),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Unix(s) => Pin::new(s).poll_shutdown(cx),
            Self::Tcp(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

impl IpcStream {
    /// True when the peer has closed the connection. The master never writes on its pull
    /// socket, so anything readable means end of stream.
    pub(crate) fn is_closed(&self) -> bool {
        let mut probe = [0u8; 1];
        let res = match self {
            Self::Unix(s) => s.try_read(&mut probe),
            Self::Tcp(s) => s.try_read(&mut probe),
        };
        !matches!(res, Err(ref e) if e.kind() == io::ErrorKind::WouldBlock)
    }
}
