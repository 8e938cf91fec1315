//! The Kafka wire protocol on the broker's port (DESIGN §4–§7): existing Kafka clients and
//! tools produce to and fetch from Sluice unchanged. The listener tells a Kafka connection
//! from an HTTP/2 one by its first bytes ([`crate::listener`]); this module serves it.
//!
//! ```text
//!   socket ─► reader: frame (i32 length ≤ MESSAGE_BYTES_MAX, request-bytes budget)
//!               ─► header + body (kafka-protocol codecs) ─► handler ─► oneshot ─┐
//!             in-order queue (≤ KAFKA_IN_FLIGHT_MAX responses) ◄─────────────────┘
//!   socket ◄─ writer: responses in request order (acks=0 produce: none)
//! ```
//!
//! Handlers call the same [`DataPlane`] as the gRPC service; record batches pass through as
//! the bytes the client sent and the log stores (never decoded and re-encoded). Produce
//! appends of one connection run in arrival order in the reader, so a producer's pipelined
//! batches keep their order; a member's group requests (join, sync, heartbeat, leave,
//! offset commit and fetch) run one at a time in arrival order on the connection's group
//! lane, as Kafka serves them; replication waits and every other request run concurrently,
//! answered in order. A frame with a negative or oversized length, an unknown API, or a body
//! that does not decode closes that connection with a log line; nothing else is affected.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, RequestKind, ResponseHeader, ResponseKind};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use sluice_storage::FileRange;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};

use crate::data::DataPlane;
use crate::group::GroupCoordinator;
use crate::limits::MESSAGE_BYTES_MAX;
use crate::listener::{Admitted, Conn, Prefixed};
use crate::node::BrokerNode;

mod acls;
mod admin;
mod elections;
mod fetch;
pub mod fetch_session;
mod frame;
use frame::Part;
mod groups;
mod metadata;
mod offsets;
mod produce;
mod quotas;
mod sasl;
mod versions;

pub use versions::SUPPORTED;

/// Responses one connection may have outstanding (read, not yet written) before the reader
/// stops reading: pipelining with a bound (Kafka clients keep ≤ 5 in flight by default).
pub const KAFKA_IN_FLIGHT_MAX: usize = 32;

/// How long a connection may stay silent between requests (Kafka's
/// `connections.max.idle.ms` default, 10 minutes).
pub const CONNECTION_IDLE_MAX: std::time::Duration = std::time::Duration::from_secs(600);
/// How long the rest of a request may take to arrive once its length was read: a client
/// that announces a large frame and stalls must not hold the request-bytes budget.
pub const REQUEST_BODY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// What a handler gives back.
pub(crate) enum Answer {
    /// A response to write.
    Reply(Box<ResponseKind>),
    /// Nothing to write (acks=0 produce that succeeded).
    Nothing,
    /// Close the connection after the earlier responses: an acks=0 produce failed, and
    /// closing is the only signal such a producer gets to refresh its metadata (Kafka does
    /// the same).
    Close(String),
}

/// An answer with what it holds until it is written (a Fetch's in-flight permit).
struct Answered {
    answer: Answer,
    /// The segment file ranges a Fetch answer's placeholders stand for ([`frame`]).
    files: Vec<FileRange>,
    _held: Option<tokio::sync::OwnedSemaphorePermit>,
}

/// The context every handler gets.
#[derive(Clone)]
pub(crate) struct Ctx {
    pub node: Arc<BrokerNode>,
    pub data: DataPlane,
    pub groups: Arc<GroupCoordinator>,
    /// The broker's Kafka fetch sessions (KIP-227), shared by its connections.
    pub fetch_sessions: Arc<std::sync::Mutex<fetch_session::SessionCache>>,
    /// Whether this connection's writer sends segment file ranges with `sendfile`, so
    /// fetches may answer them unread.
    pub file_ranges: bool,
    /// Whether this connection is TLS (PLAIN is offered only then).
    pub tls: bool,
    /// Who is on the other end: its certificate's principal (or ANONYMOUS) until SASL
    /// authenticates a user.
    pub caller: Arc<sluice_metadata::acl::Caller>,
    /// Until when the connection is not read: a quota's throttle (KIP-219's muted channel).
    pub muted: Arc<std::sync::Mutex<Option<tokio::time::Instant>>>,
}

impl Ctx {
    /// The checks for this connection's caller, on the current image.
    pub fn access(&self) -> crate::authz::Access {
        crate::authz::Access::new(&self.node, &self.caller)
    }

