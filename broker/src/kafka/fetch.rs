//! Fetch for consumers: every requested partition read up to its high watermark, the whole
//! request long-polling until `min_bytes` arrived or `max_wait_ms` passed. Record batches
//! are the stored bytes; cached big ones stay in their segment file, answered as file ranges
//! the connection's writer sends with `sendfile` ([`super::frame`]). Fetch sessions (KIP-227, v7+): which partitions a request covers
//! and which an answer carries is decided by [`super::fetch_session`].

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::{FetchRequest, FetchResponse, TopicName};
use sluice_metadata::acl::Operation;
use sluice_proto::v1 as pb;
use sluice_storage::{FileRange, Records};

use super::fetch_session::{Key, Plan, Sent, Want};
use super::frame::placeholder;
use super::{code_of, Ctx};
use crate::limits::{FETCH_BYTES_MAX, FETCH_WAIT_MS_MAX};

/// Kafka's INVALID_REQUEST.
const INVALID_REQUEST: i16 = 42;
/// Kafka's UNKNOWN_SERVER_ERROR.
const UNKNOWN_SERVER_ERROR: i16 = -1;
/// Kafka's NOT_LEADER_OR_FOLLOWER.
const NOT_LEADER_OR_FOLLOWER: i16 = 6;

/// One partition as asked: (index, fetch offset, partition max bytes, current leader epoch).
type Wanted = (i32, i64, i32, i32);

