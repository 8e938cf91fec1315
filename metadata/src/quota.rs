//! Client quotas (Kafka's model, KIP-13/KIP-55/KIP-124): byte rates for produce and fetch and
//! a share of request-handling time, set for a user, a client id, or both, each named or the
//! `<default>`, replicated in the metadata log. Brokers enforce them by throttling — the
//! response carries `throttle_time_ms` and the connection is not read for that long — never by
//! dropping data. This module holds the pure parts: entities, validation, which quota applies
//! to a client, and the token bucket that turns usage into a throttle time.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Entity type: a user (the principal's name without `User:`).
pub const USER: &str = "user";
/// Entity type: a client id (the Kafka request header's, or gRPC's `client-id` metadata).
pub const CLIENT_ID: &str = "client-id";

/// Bytes per second a client may produce (records bytes of produce requests).
pub const PRODUCER_BYTE_RATE: &str = "producer_byte_rate";
/// Bytes per second a client may fetch (records bytes of fetch responses).
pub const CONSUMER_BYTE_RATE: &str = "consumer_byte_rate";
/// Percent of one request-handling thread's time a client may use (Kafka's
/// `request_percentage`: 100 = one thread; time parked waiting for replication, for new data
/// or for a group is not counted).
pub const REQUEST_PERCENTAGE: &str = "request_percentage";

/// The quota keys brokers enforce.
pub const KEYS: [&str; 3] = [PRODUCER_BYTE_RATE, CONSUMER_BYTE_RATE, REQUEST_PERCENTAGE];

/// At most this many quota entities (each a small map): a bound on the image.
pub const ENTITIES_MAX: usize = 100_000;

/// Who a quota is for: entity type ([`USER`], [`CLIENT_ID`]) → name, `None` being the
/// `<default>` of that type. One or both types.
pub type QuotaEntity = BTreeMap<String, Option<String>>;

/// A quota's value: a finite, positive number (Kafka's doubles). Compared by bits so images
/// stay `Eq`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct QuotaValue(pub f64);

impl PartialEq for QuotaValue {
    fn eq(&self, other: &Self) -> bool {
        self.0.to_bits() == other.0.to_bits()
    }
}
impl Eq for QuotaValue {}

/// Every quota of the cluster: entity → key → value.
pub type ClientQuotas = BTreeMap<QuotaEntity, BTreeMap<String, QuotaValue>>;

/// Why an entity or a quota is refused (Kafka answers INVALID_REQUEST).
pub fn validate_entity(entity: &QuotaEntity) -> Result<(), String> {
    if entity.is_empty() {
        return Err("a quota entity names a user, a client id or both".into());
    }
    for (t, name) in entity {
        match t.as_str() {
            USER | CLIENT_ID => {}
            "ip" => return Err("IP quotas (connection_creation_rate) are not supported".into()),
            other => {
                return Err(format!(
                    "unknown quota entity type {other:?} (user, client-id)"
                ))
            }
        }
        if let Some(n) = name {
            if n.len() > 1024 {
                return Err(format!("a {t} name of {} bytes (at most 1024)", n.len()));
            }
            if t == USER && n.is_empty() {
                return Err("an empty user name (use the default instead)".into());
            }
        }
    }
    Ok(())
}

/// Why a quota key or value is refused.
pub fn validate_quota(key: &str, value: Option<f64>) -> Result<(), String> {
    if !KEYS.contains(&key) {
        return Err(match key {
            "controller_mutation_rate" => {
                "controller_mutation_rate is not enforced by Sluice (producer_byte_rate, \
                 consumer_byte_rate, request_percentage)"
                    .into()
            }
            _ => format!(
                "unknown quota {key:?} (producer_byte_rate, consumer_byte_rate, request_percentage)"
            ),
        });
    }
    if let Some(v) = value {
        if !v.is_finite() || v <= 0.0 {
            return Err(format!("{key} must be a positive number, not {v}"));
        }
    }
    Ok(())
}

/// The quota `key` that applies to a client, with the entity that holds it, in Kafka's order
/// of precedence: user and client id, user and default client id, user, default user and
/// client id, default user and default client id, default user, client id, default client id.
pub fn resolve<'a>(
    quotas: &'a ClientQuotas,
    user: &str,
    client_id: &str,
    key: &str,
) -> Option<(&'a QuotaEntity, f64)> {
    if quotas.is_empty() {
        return None;
    }
    let u = || Some(user.to_string());
    let c = || Some(client_id.to_string());
    let candidates: [&[(&str, Option<String>)]; 8] = [
        &[(USER, u()), (CLIENT_ID, c())],
        &[(USER, u()), (CLIENT_ID, None)],
        &[(USER, u())],
        &[(USER, None), (CLIENT_ID, c())],
        &[(USER, None), (CLIENT_ID, None)],
        &[(USER, None)],
        &[(CLIENT_ID, c())],
        &[(CLIENT_ID, None)],
    ];
    candidates.iter().find_map(|parts| {
        let entity: QuotaEntity = parts
            .iter()
            .map(|(t, n)| (t.to_string(), n.clone()))
            .collect();
        let (e, values) = quotas.get_key_value(&entity)?;
        values.get(key).map(|v| (e, v.0))
    })
}

