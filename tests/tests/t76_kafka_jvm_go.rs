//! Kafka clients from the JVM, Go and Node.js against real `sluice` brokers on their one
//! port: the Java client and Kafka's own command-line tools (kafka-clients and kafka-tools
//! 4.1.1 from Maven Central, `tests/java/pom.xml`), franz-go 1.22.3 (`tests/go/franz`) and
//! kafkajs 2.2.4 (`tests/js/kafkajs`). `scripts/test` installs them under `target/test-deps/`
//! (Maven, Go and npm are on the CI machine).

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use sluice_tests::cluster::Cluster;
use sluice_tests::*;

const WAIT: Duration = Duration::from_secs(60);

fn test_deps() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/test-deps")
}

/// Runs one of Kafka's tools (`class`, a main class of kafka-tools) with `args`, feeding
/// `input`, bounded by `timeout 120`; returns (success, stdout, stderr).
fn kafka_tool_try(class: &str, args: &[&str], input: Option<&str>) -> (bool, String, String) {
    let jars = test_deps().join("kafka-jars");
    assert!(
        jars.is_dir(),
        "{} is missing: scripts/test installs the Java client and Kafka's tools (Maven)",
        jars.display()
    );
    let mut child = Command::new("timeout")
        .arg("120")
        .arg("java")
        .arg("-cp")
        .arg(format!("{}/*", jars.display()))
        .arg(class)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("java runs");
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        if let Some(i) = input {
            stdin.write_all(i.as_bytes()).unwrap();
        }
    }
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr)
            .lines()
            .filter(|l| !l.starts_with("SLF4J"))
            .collect::<Vec<_>>()
            .join("\n"),
    )
}

/// [`kafka_tool_try`] that must succeed; its stdout.
fn kafka_tool(class: &str, args: &[&str], input: Option<&str>) -> String {
    let (ok, out, err) = kafka_tool_try(class, args, input);
    assert!(ok, "{class} {args:?} failed:\n{out}\n{err}");
    out
}

const TOPICS: &str = "org.apache.kafka.tools.TopicCommand";
const CONSOLE_PRODUCER: &str = "org.apache.kafka.tools.ConsoleProducer";
const CONSOLE_CONSUMER: &str = "org.apache.kafka.tools.consumer.ConsoleConsumer";
const CONSUMER_GROUPS: &str = "org.apache.kafka.tools.consumer.group.ConsumerGroupCommand";
const PRODUCER_PERF: &str = "org.apache.kafka.tools.ProducerPerformance";
const CONSUMER_PERF: &str = "org.apache.kafka.tools.ConsumerPerformance";

/// The console producer writing `input`'s `key<TAB>value` lines to `topic`, with `extra` flags.
fn console_produce(bootstrap: &str, topic: &str, extra: &[&str], input: &str) {
    let mut args = vec![
        "--bootstrap-server",
        bootstrap,
        "--topic",
        topic,
        "--property",
        "parse.key=true",
        "--property",
        "key.separator=\t",
    ];
    args.extend_from_slice(extra);
    kafka_tool(CONSOLE_PRODUCER, &args, Some(input));
}

/// `kafka-consumer-groups --describe` rows of `group` as (partition, current offset,
/// log-end offset, lag).
fn group_rows(bootstrap: &str, group: &str) -> Vec<(i32, i64, i64, i64)> {
    let out = kafka_tool(
        CONSUMER_GROUPS,
        &[
            "--bootstrap-server",
            bootstrap,
            "--describe",
            "--group",
            group,
        ],
        None,
    );
    let mut header = None;
    let mut rows = Vec::new();
    for line in out.lines() {
        let cols: Vec<&str> = line.split_whitespace().collect();
        if cols.first() == Some(&"GROUP") {
            header = Some(cols.iter().map(|c| c.to_string()).collect::<Vec<_>>());
            continue;
        }
        let Some(h) = &header else { continue };
        if cols.len() < h.len() || cols[0] != group {
            continue;
        }
        let at = |name: &str| cols[h.iter().position(|c| c == name).unwrap()];
        let num = |name: &str| at(name).parse::<i64>().unwrap_or(-1);
        rows.push((
            at("PARTITION").parse().unwrap(),
            num("CURRENT-OFFSET"),
            num("LOG-END-OFFSET"),
            num("LAG"),
        ));
    }
    rows.sort();
    rows
}

