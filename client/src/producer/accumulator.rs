//! One partition's record accumulator, pure: records go into an open batch until it is
//! full (`batch.size`) or has lingered (`linger.ms`), then wait sealed, in order, for the
//! partition's sender. No I/O and no clock of its own (the caller passes `now`), so the
//! rules are table-tested here and benchmarked in `benches/accumulator.rs`. The clock is
//! read only when a batch opens, not per record.
//!
//! Every record of a batch shares one [`BatchOutcome`] (Kafka's `ProduceRequestResult`):
//! appending a record allocates nothing but the bytes the batch grows by, and completing a
//! batch of a thousand records is one store and one wake per waiting task, not a thousand
//! channel sends.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::Bytes;
use sluice_proto::v1::ErrorCode;
use sluice_record::{Compression, RecordBatchBuilder};

use super::RecordMetadata;
use crate::{ClientError, Result};

/// Bytes one record is charged beyond its key, value and headers (varints and attributes,
/// rounded up as Kafka's `estimateSizeInBytesUpperBound` does).
pub const RECORD_OVERHEAD_BYTES: usize = 25;

/// Bytes each header is charged beyond its key and value.
const HEADER_OVERHEAD_BYTES: usize = 10;

/// The bytes a record is charged against `batch.size` and `buffer.memory`.
pub fn record_size(
    key: Option<&[u8]>,
    value: Option<&[u8]>,
    headers: &[(String, Option<Bytes>)],
) -> usize {
    let headers: usize = headers
        .iter()
        .map(|(k, v)| k.len() + v.as_ref().map_or(0, |v| v.len()) + HEADER_OVERHEAD_BYTES)
        .sum();
    key.map_or(0, <[u8]>::len) + value.map_or(0, <[u8]>::len) + headers + RECORD_OVERHEAD_BYTES
}

/// How a batch ended, as every one of its records sees it: `(partition, base offset)` or
/// the error.
type Outcome = Result<(i32, i64)>;

/// The completion shared by every record of one batch.
#[derive(Default)]
pub struct BatchOutcome {
    result: OnceLock<Outcome>,
    /// Tasks waiting for `result` (usually one: whoever awaits the batch's records).
    wakers: Mutex<Vec<Waker>>,
}

impl BatchOutcome {
    /// Sets the outcome (the first one wins) and wakes every waiting record.
    fn complete(&self, outcome: Outcome) {
        if self.result.set(outcome).is_err() {
            return;
        }
        let wakers = std::mem::take(&mut *self.wakers.lock().expect("wakers lock"));
        for w in wakers {
            w.wake();
        }
    }
}

/// Completes its batch when dropped unfinished, so no record waits forever on a producer
/// that went away.
struct Completer(Arc<BatchOutcome>);

impl Drop for Completer {
    fn drop(&mut self) {
        self.0.complete(Err(ClientError {
            code: ErrorCode::UnknownServerError,
            message: "UNKNOWN_SERVER_ERROR: the producer was dropped".into(),
        }));
    }
}

/// Resolves when the record is acknowledged (or failed).
pub struct DeliveryFuture {
    outcome: Arc<BatchOutcome>,
    /// The record's place in its batch.
    index: u32,
    timestamp: i64,
    /// Where this future's waker sits in `outcome.wakers`, once registered.
    slot: Option<usize>,
}

impl DeliveryFuture {
    fn ready(&self, outcome: &Outcome) -> Result<RecordMetadata> {
        match outcome {
            Ok((partition, base)) => Ok(RecordMetadata {
                partition: *partition,
                offset: if *base < 0 {
                    -1
                } else {
                    base + self.index as i64
                },
                timestamp: self.timestamp,
            }),
            Err(e) => Err(e.clone()),
        }
    }
}

