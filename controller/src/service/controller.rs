//! `sluice.v1.Controller`: what brokers ask of the active controller (registration,
//! heartbeats, ISR changes, controlled shutdown, producer ids), and `WatchMetadata`, which
//! any controller serves from its own applied log.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::Stream;
use openraft::EntryPayload;
use sluice_metadata::records::RECORD_FORMAT_VERSION;
use sluice_metadata::{BrokerId, Endpoint, TopicId};
use sluice_proto::status::error_status;
use sluice_proto::v1::controller_server::Controller;
use sluice_proto::v1::*;
use tokio::sync::mpsc;
use tonic::{Request, Response, Status};

use crate::logic::{self, AlterPartition};
use crate::node::ControllerNode;

/// Size of one producer-id block (Kafka hands out 1000 at a time).
pub const PRODUCER_ID_BLOCK_LEN: i64 = 1000;

/// Entries sent per WatchMetadata message.
const WATCH_ENTRIES_PER_EVENT_MAX: usize = 500;

/// Events buffered per WatchMetadata stream before the sender waits.
const WATCH_CHANNEL_CAPACITY: usize = 16;

/// Broker-facing controller RPCs.
#[derive(Clone)]
pub struct ControllerService {
    node: Arc<ControllerNode>,
}

impl ControllerService {
    /// The service over `node`.
    pub fn new(node: Arc<ControllerNode>) -> Self {
        ControllerService { node }
    }

    /// Brokers talk to the active controller directly; others answer NOT_CONTROLLER with
    /// the leader's address.
    fn require_active(&self) -> Result<(), Status> {
        match self.node.route()? {
            None => Ok(()),
            Some(_) => Err(self.node.not_controller(self.node.leader())),
        }
    }
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<MetadataEvent, Status>> + Send>>;

/// Whether node RPCs are checked against the caller's certificate: this controller requires
/// checks client certificates (`ssl.client.auth=requested` or `required`).
pub(crate) fn identity_enforced(node: &ControllerNode) -> bool {
    node.config
        .tls
        .as_ref()
        .is_some_and(sluice_proto::tls::TlsSettings::checks_client_certificates)
}

/// A broker RPC must come from the broker it names (its certificate's `broker-N`): a
/// process cannot register, heartbeat, change an ISR or take producer ids as another broker.
fn require_broker<T>(node: &ControllerNode, r: &Request<T>, broker_id: i32) -> Result<(), Status> {
    let certs = r.peer_certs();
    sluice_proto::tls::require_broker_peer(
        node.config.tls.as_ref(),
        certs.as_deref().map(|c| c.as_slice()),
        broker_id,
    )
}

#[tonic::async_trait]
impl Controller for ControllerService {
    async fn register_broker(
        &self,
        r: Request<RegisterBrokerRequest>,
    ) -> Result<Response<RegisterBrokerResponse>, Status> {
        self.require_active()?;
        require_broker(&self.node, &r, r.get_ref().broker_id)?;
        let req = r.into_inner();
        if !req.cluster_id.is_empty() && req.cluster_id != self.node.config.cluster_id {
            return Err(error_status(
                ErrorCode::InconsistentClusterId,
                format!(
                    "broker belongs to cluster {:?}, this is {:?}",
                    req.cluster_id, self.node.config.cluster_id
                ),
                None,
            ));
        }
        let port = u16::try_from(req.port).map_err(|_| {
            error_status(
                ErrorCode::InvalidRequest,
                format!("port {} is invalid", req.port),
                None,
            )
        })?;
        let endpoint = Endpoint {
            host: req.host.clone(),
            port,
        };
        let kafka_endpoint =
            match (&req.kafka_host, req.kafka_port) {
                (None, None) => None,
                (Some(host), Some(p)) if !host.is_empty() => Some(Endpoint {
                    host: host.clone(),
                    port: u16::try_from(p).ok().filter(|p| *p > 0).ok_or_else(|| {
                        error_status(
                            ErrorCode::InvalidRequest,
                            format!("kafka_port {p} is invalid"),
                            None,
                        )
                    })?,
                }),
                _ => return Err(error_status(
                    ErrorCode::InvalidRequest,
                    "kafka_host and kafka_port come together (a KAFKA:// listener) or not at all",
                    None,
                )),
            };
        let alive = self
            .node
            .session_alive_elsewhere(BrokerId(req.broker_id), &req.directory_id);
        let (offset, existing) = self
            .node
            .decide(|img| {
                let mut records = logic::register_broker(
                    img,
                    BrokerId(req.broker_id),
                    &req.incarnation_id,
                    endpoint,
                    req.rack.clone(),
                    alive,
                )?;
                if let (false, Some(kafka)) = (records.is_empty(), kafka_endpoint.clone()) {
                    records.push(sluice_metadata::MetadataRecord::BrokerKafkaEndpoint {
                        id: BrokerId(req.broker_id),
                        endpoint: kafka,
                    });
                }
                // A retry of the same incarnation: its current registration.
                let existing = records
                    .is_empty()
                    .then(|| img.brokers.get(&BrokerId(req.broker_id)).map(|b| b.epoch))
                    .flatten();
                Ok((records, existing))
            })
            .await?;
        let offset = existing.map_or(offset, |e| e as u64);
        self.node
            .start_session(BrokerId(req.broker_id), &req.directory_id);
        tracing::info!(broker = req.broker_id, epoch = offset, "broker registered");
        Ok(Response::new(RegisterBrokerResponse {
            broker_epoch: offset as i64,
        }))
    }

