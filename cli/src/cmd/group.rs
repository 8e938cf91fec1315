//! `sluice group list | describe | reset-offsets`, shaped like `kafka-consumer-groups`.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::json;
use sluice_client::consumer::{call_coordinator, list_offset};
use sluice_client::Cluster;
use sluice_proto::v1::*;

use crate::output::{table, OutputFormat};

fn state_name(s: i32) -> &'static str {
    match GroupState::try_from(s) {
        Ok(GroupState::Empty) => "Empty",
        Ok(GroupState::Assigning) => "Assigning",
        Ok(GroupState::Reconciling) => "Reconciling",
        Ok(GroupState::Stable) => "Stable",
        Ok(GroupState::Dead) => "Dead",
        _ => "Unknown",
    }
}

async fn cluster(bootstrap: &str) -> anyhow::Result<std::sync::Arc<Cluster>> {
    Ok(Cluster::connect(bootstrap, Duration::from_secs(15)).await?)
}

/// Lists the groups of every broker (each lists those it coordinates).
pub async fn list(bootstrap: &str, out: OutputFormat) -> anyhow::Result<()> {
    let c = cluster(bootstrap).await?;
    let mut groups: BTreeMap<String, i32> = BTreeMap::new();
    for (id, addr) in c.brokers() {
        let r = c
            .broker(&addr)?
            .list_groups(ListGroupsRequest::default())
            .await
            .map_err(|s| anyhow::anyhow!("broker {id} at {addr}: {}", s.message()))?;
        for g in r.into_inner().groups {
            groups.insert(g.group_id, g.group_state);
        }
    }
    match out {
        OutputFormat::Json => println!(
            "{}",
            serde_json::Value::Array(
                groups
                    .iter()
                    .map(|(g, s)| json!({"group": g, "state": state_name(*s)}))
                    .collect()
            )
        ),
        OutputFormat::Table => println!(
            "{}",
            table(
                &["GROUP", "STATE"],
                groups
                    .iter()
                    .map(|(g, s)| vec![g.clone(), state_name(*s).to_string()])
                    .collect()
            )
        ),
    }
    Ok(())
}

/// One row of `describe`.
struct Row {
    topic: String,
    partition: i32,
    current: i64,
    end: i64,
    member: Option<(String, String, String)>,
}

/// Describes a group: per partition committed offset, log end offset, LAG and owner.
pub async fn describe(bootstrap: &str, out: OutputFormat, group: &str) -> anyhow::Result<()> {
    anyhow::ensure!(!group.is_empty(), "the group id is empty");
    let c = cluster(bootstrap).await?;
    let req = DescribeGroupsRequest {
        group_ids: vec![group.to_string()],
    };
    let described = call_coordinator(&c, group, None, |mut b| {
        let req = req.clone();
        async move { b.describe_groups(req).await }
    })
    .await?
    .groups
    .into_iter()
    .next()
    .unwrap_or_default();
    if described.error_code != 0 {
        let code =
            ErrorCode::try_from(described.error_code).unwrap_or(ErrorCode::UnknownServerError);
        anyhow::bail!("{}: {}", code.as_str_name(), described.error_message);
    }
    let req = OffsetFetchRequest {
        group_id: group.to_string(),
        partitions: vec![],
    };
    let committed = call_coordinator(&c, group, None, |mut b| {
        let req = req.clone();
        async move { b.offset_fetch(req).await }
    })
    .await?;
    let mut rows: BTreeMap<(String, i32), Row> = BTreeMap::new();
    for r in committed.results {
        rows.insert(
            (r.topic.clone(), r.partition),
            Row {
                topic: r.topic,
                partition: r.partition,
                current: r.committed_offset,
                end: -1,
                member: None,
            },
        );
    }
    for m in &described.members {
        for tp in m.assignment.iter().flat_map(|a| a.topic_partitions.iter()) {
            for &p in &tp.partitions {
                let row = rows.entry((tp.topic.clone(), p)).or_insert(Row {
                    topic: tp.topic.clone(),
                    partition: p,
                    current: -1,
                    end: -1,
                    member: None,
                });
                row.member = Some((
                    m.member_id.clone(),
                    m.client_host.clone(),
                    m.client_id.clone(),
                ));
            }
        }
    }
    for row in rows.values_mut() {
        row.end = list_offset(&c, &row.topic, row.partition, -1)
            .await
            .unwrap_or(-1);
    }
    let lag = |r: &Row| (r.current >= 0 && r.end >= 0).then(|| (r.end - r.current).max(0));
    match out {
        OutputFormat::Json => println!(
            "{}",
            json!({
                "group": group,
                "state": state_name(described.group_state),
                "group_epoch": described.group_epoch,
                "assignor": described.assignor_name,
                "members": described.members.len(),
                "partitions": rows.values().map(|r| json!({
                    "topic": r.topic,
                    "partition": r.partition,
                    "current_offset": (r.current >= 0).then_some(r.current),
                    "log_end_offset": (r.end >= 0).then_some(r.end),
                    "lag": lag(r),
                    "consumer_id": r.member.as_ref().map(|m| &m.0),
                    "host": r.member.as_ref().map(|m| &m.1),
                    "client_id": r.member.as_ref().map(|m| &m.2),
                })).collect::<Vec<_>>(),
            })
        ),
        OutputFormat::Table => {
            println!(
                "Group {group} is {} (epoch {}, assignor {}, {} members)\n",
                state_name(described.group_state),
                described.group_epoch,
                described.assignor_name,
                described.members.len()
            );
            let dash = || "-".to_string();
            println!(
                "{}",
                table(
                    &[
                        "GROUP",
                        "TOPIC",
                        "PARTITION",
                        "CURRENT-OFFSET",
                        "LOG-END-OFFSET",
                        "LAG",
                        "CONSUMER-ID",
                        "HOST",
                        "CLIENT-ID"
                    ],
                    rows.values()
                        .map(|r| vec![
                            group.to_string(),
                            r.topic.clone(),
                            r.partition.to_string(),
                            if r.current >= 0 {
                                r.current.to_string()
                            } else {
                                dash()
                            },
                            if r.end >= 0 {
                                r.end.to_string()
                            } else {
                                dash()
                            },
                            lag(r).map_or_else(dash, |l| l.to_string()),
                            r.member.as_ref().map_or_else(dash, |m| m.0.clone()),
                            r.member.as_ref().map_or_else(dash, |m| m.1.clone()),
                            r.member.as_ref().map_or_else(dash, |m| m.2.clone()),
                        ])
                        .collect()
                )
            );
        }
    }
    Ok(())
}