/// Goal: Kafka's own tools, on the Java client 4.1, work against Sluice unchanged (what
/// operators reach for first). Method: 1 controller + 3 brokers. `kafka-topics --create`
/// makes a 3-partition RF 3 topic and `--describe` shows every partition led with a full
/// ISR; the console producer writes 90 keyed records with acks=all; the console consumer
/// in group `tools` reads all 90 back (keys and values as written) and commits;
/// `kafka-consumer-groups --describe` shows LAG 0 on every partition, then, after 30 more
/// records, a total LAG of 30 with LOG-END-OFFSET up by 30.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafkas_own_topic_console_and_group_tools_work_unchanged() {
    let c = Cluster::start(1, 3, &[], &[]);
    let b = c.broker_addr(1);
    wait_for("a broker to answer kafka-topics", WAIT, || async {
        let (ok, out, _) = kafka_tool_try(TOPICS, &["--bootstrap-server", &b, "--list"], None);
        ok.then_some(out)
    })
    .await;
    let created = kafka_tool(
        TOPICS,
        &[
            "--bootstrap-server",
            &b,
            "--create",
            "--topic",
            "tools",
            "--partitions",
            "3",
            "--replication-factor",
            "3",
        ],
        None,
    );
    assert!(created.contains("Created topic tools"), "{created}");
    let described = wait_for("kafka-topics to show the topic led", WAIT, || async {
        let out = kafka_tool(
            TOPICS,
            &["--bootstrap-server", &b, "--describe", "--topic", "tools"],
            None,
        );
        let parts: Vec<&str> = out
            .lines()
            .filter(|l| l.trim_start().starts_with("Topic: tools\tPartition:"))
            .collect();
        let led = parts.len() == 3
            && parts.iter().all(|l| {
                let isr = l.split("Isr: ").nth(1).unwrap_or("");
                !l.contains("Leader: none")
                    && !l.contains("Leader: -1")
                    && isr.split('\t').next().unwrap_or("").split(',').count() == 3
            });
        led.then_some(out)
    })
    .await;
    assert!(
        described.contains("PartitionCount: 3") && described.contains("ReplicationFactor: 3"),
        "{described}"
    );

    let input: String = (0..90).map(|i| format!("key{i}\tvalue{i}\n")).collect();
    console_produce(&b, "tools", &["--producer-property", "acks=all"], &input);
    let consumed = kafka_tool(
        CONSOLE_CONSUMER,
        &[
            "--bootstrap-server",
            &b,
            "--topic",
            "tools",
            "--group",
            "tools",
            "--from-beginning",
            "--max-messages",
            "90",
            "--timeout-ms",
            "60000",
            "--property",
            "print.key=true",
            "--property",
            "key.separator=\t",
        ],
        None,
    );
    let mut got: Vec<&str> = consumed.lines().collect();
    got.sort();
    let mut want: Vec<&str> = input.lines().collect();
    want.sort();
    assert_eq!(got, want, "the console consumer reads back every record");

    // The console consumer committed its positions when it stopped after 90 records; a
    // partition it had not fetched from at that moment may stay behind, so read the
    // offsets it committed and what is left from the tool itself.
    let rows = group_rows(&b, "tools");
    assert_eq!(rows.len(), 3, "one row per partition: {rows:?}");
    let ends: i64 = rows.iter().map(|r| r.2).sum();
    assert_eq!(
        ends, 90,
        "LOG-END-OFFSET sums to what was produced: {rows:?}"
    );
    for (p, current, end, lag) in &rows {
        assert_eq!(*lag, end - current, "partition {p}: LAG = end - current");
    }
    let lag_before: i64 = rows.iter().map(|r| r.3).sum();

    let more: String = (90..120).map(|i| format!("key{i}\tvalue{i}\n")).collect();
    console_produce(&b, "tools", &[], &more);
    let rows = group_rows(&b, "tools");
    assert_eq!(rows.iter().map(|r| r.2).sum::<i64>(), 120, "{rows:?}");
    assert_eq!(
        rows.iter().map(|r| r.3).sum::<i64>(),
        lag_before + 30,
        "LAG grows by what was produced since: {rows:?}"
    );
}

