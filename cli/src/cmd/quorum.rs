//! `sluice quorum status`: the metadata quorum like `kafka-metadata-quorum describe
//! --status --replication`; `sluice quorum add-controller` / `remove-controller`: online voter
//! changes like `kafka-metadata-quorum add-controller` / `remove-controller` (KIP-853).

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
                    "directory_id": n.directory_id,
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
                        if n.directory_id.is_empty() {
                            "-".to_string()
                        } else {
                            n.directory_id.clone()
                        },
                    ]
                })
                .collect();
            println!(
                "{}",
                table(
                    &[
                        "NODE-ID",
                        "ENDPOINT",
                        "LOG-END-OFFSET",
                        "LAG",
                        "STATUS",
                        "DIRECTORY-ID"
                    ],
                    rows
                )
            );
        }
    }
    Ok(())
}

/// A voter change.
pub enum Change {
    /// Add controller `id` running at `address`.
    Add {
        /// Node id.
        id: i32,
        /// host:port.
        address: String,
    },
    /// Remove voter `id`.
    Remove {
        /// Node id.
        id: i32,
    },
}

/// Runs (or with `dry_run` only reports) a voter change and prints the voter set before and
/// after and whether a majority of the new set answers.
pub async fn change(
    bootstrap: &str,
    out: OutputFormat,
    change: Change,
    dry_run: bool,
) -> anyhow::Result<()> {
    let admin = Admin::connect(bootstrap).await?;
    let (what, r) = match &change {
        Change::Add { id, address } => (
            format!("add controller {id} at {address}"),
            admin.add_controller(*id, address, dry_run).await?,
        ),
        Change::Remove { id } => (
            format!("remove controller {id}"),
            admin.remove_controller(*id, dry_run).await?,
        ),
    };
    let ids = |v: &[i32]| {
        v.iter()
            .map(|i| i.to_string())
            .collect::<Vec<_>>()
            .join(",")
    };
    match out {
        OutputFormat::Json => println!(
            "{}",
            json!({
                "change": what,
                "dry_run": dry_run,
                "voters_before": r.voters_before,
                "voters_after": r.voters_after,
                "voters_up_after": r.voters_up_after,
                "keeps_majority": r.keeps_majority,
                "applied": r.applied,
                "directory_id": r.directory_id,
            })
        ),
        OutputFormat::Table => {
            println!(
                "Change:           {what}{}",
                if dry_run { " (dry run)" } else { "" }
            );
            println!("VotersBefore:     [{}]", ids(&r.voters_before));
            println!("VotersAfter:      [{}]", ids(&r.voters_after));
            println!("VotersUpAfter:    [{}]", ids(&r.voters_up_after));
            println!(
                "KeepsMajority:    {}",
                if r.keeps_majority {
                    "yes"
                } else {
                    "no: the change would be refused"
                }
            );
            if !r.directory_id.is_empty() {
                println!("DirectoryId:      {}", r.directory_id);
            }
            println!("Applied:          {}", if r.applied { "yes" } else { "no" });
        }
    }
    Ok(())
}
