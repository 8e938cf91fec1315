//! The Kafka-protocol consume phase of `sluice bench consume`: one connection per partition
//! to its leader's port, speaking Fetch v12 (what librdkafka 2.x and the Java client send
//! for topics by name) with one fetch in flight, as a Kafka consumer does. The records are
//! counted from the batch headers, never decoded, so the figure is the broker's Kafka fetch
//! path and the loopback, not a client library's record parsing.

use anyhow::Context;
use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::{
    ApiKey, FetchRequest, FetchResponse, RequestHeader, ResponseHeader, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Fetch version sent: v12 names topics (v13+ need topic ids) and is flexible.
const FETCH_VERSION: i16 = 12;

/// Reads `[from, to)` of `topic`-`partition` from the Kafka listener at `addr`; returns
/// (records, record-batch bytes). `partition_max_bytes` is the per-partition fetch size.
pub(super) async fn fetch_range(
    addr: &str,
    topic: &str,
    partition: i32,
    (from, to): (i64, i64),
    partition_max_bytes: i32,
    pb: &indicatif::ProgressBar,
) -> anyhow::Result<(u64, u64)> {
    let mut sock = tokio::net::TcpStream::connect(addr)
        .await
        .with_context(|| format!("connecting to {addr}"))?;
    sock.set_nodelay(true)?;
    let (mut at, mut records, mut bytes) = (from, 0u64, 0u64);
    let mut correlation_id = 0;
    while at < to {
        correlation_id += 1;
        let request = FetchRequest::default()
            .with_replica_id((-1).into())
            .with_max_wait_ms(100)
            .with_min_bytes(1)
            .with_max_bytes(64 << 20)
            .with_session_epoch(-1)
            .with_topics(vec![FetchTopic::default()
                .with_topic(TopicName(StrBytes::from_string(topic.to_string())))
                .with_partitions(vec![FetchPartition::default()
                    .with_partition(partition)
                    .with_fetch_offset(at)
                    .with_partition_max_bytes(partition_max_bytes)])]);
        let header = RequestHeader::default()
            .with_request_api_key(ApiKey::Fetch as i16)
            .with_request_api_version(FETCH_VERSION)
            .with_correlation_id(correlation_id)
            .with_client_id(Some(StrBytes::from_static_str("sluice-bench")));
        let mut frame = BytesMut::new();
        frame.put_i32(0);
        header.encode(
            &mut frame,
            ApiKey::Fetch.request_header_version(FETCH_VERSION),
        )?;
        request.encode(&mut frame, FETCH_VERSION)?;
        let len = (frame.len() - 4) as i32;
        frame[..4].copy_from_slice(&len.to_be_bytes());
        sock.write_all(&frame).await?;

        let len = sock.read_i32().await?;
        anyhow::ensure!(
            (0..=256 << 20).contains(&len),
            "the broker at {addr} answered a frame of {len} bytes: is it a Kafka listener?"
        );
        let mut body = BytesMut::zeroed(len as usize);
        sock.read_exact(&mut body).await?;
        let mut body: Bytes = body.freeze();
        let h = ResponseHeader::decode(
            &mut body,
            ApiKey::Fetch.response_header_version(FETCH_VERSION),
        )?;
        anyhow::ensure!(h.correlation_id == correlation_id, "responses out of order");
        let r = FetchResponse::decode(&mut body, FETCH_VERSION)?;
        anyhow::ensure!(r.error_code == 0, "fetch failed: error {}", r.error_code);
        let p = r
            .responses
            .first()
            .and_then(|t| t.partitions.first())
            .context("a fetch response without the partition")?;
        anyhow::ensure!(
            p.error_code == 0,
            "fetch of {topic}-{partition} failed: error {}",
            p.error_code
        );
        let data = p.records.clone().unwrap_or_default();
        for h in sluice_storage::batch::headers(&data) {
            if h.next_offset() > at {
                records += h.records_count as u64;
                at = h.next_offset();
            }
        }
        bytes += data.len() as u64;
        pb.inc(data.len() as u64);
    }
    Ok((records, bytes))
}