    async fn broker_heartbeat(
        &self,
        r: Request<BrokerHeartbeatRequest>,
    ) -> Result<Response<BrokerHeartbeatResponse>, Status> {
        self.require_active()?;
        require_broker(&self.node, &r, r.get_ref().broker_id)?;
        let req = r.into_inner();
        let image = self.node.image();
        logic::check_broker_epoch(&image, BrokerId(req.broker_id), req.broker_epoch)
            .map_err(|e| error_status(e.code, e.message, None))?;
        self.node.touch_session(
            BrokerId(req.broker_id),
            req.current_metadata_offset,
            &req.directory_id,
        );
        if !req.high_watermarks.is_empty() {
            let now = std::time::Instant::now();
            let mut hws = self
                .node
                .high_watermarks
                .lock()
                .expect("high watermarks lock");
            for h in &req.high_watermarks {
                let key = (h.topic_id.clone(), h.partition);
                // The highest ever reported: a new leader's first HW may still lag the old
                // leader's (which is what a forced election must be measured against).
                if hws
                    .get(&key)
                    .is_some_and(|(hw, _, _, _)| *hw > h.high_watermark)
                {
                    continue;
                }
                hws.insert(
                    key,
                    (
                        h.high_watermark,
                        h.leader_epoch,
                        BrokerId(req.broker_id),
                        now,
                    ),
                );
            }
        }
        let caught_up = req
            .current_metadata_offset
            .is_some_and(|o| o as i64 >= req.broker_epoch);
        let broker = BrokerId(req.broker_id);
        let (_, (fenced, shut_down)) = self
            .node
            .decide(|img| {
                let Some(b) = img.brokers.get(&broker) else {
                    return Ok((Vec::new(), (true, false)));
                };
                if req.want_shut_down {
                    return Ok((logic::fence_broker(img, broker), (true, true)));
                }
                if req.want_fence && !b.fenced {
                    return Ok((logic::fence_broker(img, broker), (true, false)));
                }
                if b.fenced && caught_up && !req.want_fence {
                    return Ok((logic::unfence_broker(img, broker), (false, false)));
                }
                Ok((Vec::new(), (b.fenced, false)))
            })
            .await?;
        if shut_down {
            // A broker that finished its controlled shutdown leaves no live session: its next
            // incarnation may register at once.
            self.node.end_session(broker);
        }
        Ok(Response::new(BrokerHeartbeatResponse {
            is_caught_up: caught_up,
            is_fenced: fenced,
            should_shut_down: shut_down,
        }))
    }