impl Future for DeliveryFuture {
    type Output = Result<RecordMetadata>;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if let Some(o) = self.outcome.result.get() {
            return Poll::Ready(self.ready(o));
        }
        let outcome = self.outcome.clone();
        let mut wakers = outcome.wakers.lock().expect("wakers lock");
        // Checked again under the lock: `complete` sets the result before taking wakers.
        if let Some(o) = outcome.result.get() {
            drop(wakers);
            return Poll::Ready(self.ready(o));
        }
        match self.slot {
            Some(i) if wakers[i].will_wake(cx.waker()) => {}
            Some(i) => wakers[i] = cx.waker().clone(),
            None => {
                self.slot = Some(wakers.len());
                wakers.push(cx.waker().clone());
            }
        }
        Poll::Pending
    }
}

/// Records accumulated for one partition, not yet sent.
pub struct OpenBatch {
    builder: RecordBatchBuilder,
    completer: Completer,
    records: u32,
    bytes: usize,
    created: Instant,
}

/// A closed batch on its way to the broker: its records (encoded once the sender gives it
/// a sequence) and the completion its records wait on.
pub struct Batch {
    builder: Option<RecordBatchBuilder>,
    /// The encoded batch, once built (kept for retries).
    pub bytes: Option<Bytes>,
    completer: Completer,
    /// Records in the batch.
    pub records: i32,
    /// Bytes charged against `buffer.memory`, released on completion.
    pub permits: usize,
    /// When its first record was appended (`delivery.timeout.ms` counts from here).
    pub created: Instant,
    /// First sequence number (-1 without idempotence or before it is built).
    pub base_sequence: i32,
    /// Times the broker answered OUT_OF_ORDER_SEQUENCE_NUMBER for it.
    pub out_of_order: u32,
}

impl Batch {
    /// Encodes the records, with the producer fields when `producer` is given.
    pub fn build(&mut self, compression: Compression, producer: Option<(i64, i16, i32)>) {
        let Some(builder) = self.builder.take() else {
            return;
        };
        let builder = builder.compression(compression);
        self.bytes = Some(match producer {
            Some((id, epoch, sequence)) => {
                self.base_sequence = sequence;
                builder.producer(id, epoch, sequence).build()
            }
            None => builder.build(),
        });
    }

    /// Completes every record: the broker stored them at `base_offset..` (or -1 with acks=0).
    pub fn succeed(self, partition: i32, base_offset: i64) {
        self.completer.0.complete(Ok((partition, base_offset)));
    }

    /// Fails every record with `e`.
    pub fn fail(self, e: ClientError) {
        self.completer.0.complete(Err(e));
    }
}

/// One record as the accumulator takes it.
pub struct Append<'a> {
    /// Create time (ms).
    pub timestamp: i64,
    /// Key.
    pub key: Option<&'a [u8]>,
    /// Value.
    pub value: Option<&'a [u8]>,
    /// Headers.
    pub headers: &'a [(String, Option<Bytes>)],
    /// Bytes charged ([`record_size`]).
    pub size: usize,
}

/// What one `append` did.
pub struct Appended {
    /// Resolves with the record's offset.
    pub delivery: DeliveryFuture,
    /// Whether a batch was sealed (the sender has something to send now).
    pub sealed: bool,
}

/// What the sender may do next.
pub enum Ready {
    /// Send this batch.
    Batch(Batch),
    /// The open batch becomes sendable at this instant (`linger.ms`).
    LingerUntil(Instant),
    /// Nothing is waiting.
    Empty,
}

/// One partition's open and sealed batches.
pub struct PartitionAccumulator {
    batch_size: usize,
    linger: Duration,
    open: Option<OpenBatch>,
    sealed: VecDeque<Batch>,
}

impl PartitionAccumulator {
    /// An empty accumulator with Kafka's `batch.size` and `linger.ms`.
    pub fn new(batch_size: usize, linger: Duration) -> Self {
        PartitionAccumulator {
            batch_size: batch_size.max(1),
            linger,
            open: None,
            sealed: VecDeque::new(),
        }
    }

