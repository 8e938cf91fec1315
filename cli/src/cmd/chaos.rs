//! `sluice chaos --scenario NAME --duration D`: fault injection against a running
//! `sluice dev` cluster under load, with a scorecard.
//!
//! ```text
//!   workload (idempotent producer, acks=all, uniquely numbered records; a reader)
//!      │            every --interval: inject the scenario's fault
//!      │              kill-leader     SIGKILL the leader of the next partition
//!      │              pause-leader    SIGSTOP it for --pause, then SIGCONT
//!      │              kill-controller SIGKILL the active controller
//!      │            measure: time to a new leader, time to the next acknowledged write
//!      ▼            (`sluice dev` restarts killed nodes)
//!   read everything back ─► checker: lost, duplicated, reordered, inconsistent
//!   ─► scorecard (table or --output json) + SVG timeline (throughput, p99 latency, faults)
//! ```

use std::time::{Duration, Instant};

use anyhow::Context;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::json;
use sluice_client::verify::{check, History};
use sluice_client::workload::{read_back, Sample, Workload};
use sluice_client::{Admin, Cluster, ProducerConfig};

use crate::output::{table, OutputFormat};

/// Scenario names.
pub const SCENARIOS: &[&str] = &["kill-leader", "pause-leader", "kill-controller"];

/// Parses `500ms`, `60s`, `2m`, `1h` (a bare number is seconds).
pub fn parse_duration(s: &str) -> anyhow::Result<Duration> {
    let s = s.trim();
    let (num, unit) = s
        .find(|c: char| !c.is_ascii_digit())
        .map_or((s, "s"), |i| s.split_at(i));
    let n: u64 = num
        .parse()
        .with_context(|| format!("duration {s:?}: expected e.g. 60s, 2m, 500ms"))?;
    Ok(match unit {
        "ms" => Duration::from_millis(n),
        "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n * 60),
        "h" => Duration::from_secs(n * 3600),
        other => anyhow::bail!("duration {s:?}: unknown unit {other:?} (ms, s, m, h)"),
    })
}

/// One injected fault and what it cost.
#[derive(Debug, Clone, serde::Serialize)]
struct Fault {
    at_s: f64,
    kind: String,
    target: String,
    partition: Option<i32>,
    new_leader_ms: Option<f64>,
    first_write_ms: Option<f64>,
}

/// Options of one run.
pub struct Options {
    /// Scenario name.
    pub scenario: String,
    /// How long to inject faults.
    pub duration: Duration,
    /// Time between faults.
    pub interval: Duration,
    /// How long `pause-leader` keeps a leader stopped.
    pub pause: Duration,
    /// The dev cluster's directory.
    pub dir: Option<std::path::PathBuf>,
}

