//! `sluice quota set|list`: Kafka's client quotas (`producer_byte_rate`, `consumer_byte_rate`,
//! `request_percentage`) for a user, a client id, or both — each named or the default — with
//! `kafka-configs.sh`'s config names (`--add-config K=V,…`, `--delete-config K,…`) and
//! shorthands (`--producer-byte-rate N`, …).

use std::collections::BTreeMap;

use serde_json::json;
use sluice_client::Admin;
use sluice_metadata::quota::{
    CLIENT_ID, CONSUMER_BYTE_RATE, PRODUCER_BYTE_RATE, REQUEST_PERCENTAGE, USER,
};
use sluice_proto::v1::{
    AlterClientQuotaEntry, ClientQuotaEntry, ErrorCode, QuotaEntityPart, QuotaFilterComponent,
    QuotaMatch, QuotaOp,
};

use crate::output::{table, OutputFormat};

/// Who the quotas are for (kafka-configs' `--entity-type users|clients`).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct EntityArgs {
    /// The user (the principal's name without `User:`).
    #[arg(long, value_name = "NAME", conflicts_with = "user_default")]
    pub user: Option<String>,
    /// The default for every user (`<default>`).
    #[arg(long)]
    pub user_default: bool,
    /// The client id (Kafka's `client.id`; gRPC's `client-id` metadata).
    #[arg(long, value_name = "ID", conflicts_with = "client_default")]
    pub client_id: Option<String>,
    /// The default for every client id (`<default>`).
    #[arg(long)]
    pub client_default: bool,
}

/// What `quota set` changes.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct SetArgs {
    /// Bytes per second the entity may produce.
    #[arg(long, value_name = "BYTES")]
    pub producer_byte_rate: Option<f64>,
    /// Bytes per second the entity may fetch.
    #[arg(long, value_name = "BYTES")]
    pub consumer_byte_rate: Option<f64>,
    /// Percent of one request-handling thread the entity may use (100 = one thread).
    #[arg(long, value_name = "PERCENT")]
    pub request_percentage: Option<f64>,
    /// kafka-configs style: `producer_byte_rate=1048576,consumer_byte_rate=2097152`.
    #[arg(long, value_name = "K=V,...")]
    pub add_config: Option<String>,
    /// Quotas to remove: `producer_byte_rate,request_percentage`.
    #[arg(long, value_name = "K,...")]
    pub delete_config: Option<String>,
}

fn bad(msg: impl Into<String>) -> anyhow::Error {
    anyhow::anyhow!(msg.into())
}

/// The entity the flags name.
pub fn entity(e: &EntityArgs) -> anyhow::Result<Vec<QuotaEntityPart>> {
    let mut parts = Vec::new();
    if e.user.is_some() || e.user_default {
        parts.push(QuotaEntityPart {
            entity_type: USER.into(),
            name: e.user.clone(),
        });
    }
    if e.client_id.is_some() || e.client_default {
        parts.push(QuotaEntityPart {
            entity_type: CLIENT_ID.into(),
            name: e.client_id.clone(),
        });
    }
    if parts.is_empty() {
        return Err(bad(
            "name whose quotas: --user NAME, --user-default, --client-id ID or --client-default",
        ));
    }
    Ok(parts)
}

/// The changes the flags ask for: key → value (`None` removes).
pub fn ops(s: &SetArgs) -> anyhow::Result<Vec<QuotaOp>> {
    let mut wanted: BTreeMap<String, Option<f64>> = BTreeMap::new();
    let mut put = |key: &str, v: Option<f64>| -> anyhow::Result<()> {
        if wanted.insert(key.to_string(), v).is_some() {
            return Err(bad(format!("{key} is named twice")));
        }
        Ok(())
    };
    for (key, v) in [
        (PRODUCER_BYTE_RATE, s.producer_byte_rate),
        (CONSUMER_BYTE_RATE, s.consumer_byte_rate),
        (REQUEST_PERCENTAGE, s.request_percentage),
    ] {
        if let Some(v) = v {
            put(key, Some(v))?;
        }
    }
    for kv in s
        .add_config
        .iter()
        .flat_map(|c| c.split(','))
        .filter(|x| !x.is_empty())
    {
        let Some((k, v)) = kv.split_once('=') else {
            return Err(bad(format!("--add-config takes K=V, not {kv:?}")));
        };
        let v: f64 = v
            .trim()
            .parse()
            .map_err(|_| bad(format!("{k}: {v:?} is not a number")))?;
        put(k.trim(), Some(v))?;
    }
    for k in s
        .delete_config
        .iter()
        .flat_map(|c| c.split(','))
        .filter(|x| !x.is_empty())
    {
        put(k.trim(), None)?;
    }
    if wanted.is_empty() {
        return Err(bad(
            "nothing to change: --producer-byte-rate, --consumer-byte-rate, --request-percentage, \
             --add-config or --delete-config",
        ));
    }
    Ok(wanted
        .into_iter()
        .map(|(key, v)| QuotaOp {
            key,
            value: v.unwrap_or_default(),
            remove: v.is_none(),
        })
        .collect())
}

fn entity_json(parts: &[QuotaEntityPart]) -> serde_json::Value {
    let m: serde_json::Map<String, serde_json::Value> = parts
        .iter()
        .map(|p| (p.entity_type.clone(), json!(p.name)))
        .collect();
    serde_json::Value::Object(m)
}

