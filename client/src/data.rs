//! A minimal partition-aware client for the data plane: metadata lookup, Kafka's murmur2
//! partitioner, produce with leader re-routing and bounded retries, and fetch. The full
//! batching producer and group consumer build on this.

use std::time::Duration;

use bytes::Bytes;
use sluice_proto::status::{error_code, error_detail};
use sluice_proto::v1::broker_client::BrokerClient;
use sluice_proto::v1::*;

use crate::cluster::Cluster;
use crate::{ClientError, Result};

/// Kafka's default partitioner for keyed records: `toPositive(murmur2(key)) % partitions`.
pub fn partition_for_key(key: &[u8], partitions: i32) -> i32 {
    let h = murmur2::murmur2(key, murmur2::KAFKA_SEED) as i32;
    ((h & 0x7fff_ffff) % partitions.max(1)) as i32
}

/// Upper bound on one request to a broker.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

/// Retries of one request before giving up (each after a metadata refresh).
pub const RETRIES_MAX: u32 = 20;

/// A partition-aware request client over a [`Cluster`] (shared metadata and channels): the
/// low-level produce/fetch/list-offsets calls the CLI tools and tests use. Applications
/// want [`crate::Producer`] and [`crate::Consumer`].
pub struct DataClient {
    cluster: std::sync::Arc<Cluster>,
}

fn retriable(code: ErrorCode) -> bool {
    sluice_proto::status::is_retriable(code) || code == ErrorCode::NetworkException
}

impl DataClient {
    /// Connects to the cluster through any bootstrap broker and loads metadata.
    pub async fn connect(bootstrap: &str) -> Result<Self> {
        Ok(DataClient {
            cluster: Cluster::connect(bootstrap, REQUEST_TIMEOUT).await?,
        })
    }

    fn client(&self, addr: &str) -> Result<BrokerClient<sluice_proto::auth::AuthChannel>> {
        self.cluster.broker(addr)
    }

    /// Reloads metadata from any reachable broker.
    pub async fn refresh(&mut self) -> Result<()> {
        self.cluster.refresh().await
    }

    /// The cached metadata.
    pub fn metadata(&self) -> std::sync::Arc<MetadataResponse> {
        self.cluster.metadata()
    }

    /// Refreshes metadata until `topic` is known (a topic just created may not have reached
    /// every broker yet), for at most `timeout`.
    pub async fn wait_for_topic(&mut self, topic: &str, timeout: Duration) -> Result<i32> {
        self.cluster.wait_for_topic(topic, timeout).await
    }

    /// Number of partitions of `topic`.
    pub fn partitions(&self, topic: &str) -> Result<i32> {
        self.cluster.partitions(topic).ok_or_else(|| ClientError {
            code: ErrorCode::UnknownTopicOrPartition,
            message: format!("UNKNOWN_TOPIC_OR_PARTITION: topic {topic:?} does not exist"),
        })
    }

    /// The leader's address of a partition, from cached metadata.
    pub fn leader(&self, topic: &str, partition: i32) -> Option<(i32, String)> {
        self.cluster.leader(topic, partition)
    }

    /// Produces one encoded batch to a partition, re-routing on NOT_LEADER_OR_FOLLOWER and
    /// retrying retriable errors (with metadata refresh and backoff) up to [`RETRIES_MAX`].
    pub async fn produce(
        &mut self,
        topic: &str,
        partition: i32,
        batch: Bytes,
        acks: i32,
    ) -> Result<ProduceResponse> {
        let mut backoff = Duration::from_millis(50);
        let mut last = None;
        for _ in 0..RETRIES_MAX {
            let Some((_, addr)) = self.leader(topic, partition) else {
                self.refresh().await.ok();
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
                // No leader known yet (election, or a topic so new that the broker we asked
                // has not applied it): retriable, as in Kafka.
                last = Some(match self.partitions(topic) {
                    Err(e) => e,
                    Ok(_) => ClientError {
                        code: ErrorCode::LeaderNotAvailable,
                        message: format!("LEADER_NOT_AVAILABLE: {topic}-{partition} has no leader"),
                    },
                });
                continue;
            };
            let req = ProduceRequest {
                correlation_id: 0,
                topic: topic.to_string(),
                partition,
                acks: Some(acks),
                timeout_ms: 10_000,
                payload: Some(produce_request::Payload::RecordBatch(batch.clone())),
            };
            match self.client(&addr)?.produce(req).await {
                Ok(r) => return Ok(r.into_inner()),
                Err(s) => {
                    let code = error_code(&s);
                    let err = ClientError::from_status(s.clone());
                    if !retriable(code) {
                        return Err(err);
                    }
                    last = Some(err);
                    if error_detail(&s).and_then(|d| d.leader).is_none()
                        || code != ErrorCode::NotLeaderOrFollower
                    {
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(1));
                    }
                    self.refresh().await.ok();
                }
            }
        }
        Err(last.unwrap_or(ClientError {
            code: ErrorCode::RequestTimedOut,
            message: "REQUEST_TIMED_OUT: retries exhausted".into(),
        }))
    }

    /// Fetches decoded records of a partition from `offset` (consumer view: below the HW).
    pub async fn fetch(
        &mut self,
        topic: &str,
        partition: i32,
        offset: i64,
        max_wait_ms: i32,
    ) -> Result<FetchResponse> {
        let mut backoff = Duration::from_millis(50);
        let mut last = None;
        for _ in 0..RETRIES_MAX {
            let Some((_, addr)) = self.leader(topic, partition) else {
                self.refresh().await.ok();
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            };
            let req = FetchRequest {
                topic: topic.to_string(),
                partition,
                fetch_offset: offset,
                max_bytes: 1 << 20,
                max_wait_ms,
                format: RecordFormat::Records as i32,
                ..Default::default()
            };
            match self.client(&addr)?.fetch(req).await {
                Ok(r) => return Ok(r.into_inner()),
                Err(s) => {
                    let code = error_code(&s);
                    let err = ClientError::from_status(s);
                    if !retriable(code) {
                        return Err(err);
                    }
                    last = Some(err);
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                    self.refresh().await.ok();
                }
            }
        }
        Err(last.unwrap_or(ClientError {
            code: ErrorCode::RequestTimedOut,
            message: "REQUEST_TIMED_OUT: retries exhausted".into(),
        }))
    }

    /// Earliest (`-2`) or latest (`-1`) offset of a partition.
    pub async fn list_offset(
        &mut self,
        topic: &str,
        partition: i32,
        timestamp: i64,
    ) -> Result<i64> {
        crate::consumer::list_offset(&self.cluster, topic, partition, timestamp).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn murmur2_partitioner_matches_kafka() {
        // Kafka's UtilsTest.testMurmur2 vectors.
        for (key, expected) in [
            ("21", -973932308i32),
            ("foobar", -790332482),
            ("a-little-bit-long-string", -985981536),
            ("a-little-bit-longer-string", -1486304829),
            (
                "lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8",
                -58897971,
            ),
        ] {
            assert_eq!(
                murmur2::murmur2(key.as_bytes(), murmur2::KAFKA_SEED) as i32,
                expected,
                "{key}"
            );
        }
        // toPositive(-973932308) % 10 = (-973932308 & 0x7fffffff) % 10
        assert_eq!(
            partition_for_key(b"21", 10),
            ((-973932308i32 & 0x7fff_ffff) % 10)
        );
    }
}