/// Whose usage a quota counts, the way Kafka tags its quota sensors: for every entity type the
/// quota names (by name or as the default) the client's actual value, so a user's quota is
/// shared by all of the user's client ids while `<default>` gives every user one of its own.
pub fn usage_key(entity: &QuotaEntity, user: &str, client_id: &str) -> Vec<(String, String)> {
    entity
        .keys()
        .map(|t| {
            let actual = if t == USER { user } else { client_id };
            (t.clone(), actual.to_string())
        })
        .collect()
}

/// Whether a client-side filter component matches an entity (Kafka's
/// DescribeClientQuotas): `Exact(name)`, `Default`, or `Specified` (any name, not the
/// default).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Match {
    /// That name.
    Exact(String),
    /// The `<default>`.
    Default,
    /// Any name but the default.
    Specified,
}

/// Whether `entity` matches the filter `components` (type → match); with `strict`, the
/// entity has no other types.
pub fn filter_matches(entity: &QuotaEntity, components: &[(String, Match)], strict: bool) -> bool {
    if strict && entity.len() != components.len() {
        return false;
    }
    components.iter().all(|(t, m)| match (entity.get(t), m) {
        (Some(Some(n)), Match::Exact(want)) => n == want,
        (Some(None), Match::Default) => true,
        (Some(Some(_)), Match::Specified) => true,
        _ => false,
    })
}

/// A token bucket measuring a client's usage against a rate. Usage is recorded after the
/// request was served (the bucket may go negative: a request is never refused for its size);
/// a negative balance is the throttle time, `deficit / rate`. The bucket holds at most
/// `rate × burst` tokens, so over any interval of `T` a throttled client gets at most
/// `rate × (T + burst)` plus one request. (Not `governor`: its GCRA refuses a cost above its
/// burst and cannot charge a cost after the fact.)
#[derive(Debug, Clone)]
pub struct TokenBucket {
    rate: f64,
    burst: Duration,
    tokens: f64,
    at: Duration,
}

impl TokenBucket {
    /// A full bucket at time `now` (time since any fixed origin).
    pub fn new(rate: f64, burst: Duration, now: Duration) -> TokenBucket {
        TokenBucket {
            rate,
            burst,
            tokens: rate * burst.as_secs_f64(),
            at: now,
        }
    }

    /// Charges `amount` at `now` (at the rate in force, which may have changed) and returns
    /// how long the client must wait before its next request.
    pub fn record(&mut self, rate: f64, amount: f64, now: Duration) -> Duration {
        self.refill(rate, now);
        self.tokens -= amount;
        self.throttle()
    }

    /// The throttle time at `now` without charging anything.
    pub fn throttle_at(&mut self, rate: f64, now: Duration) -> Duration {
        self.refill(rate, now);
        self.throttle()
    }

    /// Whether the bucket is full at `now` (its client has been idle long enough to be
    /// forgotten).
    pub fn is_full(&mut self, now: Duration) -> bool {
        let rate = self.rate;
        self.refill(rate, now);
        self.tokens >= rate * self.burst.as_secs_f64()
    }

    fn refill(&mut self, rate: f64, now: Duration) {
        let elapsed = now.saturating_sub(self.at).as_secs_f64();
        self.at = self.at.max(now);
        self.rate = rate;
        let cap = rate * self.burst.as_secs_f64();
        self.tokens = (self.tokens + rate * elapsed).min(cap);
    }

