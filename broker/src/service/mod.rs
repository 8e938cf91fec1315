//! `sluice.v1.Broker` (produce, fetch, offsets, metadata, groups) and an `Admin` relay to
//! the controllers, plus the server that hosts them with health and reflection. One file
//! per RPC family; each handler turns its request into calls on the shared
//! [`DataPlane`](crate::data::DataPlane), the group coordinator or the node:
//!
//! ```text
//!   produce.rs      Produce, ProduceStream          offsets.rs   ListOffsets, OffsetForLeaderEpoch
//!   fetch.rs        Fetch, FetchStream              metadata.rs  Metadata
//!   producer_id.rs  InitProducerId                  groups.rs    FindCoordinator … DeleteGroups
//!   admin.rs        the Admin relay to the controllers
//! ```

pub use crate::limits::{MESSAGE_BYTES_MAX, PRODUCE_STREAM_IN_FLIGHT_MAX};
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{Stream, StreamExt};
use sluice_metadata::acl::Operation;
use sluice_metadata::{BrokerId, NO_LEADER};
use sluice_proto::status::error_status;
use sluice_proto::v1::admin_client::AdminClient;
use sluice_proto::v1::admin_server::{Admin, AdminServer};
use sluice_proto::v1::broker_server::{Broker, BrokerServer};
use sluice_proto::v1::*;
use tokio::sync::mpsc;
use tonic::{Request, Response, Status, Streaming};

use crate::authz::{caller_of, Access};
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

mod admin;
mod fetch;
mod groups;
mod metadata;
mod offsets;
mod produce;
mod producer_id;
mod replica_fetch;
mod replicas;

pub use replica_fetch::ReplicationService;

pub use admin::{on_behalf_of, AdminRelay, ADMIN_RELAY_TIMEOUT};

#[tonic::async_trait]
impl Broker for BrokerService {
    type ProduceStreamStream = ProduceStreamOut;
    type FetchStreamStream = FetchStreamOut;
    async fn produce(
        &self,
        r: Request<ProduceRequest>,
    ) -> Result<Response<ProduceResponse>, Status> {
        produce::produce(self, r).await
    }
    async fn produce_stream(
        &self,
        r: Request<Streaming<ProduceRequest>>,
    ) -> Result<Response<Self::ProduceStreamStream>, Status> {
        produce::produce_stream(self, r).await
    }
    async fn fetch(&self, r: Request<FetchRequest>) -> Result<Response<FetchResponse>, Status> {
        fetch::fetch(self, r).await
    }
    async fn fetch_stream(
        &self,
        r: Request<FetchRequest>,
    ) -> Result<Response<Self::FetchStreamStream>, Status> {
        fetch::fetch_stream(self, r).await
    }
    async fn list_offsets(
        &self,
        r: Request<ListOffsetsRequest>,
    ) -> Result<Response<ListOffsetsResponse>, Status> {
        offsets::list_offsets(self, r).await
    }
    async fn metadata(
        &self,
        r: Request<MetadataRequest>,
    ) -> Result<Response<MetadataResponse>, Status> {
        metadata::metadata(self, r).await
    }
    async fn offset_for_leader_epoch(
        &self,
        r: Request<OffsetForLeaderEpochRequest>,
    ) -> Result<Response<OffsetForLeaderEpochResponse>, Status> {
        offsets::offset_for_leader_epoch(self, r).await
    }
    async fn init_producer_id(
        &self,
        r: Request<InitProducerIdRequest>,
    ) -> Result<Response<InitProducerIdResponse>, Status> {
        producer_id::init_producer_id(self, r).await
    }
    async fn find_coordinator(
        &self,
        r: Request<FindCoordinatorRequest>,
    ) -> Result<Response<FindCoordinatorResponse>, Status> {
        groups::find_coordinator(self, r).await
    }
    async fn consumer_group_heartbeat(
        &self,
        r: Request<ConsumerGroupHeartbeatRequest>,
    ) -> Result<Response<ConsumerGroupHeartbeatResponse>, Status> {
        groups::consumer_group_heartbeat(self, r).await
    }
    async fn offset_commit(
        &self,
        r: Request<OffsetCommitRequest>,
    ) -> Result<Response<OffsetCommitResponse>, Status> {
        groups::offset_commit(self, r).await
    }
    async fn offset_fetch(
        &self,
        r: Request<OffsetFetchRequest>,
    ) -> Result<Response<OffsetFetchResponse>, Status> {
        groups::offset_fetch(self, r).await
    }
    async fn list_groups(
        &self,
        r: Request<ListGroupsRequest>,
    ) -> Result<Response<ListGroupsResponse>, Status> {
        groups::list_groups(self, r).await
    }
    async fn describe_groups(
        &self,
        r: Request<DescribeGroupsRequest>,
    ) -> Result<Response<DescribeGroupsResponse>, Status> {
        groups::describe_groups(self, r).await
    }
    async fn delete_groups(
        &self,
        r: Request<DeleteGroupsRequest>,
    ) -> Result<Response<DeleteGroupsResponse>, Status> {
        groups::delete_groups(self, r).await
    }
    async fn describe_replicas(
        &self,
        r: Request<DescribeReplicasRequest>,
    ) -> Result<Response<DescribeReplicasResponse>, Status> {
        replicas::describe_replicas(self, r).await
    }
}

