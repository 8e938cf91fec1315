//! Topic-level configs: the keys Sluice understands (Kafka's names), their defaults and
//! their validation. Unknown keys and bad values are errors that name the key.

/// One known topic config.
#[derive(Debug, Clone, Copy)]
pub struct TopicConfigKey {
    /// Kafka's name.
    pub name: &'static str,
    /// Default when not overridden (Kafka's default unless noted).
    pub default: &'static str,
    /// What it does.
    pub doc: &'static str,
    kind: Kind,
}

#[derive(Debug, Clone, Copy)]
enum Kind {
    /// An integer in [min, max].
    Int(i64, i64),
    Bool,
    /// One of a fixed set.
    OneOf(&'static [&'static str]),
}

/// Every topic config key Sluice accepts.
pub const TOPIC_CONFIGS: &[TopicConfigKey] = &[
    TopicConfigKey {
        name: "retention.ms",
        default: "604800000",
        doc: "delete closed segments whose newest record is older than this; -1 = forever",
        kind: Kind::Int(-1, i64::MAX),
    },
    TopicConfigKey {
        name: "retention.bytes",
        default: "-1",
        doc: "delete the oldest closed segments while a partition is larger; -1 = no limit",
        kind: Kind::Int(-1, i64::MAX),
    },
    TopicConfigKey {
        name: "segment.bytes",
        default: "1073741824",
        doc: "roll a segment before it exceeds this many bytes",
        kind: Kind::Int(1024, i32::MAX as i64),
    },
    TopicConfigKey {
        name: "segment.ms",
        default: "604800000",
        doc: "roll a segment once its first record is this much older than the newest",
        kind: Kind::Int(1, i64::MAX),
    },
    TopicConfigKey {
        name: "min.insync.replicas",
        default: "1",
        doc: "acks=all needs at least this many in-sync replicas",
        kind: Kind::Int(1, i32::MAX as i64),
    },
    TopicConfigKey {
        name: "cleanup.policy",
        default: "delete",
        doc: "only `delete` (retention) is supported",
        kind: Kind::OneOf(&["delete"]),
    },
    TopicConfigKey {
        name: "max.message.bytes",
        default: "1048588",
        doc: "largest record batch accepted",
        kind: Kind::Int(61, 64 * 1024 * 1024),
    },
    TopicConfigKey {
        name: "unclean.leader.election.enable",
        default: "false",
        doc: "elect a leader outside the ISR when no ISR member is alive (may lose data)",
        kind: Kind::Bool,
    },
    TopicConfigKey {
        name: "index.interval.bytes",
        default: "4096",
        doc: "bytes between offset index entries",
        kind: Kind::Int(1, i32::MAX as i64),
    },
    TopicConfigKey {
        name: "flush.messages",
        default: "9223372036854775807",
        doc: "fsync after this many records (1 = every append)",
        kind: Kind::Int(1, i64::MAX),
    },
    TopicConfigKey {
        name: "compression.type",
        default: "producer",
        doc: "the codec batches are stored with: `producer` keeps the producer's, the others (`uncompressed`, `gzip`, `snappy`, `lz4`, `zstd`) recompress at the leader",
        kind: Kind::OneOf(&["producer", "uncompressed", "gzip", "snappy", "lz4", "zstd"]),
    },
    TopicConfigKey {
        name: "flush.ms",
        default: "9223372036854775807",
        doc: "fsync when unflushed data is this old",
        kind: Kind::Int(0, i64::MAX),
    },
];

/// Looks a key up.
pub fn topic_config_key(name: &str) -> Option<&'static TopicConfigKey> {
    TOPIC_CONFIGS.iter().find(|k| k.name == name)
}

/// Validates one `key=value` and returns its canonical form (what is stored: an integer
/// without spaces, `true`/`false`); the error names the key and what is wrong.
pub fn validate_topic_config(key: &str, value: &str) -> Result<String, String> {
    let k = topic_config_key(key).ok_or_else(|| format!("unknown topic config key {key:?}"))?;
    let trimmed = value.trim();
    match k.kind {
        Kind::Int(min, max) => {
            let v: i64 = trimmed
                .parse()
                .map_err(|_| format!("{key}={value:?} is not an integer"))?;
            if v < min || v > max {
                return Err(format!("{key}={v} is outside [{min}, {max}]"));
            }
            Ok(v.to_string())
        }
        Kind::Bool => {
            if trimmed != "true" && trimmed != "false" {
                return Err(format!("{key}={value:?} must be true or false"));
            }
            Ok(trimmed.to_string())
        }
        Kind::OneOf(allowed) => {
            if !allowed.contains(&trimmed) {
                return Err(format!("{key}={value:?} must be one of {allowed:?}"));
            }
            Ok(trimmed.to_string())
        }
    }
}