/// The answer, and the segment file ranges its placeholders stand for (in response order;
/// see [`super::frame`]).
pub(super) async fn fetch(
    ctx: &Ctx,
    req: FetchRequest,
    version: i16,
    waited: &mut Duration,
) -> (FetchResponse, Vec<FileRange>) {
    let asked: Vec<(Key, Want)> = req
        .topics
        .iter()
        .flat_map(|t| {
            t.partitions.iter().map(|p| {
                (
                    (t.topic.0.as_str().to_string(), p.partition),
                    Want {
                        fetch_offset: p.fetch_offset,
                        max_bytes: p.partition_max_bytes,
                        leader_epoch: p.current_leader_epoch,
                    },
                )
            })
        })
        .collect();
    let forgotten: Vec<Key> = req
        .forgotten_topics_data
        .iter()
        .flat_map(|f| {
            f.partitions
                .iter()
                .map(|p| (f.topic.0.as_str().to_string(), *p))
        })
        .collect();
    let (session_id, epoch) = if version >= 7 {
        (req.session_id, req.session_epoch)
    } else {
        (0, -1)
    };
    let plan = ctx
        .fetch_sessions
        .lock()
        .expect("fetch sessions lock")
        .plan(session_id, epoch, asked, forgotten, Instant::now());
    let (session_id, incremental, parts) = match plan {
        Plan::Full { session_id, parts } => (session_id, false, parts),
        Plan::Incremental { session_id, parts } => (session_id, true, parts),
        Plan::Error { code, message } => {
            tracing::debug!(code, %message, "fetch session refused");
            let refused = FetchResponse::default()
                .with_error_code(code)
                .with_session_id(0);
            return (refused, Vec::new());
        }
    };
    // By topic, in the order asked (a session's in name order).
    let mut wanted: Vec<(TopicName, Vec<Wanted>)> = Vec::new();
    for ((topic, p), w) in parts {
        let entry = (p, w.fetch_offset, w.max_bytes, w.leader_epoch);
        match wanted.last_mut() {
            Some((t, list)) if t.0.as_str() == topic => list.push(entry),
            _ => wanted.push((TopicName(super::kstr(topic)), vec![entry])),
        }
    }
    let follower = req.replica_id.0 >= 0;
    let deadline =
        Instant::now() + Duration::from_millis(req.max_wait_ms.clamp(0, FETCH_WAIT_MS_MAX) as u64);
    let min_bytes = req.min_bytes.max(0) as usize;
    let max_bytes = if req.max_bytes <= 0 {
        FETCH_BYTES_MAX
    } else {
        (req.max_bytes as usize).min(FETCH_BYTES_MAX)
    };
    let access = ctx.access();
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
        let mut files: HashMap<(String, i32), FileRange> = HashMap::new();
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
                if let Err(s) = access.topic(Operation::Read, t.0.as_str()) {
                    errors = true;
                    partitions.push(
                        out.with_error_code(code_of(&s).0)
                            .with_high_watermark(-1)
                            .with_records(Some(Bytes::new())),
                    );
                    continue;
                }
                let room = max_bytes.saturating_sub(total);
                let r = if room == 0 {
                    Ok(None)
                } else {
                    ctx.data
                        .fetch_records(
                            &pb::FetchRequest {
                                topic: t.0.as_str().to_string(),
                                partition: p,
                                fetch_offset,
                                current_leader_epoch: (leader_epoch >= 0).then_some(leader_epoch),
                                max_bytes: (partition_max.max(1) as usize).min(room) as i32,
                                max_wait_ms: 0,
                                format: pb::RecordFormat::Batches as i32,
                                ..Default::default()
                            },
                            ctx.file_ranges,
                        )
                        .await
                        .map(Some)
                        .map_err(|s| code_of(&s))
                };
                let r = match r {
                    Ok(Some((f, records))) => in_response(records, &mut files, t.0.as_str(), p)
                        .await
                        .map(|records| Some((f, records))),
                    other => other.map(|_| None),
                };
                partitions.push(match r {
                    Ok(Some((f, records))) => {
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
            let responses = if session_id == 0 {
                responses
            } else {
                session_answer(ctx, session_id, incremental, responses)
            };
            // The ranges of the partitions answered, in the order they are encoded.
            let ranges = responses
                .iter()
                .flat_map(|t| {
                    t.partitions
                        .iter()
                        .map(move |p| (t.topic.0.as_str().to_string(), p.partition_index))
                })
                .filter_map(|key| files.remove(&key))
                .collect();
            let answer = FetchResponse::default()
                .with_session_id(session_id)
                .with_responses(responses);
            return (answer, ranges);
        }
        // Nothing yet: wait for any partition to change (new data, HW, leadership).
        let changed =
            futures::future::select_all(watches.iter_mut().map(|w| Box::pin(w.changed())));
        let parked = Instant::now();
        let _ = tokio::time::timeout(left, changed).await;
        *waited += parked.elapsed();
    }
}

/// A partition's records as they go into the response: bytes as they are; a file range as
/// its placeholder, the range kept in `files` for the frame (one longer than any
/// placeholder is read into memory, off the async threads).
async fn in_response(
    records: Records,
    files: &mut HashMap<(String, i32), FileRange>,
    topic: &str,
    partition: i32,
) -> Result<Bytes, (i16, String)> {
    match records {
        Records::Memory(b) => Ok(b),
        Records::File(r) => match placeholder(r.len()) {
            Some(stand_in) => {
                files.insert((topic.to_string(), partition), r);
                Ok(stand_in)
            }
            None => {
                let read = tokio::task::spawn_blocking(move || r.read())
                    .await
                    .map_err(|e| (UNKNOWN_SERVER_ERROR, format!("reading a fetch range: {e}")))?;
                read.map_err(|e| {
                    let status = crate::error::BrokerError::from(e).into_status(None);
                    code_of(&status)
                })
            }
        },
    }
}

/// A session's answer: every partition remembered as sent; an incremental answer keeps only
/// the partitions that changed since the session's last answer (and the topics left).
fn session_answer(
    ctx: &Ctx,
    session_id: i32,
    incremental: bool,
    responses: Vec<FetchableTopicResponse>,
) -> Vec<FetchableTopicResponse> {
    let mut cache = ctx.fetch_sessions.lock().expect("fetch sessions lock");
    responses
        .into_iter()
        .filter_map(|mut t| {
            let name = t.topic.0.as_str().to_string();
            t.partitions.retain(|p| {
                let key = (name.clone(), p.partition_index);
                let sent = Sent {
                    high_watermark: p.high_watermark,
                    log_start_offset: p.log_start_offset,
                };
                let records = p.records.as_ref().is_some_and(|r| !r.is_empty());
                let keep = !incremental
                    || cache.changed(session_id, &key, sent, records, p.error_code != 0);
                if keep {
                    cache.sent(session_id, &key, sent);
                }
                keep
            });
            (!incremental || !t.partitions.is_empty()).then_some(t)
        })
        .collect()
}