/// Runs a scenario and prints the scorecard; fails when the checker finds an anomaly.
pub async fn run(bootstrap: &str, out: OutputFormat, o: Options) -> anyhow::Result<()> {
    anyhow::ensure!(
        SCENARIOS.contains(&o.scenario.as_str()),
        "unknown scenario {:?}; use one of {}",
        o.scenario,
        SCENARIOS.join(", ")
    );
    let (dir, _) = super::dev::load_state(bootstrap, o.dir.clone())?;
    let admin = Admin::connect(bootstrap).await?;
    let brokers = admin.describe_cluster().await?.brokers.len() as i32;
    anyhow::ensure!(brokers >= 1, "the cluster has no brokers");
    let rf = brokers.min(3);
    let topic = format!("chaos-{}", std::process::id());
    let mut configs = vec![];
    if rf == 3 {
        configs.push(("min.insync.replicas".to_string(), "2".to_string()));
    }
    let created = admin.create_topic(&topic, 3, rf, configs).await?;
    anyhow::ensure!(
        created.error_code == 0,
        "creating {topic}: {}",
        created.error_message
    );
    let cluster = Cluster::connect(bootstrap, Duration::from_secs(10)).await?;
    cluster
        .wait_for_topic(&topic, Duration::from_secs(10))
        .await?;
    let w = Workload::start(
        bootstrap,
        &topic,
        3,
        ProducerConfig {
            request_timeout: Duration::from_secs(5),
            retry_backoff: Duration::from_millis(50),
            ..ProducerConfig::default()
        },
        Some(Duration::from_micros(500)),
    )
    .await?;
    let pb =
        crate::bench::progress_count(o.duration.as_secs(), &format!("chaos {} (s)", o.scenario));
    let mut faults = Vec::new();
    let mut next_partition = 0;
    while w.elapsed() < o.duration {
        let wait = o.interval.min(o.duration.saturating_sub(w.elapsed()));
        tokio::time::sleep(wait).await;
        pb.set_position(w.elapsed().as_secs());
        if w.elapsed() >= o.duration {
            break;
        }
        let fault = match o.scenario.as_str() {
            "kill-leader" | "pause-leader" => {
                let p = next_partition;
                next_partition = (next_partition + 1) % 3;
                leader_fault(bootstrap, &o, &cluster, &topic, p, &w).await
            }
            _ => controller_fault(bootstrap, &o, &admin, &w).await,
        };
        match fault {
            Ok(f) => faults.push(f),
            Err(e) => pb.println(format!("fault skipped: {e:#}")),
        }
    }
    pb.finish_and_clear();
    // Let the cluster heal, then read everything back.
    let samples = w.samples();
    let (sends, reads_during, _) = w.stop().await;
    let final_reads = read_back(bootstrap, &topic, 3, Duration::from_secs(60)).await?;
    let report = check(&History {
        sends,
        reads_during,
        final_reads,
        commits: vec![],
        replicas: vec![],
    });
    for f in faults.iter_mut() {
        f.first_write_ms = first_write_after(&samples, f);
    }
    let svg_path = dir.join(format!(
        "chaos-{}-{}.svg",
        o.scenario,
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
    ));
    std::fs::write(&svg_path, timeline_svg(&samples, &faults, o.duration))
        .with_context(|| format!("writing {}", svg_path.display()))?;
    let verdict = if report.ok() { "PASS" } else { "FAIL" };
    let stat = |v: Vec<f64>| -> (Option<f64>, Option<f64>) {
        let mut v = v;
        v.sort_by(|a, b| a.total_cmp(b));
        (v.get(v.len() / 2).copied(), v.last().copied())
    };
    let (leader_p50, leader_max) = stat(faults.iter().filter_map(|f| f.new_leader_ms).collect());
    let (write_p50, write_max) = stat(faults.iter().filter_map(|f| f.first_write_ms).collect());
    let doc = json!({
        "scenario": o.scenario,
        "duration_s": o.duration.as_secs_f64(),
        "topic": topic,
        "faults_injected": faults.len(),
        "new_leader_ms_p50": leader_p50,
        "new_leader_ms_max": leader_max,
        "first_write_ms_p50": write_p50,
        "first_write_ms_max": write_max,
        "records_sent": report.sent,
        "records_acknowledged": report.acknowledged,
        "records_lost": report.lost,
        "records_duplicated": report.duplicated,
        "records_reordered": report.reordered,
        "inconsistent_offsets": report.inconsistent,
        "read_then_lost": report.read_then_lost,
        "failed_but_visible": report.failed_but_visible,
        "verdict": verdict,
        "faults": faults,
        "examples": report.examples,
        "timeline_svg": svg_path,
    });
    match out {
        OutputFormat::Json => println!("{doc}"),
        OutputFormat::Table => {
            let ms = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.0}"));
            let rows = vec![
                vec!["scenario".into(), o.scenario.clone()],
                vec![
                    "duration".into(),
                    format!("{:.0} s", o.duration.as_secs_f64()),
                ],
                vec!["faults injected".into(), faults.len().to_string()],
                vec![
                    "time to new leader p50 / max (ms)".into(),
                    format!("{} / {}", ms(leader_p50), ms(leader_max)),
                ],
                vec![
                    "first write after fault p50 / max (ms)".into(),
                    format!("{} / {}", ms(write_p50), ms(write_max)),
                ],
                vec!["records sent".into(), report.sent.to_string()],
                vec![
                    "records acknowledged".into(),
                    report.acknowledged.to_string(),
                ],
                vec!["lost".into(), report.lost.to_string()],
                vec!["duplicated".into(), report.duplicated.to_string()],
                vec!["reordered".into(), report.reordered.to_string()],
                vec![
                    "inconsistent offsets".into(),
                    report.inconsistent.to_string(),
                ],
                vec!["read then lost".into(), report.read_then_lost.to_string()],
                vec!["verdict".into(), verdict.into()],
            ];
            println!("{}", table(&["CHAOS", "RESULT"], rows));
            for e in &report.examples {
                println!("  {e}");
            }
            println!("\ntimeline: {}", svg_path.display());
        }
    }
    anyhow::ensure!(report.ok(), "the checker found anomalies (see above)");
    Ok(())
}

fn port_of(addr: &str) -> Option<u16> {
    addr.rsplit_once(':')?.1.parse().ok()
}

