//! `sluice doctor`: for every partition that is offline, under-replicated or under its min ISR,
//! why — which replica lags by how much, which broker is fenced or does not answer, which replica
//! reports a storage error — and for an offline partition what `sluice leader-election --unclean`
//! would elect and lose: the offsets between the candidate's log end and the last high watermark
//! a leader reported. Facts come from the controllers (topics, ISRs, fencing, the last reported
//! high watermarks) and from every broker's `DescribeReplicas`; [`diagnose`] decides, purely.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::json;
use sluice_client::Admin;
use sluice_proto::v1::broker_client::BrokerClient;
use sluice_proto::v1::{DescribeReplicasRequest, ErrorCode, ReplicaStatus};

use crate::output::{table, OutputFormat};

/// How long a broker has to answer `DescribeReplicas` before it counts as unreachable.
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// A partition as the controllers describe it.
#[derive(Debug, Clone, PartialEq)]
pub struct PartitionView {
    /// Topic.
    pub topic: String,
    /// Index.
    pub partition: i32,
    /// Leader, -1 for none.
    pub leader: i32,
    /// Replicas in assignment order.
    pub replicas: Vec<i32>,
    /// In-sync replicas.
    pub isr: Vec<i32>,
    /// The topic's effective `min.insync.replicas`.
    pub min_isr: usize,
    /// The last high watermark a leader reported to the active controller.
    pub last_high_watermark: Option<i64>,
}

/// A broker as the controllers know it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BrokerView {
    /// Fenced (its session expired, or not caught up after registering).
    pub fenced: bool,
}

/// What a broker answered about its replicas: by (topic, partition), or why it did not.
pub type Probe = Result<BTreeMap<(String, i32), ReplicaStatus>, String>;

/// What a forced election on an offline partition would do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UncleanElection {
    /// The replica it would elect.
    pub candidate: i32,
    /// The candidate's log end offset; `None` when its broker did not report it.
    pub candidate_log_end: Option<i64>,
    /// The last high watermark known (reported by a leader, or held by a live replica).
    pub last_high_watermark: Option<i64>,
    /// Offsets `[lost_from, lost_to)` acknowledged up to the last HW but not on the candidate.
    pub lost: Option<(i64, i64)>,
}

/// One unhealthy partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// Topic.
    pub topic: String,
    /// Index.
    pub partition: i32,
    /// `offline`, `under-min-isr` or `under-replicated` (the worst that applies).
    pub state: &'static str,
    /// One line per cause.
    pub reasons: Vec<String>,
    /// For an offline partition: what a forced election would do (`None`: no live replica).
    pub unclean: Option<UncleanElection>,
}

fn status_of<'a>(
    probes: &'a BTreeMap<i32, Probe>,
    broker: i32,
    p: &PartitionView,
) -> Option<&'a ReplicaStatus> {
    probes
        .get(&broker)?
        .as_ref()
        .ok()?
        .get(&(p.topic.clone(), p.partition))
}

/// Why `broker` cannot serve, if it cannot: unregistered, fenced, unreachable, or a replica
/// error of its own for `p`.
fn broker_problem(
    brokers: &BTreeMap<i32, BrokerView>,
    probes: &BTreeMap<i32, Probe>,
    broker: i32,
    p: &PartitionView,
) -> Option<String> {
    match brokers.get(&broker) {
        None => return Some(format!("broker {broker} is not registered")),
        Some(b) if b.fenced => {
            return Some(format!(
                "broker {broker} is fenced (no heartbeat within broker.session.timeout.ms, or not caught up with the metadata log)"
            ))
        }
        Some(_) => {}
    }
    match probes.get(&broker) {
        Some(Err(e)) => Some(format!("broker {broker} does not answer: {e}")),
        None => Some(format!("broker {broker} was not asked")),
        Some(Ok(_)) => match status_of(probes, broker, p) {
            None => Some(format!(
                "broker {broker} did not report {}-{}",
                p.topic, p.partition
            )),
            Some(s) if s.error_code != ErrorCode::None as i32 => {
                let code =
                    ErrorCode::try_from(s.error_code).unwrap_or(ErrorCode::UnknownServerError);
                Some(format!(
                    "broker {broker}: {}: {}",
                    code.as_str_name(),
                    s.error_message
                ))
            }
            Some(_) => None,
        },
    }
}