    /// Charges a request's usage to the caller's quotas; when it is over one, mutes the
    /// connection for the throttle time and puts that time into the answer.
    fn throttle(
        &self,
        client_id: &str,
        usage: crate::quota::Usage,
        answer: Option<&mut ResponseKind>,
    ) {
        let t = self
            .node
            .quotas
            .charge(&self.node.image(), &self.caller, client_id, usage);
        if t.is_zero() {
            return;
        }
        let until = tokio::time::Instant::now() + t;
        {
            let mut muted = self.muted.lock().expect("mute lock");
            *muted = Some(muted.map_or(until, |m| m.max(until)));
        }
        metrics::counter!("sluice_quota_throttled_requests_total").increment(1);
        if let Some(a) = answer {
            set_throttle(a, crate::quota::throttle_ms(t));
        }
    }
}

/// Sets `throttle_time_ms` in an answer (every served API has it but ApiVersions v0 and the
/// SASL ones, which are not throttled).
fn set_throttle(answer: &mut ResponseKind, ms: i32) {
    macro_rules! with_throttle {
        ($($kind:ident),* $(,)?) => {
            match answer {
                $(ResponseKind::$kind(r) => r.throttle_time_ms = ms,)*
                _ => {}
            }
        };
    }
    with_throttle!(
        Produce,
        Fetch,
        ListOffsets,
        Metadata,
        InitProducerId,
        OffsetForLeaderEpoch,
        FindCoordinator,
        JoinGroup,
        SyncGroup,
        Heartbeat,
        LeaveGroup,
        OffsetCommit,
        OffsetFetch,
        ListGroups,
        DescribeGroups,
        DeleteGroups,
        OffsetDelete,
        CreateTopics,
        DeleteTopics,
        ConsumerGroupHeartbeat,
        ConsumerGroupDescribe,
        CreatePartitions,
        DescribeConfigs,
        IncrementalAlterConfigs,
        AlterConfigs,
        DescribeProducers,
        DescribeCluster,
        DescribeUserScramCredentials,
        AlterUserScramCredentials,
        DescribeAcls,
        CreateAcls,
        DeleteAcls,
        DescribeClientQuotas,
        AlterClientQuotas,
    );
}

/// A request as the connection decoded it.
struct Decoded {
    api_key: ApiKey,
    version: i16,
    header: RequestHeader,
    body: RequestKind,
}

/// Why a connection is closed.
#[derive(Debug, thiserror::Error)]
enum Close {
    #[error("the client closed the connection")]
    Eof,
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Protocol(String),
}

/// Serves one Kafka connection until the client closes it or breaks the protocol.
pub async fn serve_connection(
    conn: Admitted,
    peer: SocketAddr,
    node: Arc<BrokerNode>,
    groups: Arc<GroupCoordinator>,
    fetch_sessions: Arc<std::sync::Mutex<fetch_session::SessionCache>>,
) {
    let (conn, info, _permit) = conn.into_parts();
    let principal = info
        .certificates
        .as_deref()
        .and_then(|c| sluice_proto::auth::chain_principal(c))
        .unwrap_or(sluice_proto::auth::Principal::Anonymous);
    let caller = Arc::new(crate::authz::caller(&principal, peer.ip().to_string()));
    let ctx = |file_ranges, tls| Ctx {
        caller: caller.clone(),
        data: DataPlane::new(node.clone()),
        node: node.clone(),
        groups: groups.clone(),
        fetch_sessions: fetch_sessions.clone(),
        file_ranges,
        tls,
        muted: Default::default(),
    };
    match conn {
        Conn::Plain(stream) => {
            let (reader, writer) = stream.into_split();
            serve_on(
                reader,
                Writer::Plain(writer),
                ctx(cfg!(target_os = "linux"), false),
                peer,
            )
            .await
        }
        // sendfile cannot encrypt: over TLS, record sets go through the TLS writer.
        Conn::Tls(stream) => {
            let (reader, writer) = tokio::io::split(*stream);
            serve_on(reader, Writer::Tls(writer), ctx(false, true), peer).await
        }
    }
}

/// The writing half of a Kafka connection.
enum Writer {
    Plain(OwnedWriteHalf),
    Tls(tokio::io::WriteHalf<Prefixed<tokio_rustls::server::TlsStream<TcpStream>>>),
}

impl Writer {
    async fn shutdown(&mut self) -> std::io::Result<()> {
        match self {
            Writer::Plain(w) => w.shutdown().await,
            Writer::Tls(w) => w.shutdown().await,
        }
    }
}