    async fn alter_partition(
        &self,
        r: Request<AlterPartitionRequest>,
    ) -> Result<Response<AlterPartitionResponse>, Status> {
        self.require_active()?;
        require_broker(&self.node, &r, r.get_ref().broker_id)?;
        let req = r.into_inner();
        let (_, state) = self
            .node
            .decide(|img| {
                logic::check_broker_epoch(img, BrokerId(req.broker_id), req.broker_epoch)?;
                let topic_id = if req.topic_id.is_empty() {
                    img.topic(&req.topic).map(|t| t.id)
                } else {
                    TopicId::parse(&req.topic_id)
                };
                let Some(topic_id) = topic_id else {
                    return Err(logic::Refusal {
                        code: ErrorCode::UnknownTopicOrPartition,
                        message: format!("unknown topic {:?} / id {:?}", req.topic, req.topic_id),
                    });
                };
                let (records, state) = logic::alter_partition(
                    img,
                    &AlterPartition {
                        broker: BrokerId(req.broker_id),
                        topic_id,
                        index: req.partition,
                        leader_epoch: req.leader_epoch,
                        partition_epoch: req.partition_epoch,
                        new_isr: BrokerId::from_wire(&req.new_isr),
                    },
                )?;
                Ok((records, (topic_id, state)))
            })
            .await?;
        let (topic_id, state) = state;
        Ok(Response::new(AlterPartitionResponse {
            topic_id: topic_id.to_string(),
            partition: req.partition,
            leader_id: state.leader.0,
            leader_epoch: state.leader_epoch.get(),
            partition_epoch: state.partition_epoch.get(),
            isr: BrokerId::to_wire(&state.isr),
        }))
    }

    async fn alter_partitions(
        &self,
        r: Request<AlterPartitionsRequest>,
    ) -> Result<Response<AlterPartitionsResponse>, Status> {
        self.require_active()?;
        require_broker(&self.node, &r, r.get_ref().broker_id)?;
        let req = r.into_inner();
        if req.partitions.len() > logic::ALTER_PARTITIONS_MAX {
            return Err(error_status(
                ErrorCode::InvalidRequest,
                format!(
                    "{} partitions in one AlterPartitions; at most {}",
                    req.partitions.len(),
                    logic::ALTER_PARTITIONS_MAX
                ),
                None,
            ));
        }
        let broker = BrokerId(req.broker_id);
        let (_, results) = self
            .node
            .decide(|img| {
                logic::check_broker_epoch(img, broker, req.broker_epoch)?;
                // Ids that do not parse are refused alone; the rest are decided together.
                let parsed: Vec<Result<AlterPartition, logic::Refusal>> = req
                    .partitions
                    .iter()
                    .map(|p| {
                        let topic_id = if p.topic_id.is_empty() {
                            img.topic(&p.topic).map(|t| t.id)
                        } else {
                            TopicId::parse(&p.topic_id)
                        };
                        topic_id
                            .map(|topic_id| AlterPartition {
                                broker,
                                topic_id,
                                index: p.partition,
                                leader_epoch: p.leader_epoch,
                                partition_epoch: p.partition_epoch,
                                new_isr: BrokerId::from_wire(&p.new_isr),
                            })
                            .ok_or_else(|| logic::Refusal {
                                code: ErrorCode::UnknownTopicOrPartition,
                                message: format!(
                                    "unknown topic {:?} / id {:?}",
                                    p.topic, p.topic_id
                                ),
                            })
                    })
                    .collect();
                let valid: Vec<AlterPartition> = parsed
                    .iter()
                    .filter_map(|p| p.as_ref().ok().cloned())
                    .collect();
                let (records, mut decided) = logic::alter_partitions(img, &valid);
                decided.reverse();
                let results: Vec<_> = parsed
                    .into_iter()
                    .map(|p| match p {
                        Ok(a) => decided
                            .pop()
                            .expect("one decision per valid proposal")
                            .map(|state| (a.topic_id, a.index, state)),
                        Err(e) => Err(e),
                    })
                    .collect();
                Ok((records, results))
            })
            .await?;
        Ok(Response::new(AlterPartitionsResponse {
            results: results
                .into_iter()
                .map(|r| match r {
                    Ok((topic_id, index, state)) => AlterPartitionResult {
                        error_code: ErrorCode::None as i32,
                        error_message: String::new(),
                        state: Some(AlterPartitionResponse {
                            topic_id: topic_id.to_string(),
                            partition: index,
                            leader_id: state.leader.0,
                            leader_epoch: state.leader_epoch.get(),
                            partition_epoch: state.partition_epoch.get(),
                            isr: BrokerId::to_wire(&state.isr),
                        }),
                    },
                    Err(e) => AlterPartitionResult {
                        error_code: e.code as i32,
                        error_message: e.message,
                        state: None,
                    },
                })
                .collect(),
        }))
    }

