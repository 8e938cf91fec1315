//! `sluice produce` and `sluice consume`.

use std::io::BufRead;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::json;
use sluice_client::{partition_for_key, DataClient};
use sluice_storage::RecordBatchBuilder;

use crate::output::OutputFormat;

/// Lines sent in one batch at most.
const LINES_PER_BATCH_MAX: usize = 1000;

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Reads stdin lines and produces one record per line.
pub async fn produce(
    bootstrap: &str,
    out: OutputFormat,
    topic: &str,
    acks: &str,
    key_separator: Option<&str>,
    partition: Option<i32>,
) -> anyhow::Result<()> {
    let acks: i32 = match acks {
        "all" | "-1" => -1,
        "1" => 1,
        "0" => 0,
        other => anyhow::bail!("--acks {other:?}: use 0, 1 or all"),
    };
    let mut client = DataClient::connect(bootstrap).await?;
    let partitions = client
        .wait_for_topic(topic, std::time::Duration::from_secs(2))
        .await?;
    if let Some(p) = partition {
        anyhow::ensure!(
            p >= 0 && p < partitions,
            "--partition {p}: topic {topic} has partitions 0..{}",
            partitions - 1
        );
    }
    // Blocking stdin on its own thread; lines arrive over a bounded channel.
    let (tx, mut rx) = tokio::sync::mpsc::channel::<String>(LINES_PER_BATCH_MAX * 4);
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            if tx.blocking_send(line).is_err() {
                break;
            }
        }
    });
    let mut sticky = 0i32;
    let mut total = 0u64;
    while let Some(first) = rx.recv().await {
        let mut lines = vec![first];
        while lines.len() < LINES_PER_BATCH_MAX {
            match rx.try_recv() {
                Ok(l) => lines.push(l),
                Err(_) => break,
            }
        }
        // Group by partition, keeping line order within each.
        let mut by_partition: std::collections::BTreeMap<i32, Vec<(Option<String>, String)>> =
            Default::default();
        for line in lines {
            let (key, value) = match key_separator.and_then(|s| line.split_once(s)) {
                Some((k, v)) => (Some(k.to_string()), v.to_string()),
                None => (None, line),
            };
            let p = match (partition, &key) {
                (Some(p), _) => p,
                (None, Some(k)) => partition_for_key(k.as_bytes(), partitions),
                (None, None) => sticky,
            };
            by_partition.entry(p).or_default().push((key, value));
        }
        sticky = (sticky + 1) % partitions;
        for (p, records) in by_partition {
            let mut b = RecordBatchBuilder::new();
            let ts = now_ms();
            for (k, v) in &records {
                b.append(ts, k.as_deref().map(str::as_bytes), Some(v.as_bytes()), &[]);
            }
            let r = client.produce(topic, p, b.build(), acks).await?;
            for (i, _) in records.iter().enumerate() {
                // acks=0 returns no offsets (-1).
                let offset = if r.base_offset < 0 {
                    -1
                } else {
                    r.base_offset + i as i64
                };
                match out {
                    OutputFormat::Json => println!("{}", json!({"partition": p, "offset": offset})),
                    OutputFormat::Table => {
                        println!("Produced to partition {p} at offset {offset}.")
                    }
                }
            }
            total += records.len() as u64;
        }
    }
    eprintln!("Produced a total of {total} records");
    Ok(())
}

/// Prints records of a topic.
#[allow(clippy::too_many_arguments)]
pub async fn consume(
    bootstrap: &str,
    out: OutputFormat,
    topic: &str,
    group: Option<&str>,
    from_beginning: bool,
    partition: Option<i32>,
    offset: Option<i64>,
    max_records: Option<u64>,
    timeout_ms: Option<u64>,
) -> anyhow::Result<()> {
    anyhow::ensure!(
        group.is_none(),
        "--group: consumer groups are not yet available in this build"
    );
    if let Some(o) = offset {
        anyhow::ensure!(o >= 0, "--offset {o} must not be negative");
    }
    let mut client = DataClient::connect(bootstrap).await?;
    let partitions = client.wait_for_topic(topic, Duration::from_secs(2)).await?;
    let parts: Vec<i32> = match partition {
        Some(p) => {
            anyhow::ensure!(
                p >= 0 && p < partitions,
                "--partition {p}: topic {topic} has partitions 0..{}",
                partitions - 1
            );
            vec![p]
        }
        None => (0..partitions).collect(),
    };
    let mut positions = Vec::new();
    for &p in &parts {
        let start = match offset {
            Some(o) => o,
            None if from_beginning => client.list_offset(topic, p, -2).await?,
            None => client.list_offset(topic, p, -1).await?,
        };
        positions.push((p, start));
    }
    let mut seen = 0u64;
    let mut last_record = Instant::now();
    let idle = timeout_ms.map(Duration::from_millis);
    'outer: loop {
        let mut got_any = false;
        for (p, pos) in positions.iter_mut() {
            let wait = if parts.len() == 1 { 500 } else { 50 };
            let r = client.fetch(topic, *p, *pos, wait).await.context("fetch")?;
            for rec in r.records {
                got_any = true;
                let key = rec
                    .key
                    .as_ref()
                    .map(|k| String::from_utf8_lossy(k).into_owned());
                let value = rec
                    .value
                    .as_ref()
                    .map(|v| String::from_utf8_lossy(v).into_owned());
                match out {
                    OutputFormat::Json => println!(
                        "{}",
                        json!({"partition": *p, "offset": rec.offset, "timestamp": rec.timestamp_ms, "key": key, "value": value})
                    ),
                    OutputFormat::Table => match &key {
                        Some(k) => println!("{k}\t{}", value.unwrap_or_default()),
                        None => println!("{}", value.unwrap_or_default()),
                    },
                }
                *pos = rec.offset + 1;
                seen += 1;
                if max_records.is_some_and(|m| seen >= m) {
                    break 'outer;
                }
            }
            if r.next_fetch_offset > *pos {
                *pos = r.next_fetch_offset;
            }
        }
        if got_any {
            last_record = Instant::now();
        } else if idle.is_some_and(|t| last_record.elapsed() >= t) {
            break;
        }
    }
    eprintln!("Processed a total of {seen} messages");
    Ok(())
}