/// Diagnoses every partition; healthy ones are left out.
pub fn diagnose(
    parts: &[PartitionView],
    brokers: &BTreeMap<i32, BrokerView>,
    probes: &BTreeMap<i32, Probe>,
) -> Vec<Finding> {
    let mut findings = Vec::new();
    for p in parts {
        let mut reasons = Vec::new();
        let mut state = None;
        let mut unclean = None;
        if p.leader < 0 {
            state = Some("offline");
            let isr: Vec<String> = p.isr.iter().map(|b| b.to_string()).collect();
            reasons.push(format!("no leader; ISR [{}]", isr.join(", ")));
            for b in &p.isr {
                if let Some(why) = broker_problem(brokers, probes, *b, p) {
                    reasons.push(why);
                }
            }
            // The replica the controller would pick (its `elect_leader`): an unfenced ISR
            // member first, else the first unfenced replica in replica order.
            let unfenced = |b: &i32| brokers.get(b).is_some_and(|v| !v.fenced);
            let candidate = p
                .replicas
                .iter()
                .find(|b| p.isr.contains(b) && unfenced(b))
                .or_else(|| p.replicas.iter().find(|b| unfenced(b)))
                .map(|b| {
                    let leo = status_of(probes, *b, p)
                        .filter(|s| s.error_code == ErrorCode::None as i32)
                        .map(|s| s.log_end_offset);
                    (*b, leo)
                });
            let live_hw = p
                .replicas
                .iter()
                .filter_map(|b| status_of(probes, *b, p))
                .filter(|s| s.error_code == ErrorCode::None as i32)
                .map(|s| s.high_watermark)
                .max();
            let last_hw = match (p.last_high_watermark, live_hw) {
                (Some(a), Some(b)) => Some(a.max(b)),
                (a, b) => a.or(b),
            };
            match candidate {
                Some((c, None)) => {
                    reasons.push(format!(
                        "an unclean election would elect broker {c}, whose log end is unknown ({}): what it would lose cannot be said",
                        broker_problem(brokers, probes, c, p).unwrap_or_default()
                    ));
                    unclean = Some(UncleanElection {
                        candidate: c,
                        candidate_log_end: None,
                        last_high_watermark: last_hw,
                        lost: None,
                    });
                }
                Some((c, Some(leo))) => {
                    let lost = last_hw.filter(|hw| *hw > leo).map(|hw| (leo, hw));
                    reasons.push(match (lost, last_hw) {
                        (Some((from, to)), _) => format!(
                            "an unclean election would elect broker {c} and lose offsets {from}..{to} ({} records acknowledged up to the last high watermark)",
                            to - from
                        ),
                        (None, Some(hw)) => format!(
                            "an unclean election would elect broker {c}, whose log reaches the last high watermark {hw}: nothing acknowledged is lost"
                        ),
                        (None, None) => format!(
                            "an unclean election would elect broker {c} (log end {leo}); the last high watermark is unknown (no leader reported one to this controller), so records after {leo} may be lost"
                        ),
                    });
                    unclean = Some(UncleanElection {
                        candidate: c,
                        candidate_log_end: Some(leo),
                        last_high_watermark: last_hw,
                        lost,
                    });
                }
                None => reasons.push(
                    "no live replica: an unclean election cannot elect anyone; bring a replica's broker back".into(),
                ),
            }
        }
        if p.isr.len() < p.min_isr && p.leader >= 0 {
            state.get_or_insert("under-min-isr");
            reasons.push(format!(
                "ISR of {} is under min.insync.replicas={}: acks=all writes are refused (NOT_ENOUGH_REPLICAS)",
                p.isr.len(),
                p.min_isr
            ));
        }
        let out_of_isr: Vec<i32> = p
            .replicas
            .iter()
            .copied()
            .filter(|b| !p.isr.contains(b))
            .collect();
        if !out_of_isr.is_empty() {
            state.get_or_insert("under-replicated");
            let leader = (p.leader >= 0)
                .then(|| status_of(probes, p.leader, p))
                .flatten()
                .filter(|s| s.error_code == ErrorCode::None as i32 && s.is_leader);
            for b in out_of_isr {
                let problem = broker_problem(brokers, probes, b, p);
                let fenced = brokers.get(&b).is_none_or(|v| v.fenced);
                if let Some(why) = &problem {
                    reasons.push(why.clone());
                }
                if fenced {
                    continue;
                }
                let progress = leader.and_then(|l| {
                    l.followers
                        .iter()
                        .find(|f| f.broker_id == b)
                        .map(|f| (l, f))
                });
                reasons.push(match progress {
                    Some((l, f)) if f.log_end_offset >= 0 => format!(
                        "broker {b} lags by {} records (at offset {} of the leader's {}), last caught up {:.1} s ago",
                        (l.log_end_offset - f.log_end_offset).max(0),
                        f.log_end_offset,
                        l.log_end_offset,
                        f.caught_up_ms_ago as f64 / 1000.0
                    ),
                    Some((l, f)) => format!(
                        "broker {b} has not fetched from the leader in this leader epoch (the leader's log ends at {}), last caught up {:.1} s ago",
                        l.log_end_offset,
                        f.caught_up_ms_ago as f64 / 1000.0
                    ),
                    None if problem.is_some() => continue,
                    None => match (status_of(probes, b, p), p.last_high_watermark) {
                        (Some(s), Some(hw)) => format!(
                            "broker {b} is at offset {} (the last high watermark reported is {hw}); the leader's view is not available",
                            s.log_end_offset
                        ),
                        _ => format!("broker {b} is out of the ISR; the leader's view is not available"),
                    },
                });
            }
        }
        if let Some(state) = state {
            findings.push(Finding {
                topic: p.topic.clone(),
                partition: p.partition,
                state,
                reasons,
                unclean,
            });
        }
    }
    findings
}

