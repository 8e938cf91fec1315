//! Client quotas on this broker (issue #16): each request's usage — records bytes produced,
//! records bytes fetched, request-handling time — is charged to the quota that applies to its
//! caller and client id ([`sluice_metadata::quota::resolve`]), in a token bucket per usage key
//! ([`sluice_metadata::quota::usage_key`]). A client over its quota is throttled, as Kafka
//! does (KIP-219): the answer carries `throttle_time_ms`, and the connection is not read again
//! until that time has passed (on gRPC, the answer itself waits). Nothing is ever dropped or
//! refused for a quota. Brokers (node certificates) are never throttled.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use sluice_metadata::acl::Caller;
use sluice_metadata::quota::{
    resolve, usage_key, TokenBucket, CONSUMER_BYTE_RATE, PRODUCER_BYTE_RATE, REQUEST_PERCENTAGE,
};
use sluice_metadata::MetadataImage;

/// A client may use this much of its rate at once (Kafka's `quota.window.size.seconds`, 1 s):
/// over any interval `T` a throttled client gets at most `rate × (T + 1 s)` plus one request.
pub const QUOTA_BURST: Duration = Duration::from_secs(1);

/// Buckets kept before idle (full) ones are dropped.
const BUCKETS_KEPT: usize = 10_000;

/// Longest throttle answered at once (Kafka bounds it by its quota window too); usage beyond
/// it stays owed and throttles the following requests.
pub const THROTTLE_MAX: Duration = Duration::from_secs(30);

/// What a request used.
#[derive(Debug, Clone, Copy, Default)]
pub struct Usage {
    /// Records bytes produced.
    pub produced: usize,
    /// Records bytes fetched.
    pub fetched: usize,
    /// Time spent handling it (not parked waiting).
    pub handling: Duration,
}

