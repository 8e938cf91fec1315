//! `sluice cluster status`: the first thing an operator runs. One table of controllers
//! (leader, term, lag) and one of brokers (address, fenced, partitions led,
//! under-replicated), plus offline partitions. `--watch` refreshes.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::json;
use sluice_client::Admin;
use sluice_proto::v1::QuorumNodeStatus;

use crate::output::{table, OutputFormat};

/// Prints the status once, or every `watch` until interrupted.
pub async fn status(
    bootstrap: &str,
    out: OutputFormat,
    watch: Option<Duration>,
) -> anyhow::Result<()> {
    loop {
        let doc = collect(bootstrap).await?;
        match out {
            OutputFormat::Json => println!("{doc}"),
            OutputFormat::Table => {
                if watch.is_some() {
                    // Clear the screen and home the cursor, like `watch`.
                    print!("\x1b[2J\x1b[H");
                }
                print_tables(&doc);
            }
        }
        let Some(every) = watch else { return Ok(()) };
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = crate::cmd::shutdown_signal() => return Ok(()),
        }
    }
}

async fn collect(bootstrap: &str) -> anyhow::Result<serde_json::Value> {
    let admin = Admin::connect(bootstrap).await?;
    let cluster = admin.describe_cluster().await?;
    let quorum = admin.describe_quorum().await?;
    let names: Vec<String> = admin
        .list_topics(true)
        .await?
        .into_iter()
        .map(|t| t.name)
        .collect();
    let topics = if names.is_empty() {
        Vec::new()
    } else {
        admin.describe_topics(names).await?
    };
    // Per broker: partitions led and led partitions with a short ISR.
    let mut led: BTreeMap<i32, (u64, u64)> = BTreeMap::new();
    let (mut partitions, mut offline, mut under) = (0u64, 0u64, 0u64);
    for t in &topics {
        for p in &t.partitions {
            partitions += 1;
            if p.leader_id < 0 {
                offline += 1;
                continue;
            }
            let e = led.entry(p.leader_id).or_default();
            e.0 += 1;
            if p.isr.len() < p.replicas.len() {
                e.1 += 1;
                under += 1;
            }
        }
    }
    let status_name = |s: i32| match QuorumNodeStatus::try_from(s) {
        Ok(QuorumNodeStatus::Leader) => "leader",
        Ok(QuorumNodeStatus::Follower) => "follower",
        Ok(QuorumNodeStatus::Observer) => "observer",
        _ => "unknown",
    };
    let controllers: Vec<_> = quorum
        .voters
        .iter()
        .map(|v| {
            json!({
                "id": v.node_id,
                "address": format!("{}:{}", v.host, v.port),
                "role": status_name(v.status),
                "log_end_offset": v.log_end_offset,
                "lag": v.lag,
            })
        })
        .collect();
    let brokers: Vec<_> = cluster
        .brokers
        .iter()
        .map(|b| {
            let (leads, under) = led.get(&b.broker_id).copied().unwrap_or_default();
            let ep = b.endpoint.clone().unwrap_or_default();
            json!({
                "id": b.broker_id,
                "address": format!("{}:{}", ep.host, ep.port),
                "fenced": b.fenced,
                "in_controlled_shutdown": b.in_controlled_shutdown,
                "partitions_led": leads,
                "under_replicated": under,
                "last_heartbeat_age_ms": b.last_heartbeat_age_ms,
            })
        })
        .collect();
    Ok(json!({
        "cluster_id": cluster.cluster_id,
        "controller": {
            "leader_id": quorum.leader_id,
            "term": quorum.leader_epoch,
            "high_watermark": quorum.high_watermark,
            "max_follower_lag": quorum.max_follower_lag,
        },
        "controllers": controllers,
        "brokers": brokers,
        "topics": topics.len(),
        "partitions": partitions,
        "offline_partitions": offline,
        "under_replicated_partitions": under,
    }))
}

fn print_tables(doc: &serde_json::Value) {
    let s = |v: &serde_json::Value| match v {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    println!(
        "Cluster {}: active controller {}, term {}; {} topics, {} partitions, {} offline, {} under-replicated\n",
        s(&doc["cluster_id"]),
        s(&doc["controller"]["leader_id"]),
        s(&doc["controller"]["term"]),
        s(&doc["topics"]),
        s(&doc["partitions"]),
        s(&doc["offline_partitions"]),
        s(&doc["under_replicated_partitions"]),
    );
    let rows = doc["controllers"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| {
            vec![
                s(&c["id"]),
                s(&c["address"]),
                s(&c["role"]),
                s(&c["log_end_offset"]),
                s(&c["lag"]),
            ]
        })
        .collect();
    println!(
        "{}\n",
        table(
            &["CONTROLLER", "ADDRESS", "ROLE", "LOG-END-OFFSET", "LAG"],
            rows
        )
    );
    let rows = doc["brokers"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|b| {
            vec![
                s(&b["id"]),
                s(&b["address"]),
                if b["fenced"] == true { "yes" } else { "no" }.to_string(),
                s(&b["partitions_led"]),
                s(&b["under_replicated"]),
            ]
        })
        .collect();
    println!(
        "{}",
        table(
            &["BROKER", "ADDRESS", "FENCED", "LEADS", "UNDER-REPLICATED"],
            rows
        )
    );
}