/// Asks every registered broker for its replicas, all at once.
async fn probe(addrs: &BTreeMap<i32, String>) -> BTreeMap<i32, Probe> {
    let mut asks = tokio::task::JoinSet::new();
    for (id, addr) in addrs.clone() {
        asks.spawn(async move {
            let r = async {
                let channel = sluice_proto::transport::internal_channel(&addr)?;
                let mut c =
                    BrokerClient::with_interceptor(channel, sluice_proto::auth::CallCredentials);
                let resp = tokio::time::timeout(
                    PROBE_TIMEOUT,
                    c.describe_replicas(DescribeReplicasRequest { partitions: vec![] }),
                )
                .await
                .map_err(|_| format!("no answer within {PROBE_TIMEOUT:?} from {addr}"))?
                .map_err(|s| format!("{addr}: {}", s.message()))?;
                Ok::<_, String>(
                    resp.into_inner()
                        .replicas
                        .into_iter()
                        .map(|s| ((s.topic.clone(), s.partition), s))
                        .collect(),
                )
            }
            .await;
            (id, r)
        });
    }
    let mut probes = BTreeMap::new();
    while let Some(done) = asks.join_next().await {
        if let Ok((id, r)) = done {
            probes.insert(id, r);
        }
    }
    probes
}

/// `sluice doctor`.
pub async fn run(bootstrap: &str, out: OutputFormat, topic: Option<&str>) -> anyhow::Result<()> {
    let admin = Admin::connect(bootstrap).await?;
    let cluster = admin.describe_cluster().await?;
    let mut brokers = BTreeMap::new();
    let mut addrs = BTreeMap::new();
    for b in &cluster.brokers {
        brokers.insert(b.broker_id, BrokerView { fenced: b.fenced });
        if let Some(e) = &b.endpoint {
            addrs.insert(b.broker_id, format!("{}:{}", e.host, e.port));
        }
    }
    let names = topic.map(|t| vec![t.to_string()]).unwrap_or_default();
    let mut parts = Vec::new();
    for t in admin.describe_topics(names).await? {
        if t.error_code != ErrorCode::None as i32 {
            let code = ErrorCode::try_from(t.error_code).unwrap_or(ErrorCode::UnknownServerError);
            anyhow::bail!("{}: {}", code.as_str_name(), t.error_message);
        }
        let min_isr = t
            .configs
            .iter()
            .find(|c| c.name == "min.insync.replicas")
            .and_then(|c| c.value.as_deref())
            .and_then(|v| v.parse().ok())
            .unwrap_or(1);
        for p in &t.partitions {
            parts.push(PartitionView {
                topic: t.name.clone(),
                partition: p.partition,
                leader: p.leader_id,
                replicas: p.replicas.clone(),
                isr: p.isr.clone(),
                min_isr,
                last_high_watermark: (p.last_high_watermark >= 0).then_some(p.last_high_watermark),
            });
        }
    }
    let probes = probe(&addrs).await;
    let findings = diagnose(&parts, &brokers, &probes);
    match out {
        OutputFormat::Json => {
            let rows: Vec<_> = findings
                .iter()
                .map(|f| {
                    json!({
                        "topic": f.topic,
                        "partition": f.partition,
                        "state": f.state,
                        "reasons": f.reasons,
                        "unclean_election": f.unclean.as_ref().map(|u| json!({
                            "candidate": u.candidate,
                            "candidate_log_end_offset": u.candidate_log_end,
                            "last_high_watermark": u.last_high_watermark,
                            "lost_from": u.lost.map(|l| l.0),
                            "lost_to": u.lost.map(|l| l.1),
                            "lost_records": u.lost.map_or(0, |l| l.1 - l.0),
                        })),
                    })
                })
                .collect();
            println!(
                "{}",
                json!({
                    "partitions": parts.len(),
                    "healthy": parts.len() - findings.len(),
                    "unhealthy": rows,
                })
            );
        }
        OutputFormat::Table => {
            if findings.is_empty() {
                println!("all {} partitions are healthy", parts.len());
            } else {
                let rows = findings
                    .iter()
                    .map(|f| {
                        vec![
                            f.topic.clone(),
                            f.partition.to_string(),
                            f.state.to_string(),
                            f.reasons.join("; "),
                        ]
                    })
                    .collect();
                println!("{}", table(&["TOPIC", "PARTITION", "STATE", "WHY"], rows));
                println!("{} of {} partitions unhealthy", findings.len(), parts.len());
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_proto::v1::FollowerProgress;

    fn part(leader: i32, isr: &[i32], hw: Option<i64>) -> PartitionView {
        PartitionView {
            topic: "t".into(),
            partition: 0,
            leader,
            replicas: vec![1, 2, 3],
            isr: isr.to_vec(),
            min_isr: 2,
            last_high_watermark: hw,
        }
    }

    fn status(leo: i64, hw: i64, leader: bool, followers: &[(i32, i64)]) -> ReplicaStatus {
        ReplicaStatus {
            topic: "t".into(),
            partition: 0,
            is_leader: leader,
            log_end_offset: leo,
            high_watermark: hw,
            followers: followers
                .iter()
                .map(|(b, o)| FollowerProgress {
                    broker_id: *b,
                    log_end_offset: *o,
                    caught_up_ms_ago: 4000,
                })
                .collect(),
            ..Default::default()
        }
    }

    fn reached(s: ReplicaStatus) -> Probe {
        Ok([(("t".to_string(), 0), s)].into())
    }

    fn brokers(fenced: &[i32]) -> BTreeMap<i32, BrokerView> {
        (1..=3)
            .map(|b| {
                (
                    b,
                    BrokerView {
                        fenced: fenced.contains(&b),
                    },
                )
            })
            .collect()
    }

    #[test]
    fn healthy_partitions_are_left_out() {
        let probes = [(1, reached(status(10, 10, true, &[(2, 10), (3, 10)])))].into();
        assert!(diagnose(&[part(1, &[1, 2, 3], Some(10))], &brokers(&[]), &probes).is_empty());
    }

    #[test]
    fn a_lagging_follower_is_named_with_its_lag() {
        let probes: BTreeMap<i32, Probe> = [
            (1, reached(status(100, 60, true, &[(2, 100), (3, 60)]))),
            (2, reached(status(100, 60, false, &[]))),
            (3, reached(status(60, 60, false, &[]))),
        ]
        .into();
        let f = diagnose(&[part(1, &[1, 2], Some(60))], &brokers(&[]), &probes);
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].state, "under-replicated");
        assert!(
            f[0].reasons[0].contains("broker 3 lags by 40 records"),
            "{f:?}"
        );
    }

    #[test]
    fn fenced_and_unreachable_brokers_and_replica_errors_are_named() {
        let mut err = status(0, 0, false, &[]);
        err.error_code = ErrorCode::KafkaStorageError as i32;
        err.error_message = "disk full".into();
        let probes: BTreeMap<i32, Probe> = [
            (1, reached(status(10, 10, true, &[]))),
            (2, reached(err)),
            (3, Err("no answer".into())),
        ]
        .into();
        let f = diagnose(&[part(1, &[1], Some(10))], &brokers(&[]), &probes);
        assert_eq!(f[0].state, "under-min-isr");
        let all = f[0].reasons.join("\n");
        assert!(all.contains("min.insync.replicas=2"), "{all}");
        assert!(all.contains("KAFKA_STORAGE_ERROR: disk full"), "{all}");
        assert!(all.contains("broker 3 does not answer"), "{all}");
        let f = diagnose(&[part(1, &[1, 2], Some(10))], &brokers(&[3]), &probes);
        assert!(f[0].reasons[0].contains("broker 3 is fenced"), "{f:?}");
    }

    #[test]
    fn an_offline_partition_says_what_a_forced_election_would_lose() {
        // ISR [1]; 1 is fenced; 3 is alive with 10 of the 20 acknowledged offsets.
        let probes: BTreeMap<i32, Probe> = [
            (1, Err("connection refused".into())),
            (2, Err("connection refused".into())),
            (3, reached(status(10, 10, false, &[]))),
        ]
        .into();
        let f = diagnose(&[part(-1, &[1], Some(20))], &brokers(&[1, 2]), &probes);
        assert_eq!(f[0].state, "offline");
        let u = f[0].unclean.clone().unwrap();
        assert_eq!(
            u,
            UncleanElection {
                candidate: 3,
                candidate_log_end: Some(10),
                last_high_watermark: Some(20),
                lost: Some((10, 20)),
            }
        );
        assert!(f[0]
            .reasons
            .iter()
            .any(|r| r.contains("lose offsets 10..20 (10 records")));
        // A candidate that has everything loses nothing; with no HW known, the doctor says so.
        let f = diagnose(&[part(-1, &[1], Some(10))], &brokers(&[1, 2]), &probes);
        assert_eq!(f[0].unclean.as_ref().unwrap().lost, None);
        let mut unknown = probes.clone();
        unknown.insert(3, reached(status(10, 4, false, &[])));
        let f = diagnose(&[part(-1, &[1], None)], &brokers(&[1, 2]), &unknown);
        assert_eq!(f[0].unclean.as_ref().unwrap().last_high_watermark, Some(4));
        // An unfenced candidate that does not answer: elected all the same, loss unknown.
        let mut silent = probes.clone();
        silent.insert(3, Err("no answer".into()));
        let f = diagnose(&[part(-1, &[1], Some(20))], &brokers(&[1, 2]), &silent);
        let u = f[0].unclean.clone().unwrap();
        assert_eq!((u.candidate, u.candidate_log_end, u.lost), (3, None, None));
        // Nobody alive: nobody to elect.
        let f = diagnose(&[part(-1, &[1], Some(20))], &brokers(&[1, 2, 3]), &probes);
        assert_eq!(f[0].unclean, None);
        assert!(f[0].reasons.iter().any(|r| r.contains("no live replica")));
    }
}