async fn leader_fault(
    bootstrap: &str,
    o: &Options,
    cluster: &Cluster,
    topic: &str,
    p: i32,
    w: &Workload,
) -> anyhow::Result<Fault> {
    cluster.refresh().await.ok();
    let md = cluster.metadata();
    let pm = md
        .topics
        .iter()
        .find(|t| t.name == topic)
        .and_then(|t| t.partitions.iter().find(|x| x.partition == p))
        .context("partition metadata")?;
    let epoch = pm.leader_epoch;
    let (leader, addr) = cluster.leader(topic, p).context("no leader to fault")?;
    let (_, state) = super::dev::load_state(bootstrap, o.dir.clone())?;
    let pid = super::dev::pid_of(&state, "broker", port_of(&addr).context("port")?)
        .context("the leader is not a process of this dev cluster")?;
    let at = w.elapsed();
    let t0 = Instant::now();
    let pause = o.scenario == "pause-leader";
    let signal = if pause {
        Signal::SIGSTOP
    } else {
        Signal::SIGKILL
    };
    kill(Pid::from_raw(pid), signal).with_context(|| format!("signalling pid {pid}"))?;
    // Time until the metadata names a leader in a newer epoch.
    let mut new_leader_ms = None;
    while t0.elapsed() < Duration::from_secs(30) {
        tokio::time::sleep(Duration::from_millis(50)).await;
        cluster.refresh().await.ok();
        let md = cluster.metadata();
        let moved = md
            .topics
            .iter()
            .find(|t| t.name == topic)
            .and_then(|t| t.partitions.iter().find(|x| x.partition == p))
            .is_some_and(|x| x.leader_id >= 0 && x.leader_epoch > epoch);
        if moved {
            new_leader_ms = Some(t0.elapsed().as_secs_f64() * 1000.0);
            break;
        }
    }
    if pause {
        let left = o.pause.saturating_sub(t0.elapsed());
        tokio::time::sleep(left).await;
        kill(Pid::from_raw(pid), Signal::SIGCONT).ok();
    }
    Ok(Fault {
        at_s: at.as_secs_f64(),
        kind: if pause {
            "SIGSTOP leader"
        } else {
            "SIGKILL leader"
        }
        .into(),
        target: format!("broker {leader}"),
        partition: Some(p),
        new_leader_ms,
        first_write_ms: None,
    })
}

async fn controller_fault(
    bootstrap: &str,
    o: &Options,
    admin: &Admin,
    w: &Workload,
) -> anyhow::Result<Fault> {
    let q = admin.describe_quorum().await?;
    let leader = q
        .voters
        .iter()
        .find(|v| v.node_id == q.leader_id)
        .context("no active controller")?;
    let (_, state) = super::dev::load_state(bootstrap, o.dir.clone())?;
    let pid = super::dev::pid_of(&state, "controller", leader.port as u16)
        .context("the active controller is not a process of this dev cluster")?;
    let (old, term) = (q.leader_id, q.leader_epoch);
    let at = w.elapsed();
    let t0 = Instant::now();
    kill(Pid::from_raw(pid), Signal::SIGKILL).with_context(|| format!("killing pid {pid}"))?;
    let mut new_leader_ms = None;
    while t0.elapsed() < Duration::from_secs(30) {
        tokio::time::sleep(Duration::from_millis(50)).await;
        if let Ok(q) = admin.describe_quorum().await {
            if q.leader_id >= 0 && q.leader_id != old && q.leader_epoch > term {
                new_leader_ms = Some(t0.elapsed().as_secs_f64() * 1000.0);
                break;
            }
        }
    }
    Ok(Fault {
        at_s: at.as_secs_f64(),
        kind: "SIGKILL active controller".into(),
        target: format!("controller {old}"),
        partition: None,
        new_leader_ms,
        first_write_ms: None,
    })
}

/// Time from the fault to the first acknowledged write sent after it to the faulted
/// partition (any partition for controller faults).
fn first_write_after(samples: &[Sample], f: &Fault) -> Option<f64> {
    samples
        .iter()
        .filter(|s| s.ok && f.partition.is_none_or(|p| p == s.partition))
        .filter(|s| (s.at - s.latency).as_secs_f64() >= f.at_s)
        .map(|s| (s.at.as_secs_f64() - f.at_s) * 1000.0)
        .min_by(|a, b| a.total_cmp(b))
}