/// Where `reset-offsets` moves the group.
#[derive(Debug, Clone, Copy)]
pub enum ResetTo {
    /// Log start.
    Earliest,
    /// Log end.
    Latest,
    /// A fixed offset (clamped to the log like Kafka's tool).
    Offset(i64),
}

/// Resets committed offsets of an empty group for its committed partitions (or all
/// partitions of `topic`).
pub async fn reset_offsets(
    bootstrap: &str,
    out: OutputFormat,
    group: &str,
    to: ResetTo,
    topic: Option<&str>,
    dry_run: bool,
) -> anyhow::Result<()> {
    anyhow::ensure!(!group.is_empty(), "the group id is empty");
    if let ResetTo::Offset(o) = to {
        anyhow::ensure!(o >= 0, "--to-offset {o} must not be negative");
    }
    let c = cluster(bootstrap).await?;
    let mut partitions: Vec<(String, i32)> = match topic {
        Some(t) => {
            let n = c.wait_for_topic(t, Duration::from_secs(2)).await?;
            (0..n).map(|p| (t.to_string(), p)).collect()
        }
        None => {
            let req = OffsetFetchRequest {
                group_id: group.to_string(),
                partitions: vec![],
            };
            call_coordinator(&c, group, None, |mut b| {
                let req = req.clone();
                async move { b.offset_fetch(req).await }
            })
            .await?
            .results
            .into_iter()
            .map(|r| (r.topic, r.partition))
            .collect()
        }
    };
    partitions.sort();
    anyhow::ensure!(
        !partitions.is_empty(),
        "group {group:?} has no committed offsets; name a topic with --topic"
    );
    let mut targets = Vec::new();
    for (t, p) in &partitions {
        let start = list_offset(&c, t, *p, -2).await?;
        let end = list_offset(&c, t, *p, -1).await?;
        let o = match to {
            ResetTo::Earliest => start,
            ResetTo::Latest => end,
            ResetTo::Offset(o) => o.clamp(start, end),
        };
        targets.push((t.clone(), *p, o));
    }
    if !dry_run {
        let req = OffsetCommitRequest {
            group_id: group.to_string(),
            member_id: String::new(),
            member_epoch: -1,
            group_instance_id: None,
            partitions: targets
                .iter()
                .map(|(t, p, o)| OffsetCommitPartition {
                    topic: t.clone(),
                    partition: *p,
                    committed_offset: *o,
                    committed_leader_epoch: None,
                    metadata: String::new(),
                })
                .collect(),
        };
        let resp = call_coordinator(&c, group, None, |mut b| {
            let req = req.clone();
            async move { b.offset_commit(req).await }
        })
        .await?;
        if let Some(bad) = resp.results.iter().find(|r| r.error_code != 0) {
            let code = ErrorCode::try_from(bad.error_code).unwrap_or(ErrorCode::UnknownServerError);
            anyhow::bail!(
                "{}: {}-{}: {}",
                code.as_str_name(),
                bad.topic,
                bad.partition,
                bad.error_message
            );
        }
    }
    match out {
        OutputFormat::Json => println!(
            "{}",
            json!({
                "group": group,
                "dry_run": dry_run,
                "partitions": targets.iter().map(|(t, p, o)| json!({"topic": t, "partition": p, "new_offset": o})).collect::<Vec<_>>(),
            })
        ),
        OutputFormat::Table => println!(
            "{}",
            table(
                &["GROUP", "TOPIC", "PARTITION", "NEW-OFFSET"],
                targets
                    .iter()
                    .map(|(t, p, o)| vec![
                        group.to_string(),
                        t.clone(),
                        p.to_string(),
                        o.to_string()
                    ])
                    .collect()
            )
        ),
    }
    Ok(())
}
