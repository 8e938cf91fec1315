//! `sluice topic create|list|describe|delete|alter-config`.

use anyhow::Context;
use serde_json::json;
use sluice_client::Admin;
use sluice_proto::v1::TopicDescription;

use crate::output::{table, OutputFormat};

fn parse_kv(items: &[String]) -> anyhow::Result<Vec<(String, String)>> {
    items
        .iter()
        .map(|s| {
            let (k, v) = s
                .split_once('=')
                .with_context(|| format!("config {s:?} must be key=value"))?;
            Ok((k.trim().to_string(), v.trim().to_string()))
        })
        .collect()
}

/// `topic create`.
pub async fn create(
    bootstrap: &str,
    out: OutputFormat,
    name: &str,
    partitions: Option<i32>,
    replicas: Option<i32>,
    configs: &[String],
) -> anyhow::Result<()> {
    let admin = Admin::connect(bootstrap).await?;
    let r = admin
        .create_topic(
            name,
            partitions.unwrap_or(-1),
            replicas.unwrap_or(-1),
            parse_kv(configs)?,
        )
        .await?;
    match out {
        OutputFormat::Json => println!(
            "{}",
            json!({"name": r.name, "topic_id": r.topic_id, "partitions": r.num_partitions,
                   "replication_factor": r.replication_factor})
        ),
        OutputFormat::Table => println!(
            "{}",
            table(
                &["TOPIC", "ID", "PARTITIONS", "REPLICAS", "STATUS"],
                vec![vec![
                    r.name,
                    r.topic_id,
                    r.num_partitions.to_string(),
                    r.replication_factor.to_string(),
                    "OK".into()
                ]]
            )
        ),
    }
    Ok(())
}

/// `topic list`.
pub async fn list(bootstrap: &str, out: OutputFormat) -> anyhow::Result<()> {
    let admin = Admin::connect(bootstrap).await?;
    let topics = admin.list_topics(true).await?;
    match out {
        OutputFormat::Json => {
            let v: Vec<_> = topics
                .iter()
                .map(|t| json!({"name": t.name, "topic_id": t.topic_id, "partitions": t.num_partitions,
                                "replication_factor": t.replication_factor, "internal": t.is_internal}))
                .collect();
            println!("{}", serde_json::Value::Array(v));
        }
        OutputFormat::Table => {
            let rows = topics
                .into_iter()
                .map(|t| {
                    vec![
                        t.name,
                        t.num_partitions.to_string(),
                        t.replication_factor.to_string(),
                    ]
                })
                .collect();
            println!("{}", table(&["NAME", "PARTITIONS", "REPLICAS"], rows));
        }
    }
    Ok(())
}

fn leader(id: i32) -> String {
    if id < 0 {
        "none".into()
    } else {
        id.to_string()
    }
}

fn ids(v: &[i32]) -> String {
    v.iter().map(i32::to_string).collect::<Vec<_>>().join(",")
}

/// JSON form of a topic description (also used by tests and scripts).
pub fn description_json(t: &TopicDescription) -> serde_json::Value {
    json!({
        "name": t.name,
        "topic_id": t.topic_id,
        "internal": t.is_internal,
        "partitions": t.partitions.iter().map(|p| json!({
            "partition": p.partition,
            "leader": p.leader_id,
            "leader_epoch": p.leader_epoch,
            "partition_epoch": p.partition_epoch,
            "replicas": p.replicas,
            "isr": p.isr,
            "offline_replicas": p.offline_replicas,
            "last_high_watermark": p.last_high_watermark,
        })).collect::<Vec<_>>(),
        "configs": t.configs.iter().map(|c| json!({
            "name": c.name,
            "value": c.value,
            "source": if c.is_default { "default" } else { "topic" },
        })).collect::<Vec<_>>(),
    })
}