    async fn controlled_shutdown(
        &self,
        r: Request<ControlledShutdownRequest>,
    ) -> Result<Response<ControlledShutdownResponse>, Status> {
        self.require_active()?;
        require_broker(&self.node, &r, r.get_ref().broker_id)?;
        let req = r.into_inner();
        let broker = BrokerId(req.broker_id);
        self.node
            .decide(|img| {
                logic::check_broker_epoch(img, broker, req.broker_epoch)?;
                Ok((logic::fence_broker(img, broker), ()))
            })
            .await?;
        let image = self.node.image();
        let remaining = image
            .topics
            .values()
            .flat_map(|t| {
                t.partitions
                    .iter()
                    .enumerate()
                    .filter(|(_, p)| p.leader == broker)
                    .map(|(i, _)| TopicPartition {
                        topic: t.name.clone(),
                        partition: i as i32,
                    })
            })
            .collect();
        Ok(Response::new(ControlledShutdownResponse {
            remaining_partitions: remaining,
        }))
    }

    async fn allocate_producer_ids(
        &self,
        r: Request<AllocateProducerIdsRequest>,
    ) -> Result<Response<AllocateProducerIdsResponse>, Status> {
        self.require_active()?;
        require_broker(&self.node, &r, r.get_ref().broker_id)?;
        let req = r.into_inner();
        let granted = !req.principal.is_empty();
        let len = if granted { 1 } else { PRODUCER_ID_BLOCK_LEN };
        let (_, first) = self
            .node
            .decide(|img| {
                logic::check_broker_epoch(img, BrokerId(req.broker_id), req.broker_epoch)?;
                let mut records = vec![logic::allocate_producer_ids(
                    img,
                    BrokerId(req.broker_id),
                    len,
                )];
                if granted {
                    records.push(sluice_metadata::MetadataRecord::ProducerIdGranted {
                        id: img.next_producer_id,
                        principal: req.principal.clone(),
                    });
                }
                Ok((records, img.next_producer_id))
            })
            .await?;
        Ok(Response::new(AllocateProducerIdsResponse {
            producer_id_start: first,
            producer_id_len: len as i32,
        }))
    }

    type WatchMetadataStream = WatchStream;

