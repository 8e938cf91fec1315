//! `sluice quorum status`: the metadata quorum like `kafka-metadata-quorum describe
//! --status --replication`.

use serde_json::json;
use sluice_client::Admin;
use sluice_proto::v1::QuorumNodeStatus;

use crate::output::{table, OutputFormat};

/// Prints leader, term, high watermark and per-voter replication.
pub async fn status(bootstrap: &str, out: OutputFormat) -> anyhow::Result<()> {
    let admin = Admin::connect(bootstrap).await?;
    let q = admin.describe_quorum().await?;
    let status_name = |s: i32| match QuorumNodeStatus::try_from(s) {
        Ok(QuorumNodeStatus::Leader) => "Leader",
        Ok(QuorumNodeStatus::Follower) => "Follower",
        Ok(QuorumNodeStatus::Observer) => "Observer",
        _ => "Unknown",
    };
    let nodes: Vec<_> = q.voters.iter().chain(q.observers.iter()).collect();
    match out {
        OutputFormat::Json => println!(
            "{}",
            json!({
                "cluster_id": q.cluster_id,
                "leader_id": q.leader_id,
                "leader_epoch": q.leader_epoch,
                "high_watermark": q.high_watermark,
                "max_follower_lag": q.max_follower_lag,
                "voters": q.voters.iter().map(|v| v.node_id).collect::<Vec<_>>(),
                "observers": q.observers.iter().map(|v| v.node_id).collect::<Vec<_>>(),
                "replication": nodes.iter().map(|n| json!({
                    "node_id": n.node_id,
                    "host": n.host,
                    "port": n.port,
                    "log_end_offset": n.log_end_offset,
                    "lag": n.lag,
                    "status": status_name(n.status),
                })).collect::<Vec<_>>(),
            })
        ),
        OutputFormat::Table => {
            let voters: Vec<String> = q.voters.iter().map(|v| v.node_id.to_string()).collect();
            println!("ClusterId:        {}", q.cluster_id);
            println!("LeaderId:         {}", q.leader_id);
            println!("LeaderEpoch:      {}", q.leader_epoch);
            println!("HighWatermark:    {}", q.high_watermark);
            println!("MaxFollowerLag:   {}", q.max_follower_lag);
            println!("CurrentVoters:    [{}]", voters.join(","));
            println!();
            let rows = nodes
                .iter()
                .map(|n| {
                    vec![
                        n.node_id.to_string(),
                        format!("{}:{}", n.host, n.port),
                        n.log_end_offset.to_string(),
                        n.lag.to_string(),
                        status_name(n.status).to_string(),
                    ]
                })
                .collect();
            println!(
                "{}",
                table(
                    &["NODE-ID", "ENDPOINT", "LOG-END-OFFSET", "LAG", "STATUS"],
                    rows
                )
            );
        }
    }
    Ok(())
}