/// Goal: `kafka-producer-perf-test` and `kafka-consumer-perf-test` (the Java client with
/// its defaults: idempotence on, acks=all, lz4 off, 16 KiB batches, auto-created topic)
/// run to the end against Sluice. Method: 1 controller + 3 brokers; the producer tool
/// sends 20 000 records of 1 KiB to a topic that does not exist yet (auto-creation); the
/// consumer tool reads 20 000 records back in a group.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafkas_perf_tools_produce_and_consume_to_the_end() {
    let c = Cluster::start(1, 3, &[], &[]);
    let b = c.broker_addr(1);
    let bootstrap = format!("bootstrap.servers={b}");
    let out = wait_for("kafka-producer-perf-test to finish", WAIT, || async {
        let (ok, out, err) = kafka_tool_try(
            PRODUCER_PERF,
            &[
                "--topic",
                "perf",
                "--num-records",
                "20000",
                "--record-size",
                "1024",
                "--throughput",
                "-1",
                "--producer-props",
                &bootstrap,
                "acks=all",
                "enable.idempotence=true",
            ],
            None,
        );
        if !ok {
            eprintln!("producer perf: {out}\n{err}");
        }
        ok.then_some(out)
    })
    .await;
    assert!(
        out.lines().any(|l| l.starts_with("20000 records sent")),
        "{out}"
    );
    let out = kafka_tool(
        CONSUMER_PERF,
        &[
            "--bootstrap-server",
            &b,
            "--topic",
            "perf",
            "--messages",
            "20000",
            "--timeout",
            "60000",
        ],
        None,
    );
    let last = out.lines().last().unwrap_or("");
    let cols: Vec<&str> = last.split(',').map(str::trim).collect();
    assert!(cols.len() >= 5, "{out}");
    assert_eq!(cols[4], "20000", "data.consumed.in.nMsg: {out}");
}

/// Goal: franz-go (a pure-Go client used by Redpanda's tools and many Go services) works
/// unchanged: admin, idempotent producer, group consumers and lag. Method: 1 controller +
/// 3 brokers; `tests/go/franz` creates a 3-partition RF 3 topic with kadm, starts two
/// members of one group (cooperative-sticky) and waits until they share the partitions,
/// produces 300 keyed records with two headers of the same key (acks=all, idempotent), the
/// members consume until every record is seen and commit; kadm's lag is then 0. Every
/// acknowledged record is consumed once, at its acknowledged partition and offset, with
/// its key, value and headers in order; the committed offsets are the log ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn franz_go_produces_and_consumes_in_a_group_unchanged() {
    let bin = test_deps().join("franz");
    assert!(
        bin.is_file(),
        "{} is missing: scripts/test builds tests/go/franz (Go)",
        bin.display()
    );
    let c = Cluster::start(1, 3, &[], &[]);
    let b = c.broker_addr(1);
    wait_for("three brokers in the metadata", WAIT, || async {
        let m = sluice_proto::v1::broker_client::BrokerClient::new(channel(&b))
            .metadata(sluice_proto::v1::MetadataRequest::default())
            .await
            .ok()?
            .into_inner();
        (m.brokers.len() == 3).then_some(())
    })
    .await;
    let out = Command::new("timeout")
        .arg("170")
        .arg(&bin)
        .args([b.as_str(), "franz", "franz-group", "300"])
        .output()
        .expect("the franz-go client runs");
    check_group_client_report("franz-go", &out);
}