    async fn watch_metadata(
        &self,
        r: Request<WatchMetadataRequest>,
    ) -> Result<Response<Self::WatchMetadataStream>, Status> {
        if let Some(id) = r.get_ref().broker_id {
            require_broker(&self.node, &r, id)?;
        }
        let req = r.into_inner();
        if !req.cluster_id.is_empty() && req.cluster_id != self.node.config.cluster_id {
            return Err(error_status(
                ErrorCode::InconsistentClusterId,
                format!(
                    "the watcher belongs to cluster {:?}, this is {:?}",
                    req.cluster_id, self.node.config.cluster_id
                ),
                None,
            ));
        }
        let (tx, rx) = mpsc::channel(WATCH_CHANNEL_CAPACITY);
        let node = self.node.clone();
        // The task ends when the client goes away (send fails) or the node stops.
        tokio::spawn(async move {
            if let Err(e) =
                stream_metadata(node, req.from_offset, req.snapshot_first, tx.clone()).await
            {
                let _ = tx.send(Err(e)).await;
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }
}

/// Sends committed metadata from `next` on: records when the log still has them, else the
/// image first. Idle streams get a heartbeat every second carrying the committed offset.
async fn stream_metadata(
    node: Arc<ControllerNode>,
    mut next: u64,
    snapshot_first: bool,
    tx: mpsc::Sender<Result<MetadataEvent, Status>>,
) -> Result<(), Status> {
    let mut applied_rx = node.applied.clone();
    let mut snapshot_first = snapshot_first;
    // The entry the next Records event continues from, with its term, so the watcher can
    // check that this log continues the history it applied (issue 15).
    let mut prev: Option<(u64, u64)> = None;
    loop {
        let image = applied_rx.borrow_and_update().image.clone();
        let applied = image.offset;
        if next <= applied {
            let entries = if snapshot_first {
                None
            } else {
                node.log
                    .entries_from(next, WATCH_ENTRIES_PER_EVENT_MAX)
                    .map_err(|e| Status::internal(e.to_string()))?
            };
            let prev_entry = match prev {
                Some(p) => Some(p),
                None if next == 0 => Some((0, 0)),
                None => {
                    let term = if image.offset == next - 1 {
                        Some(image.term)
                    } else {
                        node.log
                            .term_at(next - 1)
                            .map_err(|e| Status::internal(e.to_string()))?
                    };
                    term.map(|t| (next - 1, t))
                }
            };
            let event = match (entries, prev_entry) {
                // Entries we can tie to the watcher's position: records. Otherwise (purged,
                // a hole after a snapshot install, an unknown predecessor): the image.
                (Some(entries), Some((prev_offset, prev_term)))
                    if entries.first().is_some_and(|e| e.log_id.index == next) =>
                {
                    let mut out = Vec::new();
                    for e in entries
                        .into_iter()
                        .take_while(|e| e.log_id.index <= applied)
                    {
                        if e.log_id.index != next {
                            // A hole (the log restarts after an installed snapshot): the next
                            // round sends the image.
                            break;
                        }
                        next = e.log_id.index + 1;
                        prev = Some((e.log_id.index, e.log_id.leader_id.term));
                        if let EntryPayload::Normal(batch) = e.payload {
                            out.push(MetadataRecordEntry {
                                offset: e.log_id.index,
                                record: batch.encode().into(),
                                format_version: RECORD_FORMAT_VERSION,
                                term: e.log_id.leader_id.term,
                            });
                        }
                    }
                    MetadataEvent {
                        committed_offset: applied,
                        event: Some(metadata_event::Event::Records(MetadataRecords {
                            entries: out,
                            prev_offset,
                            prev_term,
                        })),
                        cluster_id: node.config.cluster_id.clone(),
                        history_id: image.history_id,
                        committed_term: image.term,
                    }
                }
                _ => {
                    snapshot_first = false;
                    next = image.offset + 1;
                    prev = Some((image.offset, image.term));
                    MetadataEvent {
                        committed_offset: applied,
                        event: Some(metadata_event::Event::Snapshot(MetadataSnapshot {
                            offset: image.offset,
                            format_version: RECORD_FORMAT_VERSION,
                            image: image.encode().into(),
                            term: image.term,
                        })),
                        cluster_id: node.config.cluster_id.clone(),
                        history_id: image.history_id,
                        committed_term: image.term,
                    }
                }
            };
            if tx.send(Ok(event)).await.is_err() {
                return Ok(());
            }
            continue;
        }
        tokio::select! {
            changed = applied_rx.changed() => {
                if changed.is_err() {
                    return Err(Status::unavailable("controller shutting down"));
                }
            }
            _ = tokio::time::sleep(Duration::from_secs(1)) => {
                let beat = MetadataEvent {
                    committed_offset: applied,
                    event: Some(metadata_event::Event::Heartbeat(MetadataHeartbeat {})),
                    cluster_id: node.config.cluster_id.clone(),
                    history_id: image.history_id,
                    committed_term: image.term,
                };
                if tx.send(Ok(beat)).await.is_err() {
                    return Ok(());
                }
            }
        }
    }
}
