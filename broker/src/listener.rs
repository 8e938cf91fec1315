//! The broker's listener with bounded admission: at most `max.connections` connections
//! are served (the acceptor waits for one to close before it accepts the next, as Kafka's
//! acceptor does), and produce payloads hold a share of `queued.max.request.bytes` from
//! the moment they are received until they are appended.
//!
//! ```text
//!   TcpListener ──accept (needs a connection permit)──► Admitted (holds the permit)
//!        └─► tonic/HTTP/2 (max.concurrent.streams per connection)
//!              └─► Produce: RequestBytes::admit(payload) … append … permit dropped
//! ```

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::AsyncReadExt;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic::transport::server::Connected;

use crate::limits::{
    CONNECTIONS_MAX_DEFAULT, REQUEST_BYTES_IN_FLIGHT_DEFAULT, STREAMS_PER_CONNECTION_DEFAULT,
};

/// Admission settings of one listener (broker config keys in the docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListenerLimits {
    /// `max.connections`.
    pub connections_max: usize,
    /// `queued.max.request.bytes`.
    pub request_bytes_in_flight_max: usize,
    /// `max.concurrent.streams`.
    pub streams_per_connection_max: u32,
}

impl Default for ListenerLimits {
    fn default() -> Self {
        ListenerLimits {
            connections_max: CONNECTIONS_MAX_DEFAULT,
            request_bytes_in_flight_max: REQUEST_BYTES_IN_FLIGHT_DEFAULT,
            streams_per_connection_max: STREAMS_PER_CONNECTION_DEFAULT,
        }
    }
}

/// The shared budget of request bytes in flight.
#[derive(Clone)]
pub struct RequestBytes {
    permits: Arc<Semaphore>,
    max: usize,
}

/// A share of the request-bytes budget; given back when dropped.
pub struct BytesPermit {
    _permit: Option<OwnedSemaphorePermit>,
}

impl RequestBytes {
    /// A budget of `max` bytes (at least 1).
    pub fn new(max: usize) -> Self {
        let max = max.clamp(1, Semaphore::MAX_PERMITS);
        RequestBytes {
            permits: Arc::new(Semaphore::new(max)),
            max,
        }
    }

    /// Waits until `bytes` fit in the budget and takes them. A request larger than the
    /// whole budget waits for all of it (it runs alone rather than never).
    pub async fn admit(&self, bytes: usize) -> BytesPermit {
        let n = bytes.clamp(1, self.max) as u32;
        let permit = self.permits.clone().acquire_many_owned(n).await.ok();
        BytesPermit { _permit: permit }
    }

    /// Bytes currently free.
    pub fn available(&self) -> usize {
        self.permits.available_permits()
    }
}

/// An accepted connection holding its connection permit (released when dropped): the
/// plain socket, or a TLS session whose first decrypted bytes were read to tell the protocol
/// (and are replayed first).
pub struct Admitted {
    stream: Conn,
    info: PeerInfo,
    _permit: OwnedSemaphorePermit,
}

/// The transport of an [`Admitted`] connection.
pub enum Conn {
    /// Plaintext TCP.
    Plain(TcpStream),
    /// TLS over TCP (`ssl.keystore.location` set).
    Tls(Box<Prefixed<tokio_rustls::server::TlsStream<TcpStream>>>),
}

pub use sluice_proto::tls::PeerInfo;

impl Admitted {
    /// The transport and the connection permit (held for as long as the connection is
    /// served).
    pub fn into_parts(self) -> (Conn, PeerInfo, OwnedSemaphorePermit) {
        (self.stream, self.info, self._permit)
    }
}

impl Connected for Admitted {
    type ConnectInfo = PeerInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.info.clone()
    }
}

/// A stream that first replays `prefix` (bytes already read from `inner`).
pub struct Prefixed<S> {
    prefix: bytes::Bytes,
    inner: S,
}

impl<S> Prefixed<S> {
    /// `inner` with `prefix` read back first.
    pub fn new(prefix: bytes::Bytes, inner: S) -> Self {
        Prefixed { prefix, inner }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Prefixed<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(buf.remaining());
            let head = self.prefix.split_to(n);
            buf.put_slice(&head);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Prefixed<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

macro_rules! by_conn {
    ($self:expr, $s:ident => $e:expr) => {
        match &mut $self.stream {
            Conn::Plain($s) => $e,
            Conn::Tls($s) => $e,
        }
    };
}

impl AsyncRead for Admitted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        by_conn!(self, s => Pin::new(s).poll_read(cx, buf))
    }
}

impl AsyncWrite for Admitted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        by_conn!(self, s => Pin::new(s).poll_write(cx, buf))
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        by_conn!(self, s => Pin::new(s).poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        match &self.stream {
            Conn::Plain(s) => s.is_write_vectored(),
            Conn::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        by_conn!(self, s => Pin::new(s).poll_flush(cx))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        by_conn!(self, s => Pin::new(s).poll_shutdown(cx))
    }
}