/// Checks the JSON report of a group test client (`tests/go/franz`, `tests/js/kafkajs`):
/// every acknowledged record consumed once at its partition and offset with key, value and
/// repeated headers in order, both members assigned, commits at the log ends, lag 0, and
/// murmur2 placement by key.
fn check_group_client_report(client: &str, out: &std::process::Output) {
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{client} printed no report ({e}):\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    assert_eq!(r["errors"], serde_json::json!([]), "{r}");
    assert_eq!(r["created"], true);
    let key = |x: &serde_json::Value| {
        (
            x["partition"].as_i64().unwrap(),
            x["offset"].as_i64().unwrap(),
            x["key"].as_str().unwrap().to_string(),
            x["value"].as_str().unwrap().to_string(),
        )
    };
    let mut acked: Vec<_> = r["acked"].as_array().unwrap().iter().map(key).collect();
    acked.sort();
    assert_eq!(acked.len(), 300);
    let members = r["consumed"].as_array().unwrap();
    assert_eq!(members.len(), 2);
    let mut consumed: Vec<_> = members
        .iter()
        .flat_map(|m| m.as_array().unwrap().iter().map(key))
        .collect();
    consumed.sort();
    assert_eq!(consumed, acked, "every acknowledged record consumed once");
    for m in members {
        for x in m.as_array().unwrap() {
            assert_eq!(
                x["headers"],
                serde_json::json!([["h", "1"], ["h", "2"]]),
                "repeated header keys keep their order"
            );
        }
    }
    let assigned = r["assigned"].as_array().unwrap();
    assert!(
        assigned.iter().all(|a| !a.as_array().unwrap().is_empty()),
        "both members got partitions: {assigned:?}"
    );
    assert_eq!(
        r["committed"], r["ends"],
        "committed offsets are the log ends"
    );
    assert_eq!(r["lag"], 0);
    // The same keys land on the same partitions as Kafka's murmur2 partitioner (the
    // default of every client) puts them: the Rust client agrees with the client.
    for (p, _, k, _) in &acked {
        assert_eq!(
            i64::from(sluice_client::partition_for_key(k.as_bytes(), 3)),
            *p,
            "key {k}"
        );
    }
}

/// Goal: kafkajs (the Node.js client; 2.2.4 negotiates only non-flexible API versions, so
/// it drives the older encodings of every API it uses) works unchanged. Method: as for
/// franz-go — 1 controller + 3 brokers; `tests/js/kafkajs` creates a 3-partition RF 3
/// topic, starts two members of one group, produces 300 keyed records with two headers of
/// the same key (idempotent, acks=all), consumes until every record is seen, commits by
/// leaving, and reads the committed offsets and log ends with its admin client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafkajs_produces_and_consumes_in_a_group_unchanged() {
    let modules = test_deps().join("kafkajs/node_modules");
    assert!(
        modules.join("kafkajs").is_dir(),
        "{} is missing: scripts/test installs tests/js/kafkajs (npm ci)",
        modules.display()
    );
    let c = Cluster::start(1, 3, &[], &[]);
    let b = c.broker_addr(1);
    wait_for("three brokers in the metadata", WAIT, || async {
        let m = sluice_proto::v1::broker_client::BrokerClient::new(channel(&b))
            .metadata(sluice_proto::v1::MetadataRequest::default())
            .await
            .ok()?
            .into_inner();
        (m.brokers.len() == 3).then_some(())
    })
    .await;
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("js/kafkajs/main.js");
    let out = Command::new("timeout")
        .arg("170")
        .arg("node")
        .arg(&script)
        .args([b.as_str(), "kjs", "kjs-group", "300"])
        .env("NODE_PATH", &modules)
        .output()
        .expect("node runs");
    check_group_client_report("kafkajs", &out);
}

