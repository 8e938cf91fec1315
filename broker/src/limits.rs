//! Every size and count the broker bounds, in one place, each with why it has its value.
//! Relations between them are checked at compile time.

use sluice_storage::limits::RECORD_BATCH_BYTES_MAX;

// --- Requests -------------------------------------------------------------------------

/// Largest gRPC message in either direction (shared with every client).
pub use sluice_proto::transport::MESSAGE_BYTES_MAX;
/// Most records in one plain-records produce (an encoded record_batch has no such limit
/// beyond its size): keeps a request from building a huge batch on the broker.
pub const RECORDS_PER_REQUEST_MAX: usize = 65_536;
/// Default `max_bytes` of a fetch (Kafka's `fetch.max.bytes` per partition default).
pub const FETCH_BYTES_DEFAULT: usize = 1 << 20;
/// Upper bound on a fetch's `max_bytes`: half a message, so any answer fits.
pub const FETCH_BYTES_MAX: usize = 32 << 20;
/// Longest long poll of a fetch (Kafka's `fetch.max.wait.ms` is far below this).
pub const FETCH_WAIT_MS_MAX: i32 = 30_000;
/// Produce requests of one ProduceStream appended and still waiting for replication: the
/// stream stops reading more while this many are outstanding (bounded admission).
pub const PRODUCE_STREAM_IN_FLIGHT_MAX: usize = 64;

// --- The listener (bounded admission; config keys in the docs) -------------------------

/// Default `max.connections`: open connections the listener serves; further clients wait
/// in the kernel's accept queue until one closes (Kafka blocks its acceptor the same way).
/// Kafka's default is unbounded; each connection costs buffers and tasks, so we bound it.
pub const CONNECTIONS_MAX_DEFAULT: usize = 10_000;
/// Default `queued.max.request.bytes`: produce payload bytes received and not yet
/// appended, over all connections. A request waits for room before it is appended, which
/// stops its stream from reading more (HTTP/2 flow control pushes back to the client).
/// Kafka's default is unbounded; 256 MiB is four max-size messages.
pub const REQUEST_BYTES_IN_FLIGHT_DEFAULT: usize = 256 << 20;
/// Default `max.concurrent.streams`: HTTP/2 streams (requests) one connection may have
/// open at once; a client opening more queues them on its side.
pub const STREAMS_PER_CONNECTION_DEFAULT: u32 = 1024;

// --- Partitions ------------------------------------------------------------------------

/// Commands waiting for one partition's I/O thread before callers wait (back-pressure).
pub const PARTITION_COMMANDS_QUEUED_MAX: usize = 256;

// --- Consumer groups -------------------------------------------------------------------

/// Longest group id (Kafka has none; 255 keeps keys of `__consumer_offsets` small).
pub const GROUP_ID_BYTES_MAX: usize = 255;
/// Most members in one group (Kafka's `group.consumer.max.size` default is unlimited; a
/// bound keeps one group from exhausting the coordinator).
pub const GROUP_MEMBERS_MAX: usize = 1000;
/// Longest commit metadata string (Kafka's `offset.metadata.max.bytes`).
pub const COMMIT_METADATA_BYTES_MAX: usize = 4096;
/// Requests queued for one coordinator shard before callers wait to enqueue.
pub const SHARD_COMMANDS_QUEUED_MAX: usize = 1024;
/// Requests held while a shard loads; more get COORDINATOR_LOAD_IN_PROGRESS.
pub const DEFERRED_DURING_LOAD_MAX: usize = 4096;

// A fetch answers at least one whole batch even above its max_bytes (KIP-74), so its
// answer can reach a max-size batch plus max_bytes of others; a produce, one batch.
const _: () = assert!(MESSAGE_BYTES_MAX > RECORD_BATCH_BYTES_MAX + FETCH_BYTES_MAX);
const _: () = assert!(REQUEST_BYTES_IN_FLIGHT_DEFAULT >= MESSAGE_BYTES_MAX);
const _: () = assert!(FETCH_BYTES_DEFAULT <= FETCH_BYTES_MAX);