async fn serve_on<R: AsyncRead + Unpin>(
    mut reader: R,
    mut writer: Writer,
    ctx: Ctx,
    peer: SocketAddr,
) {
    let (queue, mut answers) = mpsc::channel::<Queued>(KAFKA_IN_FLIGHT_MAX);
    metrics::gauge!("sluice_kafka_connections_open").increment(1.0);
    // The writer: responses in request order. When it stops (the client went away, or the
    // connection must close), it shuts the socket down and the reader stops too.
    let mut write = tokio::spawn(async move {
        while let Some((correlation_id, version, api_key, rx)) = answers.recv().await {
            let Ok(answered) = rx.await else {
                // The handler failed without an answer: the client cannot match later
                // responses any more, so the connection ends.
                break;
            };
            let body = match answered.answer {
                Answer::Reply(body) => body,
                Answer::Nothing => continue,
                Answer::Close(why) => {
                    tracing::info!(%peer, "closing a Kafka connection: {why}");
                    break;
                }
            };
            let frame = match encode_response(
                api_key,
                version,
                correlation_id,
                &body,
                &answered.files,
            ) {
                Ok(f) => f,
                Err(e) => {
                    tracing::error!(api = ?api_key, version, error = %e, "cannot encode a Kafka response; closing the connection");
                    break;
                }
            };
            if write_parts(&mut writer, frame).await.is_err() {
                break;
            }
        }
        let _ = writer.shutdown().await;
    });
    let fetches = Arc::new(tokio::sync::Semaphore::new(FETCHES_IN_FLIGHT_MAX));
    // The group lane: this connection's group requests, one at a time in arrival order.
    let (lane, mut lane_rx) = mpsc::unbounded_channel::<GroupWork>();
    let lane_task = tokio::spawn(async move {
        while let Some(work) = lane_rx.recv().await {
            work.await;
        }
    });
    let closed = tokio::select! {
        closed = read_loop(&mut reader, &queue, &ctx, &fetches, &lane, peer) => closed,
        _ = &mut write => Close::Eof,
    };
    match &closed {
        Close::Eof => tracing::debug!(%peer, "Kafka connection closed by the client"),
        Close::Io(e) => tracing::debug!(%peer, error = %e, "Kafka connection failed"),
        Close::Protocol(why) => {
            tracing::warn!(%peer, "closing a Kafka connection: {why}")
        }
    }
    drop(queue);
    if !write.is_finished() {
        let _ = write.await;
    }
    // Group work of a client that is gone (a parked JoinGroup, queued commits' answers) is
    // dropped, not run for nobody.
    lane_task.abort();
    metrics::gauge!("sluice_kafka_connections_open").decrement(1.0);
}

/// Fetches of one connection read and not yet written: a fetch answer can be tens of MiB,
/// and Kafka clients send one fetch per connection at a time anyway.
pub const FETCHES_IN_FLIGHT_MAX: usize = 1;

/// A request's slot in the in-order queue: (correlation id, version, api, its answer).
type Queued = (i32, i16, ApiKey, oneshot::Receiver<Answered>);

/// One group request's work, run on the connection's group lane.
type GroupWork = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

/// Whether a request goes to the group coordinator as a member's step: those of one
/// connection run one at a time in arrival order (Kafka serves a connection's requests in
/// order), so two pipelined async OffsetCommits can never be applied newest first (found
/// by librdkafka's test 0030: a commit of 49 overwrote the acknowledged 50).
fn is_group_step(body: &RequestKind) -> bool {
    matches!(
        body,
        RequestKind::JoinGroup(_)
            | RequestKind::SyncGroup(_)
            | RequestKind::Heartbeat(_)
            | RequestKind::LeaveGroup(_)
            | RequestKind::OffsetCommit(_)
            | RequestKind::OffsetFetch(_)
            | RequestKind::ConsumerGroupHeartbeat(_)
    )
}

