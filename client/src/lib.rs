//! Rust client for Sluice. This first part is the admin client (topics, configs, cluster and
//! quorum status); the producer and consumer follow with the broker.
//!
//! Bootstrap from any node: the client tries each `host:port` in turn until one answers.
//! Controllers forward admin requests to the active controller themselves.

use std::time::Duration;

use sluice_proto::status::{error_code, error_detail};
use sluice_proto::v1::admin_client::AdminClient;
use sluice_proto::v1::*;
use tonic::transport::Channel;

/// A failed client call: the Kafka error code (when the server sent one) and a message.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct ClientError {
    /// Kafka error code (`NETWORK_EXCEPTION` when no server could be reached).
    pub code: ErrorCode,
    /// One line, starting with the Kafka reason.
    pub message: String,
}

impl ClientError {
    pub(crate) fn from_status(s: tonic::Status) -> Self {
        let code = error_code(&s);
        let message = match error_detail(&s) {
            Some(d) => format!("{}: {}", d.reason, d.message),
            None => format!("{}: {}", code.as_str_name(), s.message()),
        };
        ClientError { code, message }
    }

    /// An error from an item-level `error_code` in a response.
    pub fn from_code(code: i32, message: &str) -> Self {
        let code = ErrorCode::try_from(code).unwrap_or(ErrorCode::UnknownServerError);
        ClientError {
            code,
            message: format!("{}: {message}", code.as_str_name()),
        }
    }
}

/// Result alias.
pub type Result<T, E = ClientError> = std::result::Result<T, E>;