/// A topic's configs, parsed once into types (defaults filled in). Values stored before
/// configs were canonicalised (`" 2"`) parse the way they were validated: trimmed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicConfig {
    /// `retention.ms` (-1 = forever).
    pub retention_ms: i64,
    /// `retention.bytes` (-1 = no limit).
    pub retention_bytes: i64,
    /// `segment.bytes`.
    pub segment_bytes: i64,
    /// `segment.ms`.
    pub segment_ms: i64,
    /// `min.insync.replicas`.
    pub min_insync_replicas: usize,
    /// `max.message.bytes`.
    pub max_message_bytes: i64,
    /// `unclean.leader.election.enable`.
    pub unclean_leader_election_enable: bool,
    /// `index.interval.bytes`.
    pub index_interval_bytes: i64,
    /// `flush.messages`.
    pub flush_messages: i64,
    /// `flush.ms`.
    pub flush_ms: i64,
    /// `compression.type`: `None` keeps the producer's codec (`producer`), otherwise batches
    /// are stored with this one.
    pub compression: Option<sluice_record::Compression>,
}

impl TopicConfig {
    /// Parses a topic's overrides over the defaults. A value that does not parse (only
    /// possible in a hand-edited image) falls back to the default and is logged by the
    /// caller through [`TopicConfig::invalid`].
    pub fn parse(overrides: &std::collections::BTreeMap<String, String>) -> Self {
        Self::parse_with_defaults(overrides, &std::collections::BTreeMap::new())
    }

    /// [`TopicConfig::parse`] with a layer of defaults between the overrides and the
    /// built-in defaults: the cluster-wide dynamic broker configs
    /// ([`topic_defaults_of`]), keyed by topic config name.
    pub fn parse_with_defaults(
        overrides: &std::collections::BTreeMap<String, String>,
        defaults: &std::collections::BTreeMap<String, String>,
    ) -> Self {
        let get = |k: &str| -> Option<String> {
            overrides
                .get(k)
                .and_then(|v| validate_topic_config(k, v).ok())
                .or_else(|| {
                    defaults
                        .get(k)
                        .and_then(|v| validate_topic_config(k, v).ok())
                })
        };
        let int = |k: &str| -> i64 {
            get(k)
                .and_then(|v| v.parse().ok())
                .or_else(|| topic_config_key(k).and_then(|d| d.default.parse().ok()))
                .expect("every integer key has an integer default")
        };
        TopicConfig {
            retention_ms: int("retention.ms"),
            retention_bytes: int("retention.bytes"),
            segment_bytes: int("segment.bytes"),
            segment_ms: int("segment.ms"),
            min_insync_replicas: int("min.insync.replicas") as usize,
            max_message_bytes: int("max.message.bytes"),
            unclean_leader_election_enable: get("unclean.leader.election.enable")
                .is_some_and(|v| v == "true"),
            index_interval_bytes: int("index.interval.bytes"),
            flush_messages: int("flush.messages"),
            flush_ms: int("flush.ms"),
            compression: get("compression.type")
                .and_then(|v| sluice_record::Compression::parse(&v)),
        }
    }

    /// The overrides that fail validation (they were replaced by defaults in `parse`).
    pub fn invalid(overrides: &std::collections::BTreeMap<String, String>) -> Vec<String> {
        overrides
            .iter()
            .filter_map(|(k, v)| validate_topic_config(k, v).err())
            .collect()
    }
}

/// The effective value of `key` for a topic with `overrides`.
pub fn effective<'a>(
    overrides: &'a std::collections::BTreeMap<String, String>,
    key: &str,
) -> Option<&'a str> {
    overrides
        .get(key)
        .map(String::as_str)
        .or_else(|| topic_config_key(key).map(|k| k.default))
}