    /// Appends a record to the open batch, sealing that batch first if the record would
    /// overflow it, and after if the record filled it. A record larger than `batch.size`
    /// gets a batch of its own.
    pub fn append(&mut self, r: Append<'_>, now: impl FnOnce() -> Instant) -> Appended {
        let mut sealed = false;
        if self
            .open
            .as_ref()
            .is_some_and(|b| b.bytes + r.size > self.batch_size && b.records > 0)
        {
            self.seal();
            sealed = true;
        }
        let batch_size = self.batch_size;
        let open = self.open.get_or_insert_with(|| OpenBatch {
            builder: RecordBatchBuilder::with_capacity(batch_size.min(1 << 20)),
            completer: Completer(Arc::new(BatchOutcome::default())),
            records: 0,
            bytes: 0,
            created: now(),
        });
        if r.headers.is_empty() {
            open.builder.append(r.timestamp, r.key, r.value, &[]);
        } else {
            let headers: Vec<(&[u8], Option<&[u8]>)> = r
                .headers
                .iter()
                .map(|(k, v)| (k.as_bytes(), v.as_deref()))
                .collect();
            open.builder.append(r.timestamp, r.key, r.value, &headers);
        }
        let delivery = DeliveryFuture {
            outcome: open.completer.0.clone(),
            index: open.records,
            timestamp: r.timestamp,
            slot: None,
        };
        open.records += 1;
        open.bytes += r.size;
        if open.bytes >= self.batch_size {
            self.seal();
            sealed = true;
        }
        Appended { delivery, sealed }
    }

    fn seal(&mut self) {
        if let Some(b) = self.open.take() {
            self.sealed.push_back(Batch {
                builder: Some(b.builder),
                bytes: None,
                completer: b.completer,
                records: b.records as i32,
                permits: b.bytes,
                created: b.created,
                base_sequence: -1,
                out_of_order: 0,
            });
        }
    }

    /// The next batch to send: the oldest sealed one, else the open one once it has
    /// lingered (or at once when `force`, as `flush` and `close` ask).
    pub fn ready(&mut self, now: Instant, force: bool) -> Ready {
        if self.sealed.is_empty() {
            match &self.open {
                None => return Ready::Empty,
                Some(open) => {
                    let due = open.created + self.linger;
                    if !force && now < due {
                        return Ready::LingerUntil(due);
                    }
                    self.seal();
                }
            }
        }
        match self.sealed.pop_front() {
            Some(b) => Ready::Batch(b),
            None => Ready::Empty,
        }
    }

    /// Whether no record is waiting here.
    pub fn is_empty(&self) -> bool {
        self.open.is_none() && self.sealed.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::FutureExt;

    fn rec(value: &[u8]) -> Append<'_> {
        Append {
            timestamp: 1_000,
            key: None,
            value: Some(value),
            headers: &[],
            size: record_size(None, Some(value), &[]),
        }
    }

    fn drain(acc: &mut PartitionAccumulator, now: Instant, force: bool) -> Vec<Batch> {
        let mut out = Vec::new();
        while let Ready::Batch(b) = acc.ready(now, force) {
            out.push(b);
        }
        out
    }

    #[test]
    fn batches_split_where_the_next_record_would_overflow_batch_size() {
        // (batch.size, value bytes, records appended) → records per sealed batch, and
        // whether the last append sealed one.
        let cases: &[(usize, usize, usize, &[i32])] = &[
            // 1049 bytes charged per record: 15 fit in 16 KiB, the 16th opens a new batch.
            (16 * 1024, 1024, 31, &[15, 15]),
            // A record larger than the batch gets a batch of its own.
            (100, 1024, 3, &[1, 1, 1]),
            // Exactly full: sealed by the record that filled it.
            (2 * 1049, 1024, 4, &[2, 2]),
        ];
        let t0 = Instant::now();
        for &(batch_size, value, n, want) in cases {
            let mut acc = PartitionAccumulator::new(batch_size, Duration::from_secs(60));
            let v = vec![7u8; value];
            for _ in 0..n {
                acc.append(rec(&v), || t0);
            }
            let sealed: Vec<i32> = std::iter::from_fn(|| acc.sealed.pop_front())
                .map(|b| b.records)
                .collect();
            assert_eq!(sealed, want, "batch.size={batch_size} value={value} n={n}");
        }
    }

