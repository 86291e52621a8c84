//! TCP for gRPC, arranged so that small messages share a write.
//!
//! h2 (under tonic) buffers outgoing frames and writes the buffer when it
//! flushes. A DATA frame of at least 256 bytes is not copied into that
//! buffer when the transport offers vectored writes: it is held aside, to go
//! out with the buffer in one `writev`, and nothing more can be buffered
//! until it has gone. Every gRPC message of a few hundred bytes — a
//! forwarded write's reply, a chat event on a gateway's subscription, a
//! send — then costs a system call of its own, and its trailers another,
//! where many would have shared one. Measured on a leader under 256
//! concurrent writers of 256-byte values: about two `writev` calls per
//! commit.
//!
//! Without vectored writes h2 copies frames under 1 KiB into its buffer,
//! so the replies that become ready together leave together; only larger
//! frames are written apart (as two `write` calls instead of one `writev`).
//! [`Unvectored`] is a TCP stream that says it has no vectored writes; the
//! node's servers accept them ([`incoming`]) and its clients connect with
//! them ([`connect_lazy`]). Reads are untouched.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures_util::{Stream, StreamExt};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tonic::transport::server::{Connected, TcpConnectInfo, TcpIncoming};
use tonic::transport::{Channel, Endpoint, Uri};

/// A TCP stream without vectored writes (see the module docs).
#[derive(Debug)]
pub struct Unvectored(TcpStream);

impl AsyncRead for Unvectored {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_read(cx, buf)
    }
}

impl AsyncWrite for Unvectored {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().0).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        false
    }
}

impl Connected for Unvectored {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        self.0.connect_info()
    }
}

/// The connections accepted on `listener`, for tonic's
/// `serve_with_incoming`. Nagle's algorithm is off on each: a reply goes
/// out at once rather than waiting for the peer's delayed ACK (about 40 ms
/// per round trip).
pub fn incoming(listener: TcpListener) -> impl Stream<Item = io::Result<Unvectored>> {
    TcpIncoming::from(listener)
        .with_nodelay(Some(true))
        .map(|accepted| accepted.map(Unvectored))
}

/// A channel to `endpoint`, connected on first use over [`Unvectored`]
/// streams with Nagle's algorithm off. The endpoint's connect timeout and
/// TLS settings apply as with tonic's own connector; its TCP settings
/// (`tcp_nodelay`, keepalive) do not, they are this connector's.
pub fn connect_lazy(endpoint: &Endpoint) -> Channel {
    endpoint.connect_with_connector_lazy(Connector::new())
}

/// The connector behind [`connect_lazy`].
#[derive(Clone, Debug)]
struct Connector(HttpConnector);

impl Connector {
    fn new() -> Connector {
        let mut http = HttpConnector::new();
        // TLS, when the endpoint has it, wraps the stream this returns; the
        // scheme is not this connector's business.
        http.enforce_http(false);
        http.set_nodelay(true);
        Connector(http)
    }
}

type Connecting = Pin<Box<dyn Future<Output = Result<TokioIo<Unvectored>, ConnectError>> + Send>>;
type ConnectError = Box<dyn std::error::Error + Send + Sync>;

impl tower_service::Service<Uri> for Connector {
    type Response = TokioIo<Unvectored>;
    type Error = ConnectError;
    type Future = Connecting;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), ConnectError>> {
        self.0.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, uri: Uri) -> Connecting {
        let connecting = self.0.call(uri);
        Box::pin(async move {
            let stream = connecting.await?.into_inner();
            Ok(TokioIo::new(Unvectored(stream)))
        })
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tower_service::Service;

    use super::*;

    /// A stream accepted by [`incoming`] and one made by the connector
    /// carry bytes both ways, with Nagle's algorithm off and no vectored
    /// writes on either end.
    #[tokio::test]
    async fn both_ends_are_unvectored_and_without_nagle() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("address");
        let server = tokio::spawn(async move {
            let mut accepted = Box::pin(incoming(listener));
            let mut stream = accepted
                .next()
                .await
                .expect("a connection")
                .expect("accepted");
            assert!(!stream.is_write_vectored());
            assert!(stream.0.nodelay().expect("nodelay"));
            let mut buf = [0u8; 4];
            stream.read_exact(&mut buf).await.expect("read");
            stream.write_all(&buf).await.expect("echo");
            buf
        });

        let uri: Uri = format!("http://{addr}").parse().expect("uri");
        let mut stream = Connector::new()
            .call(uri)
            .await
            .expect("connect")
            .into_inner();
        assert!(!stream.is_write_vectored());
        assert!(stream.0.nodelay().expect("nodelay"));
        stream.write_all(b"ping").await.expect("write");
        let mut echoed = [0u8; 4];
        stream.read_exact(&mut echoed).await.expect("read");
        assert_eq!(&echoed, b"ping");
        assert_eq!(&server.await.expect("server"), b"ping");
    }

    /// A refused connection fails the call with tonic's connect error, whose
    /// message callers rely on to know that nothing was sent.
    #[tokio::test]
    async fn a_refused_connection_is_an_error() {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            l.local_addr().expect("address").port()
        };
        let uri: Uri = format!("http://127.0.0.1:{port}").parse().expect("uri");
        let err = Connector::new()
            .call(uri)
            .await
            .expect_err("nobody listens");
        assert_eq!(err.to_string(), "tcp connect error");
    }
}