/// How long a new connection may take to send its first bytes before it is dropped.
pub const FIRST_BYTES_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// The protocol a connection speaks, told by its first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// HTTP/2 (gRPC): the client preface starts `PRI *`.
    Grpc,
    /// Kafka: a 4-byte length, at most 100 MiB, so its first byte is below 0x07.
    Kafka,
}

/// Tells the protocol from the first four bytes of a connection.
pub fn protocol_of(first: &[u8; 4]) -> Protocol {
    if first == b"PRI " {
        Protocol::Grpc
    } else {
        Protocol::Kafka
    }
}

/// What serves a Kafka connection.
pub type KafkaServer = Arc<dyn Fn(Admitted, SocketAddr) + Send + Sync>;

/// Which protocols a listener serves (`listeners`: `host:port` or `PLAINTEXT://` both,
/// `GRPC://` gRPC only, `KAFKA://` Kafka only).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Serves {
    pub grpc: bool,
    pub kafka: bool,
}

impl Serves {
    /// Both protocols on one port (the default).
    pub const BOTH: Serves = Serves {
        grpc: true,
        kafka: true,
    };
}

/// Accepted gRPC connections of `listeners`, at most `connections_max` connections of
/// either protocol open at once over all of them. Each connection's first bytes say whether
/// it is HTTP/2 (handed to the returned stream, for tonic) or Kafka (handed to `kafka`);
/// one its listener does not serve (or with no `kafka`) is closed with a log line. Accept
/// errors (e.g. out of file descriptors) are logged and retried after a pause; the stream
/// never ends while the listeners live.
pub fn incoming(
    listeners: Vec<(TcpListener, Serves)>,
    connections_max: usize,
    kafka: Option<KafkaServer>,
    tls: Option<sluice_proto::tls::TlsAcceptor>,
) -> impl futures::Stream<Item = io::Result<Admitted>> {
    let connections_max = connections_max.max(1);
    let permits = Arc::new(Semaphore::new(connections_max));
    metrics::describe_gauge!(
        "sluice_connections_open",
        "client and peer connections the broker's listener is serving"
    );
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    for (listener, serves) in listeners {
        let kafka = kafka.clone().filter(|_| serves.kafka);
        tokio::spawn(accept_loop(
            listener,
            serves,
            connections_max,
            permits.clone(),
            tx.clone(),
            kafka,
            tls.clone(),
        ));
    }
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

/// One listener's accepts; runs until tonic drops the stream (the server stopped).
async fn accept_loop(
    listener: TcpListener,
    serves: Serves,
    connections_max: usize,
    permits: Arc<Semaphore>,
    tx: tokio::sync::mpsc::Sender<io::Result<Admitted>>,
    kafka: Option<KafkaServer>,
    tls: Option<sluice_proto::tls::TlsAcceptor>,
) {
    let local = listener.local_addr().ok();
    loop {
        let permit = tokio::select! {
            p = permits.clone().acquire_owned() => p.expect("the connection semaphore is never closed"),
            () = tx.closed() => return,
        };
        let (stream, peer) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed; retrying");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let open = connections_max - permits.available_permits();
        metrics::gauge!("sluice_connections_open").set(open as f64);
        let tx = tx.clone();
        let kafka = kafka.clone();
        let tls = tls.clone();
        // The handshake and sniffing wait for the client: off the accept loop.
        tokio::spawn(async move {
            let (admitted, first) = match tls {
                None => {
                    let first =
                        tokio::time::timeout(FIRST_BYTES_TIMEOUT, first_bytes(&stream)).await;
                    let admitted = Admitted {
                        stream: Conn::Plain(stream),
                        info: PeerInfo {
                            remote: Some(peer),
                            certificates: None,
                        },
                        _permit: permit,
                    };
                    (admitted, first)
                }
                Some(acceptor) => {
                    let mut session = match acceptor.accept(stream).await {
                        Ok(s) => s,
                        Err(e) => {
                            // A plaintext client on a TLS listener ends here too.
                            tracing::info!(%peer, listener = ?local, error = %e,
                                "TLS handshake failed; closed");
                            return;
                        }
                    };
                    let certificates = session
                        .get_ref()
                        .1
                        .peer_certificates()
                        .map(|c| Arc::new(c.iter().map(|c| c.clone().into_owned()).collect()));
                    let mut buf = [0u8; 4];
                    let first =
                        tokio::time::timeout(FIRST_BYTES_TIMEOUT, session.read_exact(&mut buf))
                            .await
                            .map(|r| r.ok().map(|_| buf));
                    let admitted = Admitted {
                        stream: Conn::Tls(Box::new(Prefixed::new(
                            bytes::Bytes::copy_from_slice(&buf),
                            session,
                        ))),
                        info: PeerInfo {
                            remote: Some(peer),
                            certificates,
                        },
                        _permit: permit,
                    };
                    (admitted, first)
                }
            };
            match first {
                Ok(Some(first)) => match (protocol_of(&first), kafka) {
                    (Protocol::Grpc, _) if serves.grpc => {
                        let _ = tx.send(Ok(admitted)).await;
                    }
                    (Protocol::Grpc, _) => tracing::info!(%peer, listener = ?local,
                        "an HTTP/2 (gRPC) client on a KAFKA:// listener; closed"),
                    (Protocol::Kafka, Some(serve)) => serve(admitted, peer),
                    (Protocol::Kafka, None) => tracing::info!(%peer, listener = ?local,
                        "not HTTP/2, and this listener does not serve the Kafka protocol; closed"),
                },
                Ok(None) => tracing::debug!(%peer, "closed before sending anything"),
                Err(_) => {
                    tracing::debug!(%peer, "sent nothing within {FIRST_BYTES_TIMEOUT:?}; closed")
                }
            }
        });
    }
}

/// The first four bytes of a connection, left in the socket; `None` if it closes first.
async fn first_bytes(stream: &TcpStream) -> Option<[u8; 4]> {
    let mut buf = [0u8; 4];
    loop {
        match stream.peek(&mut buf).await {
            Ok(0) | Err(_) => return None,
            Ok(n) if n >= 4 => return Some(buf),
            // Fewer bytes so far: peek would return at once again; let more arrive.
            Ok(_) => tokio::time::sleep(std::time::Duration::from_millis(5)).await,
        }
    }
}

/// Binds `addr` for [`incoming`].
pub async fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn request_bytes_wait_for_room_and_an_oversized_request_runs_alone() {
        let budget = RequestBytes::new(100);
        let a = budget.admit(60).await;
        assert_eq!(budget.available(), 40);
        // 50 more do not fit until `a` is answered.
        let waiting = tokio::time::timeout(Duration::from_millis(50), budget.admit(50)).await;
        assert!(waiting.is_err(), "60 + 50 > 100 must wait");
        drop(a);
        let b = tokio::time::timeout(Duration::from_secs(5), budget.admit(50))
            .await
            .expect("room after the first is done");
        drop(b);
        // Larger than the whole budget: takes all of it, so it runs alone.
        let big = budget.admit(1_000).await;
        assert_eq!(budget.available(), 0);
        drop(big);
        assert_eq!(budget.available(), 100);
    }

    #[tokio::test]
    async fn the_listener_serves_at_most_max_connections_at_once() {
        use futures::StreamExt;
        let listener = bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut accepted = Box::pin(incoming(vec![(listener, Serves::BOTH)], 2, None, None));
        let connect = || async {
            use tokio::io::AsyncWriteExt;
            let mut c = TcpStream::connect(addr).await.unwrap();
            c.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
                .await
                .unwrap();
            c
        };
        let _c1 = connect().await;
        let _c2 = connect().await;
        let c3 = connect().await;
        let first = accepted.next().await.unwrap().unwrap();
        let _second = accepted.next().await.unwrap().unwrap();
        // The third waits in the kernel's queue while two are open...
        let third = tokio::time::timeout(Duration::from_millis(100), accepted.next()).await;
        assert!(third.is_err(), "a third connection must wait");
        // ...and is accepted once one closes.
        drop(first);
        let third = tokio::time::timeout(Duration::from_secs(5), accepted.next())
            .await
            .expect("accepted after one closed")
            .unwrap()
            .unwrap();
        assert_eq!(third.info.remote.unwrap(), c3.local_addr().unwrap());
    }

    #[tokio::test]
    async fn the_first_bytes_tell_http2_from_kafka() {
        use futures::StreamExt;
        use tokio::io::AsyncWriteExt;
        assert_eq!(protocol_of(b"PRI "), Protocol::Grpc);
        // An ApiVersions request: length 0x00000014 first.
        assert_eq!(protocol_of(&[0, 0, 0, 0x14]), Protocol::Kafka);
        let listener = bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (kafka_tx, mut kafka_rx) = tokio::sync::mpsc::unbounded_channel();
        let serve: KafkaServer = Arc::new(move |c: Admitted, _| {
            let _ = kafka_tx.send(c.info.remote.unwrap());
        });
        let mut grpc = Box::pin(incoming(
            vec![(listener, Serves::BOTH)],
            10,
            Some(serve),
            None,
        ));
        let mut k = TcpStream::connect(addr).await.unwrap();
        k.write_all(&[0, 0, 0, 4, 0, 18, 0, 0]).await.unwrap();
        let mut h = TcpStream::connect(addr).await.unwrap();
        h.write_all(b"PRI * HTTP/2.0\r\n").await.unwrap();
        let to_kafka = tokio::time::timeout(Duration::from_secs(5), kafka_rx.recv())
            .await
            .unwrap();
        assert_eq!(to_kafka, Some(k.local_addr().unwrap()));
        let to_grpc = tokio::time::timeout(Duration::from_secs(5), grpc.next())
            .await
            .unwrap();
        assert_eq!(
            to_grpc.unwrap().unwrap().info.remote.unwrap(),
            h.local_addr().unwrap()
        );
    }
}