    #[test]
    fn the_open_batch_is_sent_after_linger_or_when_forced() {
        let t0 = Instant::now();
        let linger = Duration::from_millis(5);
        let mut acc = PartitionAccumulator::new(1 << 20, linger);
        assert!(matches!(acc.ready(t0, false), Ready::Empty));
        acc.append(rec(b"a"), || t0);
        match acc.ready(t0 + Duration::from_millis(1), false) {
            Ready::LingerUntil(t) => assert_eq!(t, t0 + linger),
            _ => panic!("a fresh batch must linger"),
        }
        assert_eq!(drain(&mut acc, t0 + linger, false).len(), 1);
        acc.append(rec(b"b"), || t0);
        assert_eq!(drain(&mut acc, t0, true).len(), 1, "flush sends at once");
        assert!(acc.is_empty());
    }

    #[test]
    fn sealed_batches_come_out_in_order_before_the_open_one() {
        let t0 = Instant::now();
        let mut acc = PartitionAccumulator::new(2 * 1049, Duration::ZERO);
        let v = vec![0u8; 1024];
        let mut sealed = 0;
        for _ in 0..5 {
            sealed += usize::from(acc.append(rec(&v), || t0).sealed);
        }
        assert_eq!(sealed, 2);
        let records: Vec<i32> = drain(&mut acc, t0, false)
            .iter()
            .map(|b| b.records)
            .collect();
        assert_eq!(records, [2, 2, 1]);
    }

    #[test]
    fn every_record_of_a_batch_learns_its_own_offset_and_timestamp() {
        let t0 = Instant::now();
        let mut acc = PartitionAccumulator::new(1 << 20, Duration::ZERO);
        let futures: Vec<DeliveryFuture> = (0..3)
            .map(|i| {
                let mut r = rec(b"x");
                r.timestamp = 100 + i;
                acc.append(r, || t0).delivery
            })
            .collect();
        let Ready::Batch(mut b) = acc.ready(t0, false) else {
            panic!("linger 0 sends at once");
        };
        b.build(Compression::None, Some((7, 0, 42)));
        assert_eq!(b.base_sequence, 42);
        let batch = sluice_record::RecordBatch::from_bytes(
            b.bytes.clone().expect("built"),
            sluice_record::Validation::Full,
        )
        .expect("a valid batch");
        assert_eq!(batch.header().producer_id, 7);
        assert_eq!(batch.header().records_count, 3);
        b.succeed(4, 500);
        for (i, f) in futures.into_iter().enumerate() {
            let m = f.now_or_never().expect("completed").expect("success");
            assert_eq!(
                (m.partition, m.offset, m.timestamp),
                (4, 500 + i as i64, 100 + i as i64)
            );
        }
    }

    #[test]
    fn a_failed_or_dropped_batch_fails_its_records() {
        let t0 = Instant::now();
        let mut acc = PartitionAccumulator::new(1 << 20, Duration::ZERO);
        let f = acc.append(rec(b"x"), || t0).delivery;
        let Ready::Batch(b) = acc.ready(t0, false) else {
            panic!("sendable");
        };
        b.fail(ClientError::from_code(
            ErrorCode::MessageTooLarge as i32,
            "too big",
        ));
        let e = f.now_or_never().expect("completed").unwrap_err();
        assert_eq!(e.code, ErrorCode::MessageTooLarge);

        let f = acc.append(rec(b"y"), || t0).delivery;
        drop(acc);
        let e = f.now_or_never().expect("completed").unwrap_err();
        assert!(e.message.contains("dropped"), "{}", e.message);
    }

    #[tokio::test]
    async fn a_waiting_record_is_woken_when_its_batch_completes() {
        let t0 = Instant::now();
        let mut acc = PartitionAccumulator::new(1 << 20, Duration::ZERO);
        let f = acc.append(rec(b"x"), || t0).delivery;
        let Ready::Batch(b) = acc.ready(t0, false) else {
            panic!("sendable");
        };
        let waiter = tokio::spawn(f);
        tokio::task::yield_now().await;
        b.succeed(0, 9);
        let m = tokio::time::timeout(Duration::from_secs(10), waiter)
            .await
            .expect("woken")
            .expect("joined")
            .expect("success");
        assert_eq!(m.offset, 9);
    }
}
