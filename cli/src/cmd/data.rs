//! `sluice produce` and `sluice consume`, on the client library's batching producer and
//! consumer.

use std::collections::VecDeque;
use std::io::BufRead;
use std::time::{Duration, Instant};

use serde_json::json;
use sluice_client::{
    Consumer, ConsumerConfig, OffsetReset, Producer, ProducerConfig, ProducerRecord,
};

use crate::output::OutputFormat;

/// Records awaiting acknowledgement before `produce` stops reading stdin.
const PENDING_MAX: usize = 10_000;

/// How `produce` reads headers from each line (Kafka's console producer `parse.headers`).
#[derive(clap::Args, Debug, Clone)]
pub struct LineFormat {
    /// Each line starts with its own headers: `k1:v1,k2:v2<TAB>[key<SEP>]value`
    /// (Kafka's console producer `parse.headers=true`); added after any `--header`.
    #[arg(long)]
    pub parse_headers: bool,
    /// Ends the headers part of a line (`headers.delimiter`).
    #[arg(long, default_value = "\t", requires = "parse_headers")]
    pub headers_delimiter: String,
    /// Separates headers from each other (`headers.separator`).
    #[arg(long, default_value = ",", requires = "parse_headers")]
    pub headers_separator: String,
    /// Separates a header's key from its value (`headers.key.separator`).
    #[arg(long, default_value = ":", requires = "parse_headers")]
    pub headers_key_separator: String,
    /// A header value written as this string is a header without a value (`null.marker`);
    /// the whole headers part written as it means no headers.
    #[arg(long, requires = "parse_headers")]
    pub null_marker: Option<String>,
}

type Headers = Vec<(String, Option<bytes::Bytes>)>;

impl LineFormat {
    /// Unescapes `\t` and `\n` in the separators (a shell passes them literally).
    fn unescaped(&self) -> LineFormat {
        let u = |s: &str| s.replace("\\t", "\t").replace("\\n", "\n");
        LineFormat {
            parse_headers: self.parse_headers,
            headers_delimiter: u(&self.headers_delimiter),
            headers_separator: u(&self.headers_separator),
            headers_key_separator: u(&self.headers_key_separator),
            null_marker: self.null_marker.clone(),
        }
    }

    /// Splits line `number` (1-based) into its headers and the rest of the line, or says
    /// what is wrong with it. Without `--parse-headers` the whole line is the rest.
    fn split<'a>(&self, line: &'a str, number: u64) -> anyhow::Result<(Headers, &'a str)> {
        if !self.parse_headers {
            return Ok((Vec::new(), line));
        }
        let Some((head, rest)) = line.split_once(self.headers_delimiter.as_str()) else {
            anyhow::bail!(
                "line {number}: no headers delimiter {:?} (--parse-headers expects \
                 `k1:v1,k2:v2<delimiter>value`)",
                self.headers_delimiter
            );
        };
        if head.is_empty() || Some(head) == self.null_marker.as_deref() {
            return Ok((Vec::new(), rest));
        }
        let headers = head
            .split(self.headers_separator.as_str())
            .map(|pair| {
                let Some((k, v)) = pair.split_once(self.headers_key_separator.as_str()) else {
                    anyhow::bail!(
                        "line {number}: header {pair:?} has no key separator {:?}",
                        self.headers_key_separator
                    );
                };
                anyhow::ensure!(
                    !k.is_empty(),
                    "line {number}: header {pair:?} has an empty key"
                );
                anyhow::ensure!(
                    Some(k) != self.null_marker.as_deref(),
                    "line {number}: header key {k:?} is the null marker (keys cannot be null)"
                );
                let v = (Some(v) != self.null_marker.as_deref())
                    .then(|| bytes::Bytes::from(v.to_string()));
                Ok((k.to_string(), v))
            })
            .collect::<anyhow::Result<_>>()?;
        Ok((headers, rest))
    }
}

