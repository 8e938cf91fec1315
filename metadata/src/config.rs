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

/// Validates one `key=value`; the error names the key and what is wrong.
pub fn validate_topic_config(key: &str, value: &str) -> Result<(), String> {
    let k = topic_config_key(key).ok_or_else(|| format!("unknown topic config key {key:?}"))?;
    match k.kind {
        Kind::Int(min, max) => {
            let v: i64 = value
                .trim()
                .parse()
                .map_err(|_| format!("{key}={value:?} is not an integer"))?;
            if v < min || v > max {
                return Err(format!("{key}={v} is outside [{min}, {max}]"));
            }
        }
        Kind::Bool => {
            if value != "true" && value != "false" {
                return Err(format!("{key}={value:?} must be true or false"));
            }
        }
        Kind::OneOf(allowed) => {
            if !allowed.contains(&value) {
                return Err(format!("{key}={value:?} must be one of {allowed:?}"));
            }
        }
    }
    Ok(())
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
}