/// A bucket's key: the quota key and whose usage it counts.
type BucketKey = (&'static str, Vec<(String, String)>);

/// The broker's quota buckets.
pub struct Quotas {
    origin: Instant,
    buckets: Mutex<HashMap<BucketKey, TokenBucket>>,
    /// Charges made (idle buckets are pruned every 1024th once there are many).
    charges: AtomicU64,
}

impl Default for Quotas {
    fn default() -> Self {
        Quotas {
            origin: Instant::now(),
            buckets: Mutex::new(HashMap::new()),
            charges: AtomicU64::new(0),
        }
    }
}

/// The user a quota sees: the principal's name without `User:` (`ANONYMOUS` for
/// unauthenticated clients, as in Kafka).
pub fn quota_user(caller: &Caller) -> &str {
    caller
        .principal
        .strip_prefix("User:")
        .unwrap_or(&caller.principal)
}

impl Quotas {
    /// Charges `usage` to the caller's quotas and returns how long it must now be held back
    /// (the longest of its quotas' throttles, at most [`THROTTLE_MAX`]).
    pub fn charge(
        &self,
        image: &MetadataImage,
        caller: &Caller,
        client_id: &str,
        usage: Usage,
    ) -> Duration {
        if caller.node || image.client_quotas.is_empty() {
            return Duration::ZERO;
        }
        let user = quota_user(caller);
        let now = self.origin.elapsed();
        let mut throttle = Duration::ZERO;
        let mut buckets = self.buckets.lock().expect("quota buckets lock");
        for (key, amount) in [
            (PRODUCER_BYTE_RATE, usage.produced as f64),
            (CONSUMER_BYTE_RATE, usage.fetched as f64),
            // Percent of one thread: 100 × seconds used.
            (REQUEST_PERCENTAGE, usage.handling.as_secs_f64() * 100.0),
        ] {
            if amount <= 0.0 && key != REQUEST_PERCENTAGE {
                continue;
            }
            let Some((entity, rate)) = resolve(&image.client_quotas, user, client_id, key) else {
                continue;
            };
            let bucket = buckets
                .entry((key, usage_key(entity, user, client_id)))
                .or_insert_with(|| TokenBucket::new(rate, QUOTA_BURST, now));
            throttle = throttle.max(bucket.record(rate, amount, now));
        }
        if buckets.len() > BUCKETS_KEPT
            && self
                .charges
                .fetch_add(1, Ordering::Relaxed)
                .is_multiple_of(1024)
        {
            buckets.retain(|_, b| !b.is_full(now));
        }
        throttle.min(THROTTLE_MAX)
    }
}

/// A gRPC request's client id: its `client-id` metadata ("" when absent), the counterpart of
/// the Kafka request header's.
pub fn client_id_of<T>(r: &tonic::Request<T>) -> String {
    r.metadata()
        .get(CLIENT_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string()
}

/// The gRPC metadata key naming the client id.
pub const CLIENT_ID_HEADER: &str = "client-id";

/// Records bytes a gRPC produce carries (a RecordBatch's length, or keys, values and headers
/// of a record list).
pub fn produce_bytes(req: &sluice_proto::v1::ProduceRequest) -> usize {
    use sluice_proto::v1::produce_request::Payload;
    match &req.payload {
        Some(Payload::RecordBatch(b)) => b.len(),
        Some(Payload::Records(list)) => list
            .records
            .iter()
            .map(|r| {
                r.key.as_ref().map_or(0, |k| k.len())
                    + r.value.as_ref().map_or(0, |v| v.len())
                    + r.headers
                        .iter()
                        .map(|h| h.key.len() + h.value.as_ref().map_or(0, |v| v.len()))
                        .sum::<usize>()
            })
            .sum(),
        None => 0,
    }
}

/// Kafka's `throttle_time_ms` for a throttle.
pub fn throttle_ms(throttle: Duration) -> i32 {
    throttle.as_millis().min(i32::MAX as u128) as i32
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_metadata::quota::{QuotaEntity, QuotaValue};
    use std::sync::Arc;

    fn image(entity: &[(&str, Option<&str>)], key: &str, v: f64) -> MetadataImage {
        let entity: QuotaEntity = entity
            .iter()
            .map(|(t, n)| (t.to_string(), n.map(str::to_string)))
            .collect();
        MetadataImage {
            client_quotas: Arc::new([(entity, [(key.to_string(), QuotaValue(v))].into())].into()),
            ..Default::default()
        }
    }

    fn user(name: &str) -> Caller {
        Caller::user(format!("User:{name}"), "127.0.0.1")
    }

    #[test]
    fn a_user_quota_is_shared_by_its_clients_and_a_default_is_per_user() {
        let q = Quotas::default();
        let produced = |n| Usage {
            produced: n,
            ..Default::default()
        };
        let alice = image(&[("user", Some("alice"))], PRODUCER_BYTE_RATE, 1000.0);
        // 1000 of burst, then 1000 over: ~1 s, whichever client id sends it.
        assert_eq!(
            q.charge(&alice, &user("alice"), "a", produced(1000)),
            Duration::ZERO
        );
        let t = q.charge(&alice, &user("alice"), "b", produced(1000));
        assert!(
            t > Duration::from_millis(900) && t <= Duration::from_secs(1),
            "{t:?}"
        );
        assert_eq!(
            q.charge(&alice, &user("bob"), "a", produced(5000)),
            Duration::ZERO,
            "bob has no quota"
        );
        let every = image(&[("user", None)], PRODUCER_BYTE_RATE, 1000.0);
        let q = Quotas::default();
        assert_eq!(
            q.charge(&every, &user("alice"), "", produced(1000)),
            Duration::ZERO
        );
        assert_eq!(
            q.charge(&every, &user("bob"), "", produced(1000)),
            Duration::ZERO,
            "bob's own bucket"
        );
        assert!(q.charge(&every, &user("bob"), "", produced(1000)) > Duration::ZERO);
        // Fetch bytes do not count against a produce quota; nodes are never throttled.
        let q = Quotas::default();
        let fetched = Usage {
            fetched: 1 << 20,
            ..Default::default()
        };
        assert_eq!(
            q.charge(&every, &user("carol"), "", fetched),
            Duration::ZERO
        );
        let node = Caller {
            node: true,
            ..user("broker-1")
        };
        assert_eq!(
            q.charge(&every, &node, "", produced(1 << 30)),
            Duration::ZERO
        );
    }

    #[test]
    fn request_time_is_charged_in_percent_of_a_thread() {
        let q = Quotas::default();
        let img = image(&[("client-id", None)], REQUEST_PERCENTAGE, 10.0);
        let busy = Usage {
            handling: Duration::from_millis(100),
            ..Default::default()
        };
        // 10 % of a thread: 100 ms per second; the burst is 100 ms.
        assert_eq!(q.charge(&img, &user("a"), "x", busy), Duration::ZERO);
        let t = q.charge(&img, &user("a"), "x", busy);
        assert!(t > Duration::from_millis(900), "{t:?}");
        assert_eq!(
            q.charge(&img, &user("a"), "other", busy),
            Duration::ZERO,
            "per client id"
        );
    }
}