/// Goal: dynamic broker configs as `kafka-configs --entity-type brokers --entity-default`
/// sets them (the Java AdminClient 4.1.1, a BROKER resource named ""): a cluster-wide
/// `message.max.bytes` reaches every topic without its own override at once (the brokers
/// refuse a bigger batch; DescribeConfigs of the topic says DYNAMIC_DEFAULT_BROKER_CONFIG),
/// DescribeConfigs of BROKER "" and of a broker show it, per-broker values, unknown keys and
/// bad values are refused naming the problem, and deleting it lifts the limit. Method: 1
/// controller + 2 brokers, an RF 2 topic, `tests/java/DynamicConfigs.java`. Seen failing with
/// the dynamic defaults left out of the brokers' log configs (the 5000-byte record was
/// accepted).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_wide_dynamic_broker_configs_apply_to_topics_without_overrides() {
    let c = Cluster::start(1, 2, &[], &[]);
    create_topic_with(&c.controller_addr(1), "dyn", 1, 2, &[]).await;
    let b = c.bootstrap();
    wait_for("the topic led with its full ISR", WAIT, || async {
        let t = describe_topic(&c.controller_addr(1), "dyn").await?;
        let p = &t.partitions[0];
        (p.leader_id > 0 && p.isr.len() == 2).then_some(())
    })
    .await;
    let program = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("java/DynamicConfigs.java");
    let out = kafka_tool(program.to_str().unwrap(), &[&b, "dyn", "1"], None);
    let r: serde_json::Value = serde_json::from_str(out.trim()).expect("one JSON report");
    assert_eq!(r["set_size"], "OK", "{r}");
    assert_eq!(r["set_retention"], "OK", "{r}");
    assert_eq!(r["big_refused"], "RecordTooLargeException", "{r}");
    let t = &r["topic"];
    assert_eq!(t["max.message.bytes"]["value"], "2000", "{r}");
    assert_eq!(
        t["max.message.bytes"]["source"], "DYNAMIC_DEFAULT_BROKER_CONFIG",
        "{r}"
    );
    assert_eq!(t["retention.ms"]["value"], "3600000", "{r}");
    assert_eq!(t["segment.bytes"]["source"], "DEFAULT_CONFIG", "{r}");
    let cluster = r["cluster"].as_object().unwrap();
    assert_eq!(
        cluster.keys().collect::<Vec<_>>(),
        vec!["log.retention.ms", "message.max.bytes"],
        "{r}"
    );
    assert_eq!(
        cluster["message.max.bytes"]["source"], "DYNAMIC_DEFAULT_BROKER_CONFIG",
        "{r}"
    );
    let br = &r["broker"];
    assert_eq!(br["message.max.bytes"]["value"], "2000", "{r}");
    assert_eq!(br["message.max.bytes"]["read_only"], false, "{r}");
    assert_eq!(br["log.segment.bytes"]["source"], "DEFAULT_CONFIG", "{r}");
    assert_eq!(br["node.id"]["read_only"], true, "{r}");
    for (what, words) in [
        ("per_broker", "cluster-wide"),
        ("unknown", "num.io.threads"),
        ("bad_value", "not an integer"),
    ] {
        let m = r["refused"][what].as_str().unwrap();
        assert!(m.contains(words), "{what}: {m}");
    }
    assert_eq!(r["delete_size"], "OK", "{r}");
    assert_eq!(r["big_accepted"], "OK", "{r}");
    assert_eq!(
        r["cluster_after_delete"]
            .as_object()
            .unwrap()
            .keys()
            .collect::<Vec<_>>(),
        vec!["log.retention.ms"],
        "{r}"
    );
    assert_eq!(r["delete_retention"], "OK", "{r}");
    assert_eq!(r["cluster_at_end"], serde_json::json!({}), "{r}");
}