/// An SVG timeline: acknowledged records per second (blue), p99 latency per second (orange,
/// right axis) and the faults (red lines).
fn timeline_svg(samples: &[Sample], faults: &[Fault], duration: Duration) -> String {
    let secs = (duration.as_secs_f64().ceil() as usize).max(1) + 1;
    let mut acks = vec![0u64; secs];
    let mut lat: Vec<Vec<f64>> = vec![Vec::new(); secs];
    for s in samples {
        let i = (s.at.as_secs_f64() as usize).min(secs - 1);
        if s.ok {
            acks[i] += 1;
        }
        lat[i].push(s.latency.as_secs_f64() * 1000.0);
    }
    let p99: Vec<f64> = lat
        .iter_mut()
        .map(|v| {
            v.sort_by(|a, b| a.total_cmp(b));
            v.get((v.len() * 99 / 100).min(v.len().saturating_sub(1)))
                .copied()
                .unwrap_or(0.0)
        })
        .collect();
    let (w, h, m) = (900.0, 320.0, 50.0);
    let max_acks = acks.iter().copied().max().unwrap_or(1).max(1) as f64;
    let max_lat = p99.iter().copied().fold(1.0, f64::max);
    let x = |i: f64| m + i / secs as f64 * (w - 2.0 * m);
    let ya = |v: f64| h - m - v / max_acks * (h - 2.0 * m);
    let yl = |v: f64| h - m - v / max_lat * (h - 2.0 * m);
    let path = |pts: Vec<(f64, f64)>| {
        pts.iter()
            .enumerate()
            .map(|(i, (a, b))| format!("{}{a:.1},{b:.1}", if i == 0 { "M" } else { " L" }))
            .collect::<String>()
    };
    let acks_path = path(
        acks.iter()
            .enumerate()
            .map(|(i, v)| (x(i as f64), ya(*v as f64)))
            .collect(),
    );
    let lat_path = path(
        p99.iter()
            .enumerate()
            .map(|(i, v)| (x(i as f64), yl(*v)))
            .collect(),
    );
    let mut out = format!(
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="11">
<rect width="100%" height="100%" fill="white"/>
<text x="{m}" y="20" font-size="14">sluice chaos: acknowledged records/s (blue), p99 latency ms (orange), faults (red)</text>
<line x1="{m}" y1="{b}" x2="{r}" y2="{b}" stroke="black"/>
<line x1="{m}" y1="{m}" x2="{m}" y2="{b}" stroke="black"/>
<text x="5" y="{m}">{max_acks:.0}/s</text>
<text x="{r2}" y="{m}">{max_lat:.0} ms</text>
<text x="{r}" y="{b2}" text-anchor="end">{secs} s</text>
<path d="{acks_path}" fill="none" stroke="steelblue" stroke-width="1.5"/>
<path d="{lat_path}" fill="none" stroke="darkorange" stroke-width="1.5"/>
"##,
        b = h - m,
        r = w - m,
        r2 = w - m + 5.0,
        b2 = h - m + 15.0,
    );
    for f in faults {
        let fx = x(f.at_s);
        out.push_str(&format!(
            "<line x1=\"{fx:.1}\" y1=\"{m}\" x2=\"{fx:.1}\" y2=\"{b}\" stroke=\"red\" stroke-dasharray=\"4 2\"/>\n<text x=\"{tx:.1}\" y=\"{ty}\" fill=\"red\" transform=\"rotate(-90 {tx:.1} {ty})\">{} {}</text>\n",
            f.kind,
            f.target,
            b = h - m,
            tx = fx - 3.0,
            ty = m + 120.0,
        ));
    }
    out.push_str("</svg>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("60s").unwrap(), Duration::from_secs(60));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("7").unwrap(), Duration::from_secs(7));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("5y").is_err());
    }

    #[test]
    fn the_timeline_marks_every_fault() {
        let samples = vec![Sample {
            at: Duration::from_millis(1500),
            latency: Duration::from_millis(3),
            ok: true,
            partition: 0,
        }];
        let faults = vec![Fault {
            at_s: 1.0,
            kind: "SIGKILL leader".into(),
            target: "broker 2".into(),
            partition: Some(0),
            new_leader_ms: Some(900.0),
            first_write_ms: None,
        }];
        let svg = timeline_svg(&samples, &faults, Duration::from_secs(3));
        assert!(svg.starts_with("<svg"));
        assert_eq!(svg.matches("stroke=\"red\"").count(), 1);
        assert!(svg.contains("SIGKILL leader broker 2"));
        assert_eq!(
            first_write_after(&samples, &faults[0]).map(|v| v.round()),
            Some(500.0)
        );
    }
}
