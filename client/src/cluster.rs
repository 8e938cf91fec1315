//! Connections and cached metadata shared by the producer and the consumer: bootstrap from
//! any broker, one lazily-connected HTTP/2 channel per broker (calls are multiplexed on
//! it), leader lookup, and metadata refreshes that concurrent callers share.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use sluice_proto::auth::{AuthChannel, CallCredentials};
use sluice_proto::v1::broker_client::BrokerClient;
use sluice_proto::v1::*;
use tonic::transport::Channel;

use crate::{ClientError, Result};

/// Largest gRPC message the client sends or accepts.
pub use sluice_proto::transport::MESSAGE_BYTES_MAX;

/// A cluster seen through its brokers.
pub struct Cluster {
    bootstrap: Vec<String>,
    channels: Mutex<HashMap<String, Channel>>,
    metadata: RwLock<Arc<MetadataResponse>>,
    /// Serialises refreshes; holds when the last one finished.
    refreshing: tokio::sync::Mutex<Instant>,
    request_timeout: Duration,
}

impl Cluster {
    /// Connects through any of `bootstrap` (`host:port,...`) and loads metadata.
    pub async fn connect(bootstrap: &str, request_timeout: Duration) -> Result<Arc<Self>> {
        let c = Arc::new(Cluster {
            bootstrap: crate::parse_bootstrap(bootstrap),
            channels: Mutex::new(HashMap::new()),
            metadata: RwLock::new(Arc::new(MetadataResponse::default())),
            refreshing: tokio::sync::Mutex::new(Instant::now() - Duration::from_secs(3600)),
            request_timeout,
        });
        c.refresh_now().await?;
        Ok(c)
    }

    /// A client for the broker at `addr`.
    pub fn broker(&self, addr: &str) -> Result<BrokerClient<AuthChannel>> {
        let channel = {
            let mut map = self.channels.lock().expect("channels lock");
            match map.get(addr) {
                Some(c) => c.clone(),
                None => {
                    let c = sluice_proto::transport::base_endpoint(addr)
                        .map_err(|e| ClientError {
                            code: ErrorCode::InvalidRequest,
                            message: format!("INVALID_REQUEST: bad address {addr:?}: {e}"),
                        })?
                        .connect_timeout(Duration::from_secs(2))
                        .timeout(self.request_timeout)
                        .tcp_nodelay(true)
                        // A frozen broker (SIGSTOP, hung) keeps its TCP connection open:
                        // unanswered HTTP/2 pings close it, failing what was in flight there.
                        .http2_keep_alive_interval(sluice_proto::transport::KEEPALIVE_INTERVAL)
                        .keep_alive_timeout(sluice_proto::transport::KEEPALIVE_TIMEOUT)
                        .initial_stream_window_size(sluice_proto::transport::STREAM_WINDOW_BYTES)
                        .initial_connection_window_size(
                            sluice_proto::transport::CONNECTION_WINDOW_BYTES,
                        )
                        .max_frame_size(sluice_proto::transport::FRAME_BYTES_MAX)
                        .connect_lazy();
                    map.insert(addr.to_string(), c.clone());
                    c
                }
            }
        };
        Ok(BrokerClient::with_interceptor(channel, CallCredentials)
            .max_decoding_message_size(MESSAGE_BYTES_MAX)
            .max_encoding_message_size(MESSAGE_BYTES_MAX))
    }

    /// The cached metadata.
    pub fn metadata(&self) -> Arc<MetadataResponse> {
        self.metadata.read().expect("metadata lock").clone()
    }

    /// Refreshes metadata unless another caller did so within the last 50 ms (so a burst of
    /// failing requests costs one refresh).
    pub async fn refresh(&self) -> Result<()> {
        let mut last = self.refreshing.lock().await;
        if last.elapsed() < Duration::from_millis(50) {
            return Ok(());
        }
        let r = self.fetch_metadata().await;
        *last = Instant::now();
        r
    }

    async fn refresh_now(&self) -> Result<()> {
        let mut last = self.refreshing.lock().await;
        let r = self.fetch_metadata().await;
        *last = Instant::now();
        r
    }

