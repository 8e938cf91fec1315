//! Fetch for consumers: every requested partition read up to its high watermark, the whole
//! request long-polling until `min_bytes` arrived or `max_wait_ms` passed. Record batches
//! are the stored bytes. No fetch sessions yet (KIP-227 allows answering session id 0:
//! clients then send full fetches).

use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::{FetchRequest, FetchResponse, TopicName};
use sluice_proto::v1 as pb;

use super::{code_of, Ctx};
use crate::limits::{FETCH_BYTES_MAX, FETCH_WAIT_MS_MAX};

/// Kafka's INVALID_REQUEST.
const INVALID_REQUEST: i16 = 42;
/// Kafka's NOT_LEADER_OR_FOLLOWER.
const NOT_LEADER_OR_FOLLOWER: i16 = 6;

/// One partition as asked: (index, fetch offset, partition max bytes, current leader epoch).
type Wanted = (i32, i64, i32, i32);

pub(super) async fn fetch(ctx: &Ctx, req: FetchRequest, _version: i16) -> FetchResponse {
    let wanted: Vec<(TopicName, Vec<Wanted>)> = req
        .topics
        .iter()
        .map(|t| {
            (
                t.topic.clone(),
                t.partitions
                    .iter()
                    .map(|p| {
                        (
                            p.partition,
                            p.fetch_offset,
                            p.partition_max_bytes,
                            p.current_leader_epoch,
                        )
                    })
                    .collect(),
            )
        })
        .collect();
    let follower = req.replica_id.0 >= 0;
    let deadline =
        Instant::now() + Duration::from_millis(req.max_wait_ms.clamp(0, FETCH_WAIT_MS_MAX) as u64);
    let min_bytes = req.min_bytes.max(0) as usize;
    let max_bytes = if req.max_bytes <= 0 {
        FETCH_BYTES_MAX
    } else {
        (req.max_bytes as usize).min(FETCH_BYTES_MAX)
    };
    loop {
        // Watches taken before reading: a change after the read wakes the wait below.
        let mut watches = Vec::new();
        for (t, parts) in &wanted {
            for (p, ..) in parts {
                if let Some(h) = ctx.node.partition(t.0.as_str(), *p) {
                    watches.push(h.subscribe());
                }
            }
        }
        for w in &mut watches {
            w.borrow_and_update();
        }
        let mut total = 0usize;
        let mut errors = false;
        let mut responses = Vec::with_capacity(wanted.len());
        for (t, parts) in &wanted {
            let mut partitions = Vec::with_capacity(parts.len());
            for &(p, fetch_offset, partition_max, leader_epoch) in parts {
                let out = PartitionData::default().with_partition_index(p);
                if follower {
                    errors = true;
                    partitions.push(out.with_error_code(INVALID_REQUEST));
                    continue;
                }
                let room = max_bytes.saturating_sub(total);
                let r = if room == 0 {
                    Ok(None)
                } else {
                    ctx.data
                        .fetch_one(&pb::FetchRequest {
                            topic: t.0.as_str().to_string(),
                            partition: p,
                            fetch_offset,
                            current_leader_epoch: (leader_epoch >= 0).then_some(leader_epoch),
                            max_bytes: (partition_max.max(1) as usize).min(room) as i32,
                            max_wait_ms: 0,
                            format: pb::RecordFormat::Batches as i32,
                            ..Default::default()
                        })
                        .await
                        .map(Some)
                        .map_err(|s| code_of(&s))
                };
                partitions.push(match r {
                    Ok(Some(f)) => {
                        let records: Bytes = f.record_batches;
                        total += records.len();
                        out.with_high_watermark(f.high_watermark)
                            .with_last_stable_offset(f.high_watermark)
                            .with_log_start_offset(f.log_start_offset)
                            .with_records(Some(records))
                    }
                    // No room left in this answer: no records, but the partition's real
                    // offsets (clients compute lag from them), as Kafka answers.
                    Ok(None) => match ctx.node.partition(t.0.as_str(), p).map(|h| h.offsets()) {
                        Some(o) if o.is_leader => out
                            .with_high_watermark(o.high_watermark)
                            .with_last_stable_offset(o.high_watermark)
                            .with_log_start_offset(o.log_start_offset)
                            .with_records(Some(Bytes::new())),
                        _ => {
                            errors = true;
                            out.with_error_code(NOT_LEADER_OR_FOLLOWER)
                                .with_high_watermark(-1)
                                .with_records(Some(Bytes::new()))
                        }
                    },
                    Err((code, _)) => {
                        errors = true;
                        out.with_error_code(code)
                            .with_high_watermark(-1)
                            .with_records(Some(Bytes::new()))
                    }
                });
            }
            responses.push(
                FetchableTopicResponse::default()
                    .with_topic(t.clone())
                    .with_partitions(partitions),
            );
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if total >= min_bytes || errors || left.is_zero() || watches.is_empty() {
            return FetchResponse::default().with_responses(responses);
        }
        // Nothing yet: wait for any partition to change (new data, HW, leadership).
        let changed =
            futures::future::select_all(watches.iter_mut().map(|w| Box::pin(w.changed())));
        let _ = tokio::time::timeout(left, changed).await;
    }
}