async fn read_loop<R: AsyncRead + Unpin>(
    reader: &mut R,
    queue: &mpsc::Sender<Queued>,
    ctx: &Ctx,
    fetches: &Arc<tokio::sync::Semaphore>,
    lane: &mpsc::UnboundedSender<GroupWork>,
    peer: SocketAddr,
) -> Close {
    let mut sasl = sasl::SaslState::new(ctx);
    let mut ctx = ctx.clone();
    let ctx = &mut ctx;
    loop {
        // A throttled client's next request waits (KIP-219: the channel is muted).
        let muted = *ctx.muted.lock().expect("mute lock");
        if let Some(until) = muted {
            tokio::time::sleep_until(until).await;
        }
        let frame = match read_frame(reader, ctx).await {
            Ok(f) => f,
            Err(c) => return c,
        };
        let decoded = match decode_request(frame) {
            Ok(Ok(d)) => d,
            // KIP-511: a too-new ApiVersions gets a v0 answer with error 35 and our ranges.
            Ok(Err((correlation_id, answer))) => {
                let (tx, rx) = oneshot::channel();
                let _ = tx.send(Answered {
                    answer: Answer::Reply(Box::new(answer)),
                    files: Vec::new(),
                    _held: None,
                });
                if queue
                    .send((correlation_id, 0, ApiKey::ApiVersions, rx))
                    .await
                    .is_err()
                {
                    return Close::Eof;
                }
                continue;
            }
            Err(why) => return Close::Protocol(why),
        };
        let (tx, rx) = oneshot::channel();
        let (correlation_id, version, api_key) = (
            decoded.header.correlation_id,
            decoded.version,
            decoded.api_key,
        );
        let gate = sasl.step(ctx, api_key, version, &decoded.body).await;
        if let Some(user) = sasl.user() {
            // SASL names the principal (over a certificate's, as in Kafka's SASL_SSL).
            if ctx.caller.node || ctx.caller.principal.strip_prefix("User:") != Some(user) {
                ctx.caller = Arc::new(sluice_metadata::acl::Caller::user(
                    format!("User:{user}"),
                    peer.ip().to_string(),
                ));
            }
        }
        if let sasl::Gate::Close(why) = gate {
            return Close::Protocol(why);
        }
        if queue
            .send((correlation_id, version, api_key, rx))
            .await
            .is_err()
        {
            return Close::Eof;
        }
        let ready = |answer: ResponseKind| Answered {
            answer: Answer::Reply(Box::new(answer)),
            files: Vec::new(),
            _held: None,
        };
        match gate {
            sasl::Gate::Serve => dispatch(ctx, decoded, tx, fetches, lane, peer).await,
            sasl::Gate::Answer(answer) => {
                let _ = tx.send(ready(answer));
            }
            sasl::Gate::AnswerAndClose(answer, why) => {
                let _ = tx.send(ready(answer));
                // The writer sends what is queued, this answer last, then closes.
                return Close::Protocol(why);
            }
            sasl::Gate::Close(_) => unreachable!("handled above"),
        }
    }
}

/// Reads one length-prefixed frame, holding its size in the request-bytes budget while
/// it is read and decoded.
async fn read_frame<R: AsyncRead + Unpin>(reader: &mut R, ctx: &Ctx) -> Result<Bytes, Close> {
    let mut len = [0u8; 4];
    match tokio::time::timeout(CONNECTION_IDLE_MAX, reader.read_exact(&mut len)).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Err(Close::Eof),
        Ok(Err(e)) => return Err(Close::Io(e)),
        Err(_) => {
            return Err(Close::Protocol(format!(
                "idle for {} s (connections.max.idle.ms)",
                CONNECTION_IDLE_MAX.as_secs()
            )))
        }
    }
    let len = i32::from_be_bytes(len);
    if len < 4 || len as usize > MESSAGE_BYTES_MAX {
        return Err(Close::Protocol(format!(
            "a frame of {len} bytes (a request is 4..={MESSAGE_BYTES_MAX} bytes)"
        )));
    }
    let _budget = ctx.node.request_bytes.admit(len as usize).await;
    let mut buf = BytesMut::zeroed(len as usize);
    match tokio::time::timeout(REQUEST_BODY_TIMEOUT, reader.read_exact(&mut buf)).await {
        Ok(Ok(_)) => Ok(buf.freeze()),
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => Err(Close::Protocol(
            format!("the connection ended inside a {len}-byte frame"),
        )),
        Ok(Err(e)) => Err(Close::Io(e)),
        Err(_) => Err(Close::Protocol(format!(
            "a {len}-byte frame did not arrive within {} s",
            REQUEST_BODY_TIMEOUT.as_secs()
        ))),
    }
}

/// Decodes a frame. `Ok(Err(..))` is a ready answer (a too-new ApiVersions), `Err` a
/// reason to close the connection.
#[allow(clippy::type_complexity)]
fn decode_request(mut frame: Bytes) -> Result<Result<Decoded, (i32, ResponseKind)>, String> {
    if frame.len() < 8 {
        return Err(format!("a request of {} bytes has no header", frame.len()));
    }
    let raw_key = (&frame[0..2]).get_i16();
    let version = (&frame[2..4]).get_i16();
    let correlation_id = (&frame[4..8]).get_i32();
    let Ok(api_key) = ApiKey::try_from(raw_key) else {
        return Err(format!("unknown API key {raw_key}"));
    };
    let Some(range) = versions::supported(api_key) else {
        return Err(format!(
            "{api_key:?} (key {raw_key}) is not supported by this broker; ApiVersions lists what is"
        ));
    };
    if version < range.0 || version > range.1 {
        if api_key == ApiKey::ApiVersions {
            return Ok(Err((
                correlation_id,
                versions::unsupported_version_answer(),
            )));
        }
        return Err(format!(
            "{api_key:?} v{version} is not supported (versions {}..={})",
            range.0, range.1
        ));
    }
    let header = RequestHeader::decode(&mut frame, api_key.request_header_version(version))
        .map_err(|e| format!("{api_key:?} v{version}: bad request header: {e}"))?;
    let body = RequestKind::decode(api_key, &mut frame, version)
        .map_err(|e| format!("{api_key:?} v{version}: the request does not decode: {e:#}"))?;
    Ok(Ok(Decoded {
        api_key,
        version,
        header,
        body,
    }))
}