/// Goal: the Java client and Kafka's own tools reach a `sluice dev --secure` cluster over
/// SASL_SSL (SCRAM-SHA-256) with the file it writes for them, and a wrong password gets
/// Kafka's authentication error. Method: `kafka-topics --command-config
/// <dir>/admin.java.properties` creates and lists a topic; the console producer and consumer
/// with the same file write and read a record; the same file with a wrong password makes
/// kafka-topics fail with Kafka's authentication message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn java_tools_use_sasl_ssl_with_the_dev_secure_properties() {
    let dev = DevCluster::start_with(&["--secure"]);
    let props = dev.dir().join("admin.java.properties");
    let p = props.display().to_string();
    let first = dev.bootstrap().split(',').next().unwrap().to_string();
    kafka_tool(
        TOPICS,
        &[
            "--bootstrap-server",
            &first,
            "--command-config",
            &p,
            "--create",
            "--topic",
            "jsec",
            "--partitions",
            "1",
            "--replication-factor",
            "3",
        ],
        None,
    );
    let out = kafka_tool(
        TOPICS,
        &[
            "--bootstrap-server",
            &first,
            "--command-config",
            &p,
            "--list",
        ],
        None,
    );
    assert!(out.lines().any(|l| l == "jsec"), "{out}");
    kafka_tool(
        CONSOLE_PRODUCER,
        &[
            "--bootstrap-server",
            &first,
            "--producer.config",
            &p,
            "--topic",
            "jsec",
        ],
        Some("over-sasl\n"),
    );
    let out = kafka_tool(
        CONSOLE_CONSUMER,
        &[
            "--bootstrap-server",
            &first,
            "--consumer.config",
            &p,
            "--topic",
            "jsec",
            "--from-beginning",
            "--max-messages",
            "1",
            "--timeout-ms",
            "30000",
        ],
        None,
    );
    assert!(out.contains("over-sasl"), "{out}");
    let wrong = dev.dir().join("wrong.java.properties");
    let text = std::fs::read_to_string(&props).unwrap();
    let at = text.find("password=\"").unwrap() + "password=\"".len();
    std::fs::write(&wrong, format!("{}x{}", &text[..at], &text[at..])).unwrap();
    let (ok, out, err) = kafka_tool_try(
        TOPICS,
        &[
            "--bootstrap-server",
            &first,
            "--command-config",
            &wrong.display().to_string(),
            "--list",
        ],
        None,
    );
    assert!(
        !ok && format!("{out}{err}")
            .contains("invalid credentials with SASL mechanism SCRAM-SHA-256"),
        "a wrong password: {out}\n{err}"
    );
}

/// Goal: users can be managed the Kafka way (KIP-554, what `kafka-configs --entity-type
/// users` and the Java AdminClient send) and a password salted by the Java client logs in.
/// Method: `sluice dev --secure`; `tests/java/ScramUsers.java` creates `bob` (SCRAM-SHA-256,
/// 8192 iterations) over SASL_SSL as the super-user and describes him; kcat logs in as bob;
/// `sluice user list` shows him; the Java client deletes him; describing him is
/// ResourceNotFoundException and kcat as bob is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_java_admin_client_manages_scram_users() {
    let dev = DevCluster::start_with(&["--secure"]);
    let java = dev
        .dir()
        .join("admin.java.properties")
        .display()
        .to_string();
    let program = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("java/ScramUsers.java");
    let program = program.to_str().unwrap();
    let run = |args: &[&str]| -> serde_json::Value {
        let mut all = vec![java.as_str()];
        all.extend_from_slice(args);
        let out = kafka_tool(program, &all, None);
        serde_json::from_str(out.trim()).expect("one JSON report")
    };
    assert_eq!(run(&["create", "bob", "b0b-pw"])["result"], "OK");
    let d = run(&["describe", "bob"]);
    assert_eq!(
        d["credentials"],
        serde_json::json!([{"mechanism": "SCRAM-SHA-256", "iterations": 8192}]),
        "{d}"
    );
    let bob = sasl_properties(&dev, "bob", "bob", "SCRAM-SHA-256", "b0b-pw");
    let (ok, out, err) = kcat(&["-F", &bob, "-L", "-m", "10"], None);
    assert!(ok && out.contains("brokers"), "kcat as bob: {out}\n{err}");
    let admin = dev.dir().join("admin.properties").display().to_string();
    let (ok, out, err) = sluice(&[
        "--command-config",
        &admin,
        "user",
        "list",
        "--bootstrap",
        &dev.bootstrap(),
    ]);
    assert!(ok && out.contains("bob"), "{out}\n{err}");
    assert_eq!(run(&["delete", "bob"])["result"], "OK");
    let d = run(&["describe", "bob"]);
    assert!(
        d["result"]
            .as_str()
            .unwrap()
            .starts_with("ResourceNotFoundException"),
        "{d}"
    );
    wait_for("bob refused", Duration::from_secs(10), || async {
        let (ok, _, _) = kcat(&["-F", &bob, "-L", "-m", "5"], None);
        (!ok).then_some(())
    })
    .await;
}

