//! `sluice.v1.Broker` (produce, fetch, offsets, metadata) and an `Admin` relay to the
//! controllers, plus the server that hosts them with health and reflection.

pub use crate::limits::{MESSAGE_BYTES_MAX, PRODUCE_STREAM_IN_FLIGHT_MAX};
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{Stream, StreamExt};
use sluice_metadata::NO_LEADER;
use sluice_proto::status::error_status;
use sluice_proto::v1::admin_client::AdminClient;
use sluice_proto::v1::admin_server::{Admin, AdminServer};
use sluice_proto::v1::broker_server::{Broker, BrokerServer};
use sluice_proto::v1::*;
use tokio::sync::mpsc;
use tonic::{Request, Response, Status, Streaming};

use crate::data::DataPlane;
use crate::group::GroupCoordinator;
use crate::node::BrokerNode;

/// The Broker service.
#[derive(Clone)]
pub struct BrokerService {
    node: Arc<BrokerNode>,
    data: DataPlane,
    groups: Option<Arc<GroupCoordinator>>,
}

impl BrokerService {
    /// The service over `node`.
    pub fn new(node: Arc<BrokerNode>) -> Self {
        BrokerService {
            data: DataPlane::new(node.clone()),
            node,
            groups: None,
        }
    }

    /// The service with its consumer group coordinator.
    pub fn with_groups(node: Arc<BrokerNode>, groups: Arc<GroupCoordinator>) -> Self {
        BrokerService {
            data: DataPlane::new(node.clone()),
            node,
            groups: Some(groups),
        }
    }

    fn groups(&self) -> Result<&Arc<GroupCoordinator>, Status> {
        self.groups
            .as_ref()
            .ok_or_else(|| not_yet("the group coordinator"))
    }
}

/// Records a request's latency and outcome (`sluice_request_duration_seconds`,
/// `sluice_requests_total`, Kafka's RequestMetrics).
fn observe<T>(request: &'static str, start: Instant, r: &Result<T, Status>) {
    metrics::histogram!("sluice_request_duration_seconds", "request" => request)
        .record(start.elapsed().as_secs_f64());
    let error = match r {
        Ok(_) => "NONE",
        Err(s) => sluice_proto::status::error_code(s).as_str_name(),
    };
    metrics::counter!("sluice_requests_total", "request" => request, "error" => error).increment(1);
}

/// Counts a `FetchStream` task while it lives (`sluice_fetch_streams_open`): streams whose
/// client left must not linger.
struct OpenFetchStream;

impl OpenFetchStream {
    fn new() -> Self {
        metrics::gauge!("sluice_fetch_streams_open").increment(1.0);
        OpenFetchStream
    }
}

impl Drop for OpenFetchStream {
    fn drop(&mut self) {
        metrics::gauge!("sluice_fetch_streams_open").decrement(1.0);
    }
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

type ProduceStreamOut = Pin<Box<dyn Stream<Item = Result<ProduceResponse, Status>> + Send>>;
type FetchStreamOut = Pin<Box<dyn Stream<Item = Result<FetchResponse, Status>> + Send>>;

trait IntoParts {
    fn into_parts(self) -> (i32, String);
}

impl IntoParts for (i32, String, Option<LeaderHint>) {
    fn into_parts(self) -> (i32, String) {
        (self.0, self.1)
    }
}

fn in_band_error(s: &Status) -> (i32, String, Option<LeaderHint>) {
    let d = sluice_proto::status::error_detail(s);
    (
        sluice_proto::status::error_code(s) as i32,
        d.as_ref()
            .map_or_else(|| s.message().to_string(), |d| d.message.clone()),
        d.and_then(|d| d.leader),
    )
}

fn not_yet(what: &str) -> Status {
    error_status(
        ErrorCode::UnsupportedVersion,
        format!("{what} is not yet available in this build"),
        None,
    )
}

#[tonic::async_trait]
impl Broker for BrokerService {
    async fn produce(
        &self,
        r: Request<ProduceRequest>,
    ) -> Result<Response<ProduceResponse>, Status> {
        let t = Instant::now();
        let r = self.data.produce_one(r.into_inner()).await;
        observe("produce", t, &r);
        Ok(Response::new(r?))
    }

    type ProduceStreamStream = ProduceStreamOut;