/// `topic describe`.
pub async fn describe(bootstrap: &str, out: OutputFormat, name: &str) -> anyhow::Result<()> {
    let admin = Admin::connect(bootstrap).await?;
    let t = admin
        .describe_topics(vec![name.to_string()])
        .await?
        .into_iter()
        .next()
        .context("empty DescribeTopics response")?;
    if t.error_code != 0 {
        return Err(sluice_client::ClientError::from_code(t.error_code, &t.error_message).into());
    }
    match out {
        OutputFormat::Json => println!("{}", description_json(&t)),
        OutputFormat::Table => {
            let rf = t.partitions.first().map_or(0, |p| p.replicas.len());
            println!("SUMMARY\n=======");
            println!(
                "{}",
                table(
                    &["NAME", "ID", "PARTITIONS", "REPLICAS"],
                    vec![vec![
                        t.name.clone(),
                        t.topic_id.clone(),
                        t.partitions.len().to_string(),
                        rf.to_string()
                    ]]
                )
            );
            let overrides: Vec<Vec<String>> = t
                .configs
                .iter()
                .filter(|c| !c.is_default)
                .map(|c| {
                    vec![
                        c.name.clone(),
                        c.value.clone().unwrap_or_default(),
                        "topic".into(),
                    ]
                })
                .collect();
            if !overrides.is_empty() {
                println!("\nCONFIGS\n=======");
                println!("{}", table(&["KEY", "VALUE", "SOURCE"], overrides));
            }
            println!("\nPARTITIONS\n==========");
            let rows = t
                .partitions
                .iter()
                .map(|p| {
                    vec![
                        p.partition.to_string(),
                        leader(p.leader_id),
                        p.leader_epoch.to_string(),
                        p.partition_epoch.to_string(),
                        ids(&p.replicas),
                        ids(&p.isr),
                        ids(&p.offline_replicas),
                    ]
                })
                .collect();
            println!(
                "{}",
                table(
                    &[
                        "PARTITION",
                        "LEADER",
                        "EPOCH",
                        "PARTITION-EPOCH",
                        "REPLICAS",
                        "ISR",
                        "OFFLINE"
                    ],
                    rows
                )
            );
        }
    }
    Ok(())
}

/// `topic delete`.
pub async fn delete(bootstrap: &str, out: OutputFormat, name: &str) -> anyhow::Result<()> {
    let admin = Admin::connect(bootstrap).await?;
    let r = admin.delete_topic(name).await?;
    match out {
        OutputFormat::Json => println!(
            "{}",
            json!({"name": r.name, "topic_id": r.topic_id, "deleted": true})
        ),
        OutputFormat::Table => println!(
            "{}",
            table(&["TOPIC", "STATUS"], vec![vec![r.name, "DELETED".into()]])
        ),
    }
    Ok(())
}

/// `topic alter-config`.
/// `topic alter NAME --partitions N`.
pub async fn alter_partitions(
    bootstrap: &str,
    out: OutputFormat,
    name: &str,
    partitions: i32,
) -> anyhow::Result<()> {
    let admin = Admin::connect(bootstrap).await?;
    admin.create_partitions(name, partitions).await?;
    match out {
        OutputFormat::Json => println!("{}", json!({"name": name, "partitions": partitions})),
        OutputFormat::Table => println!(
            "{}",
            table(
                &["TOPIC", "PARTITIONS", "STATUS"],
                vec![vec![name.to_string(), partitions.to_string(), "OK".into()]]
            )
        ),
    }
    Ok(())
}

pub async fn alter_config(
    bootstrap: &str,
    out: OutputFormat,
    name: &str,
    set: &[String],
    delete: &[String],
) -> anyhow::Result<()> {
    anyhow::ensure!(
        !set.is_empty() || !delete.is_empty(),
        "nothing to change: give -c key=value or --delete-config key"
    );
    let admin = Admin::connect(bootstrap).await?;
    let mut ops: Vec<(String, Option<String>)> = parse_kv(set)?
        .into_iter()
        .map(|(k, v)| (k, Some(v)))
        .collect();
    ops.extend(delete.iter().map(|k| (k.clone(), None)));
    admin.alter_topic_configs(name, ops.clone()).await?;
    match out {
        OutputFormat::Json => println!(
            "{}",
            json!({"name": name, "changed": ops.iter().map(|(k, v)| json!({"key": k, "value": v})).collect::<Vec<_>>()})
        ),
        OutputFormat::Table => {
            let rows = ops
                .into_iter()
                .map(|(k, v)| vec![k, v.unwrap_or_else(|| "(default)".into()), "OK".into()])
                .collect();
            println!("{}", table(&["KEY", "VALUE", "STATUS"], rows));
        }
    }
    Ok(())
}