/// Splits `host:port[,host:port…]`.
pub fn parse_bootstrap(bootstrap: &str) -> Vec<String> {
    bootstrap
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

/// Connects to the first reachable address of `bootstrap`.
pub async fn connect(bootstrap: &str, timeout: Duration) -> Result<Channel> {
    let addrs = parse_bootstrap(bootstrap);
    if addrs.is_empty() {
        return Err(ClientError {
            code: ErrorCode::InvalidRequest,
            message: "INVALID_REQUEST: empty --bootstrap list".into(),
        });
    }
    let mut last = String::new();
    for addr in &addrs {
        let endpoint = match sluice_proto::transport::base_endpoint(addr) {
            Ok(e) => e
                .connect_timeout(timeout)
                .timeout(timeout)
                .tcp_nodelay(true),
            Err(e) => {
                last = format!("bad address {addr:?}: {e}");
                continue;
            }
        };
        match endpoint.connect().await {
            Ok(ch) => return Ok(ch),
            Err(e) => last = format!("{addr}: {e}"),
        }
    }
    Err(ClientError {
        code: ErrorCode::NetworkException,
        message: format!("NETWORK_EXCEPTION: no bootstrap server reachable ({last})"),
    })
}

/// Admin client.
#[derive(Clone)]
pub struct Admin {
    inner: AdminClient<sluice_proto::auth::AuthChannel>,
}

macro_rules! call {
    ($self:ident . $m:ident ( $req:expr )) => {
        $self
            .inner
            .clone()
            .$m($req)
            .await
            .map(|r| r.into_inner())
            .map_err(ClientError::from_status)
    };
}

impl Admin {
    /// Connects to any node of `bootstrap`.
    pub async fn connect(bootstrap: &str) -> Result<Self> {
        let ch = connect(bootstrap, Duration::from_secs(10)).await?;
        Ok(Admin {
            inner: AdminClient::with_interceptor(ch, sluice_proto::auth::CallCredentials),
        })
    }

    /// Creates one topic; `-1` partitions/replicas use the cluster defaults.
    pub async fn create_topic(
        &self,
        name: &str,
        partitions: i32,
        replication_factor: i32,
        configs: Vec<(String, String)>,
    ) -> Result<CreateTopicResult> {
        let resp = call!(self.create_topics(CreateTopicsRequest {
            topics: vec![TopicSpec {
                name: name.to_string(),
                num_partitions: partitions,
                replication_factor,
                configs: configs.into_iter().collect(),
            }],
            validate_only: false,
        }))?;
        let r = resp.results.into_iter().next().ok_or_else(|| ClientError {
            code: ErrorCode::UnknownServerError,
            message: "UNKNOWN_SERVER_ERROR: empty CreateTopics response".into(),
        })?;
        if r.error_code != ErrorCode::None as i32 {
            return Err(ClientError::from_code(r.error_code, &r.error_message));
        }
        Ok(r)
    }

    /// Deletes one topic.
    pub async fn delete_topic(&self, name: &str) -> Result<DeleteTopicResult> {
        let resp = call!(self.delete_topics(DeleteTopicsRequest {
            names: vec![name.to_string()],
        }))?;
        let r = resp.results.into_iter().next().unwrap_or_default();
        if r.error_code != ErrorCode::None as i32 {
            return Err(ClientError::from_code(r.error_code, &r.error_message));
        }
        Ok(r)
    }

    /// Lists topics.
    pub async fn list_topics(&self, include_internal: bool) -> Result<Vec<ListedTopic>> {
        Ok(call!(self.list_topics(ListTopicsRequest { include_internal }))?.topics)
    }

    /// Describes topics (all when `names` is empty).
    pub async fn describe_topics(&self, names: Vec<String>) -> Result<Vec<TopicDescription>> {
        Ok(call!(self.describe_topics(DescribeTopicsRequest { names }))?.topics)
    }

    /// Sets (`Some`) or deletes (`None`) topic configs.
    pub async fn alter_topic_configs(
        &self,
        name: &str,
        ops: Vec<(String, Option<String>)>,
    ) -> Result<()> {
        let resp = call!(
            self.incremental_alter_configs(IncrementalAlterConfigsRequest {
                resources: vec![AlterConfigsResource {
                    resource_type: ConfigResourceType::Topic as i32,
                    resource_name: name.to_string(),
                    configs: ops
                        .into_iter()
                        .map(|(k, v)| AlterableConfig {
                            name: k,
                            op: if v.is_some() {
                                ConfigOp::Set as i32
                            } else {
                                ConfigOp::Delete as i32
                            },
                            value: v,
                        })
                        .collect(),
                }],
                validate_only: false,
            })
        )?;
        for r in resp.results {
            if r.error_code != ErrorCode::None as i32 {
                return Err(ClientError::from_code(r.error_code, &r.error_message));
            }
        }
        Ok(())
    }

    /// Grows a topic to `count` partitions.
    pub async fn create_partitions(&self, name: &str, count: i32) -> Result<()> {
        let resp = call!(self.create_partitions(CreatePartitionsRequest {
            topics: vec![CreatePartitionsTopic {
                name: name.to_string(),
                count,
            }],
            validate_only: false,
        }))?;
        for r in resp.results {
            if r.error_code != ErrorCode::None as i32 {
                return Err(ClientError::from_code(r.error_code, &r.error_message));
            }
        }
        Ok(())
    }

    /// Brokers, their liveness and the active controller.
    pub async fn describe_cluster(&self) -> Result<DescribeClusterResponse> {
        call!(self.describe_cluster(DescribeClusterRequest {}))
    }

    /// Sets and removes SCRAM credentials (salted passwords only: the caller salts and
    /// hashes). Per-user errors come back in the results.
    pub async fn alter_user_scram_credentials(
        &self,
        req: AlterUserScramCredentialsRequest,
    ) -> Result<AlterUserScramCredentialsResponse> {
        call!(self.alter_user_scram_credentials(req))
    }

    /// Users and their credentials' mechanisms and iterations (empty `names`: all).
    pub async fn describe_user_scram_credentials(
        &self,
        names: Vec<String>,
    ) -> Result<DescribeUserScramCredentialsResponse> {
        call!(self.describe_user_scram_credentials(DescribeUserScramCredentialsRequest { names }))
    }

    /// Adds ACLs; per-binding errors come back in the results, in order.
    pub async fn create_acls(&self, creations: Vec<AclBinding>) -> Result<CreateAclsResponse> {
        call!(self.create_acls(CreateAclsRequest { creations }))
    }

    /// The ACLs `filter` matches.
    pub async fn describe_acls(&self, filter: AclFilter) -> Result<Vec<AclBinding>> {
        Ok(call!(self.describe_acls(DescribeAclsRequest {
            filter: Some(filter)
        }))?
        .acls)
    }

    /// Removes the ACLs any filter matches; per filter, what it matched.
    pub async fn delete_acls(&self, filters: Vec<AclFilter>) -> Result<DeleteAclsResponse> {
        call!(self.delete_acls(DeleteAclsRequest { filters }))
    }

    /// Sets and removes client quotas; per-entry errors come back in the results, in order.
    pub async fn alter_client_quotas(
        &self,
        entries: Vec<AlterClientQuotaEntry>,
        validate_only: bool,
    ) -> Result<AlterClientQuotasResponse> {
        call!(self.alter_client_quotas(AlterClientQuotasRequest {
            entries,
            validate_only
        }))
    }

    /// The client quotas the filter matches.
    pub async fn describe_client_quotas(
        &self,
        components: Vec<QuotaFilterComponent>,
        strict: bool,
    ) -> Result<Vec<ClientQuotaEntry>> {
        Ok(
            call!(self.describe_client_quotas(DescribeClientQuotasRequest { components, strict }))?
                .entries,
        )
    }

    /// Leader elections: `partitions`, or every partition when `None`; one result each.
    pub async fn elect_leaders(
        &self,
        election_type: ElectionType,
        partitions: Option<Vec<(String, i32)>>,
        dry_run: bool,
    ) -> Result<Vec<ElectLeaderResult>> {
        Ok(call!(self.elect_leaders(ElectLeadersRequest {
            election_type: election_type as i32,
            all_partitions: partitions.is_none(),
            partitions: partitions
                .unwrap_or_default()
                .into_iter()
                .map(|(topic, partition)| ElectPartition { topic, partition })
                .collect(),
            dry_run,
        }))?
        .results)
    }

    /// The metadata quorum: leader, term, high watermark, per-voter lag.
    pub async fn describe_quorum(&self) -> Result<DescribeQuorumResponse> {
        call!(self.describe_quorum(DescribeQuorumRequest {}))
    }

    /// Adds controller `id` (running at `address`) to the voter set, or with `dry_run`
    /// reports what that would do.
    pub async fn add_controller(
        &self,
        id: i32,
        address: &str,
        dry_run: bool,
    ) -> Result<QuorumChangeResponse> {
        call!(self.add_controller(AddControllerRequest {
            controller_id: id,
            address: address.to_string(),
            dry_run,
        }))
    }

    /// Removes voter `id`, or with `dry_run` reports what that would do.
    pub async fn remove_controller(&self, id: i32, dry_run: bool) -> Result<QuorumChangeResponse> {
        call!(self.remove_controller(RemoveControllerRequest {
            controller_id: id,
            dry_run,
        }))
    }
}

pub mod cluster;
pub mod consumer;
pub mod data;
pub mod producer;
pub mod verify;
pub mod workload;
pub use cluster::Cluster;
pub use consumer::{Consumer, ConsumerConfig, ConsumerRecord, OffsetReset};
pub use data::{partition_for_key, DataClient};
pub use producer::{DeliveryFuture, Producer, ProducerConfig, ProducerRecord, RecordMetadata};
pub use sluice_record::Compression;