    async fn produce_stream(
        &self,
        r: Request<Streaming<ProduceRequest>>,
    ) -> Result<Response<Self::ProduceStreamStream>, Status> {
        let mut inbound = r.into_inner();
        let (tx, rx) = mpsc::channel(PRODUCE_STREAM_IN_FLIGHT_MAX);
        let svc = self.clone();
        // Appends run one at a time in arrival order (a producer's batches keep their
        // sequence); replication waits overlap, up to PRODUCE_STREAM_IN_FLIGHT_MAX, and are
        // answered in request order. Ends when the client closes its side or goes away.
        tokio::spawn(async move {
            let mut waiting: futures::stream::FuturesOrdered<
                tokio::task::JoinHandle<ProduceResponse>,
            > = futures::stream::FuturesOrdered::new();
            let mut inbound_open = true;
            loop {
                if !inbound_open && waiting.is_empty() {
                    return;
                }
                tokio::select! {
                    biased;
                    () = tx.closed() => return,
                    Some(joined) = waiting.next(), if !waiting.is_empty() => {
                        let resp: Result<ProduceResponse, Status> = joined
                            .map_err(|e: tokio::task::JoinError| Status::internal(format!("produce task failed: {e}")));
                        if tx.send(resp).await.is_err() {
                            return;
                        }
                    }
                    msg = inbound.message(), if inbound_open && waiting.len() < PRODUCE_STREAM_IN_FLIGHT_MAX => {
                        let Ok(Some(req)) = msg else {
                            inbound_open = false;
                            continue;
                        };
                        let (id, topic, partition) =
                            (req.correlation_id, req.topic.clone(), req.partition);
                        let svc = svc.clone();
                        let t = Instant::now();
                        let appended = svc.data.produce_append(req).await;
                        // Each wait runs as its own task: a future parked in `waiting` while
                        // this loop awaits the next append must not hold anything the append
                        // needs (a tokio mutex permit handed to an unpolled waiter deadlocked
                        // the partition: every fetch and the ISR loop stalled behind it).
                        waiting.push_back(tokio::spawn(async move {
                            let r = match appended {
                                Ok(a) => svc.data.produce_complete(a).await,
                                Err(s) => Err(s),
                            };
                            observe("produce", t, &r);
                            r.unwrap_or_else(|s| {
                                let (code, msg, leader) = in_band_error(&s);
                                ProduceResponse {
                                    correlation_id: id,
                                    error_code: code,
                                    error_message: msg,
                                    topic,
                                    partition,
                                    base_offset: -1,
                                    last_offset: -1,
                                    log_append_time_ms: -1,
                                    log_start_offset: -1,
                                    current_leader: leader,
                                }
                            })
                        }));
                    }
                    else => return,
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn fetch(&self, r: Request<FetchRequest>) -> Result<Response<FetchResponse>, Status> {
        let t = Instant::now();
        let req = r.into_inner();
        let r = self.data.fetch_one(&req).await;
        let kind = if req.replica_id.is_some() {
            "fetch_follower"
        } else {
            "fetch_consumer"
        };
        observe(kind, t, &r);
        if let Ok(resp) = &r {
            if req.replica_id.is_none() && !resp.record_batches.is_empty() {
                metrics::counter!("sluice_bytes_out_total", "topic" => req.topic.clone())
                    .increment(resp.record_batches.len() as u64);
            }
        }
        Ok(Response::new(r?))
    }

    type FetchStreamStream = FetchStreamOut;

    async fn fetch_stream(
        &self,
        r: Request<FetchRequest>,
    ) -> Result<Response<Self::FetchStreamStream>, Status> {
        let mut req = r.into_inner();
        if req.replica_id.is_some_and(|r| r >= 0) {
            return Err(error_status(
                ErrorCode::InvalidRequest,
                "followers must use unary Fetch",
                None,
            ));
        }
        if req.max_wait_ms == 0 {
            req.max_wait_ms = 500;
        }
        let (tx, rx) = mpsc::channel(4);
        let svc = self.clone();
        // Ends when the client goes away or a fetch fails (reported in-band).
        tokio::spawn(async move {
            let _open = OpenFetchStream::new();
            loop {
                // A client that went away ends the long poll at once (review defect 6):
                // the stream's task must not keep polling, nor keep a deleted log open.
                let r = tokio::select! {
                    biased;
                    () = tx.closed() => return,
                    r = svc.data.fetch_one(&req) => r,
                };
                match r {
                    Ok(resp) => {
                        let next = resp.next_fetch_offset;
                        let empty = resp.record_batches.is_empty() && resp.records.is_empty();
                        if !empty && tx.send(Ok(resp)).await.is_err() {
                            return;
                        }
                        req.fetch_offset = next;
                    }
                    Err(s) => {
                        let (code, msg, leader) = in_band_error(&s);
                        let _ = tx
                            .send(Ok(FetchResponse {
                                error_code: code,
                                error_message: msg,
                                current_leader: leader,
                                topic: req.topic.clone(),
                                partition: req.partition,
                                ..Default::default()
                            }))
                            .await;
                        return;
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn list_offsets(
        &self,
        r: Request<ListOffsetsRequest>,
    ) -> Result<Response<ListOffsetsResponse>, Status> {
        let req = r.into_inner();
        if req.partitions.len() > 10_000 {
            return Err(error_status(
                ErrorCode::InvalidRequest,
                "too many partitions in one request",
                None,
            ));
        }
        let mut results = Vec::new();
        for p in req.partitions {
            let mut out = ListOffsetsResult {
                topic: p.topic.clone(),
                partition: p.partition,
                timestamp: -1,
                offset: -1,
                leader_epoch: -1,
                ..Default::default()
            };
            let r: Result<(), Status> = async {
                let part = self.data.lookup(&p.topic, p.partition).await?;
                let (epoch, offset, timestamp) = part
                    .list_offset(p.timestamp)
                    .await
                    .map_err(|e| self.data.status(e, &p.topic, p.partition))?;
                out.leader_epoch = epoch;
                out.offset = offset;
                out.timestamp = timestamp;
                Ok(())
            }
            .await;
            if let Err(s) = r {
                let (code, msg, leader) = in_band_error(&s);
                out.error_code = code;
                out.error_message = msg;
                out.current_leader = leader;
            }
            results.push(out);
        }
        Ok(Response::new(ListOffsetsResponse { results }))
    }

    async fn metadata(
        &self,
        r: Request<MetadataRequest>,
    ) -> Result<Response<MetadataResponse>, Status> {
        let req = r.into_inner();
        let image = self.node.image();
        let brokers = image
            .brokers
            .values()
            .filter(|b| !b.fenced)
            .map(|b| BrokerEndpoint {
                broker_id: b.id,
                host: b.endpoint.host.clone(),
                port: b.endpoint.port as i32,
                rack: b.rack.clone(),
            })
            .collect();
        let describe = |t: &sluice_metadata::TopicImage| TopicMetadata {
            error_code: 0,
            error_message: String::new(),
            name: t.name.clone(),
            topic_id: t.id.to_string(),
            is_internal: t.name.starts_with("__"),
            partitions: t
                .partitions
                .iter()
                .enumerate()
                .map(|(i, p)| PartitionMetadata {
                    error_code: if p.leader == NO_LEADER {
                        ErrorCode::LeaderNotAvailable as i32
                    } else {
                        0
                    },
                    partition: i as i32,
                    leader_id: p.leader,
                    leader_epoch: p.leader_epoch,
                    replicas: p.replicas.clone(),
                    isr: p.isr.clone(),
                    offline_replicas: p
                        .replicas
                        .iter()
                        .copied()
                        .filter(|b| !image.is_unfenced(*b))
                        .collect(),
                })
                .collect(),
        };
        let topics = if req.topics.is_empty() {
            image.topics.values().map(|t| describe(t)).collect()
        } else {
            req.topics
                .iter()
                .map(|n| match image.topic(n) {
                    Some(t) => describe(t),
                    None => TopicMetadata {
                        error_code: ErrorCode::UnknownTopicOrPartition as i32,
                        error_message: format!("topic {n:?} does not exist"),
                        name: n.clone(),
                        ..Default::default()
                    },
                })
                .collect()
        };
        Ok(Response::new(MetadataResponse {
            brokers,
            cluster_id: self.node.config.cluster_id.clone(),
            controller_id: -1,
            topics,
            metadata_offset: image.offset,
        }))
    }

    async fn offset_for_leader_epoch(
        &self,
        r: Request<OffsetForLeaderEpochRequest>,
    ) -> Result<Response<OffsetForLeaderEpochResponse>, Status> {
        let req = r.into_inner();
        let part = self.data.lookup(&req.topic, req.partition).await?;
        let (epoch, end) = part
            .epoch_end_offset(req.leader_epoch)
            .await
            .map_err(|e| self.data.status(e, &req.topic, req.partition))?;
        Ok(Response::new(OffsetForLeaderEpochResponse {
            topic: req.topic,
            partition: req.partition,
            epoch_end_offset: Some(EpochEndOffset {
                leader_epoch: epoch as i32,
                end_offset: end,
            }),
        }))
    }

    async fn init_producer_id(
        &self,
        r: Request<InitProducerIdRequest>,
    ) -> Result<Response<InitProducerIdResponse>, Status> {
        let r = r.into_inner();
        if r.transactional_id.as_deref().is_some_and(|t| !t.is_empty()) {
            return Err(error_status(
                ErrorCode::UnsupportedVersion,
                "transactions are not supported; leave transactional_id unset for an idempotent producer",
                None,
            ));
        }
        let producer_id = self.node.next_producer_id().await?;
        Ok(Response::new(InitProducerIdResponse {
            producer_id,
            producer_epoch: 0,
        }))
    }
    async fn find_coordinator(
        &self,
        r: Request<FindCoordinatorRequest>,
    ) -> Result<Response<FindCoordinatorResponse>, Status> {
        let r = r.into_inner();
        Ok(Response::new(
            self.groups()?.find_coordinator(&r.group_id).await?,
        ))
    }
    async fn consumer_group_heartbeat(
        &self,
        r: Request<ConsumerGroupHeartbeatRequest>,
    ) -> Result<Response<ConsumerGroupHeartbeatResponse>, Status> {
        let host = r
            .remote_addr()
            .map(|a| format!("/{}", a.ip()))
            .unwrap_or_default();
        Ok(Response::new(
            self.groups()?.heartbeat(r.into_inner(), host).await?,
        ))
    }
    async fn offset_commit(
        &self,
        r: Request<OffsetCommitRequest>,
    ) -> Result<Response<OffsetCommitResponse>, Status> {
        Ok(Response::new(self.groups()?.commit(r.into_inner()).await?))
    }
    async fn offset_fetch(
        &self,
        r: Request<OffsetFetchRequest>,
    ) -> Result<Response<OffsetFetchResponse>, Status> {
        Ok(Response::new(self.groups()?.fetch(r.into_inner()).await?))
    }
    async fn list_groups(
        &self,
        r: Request<ListGroupsRequest>,
    ) -> Result<Response<ListGroupsResponse>, Status> {
        let filter = r.into_inner().states_filter;
        let mut groups = self.groups()?.list().await;
        if !filter.is_empty() {
            groups.retain(|g| filter.contains(&g.group_state));
        }
        Ok(Response::new(ListGroupsResponse { groups }))
    }
    async fn describe_groups(
        &self,
        r: Request<DescribeGroupsRequest>,
    ) -> Result<Response<DescribeGroupsResponse>, Status> {
        let coordinator = self.groups()?;
        let mut groups = Vec::new();
        for g in r.into_inner().group_ids {
            groups.push(coordinator.describe(&g).await);
        }
        Ok(Response::new(DescribeGroupsResponse { groups }))
    }
    async fn delete_groups(
        &self,
        r: Request<DeleteGroupsRequest>,
    ) -> Result<Response<DeleteGroupsResponse>, Status> {
        let coordinator = self.groups()?;
        let mut results = Vec::new();
        for g in r.into_inner().group_ids {
            let (error_code, error_message) = match coordinator.delete(&g).await {
                Ok(()) => (0, String::new()),
                Err(e) => in_band_error(&e).into_parts(),
            };
            results.push(DeleteGroupResult {
                group_id: g,
                error_code,
                error_message,
            });
        }
        Ok(Response::new(DeleteGroupsResponse { results }))
    }
}

/// Deadline of an Admin call relayed to a controller (a topic creation waits for the
/// quorum; a frozen controller must not hold the caller forever).
pub const ADMIN_RELAY_TIMEOUT: Duration = Duration::from_secs(15);

/// Relays Admin calls to the controllers (which forward writes to the active one), so
/// `--bootstrap` may name a broker.
#[derive(Clone)]
pub struct AdminRelay {
    node: Arc<BrokerNode>,
}

macro_rules! relay {
    ($( $m:ident, $Req:ty, $Resp:ty; )*) => {
        #[tonic::async_trait]
        impl Admin for AdminRelay {
            $(
                async fn $m(&self, r: Request<$Req>) -> Result<Response<$Resp>, Status> {
                    let req = r.into_inner();
                    let mut last = Status::unavailable("no controller reachable");
                    for addr in &self.node.config.controllers {
                        let mut call = Request::new(req.clone());
                        call.set_timeout(ADMIN_RELAY_TIMEOUT);
                        match AdminClient::new(self.node.channel(addr)).$m(call).await {
                            Ok(resp) => return Ok(resp),
                            Err(s) if s.code() == tonic::Code::Unavailable && sluice_proto::status::error_detail(&s).is_none() => last = s,
                            Err(s) => return Err(s),
                        }
                    }
                    Err(last)
                }
            )*
        }
    };
}

relay! {
    create_topics, CreateTopicsRequest, CreateTopicsResponse;
    delete_topics, DeleteTopicsRequest, DeleteTopicsResponse;
    list_topics, ListTopicsRequest, ListTopicsResponse;
    describe_topics, DescribeTopicsRequest, DescribeTopicsResponse;
    create_partitions, CreatePartitionsRequest, CreatePartitionsResponse;
    incremental_alter_configs, IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse;
    describe_configs, DescribeConfigsRequest, DescribeConfigsResponse;
    describe_cluster, DescribeClusterRequest, DescribeClusterResponse;
    describe_quorum, DescribeQuorumRequest, DescribeQuorumResponse;
}

/// Serves the broker's services until `shutdown` resolves.
pub async fn serve(
    node: Arc<BrokerNode>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), String> {
    // NOT_SERVING until the broker is ready: registered, caught up with the metadata log
    // and unfenced by the controller (which unfences only caught-up brokers).
    let (health_reporter, health) = tonic_health::server::health_reporter();
    health_reporter
        .set_not_serving::<BrokerServer<BrokerService>>()
        .await;
    health_reporter
        .set_service_status("", tonic_health::ServingStatus::NotServing)
        .await;
    let readiness = {
        let node = node.clone();
        AbortOnDrop(tokio::spawn(async move {
            let mut serving = false;
            loop {
                let ready = !node.fenced.load(std::sync::atomic::Ordering::SeqCst)
                    && node.broker_epoch.load(std::sync::atomic::Ordering::SeqCst) >= 0;
                if ready != serving {
                    serving = ready;
                    let status = if ready {
                        tonic_health::ServingStatus::Serving
                    } else {
                        tonic_health::ServingStatus::NotServing
                    };
                    health_reporter.set_service_status("", status).await;
                    health_reporter
                        .set_service_status("sluice.v1.Broker", status)
                        .await;
                    tracing::info!(serving, "health status changed");
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }))
    };
    let _readiness = readiness;
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(sluice_proto::v1::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let v1 = reflection().build_v1().map_err(|e| e.to_string())?;
    let v1alpha = reflection().build_v1alpha().map_err(|e| e.to_string())?;
    let addr = node.config.listen;
    let groups = GroupCoordinator::new(node.clone(), node.config.groups.clone());
    let expiry = tokio::spawn(groups.clone().run_expiry());
    let _expiry = AbortOnDrop(expiry);
    let limits = node.config.listener_limits;
    let listener = crate::listener::bind(addr)
        .await
        .map_err(|e| format!("binding {addr}: {e}"))?;
    tracing::info!(broker = node.id(), %addr, ?limits, "broker listening");
    tonic::transport::Server::builder()
        .max_concurrent_streams(Some(limits.streams_per_connection_max))
        // Dead clients are noticed, and their streams end (a FetchStream stops polling).
        .http2_keepalive_interval(Some(sluice_proto::transport::KEEPALIVE_INTERVAL))
        .http2_keepalive_timeout(Some(sluice_proto::transport::KEEPALIVE_TIMEOUT))
        .add_service(health)
        .add_service(v1)
        .add_service(v1alpha)
        .add_service(
            BrokerServer::new(BrokerService::with_groups(node.clone(), groups))
                .max_decoding_message_size(MESSAGE_BYTES_MAX)
                .max_encoding_message_size(MESSAGE_BYTES_MAX),
        )
        .add_service(AdminServer::new(AdminRelay { node: node.clone() }))
        .serve_with_incoming_shutdown(
            crate::listener::incoming(listener, limits.connections_max),
            shutdown,
        )
        .await
        .map_err(|e| format!("serving on {addr}: {e}"))
}
