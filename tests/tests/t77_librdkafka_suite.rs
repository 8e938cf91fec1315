//! A subset of librdkafka's own test suite (librdkafka 2.0.2, Debian bookworm's source
//! package, built by `scripts/test` into `target/test-deps/librdkafka-2.0.2`) against real
//! `sluice` processes: tests written by the people who wrote the client, against a broker
//! they never saw.
//!
//! Which tests run, and why the others do not (the whole survey, 97 broker tests, is in
//! docs/kafka-compatibility.md, "librdkafka's test suite"): the [`SUITE`] below are the ones
//! that pass, picked to cover producing (acks, batching, partitioners, message size,
//! timeouts, headers, null and empty values, compression, idempotence), consuming (offsets,
//! seek, reset, partial and bounded fetches, batches, timestamps), consumer groups
//! (balanced groups, commits with metadata and across rebalances, stored offsets,
//! assignment strategies, group listing) and metadata (auto-creation, partition counts,
//! cluster id, invalid topics), within about three minutes. Left out: the slow tests that
//! pass too (0018, 0020, 0026, 0033, 0049, 0076, 0091, 0093, 0094, 0102 and others over 15 s),
//! tests needing transactions, SASL/SSL, Kafka's Java tools (`KAFKA_PATH`) or a broker
//! without auto-creation, librdkafka's mock-cluster tests (they never talk to a broker), and
//! the ones that still fail (listed in the docs with their cause).

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use sluice_tests::cluster::Cluster;

/// The tests run, by librdkafka's number; two are regression tests of Sluice bugs they found:
/// 0030 (pipelined async commits applied out of order) and 0057 (Metadata answered
/// UNKNOWN_TOPIC_OR_PARTITION for an illegal topic name, so the producer waited forever).
const SUITE: &[&str] = &[
    "0001", "0002", "0003", "0005", "0007", "0008", "0011", "0012", "0013", "0014", "0015", "0017",
    "0019", "0021", "0022", "0029", "0030", "0031", "0034", "0035", "0036", "0039", "0041", "0042",
    "0044", "0048", "0054", "0056", "0057", "0063", "0067", "0070", "0073", "0082", "0085", "0090",
    "0099", "0112", "0118", "0130", "0132",
];

fn suite_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/test-deps/librdkafka-2.0.2")
}

/// Goal: librdkafka's own tests of producers, consumers, groups and metadata pass against
/// Sluice unchanged. Method: 1 controller + 3 brokers with `num.partitions=4` (what
/// librdkafka's test clusters use: several tests produce to partition 3 of an auto-created
/// topic), each test of [`SUITE`] in its own `test-runner` process (`-L`: no mock-cluster
/// tests; `TEST_KAFKA_VERSION=3.7.0`: the broker features Sluice has), bounded by 180 s each.
/// Every one must pass; a failure prints the end of that test's log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn librdkafkas_own_tests_pass_against_sluice() {
    let dir = suite_dir().join("tests");
    let runner = dir.join("test-runner");
    assert!(
        runner.exists(),
        "{} is missing: scripts/test builds librdkafka's test suite",
        runner.display()
    );
    let c = Cluster::start(1, 3, &["num.partitions=4"], &[]);
    let conf_dir = tempfile::tempdir().unwrap();
    let conf = conf_dir.path().join("test.conf");
    let brokers: Vec<String> = (1..=3).map(|i| c.broker_addr(i)).collect();
    std::fs::write(
        &conf,
        format!(
            "metadata.broker.list={}\ntest.topic.random=true\n",
            brokers.join(",")
        ),
    )
    .unwrap();
    sluice_tests::wait_for(
        "the brokers to be registered",
        std::time::Duration::from_secs(60),
        || async {
            let out = Command::new("timeout")
                .args(["20", "kcat", "-b", &brokers[0], "-L", "-J"])
                .output()
                .ok()?;
            let m: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
            (m["brokers"].as_array()?.len() == 3).then_some(())
        },
    )
    .await;
    let libs = format!(
        "{}:{}",
        suite_dir().join("src").display(),
        suite_dir().join("src-cpp").display()
    );
    // `SLUICE_LIBRDKAFKA_TESTS=0030,0057` runs those instead (a developer's subset).
    let chosen: Vec<String> = match std::env::var("SLUICE_LIBRDKAFKA_TESTS") {
        Ok(list) => list.split(',').map(|t| t.trim().to_string()).collect(),
        Err(_) => SUITE.iter().map(|t| t.to_string()).collect(),
    };
    let mut failed = Vec::new();
    for t in &chosen {
        let start = Instant::now();
        let out = Command::new("timeout")
            .args(["-s", "KILL", "180"])
            .arg(&runner)
            .args(["-p1", "-L"])
            .current_dir(&dir)
            .env("TESTS", t)
            .env("LD_LIBRARY_PATH", &libs)
            .env("RDKAFKA_GITVER", "v2.0.2")
            .env("TEST_KAFKA_VERSION", "3.7.0")
            .env("RDKAFKA_TEST_CONF", &conf)
            .output()
            .expect("test-runner runs");
        let log = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        eprintln!(
            "librdkafka test {t}: {} in {:.1}s",
            if out.status.success() { "PASS" } else { "FAIL" },
            start.elapsed().as_secs_f64()
        );
        if !out.status.success() {
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            failed.push(format!(
                "test {t} ({}):\n{}",
                out.status,
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            ));
        }
    }
    assert!(failed.is_empty(), "{}", failed.join("\n\n"));
}