/// Serves Kafka connections of this broker's listener (see [`crate::kafka`]).
/// A follower's RPC must come from the broker it names when this broker requires client
/// certificates (`ssl.client.auth=requested` or `required`): a client cannot fetch as an ISR member and move
/// the high watermark past what the followers hold.
pub(crate) fn require_broker<T>(
    node: &BrokerNode,
    r: &Request<T>,
    broker_id: i32,
) -> Result<(), Status> {
    let certs = r
        .extensions()
        .get::<crate::listener::PeerInfo>()
        .and_then(|p| p.certificates.clone());
    sluice_proto::tls::require_broker_peer(
        node.config.tls.as_ref(),
        certs.as_deref().map(|c| c.as_slice()),
        broker_id,
    )
}

fn kafka_server(
    node: Arc<BrokerNode>,
    groups: Arc<GroupCoordinator>,
) -> crate::listener::KafkaServer {
    let sessions = Arc::new(std::sync::Mutex::new(
        crate::kafka::fetch_session::SessionCache::default(),
    ));
    Arc::new(move |conn, peer| {
        tokio::spawn(crate::kafka::serve_connection(
            conn,
            peer,
            node.clone(),
            groups.clone(),
            sessions.clone(),
        ));
    })
}

/// Serves the broker's services until `shutdown` resolves.
pub async fn serve(
    node: Arc<BrokerNode>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), String> {
    // NOT_SERVING until the broker is ready: registered, caught up with the metadata log
    // and unfenced by the controller (which unfences only caught-up brokers); and again
    // while the controllers' metadata history does not continue the one it applied.
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
                    && node.broker_epoch.load(std::sync::atomic::Ordering::SeqCst) >= 0
                    && !node
                        .metadata_diverged
                        .load(std::sync::atomic::Ordering::SeqCst);
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
    let serves = crate::listener::Serves {
        grpc: true,
        kafka: node.config.listen_serves_kafka,
    };
    let tls = node
        .config
        .tls
        .as_ref()
        .map(sluice_proto::tls::TlsAcceptor::new)
        .transpose()?;
    tracing::info!(broker = node.id().get(), %addr, ?serves, ?limits, tls = tls.is_some(), "broker listening");
    let mut listeners = vec![(listener, serves)];
    if let Some(kafka_addr) = node.config.kafka_listen {
        let l = crate::listener::bind(kafka_addr)
            .await
            .map_err(|e| format!("binding {kafka_addr}: {e}"))?;
        tracing::info!(broker = node.id().get(), addr = %kafka_addr, "broker listening (Kafka protocol only)");
        listeners.push((
            l,
            crate::listener::Serves {
                grpc: false,
                kafka: true,
            },
        ));
    }
    tonic::transport::Server::builder()
        .max_concurrent_streams(Some(limits.streams_per_connection_max))
        // Dead clients are noticed, and their streams end (a FetchStream stops polling).
        .http2_keepalive_interval(Some(sluice_proto::transport::KEEPALIVE_INTERVAL))
        .http2_keepalive_timeout(Some(sluice_proto::transport::KEEPALIVE_TIMEOUT))
        // Produce requests and follower answers up to MESSAGE_BYTES_MAX: big windows and
        // frames (the clients set the same for what they receive).
        .initial_stream_window_size(sluice_proto::transport::STREAM_WINDOW_BYTES)
        .initial_connection_window_size(sluice_proto::transport::CONNECTION_WINDOW_BYTES)
        .max_frame_size(sluice_proto::transport::FRAME_BYTES_MAX)
        .add_service(health)
        .add_service(v1)
        .add_service(v1alpha)
        .add_service(tonic::service::interceptor::InterceptedService::new(
            BrokerServer::new(BrokerService::with_groups(node.clone(), groups.clone()))
                .max_decoding_message_size(MESSAGE_BYTES_MAX)
                .max_encoding_message_size(MESSAGE_BYTES_MAX),
            node.authenticator(),
        ))
        .add_service(tonic::service::interceptor::InterceptedService::new(
            AdminServer::new(AdminRelay { node: node.clone() }),
            node.authenticator(),
        ))
        .add_service(
            sluice_proto::v1::replication_server::ReplicationServer::new(ReplicationService::new(
                node.clone(),
            ))
            .max_decoding_message_size(MESSAGE_BYTES_MAX)
            .max_encoding_message_size(MESSAGE_BYTES_MAX),
        )
        .serve_with_incoming_shutdown(
            crate::listener::incoming(
                listeners,
                limits.connections_max,
                Some(kafka_server(node.clone(), groups)),
                tls,
            ),
            shutdown,
        )
        .await
        .map_err(|e| format!("serving on {addr}: {e}"))
}
