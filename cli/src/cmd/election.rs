//! `sluice leader-election --preferred|--unclean [--topic T [--partition P]] [--dry-run]
//! [--yes]`: Kafka's ElectLeaders. An unclean election can lose acknowledged records, so it
//! runs only with `--yes` (after a `--dry-run` that shows what would be elected).

use serde_json::json;
use sluice_client::Admin;
use sluice_proto::v1::{ElectLeaderResult, ElectionType, ErrorCode};

use crate::output::{table, OutputFormat};

/// The flags.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ElectionArgs {
    /// Make each partition's first replica its leader (when it is in the ISR).
    #[arg(long, conflicts_with = "unclean", required_unless_present = "unclean")]
    pub preferred: bool,
    /// Give leaderless partitions a live replica as leader even outside the ISR (records only
    /// the old ISR had are lost). Needs --dry-run or --yes.
    #[arg(long)]
    pub unclean: bool,
    /// Only this topic (default: every partition of the cluster).
    #[arg(long)]
    pub topic: Option<String>,
    /// Only this partition of --topic.
    #[arg(long, requires = "topic")]
    pub partition: Option<i32>,
    /// Show what would be elected; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Run an unclean election.
    #[arg(long)]
    pub yes: bool,
}

/// The partitions to elect for, or `None` for all.
async fn partitions(admin: &Admin, a: &ElectionArgs) -> anyhow::Result<Option<Vec<(String, i32)>>> {
    let Some(topic) = &a.topic else {
        return Ok(None);
    };
    if let Some(p) = a.partition {
        return Ok(Some(vec![(topic.clone(), p)]));
    }
    let t = admin
        .describe_topics(vec![topic.clone()])
        .await?
        .into_iter()
        .next()
        .ok_or_else(|| anyhow::anyhow!("topic {topic:?} was not described"))?;
    if t.error_code != ErrorCode::None as i32 {
        let code = ErrorCode::try_from(t.error_code).unwrap_or(ErrorCode::UnknownServerError);
        anyhow::bail!("{}: {}", code.as_str_name(), t.error_message);
    }
    Ok(Some(
        (0..t.partitions.len() as i32)
            .map(|p| (topic.clone(), p))
            .collect(),
    ))
}

fn outcome(r: &ElectLeaderResult, dry_run: bool) -> String {
    match ErrorCode::try_from(r.error_code).unwrap_or(ErrorCode::UnknownServerError) {
        ErrorCode::None if dry_run => "WOULD_ELECT".into(),
        ErrorCode::None => "ELECTED".into(),
        code => code.as_str_name().to_string(),
    }
}

/// `leader-election`.
pub async fn run(bootstrap: &str, out: OutputFormat, a: &ElectionArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        !a.unclean || a.dry_run || a.yes,
        "an unclean election can lose acknowledged records (those only the previous ISR held): \
         run it with --dry-run to see what would be elected (`sluice doctor` shows what would be \
         lost), then with --yes"
    );
    let admin = Admin::connect(bootstrap).await?;
    let election = if a.unclean {
        ElectionType::Unclean
    } else {
        ElectionType::Preferred
    };
    let wanted = partitions(&admin, a).await?;
    let mut results = admin.elect_leaders(election, wanted, a.dry_run).await?;
    results.sort_by(|x, y| (&x.topic, x.partition).cmp(&(&y.topic, y.partition)));
    let failed = results.iter().any(|r| {
        !matches!(
            ErrorCode::try_from(r.error_code),
            Ok(ErrorCode::None) | Ok(ErrorCode::ElectionNotNeeded)
        )
    });
    match out {
        OutputFormat::Json => {
            let rows: Vec<_> = results
                .iter()
                .map(|r| {
                    json!({
                        "topic": r.topic,
                        "partition": r.partition,
                        "outcome": outcome(r, a.dry_run),
                        "leader": r.leader,
                        "message": r.error_message,
                    })
                })
                .collect();
            println!("{}", json!({"dry_run": a.dry_run, "results": rows}));
        }
        OutputFormat::Table => {
            let rows = results
                .iter()
                .map(|r| {
                    vec![
                        r.topic.clone(),
                        r.partition.to_string(),
                        outcome(r, a.dry_run),
                        if r.leader >= 0 {
                            r.leader.to_string()
                        } else {
                            "-".into()
                        },
                        r.error_message.clone(),
                    ]
                })
                .collect();
            println!(
                "{}",
                table(&["TOPIC", "PARTITION", "OUTCOME", "LEADER", "WHY"], rows)
            );
        }
    }
    anyhow::ensure!(!failed, "some partitions could not be elected (see above)");
    Ok(())
}