/// The effective value of `key` for a topic with `overrides` under the dynamic `defaults`
/// ([`topic_defaults_of`]), and where it comes from.
pub fn effective_with<'a>(
    overrides: &'a std::collections::BTreeMap<String, String>,
    defaults: &'a std::collections::BTreeMap<String, String>,
    key: &str,
) -> Option<(&'a str, ValueSource)> {
    if let Some(v) = overrides.get(key) {
        return Some((v, ValueSource::Topic));
    }
    if let Some(v) = defaults.get(key) {
        return Some((v, ValueSource::DynamicDefault));
    }
    topic_config_key(key).map(|k| (k.default, ValueSource::Default))
}

/// Where a topic's effective config value comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueSource {
    /// The topic's own override.
    Topic,
    /// A cluster-wide dynamic broker config (Kafka's DYNAMIC_DEFAULT_BROKER_CONFIG).
    DynamicDefault,
    /// The built-in default.
    Default,
}

/// One dynamic broker config Sluice applies while running (Kafka's name and meaning).
#[derive(Debug, Clone, Copy)]
pub struct BrokerConfigKey {
    /// Kafka's broker config name.
    pub name: &'static str,
    /// The topic config it is the default of.
    pub topic_key: &'static str,
}

/// The dynamic broker configs: the broker-level defaults of topic configs (Kafka's
/// `DynamicLogConfig` keys), set cluster-wide (resource "", `--entity-default`). Each
/// applies at once to every topic without an override of its own. They are cluster-wide
/// only in Sluice: replicas of one partition on different brokers must keep the same
/// retention, segment and size rules, or their logs diverge.
pub const DYNAMIC_BROKER_CONFIGS: &[BrokerConfigKey] = &[
    BrokerConfigKey {
        name: "log.retention.ms",
        topic_key: "retention.ms",
    },
    BrokerConfigKey {
        name: "log.retention.bytes",
        topic_key: "retention.bytes",
    },
    BrokerConfigKey {
        name: "log.segment.bytes",
        topic_key: "segment.bytes",
    },
    BrokerConfigKey {
        name: "log.roll.ms",
        topic_key: "segment.ms",
    },
    BrokerConfigKey {
        name: "min.insync.replicas",
        topic_key: "min.insync.replicas",
    },
    BrokerConfigKey {
        name: "message.max.bytes",
        topic_key: "max.message.bytes",
    },
    BrokerConfigKey {
        name: "unclean.leader.election.enable",
        topic_key: "unclean.leader.election.enable",
    },
    BrokerConfigKey {
        name: "log.index.interval.bytes",
        topic_key: "index.interval.bytes",
    },
    BrokerConfigKey {
        name: "log.flush.interval.messages",
        topic_key: "flush.messages",
    },
    BrokerConfigKey {
        name: "log.flush.interval.ms",
        topic_key: "flush.ms",
    },
    BrokerConfigKey {
        name: "compression.type",
        topic_key: "compression.type",
    },
];

/// Looks a dynamic broker config up.
pub fn broker_config_key(name: &str) -> Option<&'static BrokerConfigKey> {
    DYNAMIC_BROKER_CONFIGS.iter().find(|k| k.name == name)
}

/// Validates a dynamic broker config of `resource` ("" = cluster-wide, else a broker id)
/// and returns the value's canonical form; the error names the key and what is wrong.
pub fn validate_broker_config(resource: &str, key: &str, value: &str) -> Result<String, String> {
    let k = broker_config_key(key).ok_or_else(|| {
        format!(
            "{key:?} is not a dynamic broker config Sluice can change while running; these are: {}",
            DYNAMIC_BROKER_CONFIGS
                .iter()
                .map(|k| k.name)
                .collect::<Vec<_>>()
                .join(", ")
        )
    })?;
    if !resource.is_empty() {
        return Err(format!(
            "{key} can only be set cluster-wide (broker resource \"\", --entity-default), not for broker {resource}: every replica of a partition must apply the same value"
        ));
    }
    validate_topic_config(k.topic_key, value).map_err(|e| e.replacen(k.topic_key, key, 1))
}

