//! How every internal channel (broker → controller, broker → broker, controller →
//! controller) is dialled: a connect timeout, HTTP/2 keepalive pings that notice a frozen
//! (SIGSTOPed, hung) peer whose kernel still holds the TCP connection open, and TCP
//! keepalive for peers that vanished. Per-request deadlines are set by each caller
//! (`tonic::Request::set_timeout` or `tokio::time::timeout`), since a long poll and a
//! heartbeat need different ones.

use std::time::Duration;

use tonic::transport::{Channel, Endpoint};

/// Connect timeout of internal channels.
/// Largest gRPC message any Sluice service or client sends or accepts (Kafka's
/// `socket.request.max.bytes` default, 100 MiB): room for a max-size record batch (64 MiB)
/// plus a max-size fetch beside it, and the framing.
pub const MESSAGE_BYTES_MAX: usize = 100 << 20;
pub const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);
/// Interval of HTTP/2 PING frames on internal channels.
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
/// A PING unanswered this long closes the connection and fails its requests. Generous: a
/// peer busy on two cores can be slow to answer, and killing a busy connection costs every
/// request on it (seen: 3 s killed replication under a produce benchmark). Fast detection
/// of a frozen peer comes from per-request deadlines; this catches long-lived streams and
/// connections to peers that are gone.
pub const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);
/// TCP keepalive of internal channels.
pub const TCP_KEEPALIVE: Duration = Duration::from_secs(10);

const _: () = assert!(KEEPALIVE_TIMEOUT.as_millis() >= KEEPALIVE_INTERVAL.as_millis());

/// HTTP/2 flow-control window per stream on data-path connections (client and server):
/// a 4 MiB fetch answer flows without waiting for WINDOW_UPDATEs. With h2's default
/// 64 KiB a sender stalls for a round trip every 32 KiB.
pub const STREAM_WINDOW_BYTES: u32 = 8 << 20;
/// HTTP/2 window per connection: several streams' windows.
pub const CONNECTION_WINDOW_BYTES: u32 = 32 << 20;
/// Largest HTTP/2 DATA frame a peer may send us (SETTINGS_MAX_FRAME_SIZE): 1 MiB frames
/// instead of 16 KiB cut the per-frame work of a 4 MiB answer 64-fold.
pub const FRAME_BYTES_MAX: u32 = 1 << 20;

/// A lazily connecting channel to `host:port` with the internal keepalives.
pub fn internal_channel(addr: &str) -> Result<Channel, String> {
    Ok(internal_endpoint(addr)?.connect_lazy())
}

/// [`internal_endpoint`] with the data path's HTTP/2 windows and frame size, for channels
/// that carry record batches (clients, replica fetchers).
pub fn data_endpoint(addr: &str) -> Result<Endpoint, String> {
    Ok(internal_endpoint(addr)?
        .initial_stream_window_size(STREAM_WINDOW_BYTES)
        .initial_connection_window_size(CONNECTION_WINDOW_BYTES)
        .max_frame_size(FRAME_BYTES_MAX))
}

/// An endpoint for `host:port`, over TLS when this process dials with TLS
/// ([`crate::tls::set_internal_client_tls`]), with no other settings.
pub fn base_endpoint(addr: &str) -> Result<Endpoint, String> {
    let tls = crate::tls::internal_client_tls();
    let scheme = if tls.is_some() { "https" } else { "http" };
    let e = Endpoint::from_shared(format!("{scheme}://{addr}"))
        .map_err(|e| format!("{addr:?} is not a host:port address: {e}"))?;
    match tls {
        Some(t) => e
            .tls_config(t.clone())
            .map_err(|e| format!("TLS settings for {addr}: {e}")),
        None => Ok(e),
    }
}

/// The endpoint behind [`internal_channel`].
pub fn internal_endpoint(addr: &str) -> Result<Endpoint, String> {
    Ok(base_endpoint(addr)?
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_nodelay(true)
        .tcp_keepalive(Some(TCP_KEEPALIVE))
        .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
        .keep_alive_timeout(KEEPALIVE_TIMEOUT)
        .keep_alive_while_idle(true))
}