    fn throttle(&self) -> Duration {
        if self.tokens >= 0.0 || self.rate <= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64((-self.tokens / self.rate).min(3600.0))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn entity(parts: &[(&str, Option<&str>)]) -> QuotaEntity {
        parts
            .iter()
            .map(|(t, n)| (t.to_string(), n.map(str::to_string)))
            .collect()
    }

    fn set(q: &mut ClientQuotas, parts: &[(&str, Option<&str>)], v: f64) {
        q.entry(entity(parts))
            .or_default()
            .insert(PRODUCER_BYTE_RATE.into(), QuotaValue(v));
    }

    #[test]
    fn the_most_specific_quota_applies_in_kafkas_order() {
        let levels: [&[(&str, Option<&str>)]; 8] = [
            &[(USER, Some("alice")), (CLIENT_ID, Some("app"))],
            &[(USER, Some("alice")), (CLIENT_ID, None)],
            &[(USER, Some("alice"))],
            &[(USER, None), (CLIENT_ID, Some("app"))],
            &[(USER, None), (CLIENT_ID, None)],
            &[(USER, None)],
            &[(CLIENT_ID, Some("app"))],
            &[(CLIENT_ID, None)],
        ];
        // With levels i.. set, level i wins.
        for i in 0..levels.len() {
            let mut q = ClientQuotas::new();
            for (j, parts) in levels.iter().enumerate().skip(i) {
                set(&mut q, parts, (j + 1) as f64);
            }
            let (e, v) = resolve(&q, "alice", "app", PRODUCER_BYTE_RATE).unwrap();
            assert_eq!(v, (i + 1) as f64, "level {i}");
            assert_eq!(*e, entity(levels[i]));
        }
        let mut q = ClientQuotas::new();
        set(&mut q, &[(USER, Some("bob"))], 5.0);
        assert_eq!(resolve(&q, "alice", "app", PRODUCER_BYTE_RATE), None);
        assert_eq!(resolve(&q, "bob", "app", CONSUMER_BYTE_RATE), None);
        assert_eq!(resolve(&q, "bob", "x", PRODUCER_BYTE_RATE).unwrap().1, 5.0);
    }

    #[test]
    fn usage_is_counted_per_actual_user_and_client_for_the_types_the_quota_names() {
        let user_default = entity(&[(USER, None)]);
        assert_eq!(
            usage_key(&user_default, "alice", "app"),
            vec![(USER.to_string(), "alice".to_string())]
        );
        let both = entity(&[(USER, Some("alice")), (CLIENT_ID, None)]);
        assert_eq!(
            usage_key(&both, "alice", "app").len(),
            2,
            "each client id of alice has its own"
        );
    }

    #[test]
    fn entities_and_quotas_are_validated() {
        assert!(validate_entity(&entity(&[(USER, Some("a"))])).is_ok());
        assert!(validate_entity(&entity(&[(CLIENT_ID, None), (USER, None)])).is_ok());
        assert!(validate_entity(&QuotaEntity::new()).is_err());
        assert!(validate_entity(&entity(&[("ip", Some("1.2.3.4"))]))
            .unwrap_err()
            .contains("IP"));
        assert!(validate_entity(&entity(&[("group", Some("g"))]))
            .unwrap_err()
            .contains("group"));
        assert!(validate_entity(&entity(&[(USER, Some(""))])).is_err());
        assert!(validate_quota(PRODUCER_BYTE_RATE, Some(1024.0)).is_ok());
        assert!(validate_quota(REQUEST_PERCENTAGE, None).is_ok());
        for bad in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            assert!(
                validate_quota(CONSUMER_BYTE_RATE, Some(bad)).is_err(),
                "{bad}"
            );
        }
        assert!(validate_quota("controller_mutation_rate", Some(1.0))
            .unwrap_err()
            .contains("not enforced"));
        assert!(validate_quota("bytes", Some(1.0)).is_err());
    }

    #[test]
    fn filters_match_exact_default_and_specified_names() {
        let e = entity(&[(USER, Some("alice")), (CLIENT_ID, None)]);
        let c = |t: &str, m: Match| (t.to_string(), m);
        assert!(filter_matches(
            &e,
            &[c(USER, Match::Exact("alice".into()))],
            false
        ));
        assert!(!filter_matches(
            &e,
            &[c(USER, Match::Exact("alice".into()))],
            true
        ));
        assert!(filter_matches(
            &e,
            &[c(USER, Match::Specified), c(CLIENT_ID, Match::Default)],
            true
        ));
        assert!(!filter_matches(
            &e,
            &[c(CLIENT_ID, Match::Specified)],
            false
        ));
        assert!(filter_matches(&e, &[], false));
    }

    #[test]
    fn a_bucket_throttles_by_the_deficit_over_the_rate() {
        let s = Duration::from_secs;
        let mut b = TokenBucket::new(100.0, s(1), s(0));
        assert_eq!(b.record(100.0, 100.0, s(0)), Duration::ZERO, "the burst");
        assert_eq!(b.record(100.0, 200.0, s(0)), s(2), "200 over: 2 s");
        assert_eq!(b.throttle_at(100.0, s(1)), s(1), "refilled for 1 s");
        assert_eq!(b.throttle_at(100.0, s(2)), Duration::ZERO);
        assert!(!b.is_full(s(2)));
        assert!(b.is_full(s(10)), "capped at the burst");
        assert_eq!(b.record(100.0, 100.0, s(10)), Duration::ZERO);
        // A lower rate applies at once.
        assert_eq!(b.record(50.0, 50.0, s(10)), s(1));
    }

    proptest! {
        /// A client that waits out every throttle gets at most rate × (T + burst) plus one
        /// request over any run, and at least rate × T minus one request when it always has
        /// more to send.
        #[test]
        fn a_client_honouring_throttles_is_held_to_the_rate(
            rate in 10.0f64..10_000.0,
            sizes in proptest::collection::vec(1.0f64..5_000.0, 1..300),
        ) {
            let burst = Duration::from_secs(1);
            let mut b = TokenBucket::new(rate, burst, Duration::ZERO);
            let mut now = Duration::ZERO;
            let mut sent = 0.0;
            let biggest = sizes.iter().cloned().fold(0.0, f64::max);
            for size in &sizes {
                sent += size;
                now += b.record(rate, *size, now);
            }
            let t = now.as_secs_f64();
            prop_assert!(sent <= rate * (t + 1.0) + biggest + 1e-6);
            prop_assert!(sent + 1e-6 >= rate * t);
        }
    }
}