    async fn fetch_metadata(&self) -> Result<()> {
        let mut addrs: Vec<String> = self.metadata().brokers.iter().map(addr_of).collect();
        addrs.extend(self.bootstrap.iter().cloned());
        let mut last = String::from("no bootstrap address");
        for a in addrs {
            let mut c = self.broker(&a)?;
            match tokio::time::timeout(
                Duration::from_secs(3),
                c.metadata(MetadataRequest::default()),
            )
            .await
            {
                Ok(Ok(r)) => {
                    *self.metadata.write().expect("metadata lock") = Arc::new(r.into_inner());
                    return Ok(());
                }
                Ok(Err(s)) => last = format!("{a}: {}", s.message()),
                Err(_) => last = format!("{a}: no answer within 3 s"),
            }
        }
        Err(ClientError {
            code: ErrorCode::NetworkException,
            message: format!("NETWORK_EXCEPTION: no broker reachable ({last})"),
        })
    }

    /// Why the cluster refuses to describe `topic` to this caller, if it does.
    async fn refusal_of(&self, topic: &str) -> Option<ClientError> {
        let addr = self
            .metadata()
            .brokers
            .first()
            .map(addr_of)
            .or_else(|| self.bootstrap.first().cloned())?;
        let mut c = self.broker(&addr).ok()?;
        let req = MetadataRequest {
            topics: vec![topic.to_string()],
            ..Default::default()
        };
        let r = tokio::time::timeout(Duration::from_secs(3), c.metadata(req))
            .await
            .ok()?
            .ok()?
            .into_inner();
        let t = r.topics.into_iter().find(|t| t.name == topic)?;
        (t.error_code == ErrorCode::TopicAuthorizationFailed as i32).then(|| ClientError {
            code: ErrorCode::TopicAuthorizationFailed,
            message: format!("TOPIC_AUTHORIZATION_FAILED: {}", t.error_message),
        })
    }

    /// Partition count of `topic` from cached metadata.
    pub fn partitions(&self, topic: &str) -> Option<i32> {
        let md = self.metadata();
        md.topics
            .iter()
            .find(|t| t.name == topic && t.error_code == 0)
            .map(|t| t.partitions.len() as i32)
    }

    /// Partition count of `topic`, refreshing metadata until it is known or `timeout`.
    pub async fn wait_for_topic(&self, topic: &str, timeout: Duration) -> Result<i32> {
        if let Some(n) = self.partitions(topic) {
            return Ok(n);
        }
        let start = Instant::now();
        loop {
            if let Some(n) = self.partitions(topic) {
                return Ok(n);
            }
            // The full listing leaves out topics the caller may not describe: ask for this
            // one, whose answer says so (TOPIC_AUTHORIZATION_FAILED), without waiting.
            if let Some(refused) = self.refusal_of(topic).await {
                return Err(refused);
            }
            if start.elapsed() >= timeout {
                return Err(ClientError {
                    code: ErrorCode::UnknownTopicOrPartition,
                    message: format!("UNKNOWN_TOPIC_OR_PARTITION: topic {topic:?} does not exist"),
                });
            }
            self.refresh().await.ok();
            if self.partitions(topic).is_none() {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }

    /// `(broker id, address)` of the leader of a partition, from cached metadata.
    pub fn leader(&self, topic: &str, partition: i32) -> Option<(i32, String)> {
        let md = self.metadata();
        let t = md.topics.iter().find(|t| t.name == topic)?;
        let p = t.partitions.iter().find(|p| p.partition == partition)?;
        let b = md.brokers.iter().find(|b| b.broker_id == p.leader_id)?;
        Some((b.broker_id, addr_of(b)))
    }

    /// Address of any live broker (for requests any broker answers).
    pub fn any_broker(&self) -> String {
        let md = self.metadata();
        md.brokers
            .first()
            .map(addr_of)
            .or_else(|| self.bootstrap.first().cloned())
            .unwrap_or_default()
    }

    /// Addresses of all known brokers.
    pub fn brokers(&self) -> Vec<(i32, String)> {
        self.metadata()
            .brokers
            .iter()
            .map(|b| (b.broker_id, addr_of(b)))
            .collect()
    }
}

/// `host:port` of a broker endpoint.
pub fn addr_of(b: &BrokerEndpoint) -> String {
    format!("{}:{}", b.host, b.port)
}
