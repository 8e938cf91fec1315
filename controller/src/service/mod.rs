//! gRPC services of a controller and the server that hosts them (with health and
//! reflection, v1 and v1alpha).

mod acls;
mod admin;
mod controller;
mod elections;
mod quotas;
mod raft;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use prost::Message;
use sluice_proto::status::error_status;
use sluice_proto::v1::admin_server::AdminServer;
use sluice_proto::v1::controller_server::ControllerServer;
use sluice_proto::v1::raft_client::RaftClient;
use sluice_proto::v1::raft_server::RaftServer;
use sluice_proto::v1::{ErrorCode, ForwardRequest};
use tonic::transport::Channel;
use tonic::Status;

pub use admin::AdminService;
pub use controller::ControllerService;
pub use raft::RaftService;

use crate::network::RAFT_MESSAGE_BYTES_MAX;
use crate::node::ControllerNode;

/// Largest Admin/Controller message accepted.
pub const API_MESSAGE_BYTES_MAX: usize = 16 * 1024 * 1024;

/// A cached lazily-connecting channel per peer address (forwarding).
fn channel(addr: &str) -> Result<Channel, Status> {
    static CHANNELS: OnceLock<Mutex<HashMap<String, Channel>>> = OnceLock::new();
    let map = CHANNELS.get_or_init(|| Mutex::new(HashMap::new()));
    let mut map = map.lock().expect("channel cache lock");
    if let Some(c) = map.get(addr) {
        return Ok(c.clone());
    }
    let c = sluice_proto::transport::internal_channel(addr)
        .map_err(|e| Status::internal(format!("bad peer address: {e}")))?;
    map.insert(addr.to_string(), c.clone());
    Ok(c)
}

/// Sends a request to the active controller through `Raft.Forward` and decodes its answer.
pub(crate) async fn forward<Req: Message, Resp: Message + Default>(
    node: &ControllerNode,
    addr: &str,
    method: &str,
    req: Req,
    caller: Option<&sluice_metadata::acl::Caller>,
) -> Result<Resp, Status> {
    let (principal, client_host) = caller.map(acls::forward_fields).unwrap_or_default();
    let mut client = RaftClient::new(channel(addr)?)
        .max_decoding_message_size(API_MESSAGE_BYTES_MAX)
        .max_encoding_message_size(API_MESSAGE_BYTES_MAX);
    let mut request = tonic::Request::new(ForwardRequest {
        method: method.to_string(),
        command: req.encode_to_vec().into(),
        from_node_id: node.id as i32,
        principal,
        client_host,
    });
    request.set_timeout(node.config.write_timeout + Duration::from_secs(1));
    let resp = client.forward(request).await.map_err(|s| {
        if s.code() == tonic::Code::Unavailable && sluice_proto::status::error_detail(&s).is_none()
        {
            error_status(
                ErrorCode::NotController,
                format!(
                    "the active controller at {addr} is unreachable: {}",
                    s.message()
                ),
                None,
            )
        } else {
            s
        }
    })?;
    Resp::decode(resp.into_inner().response).map_err(|e| {
        error_status(
            ErrorCode::UnknownServerError,
            format!("undecodable forwarded reply: {e}"),
            None,
        )
    })
}

/// Serves every controller service on `node`'s listener until `shutdown` resolves.
pub async fn serve(
    node: Arc<ControllerNode>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), String> {
    // NOT_SERVING while this node knows no active controller (no quorum yet, or an
    // election in progress); SERVING once it does. Raft traffic flows either way.
    let (health_reporter, health) = tonic_health::server::health_reporter();
    let mut metrics = node.raft.metrics();
    let readiness = tokio::spawn(async move {
        let mut serving = None;
        loop {
            let ready = metrics.borrow_and_update().current_leader.is_some();
            if serving != Some(ready) {
                serving = Some(ready);
                let status = if ready {
                    tonic_health::ServingStatus::Serving
                } else {
                    tonic_health::ServingStatus::NotServing
                };
                for service in ["", "sluice.v1.Admin", "sluice.v1.Controller"] {
                    health_reporter.set_service_status(service, status).await;
                }
            }
            if metrics.changed().await.is_err() {
                return;
            }
        }
    });
    struct Abort(tokio::task::JoinHandle<()>);
    impl Drop for Abort {
        fn drop(&mut self) {
            self.0.abort();
        }
    }
    let _readiness = Abort(readiness);
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(sluice_proto::v1::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let refl_v1 = reflection().build_v1().map_err(|e| e.to_string())?;
    let refl_v1alpha = reflection().build_v1alpha().map_err(|e| e.to_string())?;
    let admin = AdminService::new(node.clone());
    let raft = RaftService::new(node.clone(), admin.clone());
    let controller = ControllerService::new(node.clone());
    let addr = node.config.listen;
    tracing::info!(node = node.id, %addr, tls = node.config.tls.is_some(), "controller listening");
    let tls = node
        .config
        .tls
        .as_ref()
        .map(sluice_proto::tls::TlsAcceptor::new)
        .transpose()?;
    let router = tonic::transport::Server::builder()
        .tcp_nodelay(true)
        .add_service(health)
        .add_service(refl_v1)
        .add_service(refl_v1alpha)
        .add_service(
            RaftServer::new(raft)
                .max_decoding_message_size(RAFT_MESSAGE_BYTES_MAX)
                .max_encoding_message_size(RAFT_MESSAGE_BYTES_MAX),
        )
        .add_service(tonic::service::interceptor::InterceptedService::new(
            AdminServer::new(admin)
                .max_decoding_message_size(API_MESSAGE_BYTES_MAX)
                .max_encoding_message_size(API_MESSAGE_BYTES_MAX),
            node.authenticator(),
        ))
        .add_service(
            ControllerServer::new(controller)
                .max_decoding_message_size(API_MESSAGE_BYTES_MAX)
                .max_encoding_message_size(API_MESSAGE_BYTES_MAX),
        );
    match tls {
        None => router.serve_with_shutdown(addr, shutdown).await,
        Some(acceptor) => {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|e| format!("binding {addr}: {e}"))?;
            router
                .serve_with_incoming_shutdown(
                    sluice_proto::tls::incoming(listener, acceptor),
                    shutdown,
                )
                .await
        }
    }
    .map_err(|e| format!("serving on {addr}: {e}"))
}