fn encode_response(
    api_key: ApiKey,
    version: i16,
    correlation_id: i32,
    body: &ResponseKind,
    files: &[FileRange],
) -> Result<Vec<Part>, String> {
    let header_version = api_key.response_header_version(version);
    let header = ResponseHeader::default().with_correlation_id(correlation_id);
    let header_err =
        |e: &dyn std::fmt::Display| format!("{api_key:?} v{version} response header: {e}");
    let body_err = |e: &dyn std::fmt::Display| format!("{api_key:?} v{version} response: {e:#}");
    if let ResponseKind::Fetch(f) = body {
        // The record sets go out as they are (vectored writes, sendfile), not copied into
        // the frame.
        let spliced: Vec<Bytes> = f
            .responses
            .iter()
            .flat_map(|t| t.partitions.iter())
            .filter_map(|p| p.records.clone())
            .filter(|r| r.len() >= frame::SPLICE_MIN_BYTES)
            .collect();
        let size = header
            .compute_size(header_version)
            .map_err(|e| header_err(&e))?
            + f.compute_size(version).map_err(|e| body_err(&e))?;
        let copied = size - spliced.iter().map(Bytes::len).sum::<usize>();
        let mut out = frame::Frame::new(4 + copied, &spliced, files);
        out.put_i32(i32::try_from(size).map_err(|_| format!("a {size}-byte Fetch response"))?);
        header
            .encode(&mut out, header_version)
            .map_err(|e| header_err(&e))?;
        f.encode(&mut out, version).map_err(|e| body_err(&e))?;
        if out.len() != 4 + size {
            return Err(format!(
                "Fetch v{version} response: encoded {} bytes, computed {size}",
                out.len() - 4
            ));
        }
        return out
            .into_parts()
            .map_err(|e| format!("Fetch v{version} response: {e}"));
    }
    if !files.is_empty() {
        return Err(format!(
            "{api_key:?} response with {} file ranges",
            files.len()
        ));
    }
    let mut out = BytesMut::new();
    out.put_i32(0);
    header
        .encode(&mut out, header_version)
        .map_err(|e| header_err(&e))?;
    body.encode(&mut out, version).map_err(|e| body_err(&e))?;
    let len = (out.len() - 4) as i32;
    out[0..4].copy_from_slice(&len.to_be_bytes());
    Ok(vec![Part::Memory(out.freeze())])
}

/// Writes a frame's parts in order: bytes with vectored writes, file ranges with
/// `sendfile` (counted in `sluice_kafka_fetch_sendfile_bytes_total`); over TLS a file range
/// (never asked for there) is read and written.
async fn write_parts(w: &mut Writer, parts: Vec<Part>) -> std::io::Result<()> {
    match w {
        Writer::Plain(w) => write_plain_parts(w, parts).await,
        Writer::Tls(w) => {
            let mut pending: std::collections::VecDeque<Bytes> = std::collections::VecDeque::new();
            for part in parts {
                match part {
                    Part::Memory(b) => pending.push_back(b),
                    Part::File(r) => {
                        let bytes = tokio::task::spawn_blocking(move || r.read())
                            .await
                            .map_err(std::io::Error::other)?
                            .map_err(std::io::Error::other)?;
                        pending.push_back(bytes);
                    }
                }
            }
            write_all_vectored(w, &mut pending).await?;
            // rustls takes the bytes into its buffer and may not have sent them all: without
            // a flush the end of an answer could wait for the next one.
            w.flush().await
        }
    }
}

async fn write_plain_parts(w: &mut OwnedWriteHalf, parts: Vec<Part>) -> std::io::Result<()> {
    let mut pending: std::collections::VecDeque<Bytes> = std::collections::VecDeque::new();
    for part in parts {
        match part {
            Part::Memory(b) => pending.push_back(b),
            Part::File(r) => {
                write_all_vectored(w, &mut pending).await?;
                send_file(w, &r).await?;
                metrics::counter!("sluice_kafka_fetch_sendfile_bytes_total")
                    .increment(r.len() as u64);
            }
        }
    }
    write_all_vectored(w, &mut pending).await
}

/// Writes `parts` whole, in order, with vectored writes.
async fn write_all_vectored<W: AsyncWrite + Unpin>(
    w: &mut W,
    parts: &mut std::collections::VecDeque<Bytes>,
) -> std::io::Result<()> {
    while !parts.is_empty() {
        let slices: Vec<std::io::IoSlice<'_>> = parts
            .iter()
            .take(64)
            .map(|b| std::io::IoSlice::new(b))
            .collect();
        let mut n = w.write_vectored(&slices).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        while n > 0 {
            let Some(first) = parts.front_mut() else {
                break;
            };
            if n >= first.len() {
                n -= first.len();
                parts.pop_front();
            } else {
                first.advance(n);
                n = 0;
            }
        }
    }
    Ok(())
}