/// Reads stdin lines and produces one record per line.
#[allow(clippy::too_many_arguments)]
pub async fn produce(
    bootstrap: &str,
    out: OutputFormat,
    topic: &str,
    acks: &str,
    key_separator: Option<&str>,
    partition: Option<i32>,
    headers: &[String],
    compression: &str,
    lines: &LineFormat,
) -> anyhow::Result<()> {
    let headers = parse_headers(headers)?;
    let compression = sluice_client::Compression::parse(compression).ok_or_else(|| {
        anyhow::anyhow!("--compression-type {compression:?}: use none, gzip, snappy, lz4 or zstd")
    })?;
    let lines = lines.unescaped();
    let acks: i32 = match acks {
        "all" | "-1" => -1,
        "1" => 1,
        "0" => 0,
        other => anyhow::bail!("--acks {other:?}: use 0, 1 or all"),
    };
    let producer = Producer::connect(
        bootstrap,
        ProducerConfig {
            acks,
            max_block: Duration::from_secs(10),
            delivery_timeout: Duration::from_secs(30),
            compression,
            ..ProducerConfig::default()
        },
    )
    .await?;
    let partitions = producer
        .cluster()
        .wait_for_topic(topic, Duration::from_secs(2))
        .await?;
    if let Some(p) = partition {
        anyhow::ensure!(
            p >= 0 && p < partitions,
            "--partition {p}: topic {topic} has partitions 0..{}",
            partitions - 1
        );
    }
    // Blocking stdin on its own thread; lines arrive over a bounded channel.
    let (tx, mut rx) = tokio::sync::mpsc::channel::<String>(4096);
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            if tx.blocking_send(line).is_err() {
                break;
            }
        }
    });
    let mut pending = VecDeque::new();
    let mut total = 0u64;
    let mut number = 0u64;
    let mut bad_line = None;
    let print = |m: sluice_client::RecordMetadata| match out {
        OutputFormat::Json => println!("{}", json!({"partition": m.partition, "offset": m.offset})),
        OutputFormat::Table => println!(
            "Produced to partition {} at offset {}.",
            m.partition, m.offset
        ),
    };
    loop {
        // Print acknowledgements in input order as they arrive.
        while pending.len() > PENDING_MAX {
            let f: sluice_client::DeliveryFuture = pending.pop_front().expect("non-empty");
            print(f.await?);
        }
        let line = tokio::select! {
            l = rx.recv() => l,
            r = async { pending.front_mut().expect("guarded").await }, if !pending.is_empty() => {
                pending.pop_front();
                print(r?);
                continue;
            }
        };
        let Some(line) = line else { break };
        number += 1;
        let (line_headers, rest) = match lines.split(&line, number) {
            Ok(split) => split,
            Err(e) => {
                // Like Kafka's console producer: stop at the first bad line, after the
                // records before it are acknowledged.
                bad_line = Some(e);
                break;
            }
        };
        let (key, value) = match key_separator.and_then(|s| rest.split_once(s)) {
            Some((k, v)) => (Some(k.to_string()), v.to_string()),
            None => (None, rest.to_string()),
        };
        let mut record = ProducerRecord::new(topic, value.into_bytes());
        record.key = key.map(|k| k.into_bytes().into());
        record.partition = partition;
        record.headers = headers.clone();
        record.headers.extend(line_headers);
        pending.push_back(producer.send(record).await?);
        total += 1;
    }
    producer.flush().await;
    for f in pending {
        print(f.await?);
    }
    eprintln!("Produced a total of {total} records");
    match bad_line {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// `--header KEY=VALUE` arguments as record headers, in order (`KEY` alone: no value).
fn parse_headers(args: &[String]) -> anyhow::Result<Headers> {
    args.iter()
        .map(|a| {
            let (k, v) = match a.split_once('=') {
                Some((k, v)) => (k, Some(bytes::Bytes::from(v.to_string()))),
                None => (a.as_str(), None),
            };
            anyhow::ensure!(
                !k.is_empty(),
                "--header {a:?}: the key is empty (use KEY=VALUE)"
            );
            Ok((k.to_string(), v))
        })
        .collect()
}

/// Headers as `k=v,k2=v2` (a header without a value prints as `k`).
fn headers_text(headers: &[(String, Option<bytes::Bytes>)]) -> String {
    headers
        .iter()
        .map(|(k, v)| match v {
            Some(v) => format!("{k}={}", String::from_utf8_lossy(v)),
            None => k.clone(),
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// One record through a kcat-style `--format` string.
fn formatted(format: &str, rec: &sluice_client::consumer::ConsumerRecord) -> String {
    let text = |b: &Option<bytes::Bytes>| {
        b.as_ref()
            .map(|b| String::from_utf8_lossy(b).into_owned())
            .unwrap_or_default()
    };
    let mut out = String::new();
    let mut chars = format.chars();
    while let Some(c) = chars.next() {
        match c {
            '%' => match chars.next() {
                Some('t') => out.push_str(&rec.topic),
                Some('p') => out.push_str(&rec.partition.to_string()),
                Some('o') => out.push_str(&rec.offset.to_string()),
                Some('k') => out.push_str(&text(&rec.key)),
                Some('s') => out.push_str(&text(&rec.value)),
                Some('T') => out.push_str(&rec.timestamp.to_string()),
                Some('h') => out.push_str(&headers_text(&rec.headers)),
                Some('%') => out.push('%'),
                Some(other) => {
                    out.push('%');
                    out.push(other);
                }
                None => out.push('%'),
            },
            '\\' => match chars.next() {
                Some('n') => out.push('\n'),
                Some('t') => out.push('\t'),
                Some(other) => {
                    out.push('\\');
                    out.push(other);
                }
                None => out.push('\\'),
            },
            c => out.push(c),
        }
    }
    out
}

/// Prints records of a topic.
#[allow(clippy::too_many_arguments)]
pub async fn consume(
    bootstrap: &str,
    out: OutputFormat,
    format: Option<&str>,
    topic: &str,
    group: Option<&str>,
    from_beginning: bool,
    partition: Option<i32>,
    offset: Option<i64>,
    max_records: Option<u64>,
    timeout_ms: Option<u64>,
) -> anyhow::Result<()> {
    if let Some(o) = offset {
        anyhow::ensure!(o >= 0, "--offset {o} must not be negative");
        anyhow::ensure!(partition.is_some(), "--offset needs --partition");
    }
    if let Some(g) = group {
        anyhow::ensure!(!g.is_empty(), "--group: the group id is empty");
    }
    let config = ConsumerConfig {
        group_id: group.map(str::to_string),
        client_id: "sluice-cli".into(),
        auto_offset_reset: if from_beginning {
            OffsetReset::Earliest
        } else {
            OffsetReset::Latest
        },
        enable_auto_commit: true,
        auto_commit_interval: Duration::from_secs(1),
        ..ConsumerConfig::default()
    };
    let mut consumer = Consumer::connect(bootstrap, config).await?;
    let partitions = consumer
        .cluster()
        .wait_for_topic(topic, Duration::from_secs(2))
        .await?;
    match (group, partition) {
        (Some(_), None) => consumer.subscribe(vec![topic.to_string()])?,
        (_, Some(p)) => {
            anyhow::ensure!(
                p >= 0 && p < partitions,
                "--partition {p}: topic {topic} has partitions 0..{}",
                partitions - 1
            );
            consumer.assign(vec![(topic.to_string(), p)]);
            if let Some(o) = offset {
                // Positions start unset; a zero-time poll initialises them.
                consumer.poll(Duration::ZERO).await?;
                consumer.seek((topic.to_string(), p), o)?;
            }
        }
        (None, None) => consumer.assign((0..partitions).map(|p| (topic.to_string(), p)).collect()),
    }
    let mut seen = 0u64;
    let mut last_record = Instant::now();
    let idle = timeout_ms.map(Duration::from_millis);
    'outer: loop {
        let wait = idle.map_or(Duration::from_millis(500), |t| {
            t.saturating_sub(last_record.elapsed())
                .min(Duration::from_millis(500))
        });
        let records = consumer.poll(wait).await?;
        if records.is_empty() {
            if idle.is_some_and(|t| last_record.elapsed() >= t) {
                break;
            }
            continue;
        }
        last_record = Instant::now();
        for (i, rec) in records.iter().enumerate() {
            let key = rec
                .key
                .as_ref()
                .map(|k| String::from_utf8_lossy(k).into_owned());
            let value = rec
                .value
                .as_ref()
                .map(|v| String::from_utf8_lossy(v).into_owned());
            let headers: Vec<serde_json::Value> = rec
                .headers
                .iter()
                .map(|(k, v)| {
                    json!({"key": k, "value": v.as_ref().map(|v| String::from_utf8_lossy(v).into_owned())})
                })
                .collect();
            match (format, out) {
                (Some(f), _) => print!("{}", formatted(f, rec)),
                (None, OutputFormat::Json) => println!(
                    "{}",
                    json!({"partition": rec.partition, "offset": rec.offset, "timestamp": rec.timestamp, "key": key, "value": value, "headers": headers})
                ),
                (None, OutputFormat::Table) => {
                    let mut line = match &key {
                        Some(k) => format!("{k}\t{}", value.unwrap_or_default()),
                        None => value.unwrap_or_default(),
                    };
                    if !rec.headers.is_empty() {
                        line.push_str(&format!("\t[{}]", headers_text(&rec.headers)));
                    }
                    println!("{line}");
                }
            }
            seen += 1;
            if max_records.is_some_and(|m| seen >= m) {
                // Records returned but not printed must be consumed again: move their
                // partitions back to the first one of them.
                let mut back: std::collections::BTreeMap<(String, i32), i64> = Default::default();
                for r in &records[i + 1..] {
                    back.entry((r.topic.clone(), r.partition))
                        .or_insert(r.offset);
                }
                for (tp, o) in back {
                    consumer.seek(tp, o)?;
                }
                break 'outer;
            }
        }
    }
    if group.is_some() {
        consumer.close().await?;
    }
    eprintln!("Processed a total of {seen} messages");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kafka_defaults() -> LineFormat {
        LineFormat {
            parse_headers: true,
            headers_delimiter: "\t".into(),
            headers_separator: ",".into(),
            headers_key_separator: ":".into(),
            null_marker: Some("NULL".into()),
        }
    }

    fn h(k: &str, v: Option<&str>) -> (String, Option<bytes::Bytes>) {
        (k.to_string(), v.map(|v| bytes::Bytes::from(v.to_string())))
    }

    /// Kafka's console producer (`LineMessageReader`, `parse.headers=true`): headers, the
    /// headers delimiter, then the key and value; order and duplicates kept; the null
    /// marker as a value is a header without a value, as the whole part no headers.
    #[test]
    fn parse_headers_splits_lines_as_kafkas_console_producer_does() {
        let f = kafka_defaults();
        let table: &[(&str, Headers, &str)] = &[
            (
                "a:1,a:2,b:x:y\tk=v",
                vec![h("a", Some("1")), h("a", Some("2")), h("b", Some("x:y"))],
                "k=v",
            ),
            ("n:NULL\tv", vec![h("n", None)], "v"),
            ("e:\tv", vec![h("e", Some(""))], "v"),
            ("NULL\tv\twith tab", vec![], "v\twith tab"),
            ("\tv", vec![], "v"),
        ];
        for (line, headers, rest) in table {
            let (got, got_rest) = f.split(line, 1).unwrap();
            assert_eq!(&got, headers, "{line:?}");
            assert_eq!(got_rest, *rest, "{line:?}");
        }
    }

    #[test]
    fn parse_headers_names_the_line_and_the_problem() {
        let f = kafka_defaults();
        for (line, needle) in [
            ("no delimiter here", "line 7: no headers delimiter"),
            ("a=1\tv", "line 7: header \"a=1\" has no key separator"),
            (":1\tv", "empty key"),
            ("NULL:1\tv", "is the null marker"),
        ] {
            let e = f.split(line, 7).unwrap_err().to_string();
            assert!(e.contains(needle), "{line:?}: {e}");
        }
    }

    #[test]
    fn without_parse_headers_the_whole_line_is_the_record() {
        let mut f = kafka_defaults();
        f.parse_headers = false;
        assert_eq!(f.split("a:1\tv", 1).unwrap(), (vec![], "a:1\tv"));
    }

    /// A shell passes `--headers-delimiter '\t'` as backslash-t.
    #[test]
    fn separators_given_as_escapes_are_unescaped() {
        let mut f = kafka_defaults();
        f.headers_delimiter = "\\t".into();
        f.headers_separator = "\\n".into();
        let u = f.unescaped();
        assert_eq!(u.headers_delimiter, "\t");
        assert_eq!(u.headers_separator, "\n");
    }
}