fn entity_text(parts: &[QuotaEntityPart], t: &str) -> String {
    match parts.iter().find(|p| p.entity_type == t) {
        Some(QuotaEntityPart { name: Some(n), .. }) => n.clone(),
        Some(QuotaEntityPart { name: None, .. }) => "<default>".into(),
        None => "".into(),
    }
}

fn value_text(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

/// `quota set`.
pub async fn set(
    bootstrap: &str,
    out: OutputFormat,
    e: &EntityArgs,
    s: &SetArgs,
) -> anyhow::Result<()> {
    let parts = entity(e)?;
    let ops = ops(s)?;
    let admin = Admin::connect(bootstrap).await?;
    let r = admin
        .alter_client_quotas(
            vec![AlterClientQuotaEntry {
                entity: parts.clone(),
                ops: ops.clone(),
            }],
            false,
        )
        .await?;
    if let Some(res) = r.results.first() {
        if res.error_code != ErrorCode::None as i32 {
            let code = ErrorCode::try_from(res.error_code).unwrap_or(ErrorCode::UnknownServerError);
            return Err(bad(format!(
                "{}: {}",
                code.as_str_name(),
                res.error_message
            )));
        }
    }
    let set: BTreeMap<&str, f64> = ops
        .iter()
        .filter(|o| !o.remove)
        .map(|o| (o.key.as_str(), o.value))
        .collect();
    let removed: Vec<&str> = ops
        .iter()
        .filter(|o| o.remove)
        .map(|o| o.key.as_str())
        .collect();
    match out {
        OutputFormat::Json => println!(
            "{}",
            json!({"entity": entity_json(&parts), "set": set, "removed": removed})
        ),
        OutputFormat::Table => {
            let rows = ops
                .iter()
                .map(|o| {
                    vec![
                        entity_text(&parts, USER),
                        entity_text(&parts, CLIENT_ID),
                        o.key.clone(),
                        if o.remove {
                            "(removed)".into()
                        } else {
                            value_text(o.value)
                        },
                    ]
                })
                .collect();
            println!("{}", table(&["USER", "CLIENT-ID", "QUOTA", "VALUE"], rows));
        }
    }
    Ok(())
}

/// The filter `quota list` sends: the entity parts named, strictly when both are named.
pub fn filter(e: &EntityArgs) -> Vec<QuotaFilterComponent> {
    let mut c = Vec::new();
    for (t, name, default) in [
        (USER, &e.user, e.user_default),
        (CLIENT_ID, &e.client_id, e.client_default),
    ] {
        if let Some(n) = name {
            c.push(QuotaFilterComponent {
                entity_type: t.into(),
                r#match: QuotaMatch::Exact as i32,
                name: n.clone(),
            });
        } else if default {
            c.push(QuotaFilterComponent {
                entity_type: t.into(),
                r#match: QuotaMatch::Default as i32,
                name: String::new(),
            });
        }
    }
    c
}

/// `quota list`.
pub async fn list(bootstrap: &str, out: OutputFormat, e: &EntityArgs) -> anyhow::Result<()> {
    let admin = Admin::connect(bootstrap).await?;
    let mut entries: Vec<ClientQuotaEntry> = admin.describe_client_quotas(filter(e), false).await?;
    entries.sort_by_key(|q| {
        (
            entity_text(&q.entity, USER),
            entity_text(&q.entity, CLIENT_ID),
        )
    });
    match out {
        OutputFormat::Json => {
            let quotas: Vec<_> = entries
                .iter()
                .map(|q| {
                    let values: BTreeMap<&String, &f64> = q.values.iter().collect();
                    json!({"entity": entity_json(&q.entity), "values": values})
                })
                .collect();
            println!("{}", json!({ "quotas": quotas }));
        }
        OutputFormat::Table => {
            let mut rows = Vec::new();
            for q in &entries {
                let values: BTreeMap<&String, &f64> = q.values.iter().collect();
                for (k, v) in values {
                    rows.push(vec![
                        entity_text(&q.entity, USER),
                        entity_text(&q.entity, CLIENT_ID),
                        k.clone(),
                        value_text(*v),
                    ]);
                }
            }
            println!("{}", table(&["USER", "CLIENT-ID", "QUOTA", "VALUE"], rows));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_make_entities_and_changes() {
        let e = EntityArgs {
            user: Some("alice".into()),
            client_default: true,
            ..Default::default()
        };
        let parts = entity(&e).unwrap();
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[1].name, None, "the default client id");
        assert!(entity(&EntityArgs::default()).is_err());
        let s = SetArgs {
            producer_byte_rate: Some(1024.0),
            add_config: Some("consumer_byte_rate=2048, request_percentage=50".into()),
            delete_config: Some("other".into()),
            ..Default::default()
        };
        let o = ops(&s).unwrap();
        assert_eq!(o.len(), 4);
        assert!(o.iter().any(|x| x.key == "other" && x.remove));
        assert!(o
            .iter()
            .any(|x| x.key == REQUEST_PERCENTAGE && x.value == 50.0));
        let twice = SetArgs {
            producer_byte_rate: Some(1.0),
            add_config: Some("producer_byte_rate=2".into()),
            ..Default::default()
        };
        assert!(ops(&twice).unwrap_err().to_string().contains("twice"));
        assert!(ops(&SetArgs::default()).is_err());
        assert!(ops(&SetArgs {
            add_config: Some("producer_byte_rate=fast".into()),
            ..Default::default()
        })
        .is_err());
        assert_eq!(filter(&e).len(), 2);
    }
}