/// Sends a segment file range to the socket with `sendfile`: the pages go from the page
/// cache to the socket without a copy through user space. Where the file system cannot
/// (`EINVAL`, `ENOSYS`), the rest is read (off the async threads) and written instead.
async fn send_file(w: &mut OwnedWriteHalf, r: &FileRange) -> std::io::Result<()> {
    let end = r.position() + r.len() as u64;
    let mut at = r.position();
    while at < end {
        let sock: &TcpStream = w.as_ref();
        sock.writable().await?;
        #[cfg(target_os = "linux")]
        let sent = sock.try_io(tokio::io::Interest::WRITABLE, || {
            let count = (end - at) as usize;
            rustix::fs::sendfile(sock, r.file(), Some(&mut at), count).map_err(std::io::Error::from)
        });
        #[cfg(not(target_os = "linux"))]
        let sent: std::io::Result<usize> = Err(std::io::ErrorKind::Unsupported.into());
        match sent {
            Ok(0) => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    format!("{r:?} ends at byte {at}: the file was cut while being sent"),
                ))
            }
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) if cannot_sendfile(&e) => {
                let (file, skip) = (r.clone(), (at - r.position()) as usize);
                let rest = tokio::task::spawn_blocking(move || file.read())
                    .await
                    .map_err(std::io::Error::other)?
                    .map_err(std::io::Error::other)?
                    .slice(skip..);
                return w.write_all(&rest).await;
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// `sendfile` is not possible for this file or socket (not an error of the connection).
fn cannot_sendfile(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::Unsupported
        || [rustix::io::Errno::INVAL, rustix::io::Errno::NOSYS]
            .iter()
            .any(|n| e.raw_os_error() == Some(n.raw_os_error()))
}

/// Runs a request. Produce appends happen here, in arrival order; the rest of the work
/// runs in a task that answers on `tx`.
async fn dispatch(
    ctx: &Ctx,
    d: Decoded,
    tx: oneshot::Sender<Answered>,
    fetches: &Arc<tokio::sync::Semaphore>,
    lane: &mpsc::UnboundedSender<GroupWork>,
    peer: SocketAddr,
) {
    let start = Instant::now();
    let name = api_name(d.api_key);
    let version = d.version;
    match d.body {
        RequestKind::Produce(req) => {
            let produced: usize = req
                .topic_data
                .iter()
                .flat_map(|t| t.partition_data.iter())
                .map(|p| p.records.as_ref().map_or(0, |r| r.len()))
                .sum();
            let appended = produce::append(ctx, req).await;
            // Handling time is the append's; the wait for acks is not counted.
            let usage = crate::quota::Usage {
                produced,
                handling: start.elapsed(),
                ..Default::default()
            };
            let client = client_id(&d.header);
            let ctx = ctx.clone();
            tokio::spawn(async move {
                let mut answer = produce::complete(&ctx, appended).await;
                let reply = match &mut answer {
                    Answer::Reply(r) => Some(&mut **r),
                    _ => None,
                };
                ctx.throttle(&client, usage, reply);
                observe(name, start);
                let _ = tx.send(Answered {
                    answer,
                    files: Vec::new(),
                    _held: None,
                });
            });
        }
        body => {
            // At most FETCHES_IN_FLIGHT_MAX fetch answers per connection wait to be written;
            // the reader waits here (reading no more) until the previous one was.
            let held = if matches!(body, RequestKind::Fetch(_)) {
                fetches.clone().acquire_owned().await.ok()
            } else {
                None
            };
            let ctx = ctx.clone();
            let client = client_id(&d.header);
            let in_lane = is_group_step(&body);
            // Not counted as handling time: group steps park until the group is ready, and
            // admin calls wait for the controllers.
            let parks = matches!(
                body,
                RequestKind::JoinGroup(_)
                    | RequestKind::SyncGroup(_)
                    | RequestKind::CreateTopics(_)
                    | RequestKind::DeleteTopics(_)
                    | RequestKind::CreatePartitions(_)
                    | RequestKind::AlterConfigs(_)
                    | RequestKind::IncrementalAlterConfigs(_)
                    | RequestKind::AlterUserScramCredentials(_)
                    | RequestKind::CreateAcls(_)
                    | RequestKind::DescribeAcls(_)
                    | RequestKind::DeleteAcls(_)
                    | RequestKind::DescribeClientQuotas(_)
                    | RequestKind::AlterClientQuotas(_)
                    | RequestKind::ElectLeaders(_)
            );
            let work = async move {
                // From here: not the time queued in the group lane or for a fetch slot.
                let began = Instant::now();
                let mut files = Vec::new();
                let mut waited = Duration::ZERO;
                let quota_client = client.clone();
                let mut answer: ResponseKind = match body {
                    RequestKind::ApiVersions(_) => versions::api_versions().into(),
                    RequestKind::Metadata(r) => metadata::metadata(&ctx, r, version).await.into(),
                    RequestKind::Fetch(r) => {
                        let (answer, ranges) = fetch::fetch(&ctx, r, version, &mut waited).await;
                        files = ranges;
                        answer.into()
                    }
                    RequestKind::ListOffsets(r) => {
                        offsets::list_offsets(&ctx, r, version).await.into()
                    }
                    RequestKind::OffsetForLeaderEpoch(r) => {
                        offsets::offset_for_leader_epoch(&ctx, r).await.into()
                    }
                    RequestKind::InitProducerId(r) => {
                        produce::init_producer_id(&ctx, r).await.into()
                    }
                    RequestKind::FindCoordinator(r) => {
                        groups::find_coordinator(&ctx, r, version).await.into()
                    }
                    RequestKind::JoinGroup(r) => {
                        // Kafka's client host: "/" and the address.
                        let host = format!("/{}", peer.ip());
                        groups::join_group(&ctx, r, version, client, host)
                            .await
                            .into()
                    }
                    RequestKind::SyncGroup(r) => groups::sync_group(&ctx, r).await.into(),
                    RequestKind::ConsumerGroupHeartbeat(r) => {
                        let host = format!("/{}", peer.ip());
                        groups::consumer_group_heartbeat(&ctx, r, client, host)
                            .await
                            .into()
                    }
                    RequestKind::ConsumerGroupDescribe(r) => {
                        groups::consumer_group_describe(&ctx, r).await.into()
                    }
                    RequestKind::Heartbeat(r) => groups::heartbeat(&ctx, r).await.into(),
                    RequestKind::LeaveGroup(r) => {
                        groups::leave_group(&ctx, r, version).await.into()
                    }
                    RequestKind::OffsetCommit(r) => groups::offset_commit(&ctx, r).await.into(),
                    RequestKind::OffsetFetch(r) => {
                        groups::offset_fetch(&ctx, r, version).await.into()
                    }
                    RequestKind::ListGroups(r) => groups::list_groups(&ctx, r).await.into(),
                    RequestKind::DescribeGroups(r) => groups::describe_groups(&ctx, r).await.into(),
                    RequestKind::DeleteGroups(r) => groups::delete_groups(&ctx, r).await.into(),
                    RequestKind::OffsetDelete(r) => groups::offset_delete(&ctx, r).await.into(),
                    RequestKind::CreateTopics(r) => {
                        admin::create_topics(&ctx, r, version).await.into()
                    }
                    RequestKind::DeleteTopics(r) => {
                        admin::delete_topics(&ctx, r, version).await.into()
                    }
                    RequestKind::CreatePartitions(r) => {
                        admin::create_partitions(&ctx, r).await.into()
                    }
                    RequestKind::DescribeConfigs(r) => {
                        admin::describe_configs(&ctx, r, version).await.into()
                    }
                    RequestKind::DescribeProducers(r) => {
                        offsets::describe_producers(&ctx, r).await.into()
                    }
                    RequestKind::AlterConfigs(r) => admin::alter_configs(&ctx, r).await.into(),
                    RequestKind::IncrementalAlterConfigs(r) => {
                        admin::incremental_alter_configs(&ctx, r).await.into()
                    }
                    RequestKind::AlterUserScramCredentials(r) => {
                        admin::alter_user_scram_credentials(&ctx, r).await.into()
                    }
                    RequestKind::DescribeUserScramCredentials(r) => {
                        admin::describe_user_scram_credentials(&ctx, r).await.into()
                    }
                    RequestKind::CreateAcls(r) => acls::create_acls(&ctx, r).await.into(),
                    RequestKind::DescribeAcls(r) => acls::describe_acls(&ctx, r).await.into(),
                    RequestKind::DeleteAcls(r) => acls::delete_acls(&ctx, r).await.into(),
                    RequestKind::ElectLeaders(r) => {
                        elections::elect_leaders(&ctx, r, version).await.into()
                    }
                    RequestKind::DescribeClientQuotas(r) => {
                        quotas::describe_client_quotas(&ctx, r).await.into()
                    }
                    RequestKind::AlterClientQuotas(r) => {
                        quotas::alter_client_quotas(&ctx, r).await.into()
                    }
                    RequestKind::DescribeCluster(r) => {
                        admin::describe_cluster(&ctx, r, version).await.into()
                    }
                    other => {
                        // `versions::supported` admits only the APIs above.
                        tracing::error!(%peer, client, request = ?other, "no handler for an advertised Kafka API");
                        return;
                    }
                };
                let fetched = match &answer {
                    ResponseKind::Fetch(f) => f
                        .responses
                        .iter()
                        .flat_map(|t| t.partitions.iter())
                        .map(|p| p.records.as_ref().map_or(0, |r| r.len()))
                        .sum(),
                    _ => 0,
                };
                let handling = if parks {
                    Duration::ZERO
                } else {
                    began.elapsed().saturating_sub(waited)
                };
                let usage = crate::quota::Usage {
                    fetched,
                    handling,
                    ..Default::default()
                };
                ctx.throttle(&quota_client, usage, Some(&mut answer));
                observe(name, start);
                let _ = tx.send(Answered {
                    answer: Answer::Reply(Box::new(answer)),
                    files,
                    _held: held,
                });
            };
            if in_lane {
                let _ = lane.send(Box::pin(work));
            } else {
                tokio::spawn(work);
            }
        }
    }
}

/// The request header's client id ("" when absent).
fn client_id(h: &RequestHeader) -> String {
    h.client_id
        .as_ref()
        .map(|c| c.as_str().to_string())
        .unwrap_or_default()
}

fn api_name(k: ApiKey) -> &'static str {
    match k {
        ApiKey::Produce => "kafka_produce",
        ApiKey::Fetch => "kafka_fetch",
        ApiKey::ListOffsets => "kafka_list_offsets",
        ApiKey::Metadata => "kafka_metadata",
        ApiKey::ApiVersions => "kafka_api_versions",
        ApiKey::InitProducerId => "kafka_init_producer_id",
        ApiKey::OffsetForLeaderEpoch => "kafka_offset_for_leader_epoch",
        ApiKey::FindCoordinator => "kafka_find_coordinator",
        ApiKey::JoinGroup => "kafka_join_group",
        ApiKey::SyncGroup => "kafka_sync_group",
        ApiKey::Heartbeat => "kafka_heartbeat",
        ApiKey::LeaveGroup => "kafka_leave_group",
        ApiKey::OffsetCommit => "kafka_offset_commit",
        ApiKey::OffsetFetch => "kafka_offset_fetch",
        ApiKey::ListGroups => "kafka_list_groups",
        ApiKey::DescribeGroups => "kafka_describe_groups",
        ApiKey::DeleteGroups => "kafka_delete_groups",
        ApiKey::OffsetDelete => "kafka_offset_delete",
        ApiKey::CreateTopics => "kafka_create_topics",
        ApiKey::ConsumerGroupHeartbeat => "kafka_consumer_group_heartbeat",
        ApiKey::ConsumerGroupDescribe => "kafka_consumer_group_describe",
        ApiKey::DeleteTopics => "kafka_delete_topics",
        ApiKey::CreatePartitions => "kafka_create_partitions",
        ApiKey::DescribeConfigs => "kafka_describe_configs",
        ApiKey::IncrementalAlterConfigs => "kafka_incremental_alter_configs",
        ApiKey::AlterConfigs => "kafka_alter_configs",
        ApiKey::DescribeProducers => "kafka_describe_producers",
        ApiKey::DescribeCluster => "kafka_describe_cluster",
        ApiKey::SaslHandshake => "kafka_sasl_handshake",
        ApiKey::AlterUserScramCredentials => "kafka_alter_user_scram_credentials",
        ApiKey::DescribeUserScramCredentials => "kafka_describe_user_scram_credentials",
        ApiKey::SaslAuthenticate => "kafka_sasl_authenticate",
        ApiKey::CreateAcls => "kafka_create_acls",
        ApiKey::DescribeAcls => "kafka_describe_acls",
        ApiKey::DeleteAcls => "kafka_delete_acls",
        ApiKey::ElectLeaders => "kafka_elect_leaders",
        ApiKey::DescribeClientQuotas => "kafka_describe_client_quotas",
        ApiKey::AlterClientQuotas => "kafka_alter_client_quotas",
        _ => "kafka_other",
    }
}

fn observe(request: &'static str, start: Instant) {
    metrics::histogram!("sluice_request_duration_seconds", "request" => request)
        .record(start.elapsed().as_secs_f64());
}

/// A Kafka string from a Rust one.
pub(crate) fn kstr(s: impl Into<String>) -> StrBytes {
    StrBytes::from_string(s.into())
}

/// The Kafka code and message of a gRPC status built by the data plane.
pub(crate) fn code_of(s: &tonic::Status) -> (i16, String) {
    let d = sluice_proto::status::error_detail(s);
    (
        sluice_proto::status::error_code(s) as i16,
        d.map_or_else(|| s.message().to_string(), |d| d.message),
    )
}

#[cfg(test)]
mod tests;