const ACLS: &str = "org.apache.kafka.tools.AclCommand";

/// Goal: Kafka's own `kafka-acls` manages Sluice's ACLs over the Kafka port (CreateAcls,
/// DescribeAcls, DeleteAcls), and a Java consumer without rights gets Kafka's authorization
/// error. Method: `sluice dev --secure`; admin creates topic `jacl` and writes a record;
/// `sluice user create carol`; a Java consumer (`tests/java/ConsumeAs.java`) as carol fails
/// with TopicAuthorizationException; `kafka-acls --add --allow-principal User:carol --operation
/// Read --topic jacl --group cg` as admin; `--list` shows it; carol's consumer reads the
/// record; `kafka-acls --remove` takes it away and `--list` shows nothing for jacl.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_acls_manages_acls_and_a_java_consumer_without_rights_is_refused() {
    let dev = DevCluster::start_with(&["--secure"]);
    let props = dev.dir().join("admin.java.properties");
    let p = props.display().to_string();
    let first = dev.bootstrap().split(',').next().unwrap().to_string();
    kafka_tool(
        TOPICS,
        &[
            "--bootstrap-server",
            &first,
            "--command-config",
            &p,
            "--create",
            "--topic",
            "jacl",
            "--partitions",
            "1",
            "--replication-factor",
            "3",
        ],
        None,
    );
    kafka_tool(
        CONSOLE_PRODUCER,
        &[
            "--bootstrap-server",
            &first,
            "--producer.config",
            &p,
            "--topic",
            "jacl",
        ],
        Some("for-carol\n"),
    );
    let admin = dev.dir().join("admin.properties").display().to_string();
    let (ok, out, err) = sluice(&[
        "--command-config",
        &admin,
        "user",
        "create",
        "carol",
        "--password",
        "c4rol-pw",
        "--bootstrap",
        &dev.bootstrap(),
    ]);
    assert!(ok, "user create carol: {out}\n{err}");
    let text = std::fs::read_to_string(&props).unwrap();
    let jaas = text
        .lines()
        .find(|l| l.starts_with("sasl.jaas.config="))
        .unwrap();
    let carol = dev.dir().join("carol.java.properties");
    std::fs::write(
        &carol,
        text.replace(
            jaas,
            "sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username=\"carol\" password=\"c4rol-pw\";",
        ),
    )
    .unwrap();
    let c = carol.display().to_string();
    let program = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("java/ConsumeAs.java");
    let program = program.to_str().unwrap();
    let consume = || {
        kafka_tool(program, &[&c, "jacl", "cg"], None)
            .trim()
            .to_string()
    };
    let got = consume();
    assert_eq!(got, "TopicAuthorizationException", "carol without ACLs");
    let acls = |args: &[&str]| {
        let mut all = vec!["--bootstrap-server", first.as_str(), "--command-config", &p];
        all.extend_from_slice(args);
        kafka_tool(ACLS, &all, None)
    };
    acls(&[
        "--add",
        "--allow-principal",
        "User:carol",
        "--operation",
        "Read",
        "--topic",
        "jacl",
        "--group",
        "cg",
    ]);
    let listed = acls(&["--list", "--topic", "jacl"]);
    assert!(
        listed.contains("User:carol") && listed.contains("READ"),
        "{listed}"
    );
    assert_eq!(consume(), "OK for-carol", "carol with Read");
    acls(&[
        "--remove",
        "--allow-principal",
        "User:carol",
        "--operation",
        "Read",
        "--topic",
        "jacl",
        "--force",
    ]);
    let listed = acls(&["--list", "--topic", "jacl"]);
    assert!(!listed.contains("User:carol"), "{listed}");
}