/// The topic-level defaults of cluster-wide dynamic broker configs (broker key → value),
/// keyed by the topic config each is the default of. Values that no longer validate are
/// left out (the built-in default applies).
pub fn topic_defaults_of(
    broker: &std::collections::BTreeMap<String, String>,
) -> std::collections::BTreeMap<String, String> {
    broker
        .iter()
        .filter_map(|(k, v)| {
            let key = broker_config_key(k)?;
            let v = validate_topic_config(key.topic_key, v).ok()?;
            Some((key.topic_key.to_string(), v))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_names_the_key() {
        assert!(validate_topic_config("retention.ms", "1000").is_ok());
        assert!(validate_topic_config("retention.ms", "-1").is_ok());
        let e = validate_topic_config("retention.ms", "soon").unwrap_err();
        assert!(e.contains("retention.ms"), "{e}");
        let e = validate_topic_config("retention.msx", "1").unwrap_err();
        assert!(e.contains("unknown") && e.contains("retention.msx"), "{e}");
        assert!(validate_topic_config("min.insync.replicas", "0").is_err());
        assert!(validate_topic_config("cleanup.policy", "compact").is_err());
        assert!(validate_topic_config("unclean.leader.election.enable", "yes").is_err());
    }

    #[test]
    fn dynamic_broker_defaults_sit_between_topic_overrides_and_built_in_defaults() {
        // Kafka's order: topic override > dynamic cluster-wide default > built-in default.
        use std::collections::BTreeMap;
        let broker: BTreeMap<String, String> = [
            ("log.retention.ms".to_string(), "1000".to_string()),
            ("message.max.bytes".to_string(), "2048".to_string()),
            (
                "unclean.leader.election.enable".to_string(),
                "true".to_string(),
            ),
            ("compression.type".to_string(), "zstd".to_string()),
        ]
        .into();
        let defaults = topic_defaults_of(&broker);
        assert_eq!(defaults.get("max.message.bytes").unwrap(), "2048");
        let mut overrides = BTreeMap::new();
        overrides.insert("retention.ms".to_string(), "5".to_string());
        let c = TopicConfig::parse_with_defaults(&overrides, &defaults);
        assert_eq!(c.retention_ms, 5, "the topic's own override wins");
        assert_eq!(c.max_message_bytes, 2048, "the dynamic default");
        assert!(c.unclean_leader_election_enable);
        assert_eq!(c.compression, Some(sluice_record::Compression::Zstd));
        assert_eq!(c.segment_bytes, 1_073_741_824, "the built-in default");
        assert_eq!(
            effective_with(&overrides, &defaults, "max.message.bytes"),
            Some(("2048", ValueSource::DynamicDefault))
        );
        assert_eq!(
            effective_with(&overrides, &defaults, "retention.ms"),
            Some(("5", ValueSource::Topic))
        );
        assert_eq!(
            effective_with(&overrides, &defaults, "segment.bytes"),
            Some(("1073741824", ValueSource::Default))
        );
    }

    #[test]
    fn dynamic_broker_configs_are_validated_by_name_and_scope() {
        assert_eq!(
            validate_broker_config("", "log.retention.ms", " 60000").unwrap(),
            "60000"
        );
        let e = validate_broker_config("", "log.retention.ms", "soon").unwrap_err();
        assert!(
            e.contains("log.retention.ms") && e.contains("not an integer"),
            "{e}"
        );
        let e = validate_broker_config("", "num.io.threads", "4").unwrap_err();
        assert!(
            e.contains("num.io.threads") && e.contains("log.retention.ms"),
            "{e}"
        );
        let e = validate_broker_config("1", "log.retention.ms", "1000").unwrap_err();
        assert!(e.contains("cluster-wide") && e.contains("broker 1"), "{e}");
        assert!(validate_broker_config("", "min.insync.replicas", "0").is_err());
    }

    #[test]
    fn values_are_stored_canonical_and_parsed_as_validated() {
        // Review defect 11: " 2" validated trimmed but was parsed untrimmed (falling back to 1).
        assert_eq!(
            validate_topic_config("min.insync.replicas", " 2").unwrap(),
            "2"
        );
        assert_eq!(
            validate_topic_config("retention.ms", "+1000 ").unwrap(),
            "1000"
        );
        assert_eq!(
            validate_topic_config("unclean.leader.election.enable", " true").unwrap(),
            "true"
        );
        let mut o = std::collections::BTreeMap::new();
        o.insert("min.insync.replicas".to_string(), " 2".to_string());
        o.insert("retention.bytes".to_string(), "4096 ".to_string());
        let c = TopicConfig::parse(&o);
        assert_eq!(c.min_insync_replicas, 2);
        assert_eq!(c.retention_bytes, 4096);
        assert_eq!(c.retention_ms, 604_800_000, "default");
        assert!(TopicConfig::invalid(&o).is_empty());
    }
}
