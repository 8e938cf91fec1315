//! Client quotas (issue #16): `sluice quota set|list` stores Kafka's `producer_byte_rate`,
//! `consumer_byte_rate` and `request_percentage` in the metadata log; brokers hold a client
//! over its quota to the rate by throttling (`throttle_time_ms`, the connection muted), never
//! by dropping data.

use serde_json::Value;
use sluice_tests::*;

const RATE: f64 = 262_144.0; // 256 KiB/s

fn py(args: &[&str]) -> Value {
    py_report("kafka_quota.py", args, 180)
}

/// Goal: a producer and a consumer over their byte-rate quotas are held within 20 % of the
/// quota over 10 s, lose nothing, and are told they were throttled; quotas are listed,
/// removed, and bad ones refused by name. Method: `sluice dev`; `sluice quota set
/// --client-id throttled --producer-byte-rate 262144` and `--client-id slowreader
/// --consumer-byte-rate 262144`; confluent-kafka (`py/kafka_quota.py`) produces 1 KiB records
/// as fast as it can for 14 s and measures delivered bytes over 10 s, then consumes them all
/// back measuring received bytes over 10 s; librdkafka's throttle_cb counts throttle events.
#[tokio::test(flavor = "multi_thread")]
async fn clients_over_their_byte_rates_are_throttled_to_the_quota_and_lose_nothing() {
    let dev = DevCluster::start();
    let b = dev.bootstrap();
    let b = b.as_str();
    must(&[
        "topic",
        "create",
        "q",
        "-p",
        "1",
        "-r",
        "3",
        "--bootstrap",
        b,
    ]);
    must(&[
        "quota",
        "set",
        "--client-id",
        "throttled",
        "--producer-byte-rate",
        "262144",
        "--bootstrap",
        b,
    ]);
    must(&[
        "quota",
        "set",
        "--client-id",
        "slowreader",
        "--add-config",
        "consumer_byte_rate=262144",
        "--bootstrap",
        b,
    ]);
    let listed: Value =
        serde_json::from_str(&must(&["quota", "list", "-o", "json", "--bootstrap", b])).unwrap();
    let quotas = listed["quotas"].as_array().unwrap();
    assert_eq!(quotas.len(), 2, "{listed}");
    assert!(
        quotas
            .iter()
            .any(|q| q["entity"]["client-id"] == "throttled"
                && q["values"]["producer_byte_rate"] == RATE),
        "{listed}"
    );

    let produced = py(&["produce", b, "q", "14"]);
    eprintln!("produce: {produced}");
    assert_eq!(produced["errors"], serde_json::json!([]), "{produced}");
    assert_eq!(produced["undelivered"], 0, "{produced}");
    assert_eq!(produced["delivered"], produced["sent"], "{produced}");
    let rate = produced["window_bytes"].as_f64().unwrap() / 10.0;
    assert!(
        (rate - RATE).abs() <= 0.2 * RATE,
        "produce held at {rate:.0} B/s, quota {RATE}: {produced}"
    );
    assert!(
        produced["throttle_events"].as_u64().unwrap() > 0,
        "throttle_time_ms reported: {produced}"
    );

    let delivered = produced["delivered"].as_u64().unwrap();
    let consumed = py(&["consume", b, "q", &delivered.to_string()]);
    eprintln!("consume: {consumed}");
    assert_eq!(consumed["received"], delivered, "nothing lost: {consumed}");
    let seconds = consumed["window_seconds"].as_f64().unwrap();
    assert!(seconds >= 9.0, "{consumed}");
    let rate = consumed["window_bytes"].as_f64().unwrap() / seconds;
    assert!(
        (rate - RATE).abs() <= 0.2 * RATE,
        "fetch held at {rate:.0} B/s, quota {RATE}: {consumed}"
    );
    assert!(
        consumed["throttle_events"].as_u64().unwrap() > 0,
        "{consumed}"
    );

    // Removing a quota; refusing ones Sluice does not know or enforce, by name.
    must(&[
        "quota",
        "set",
        "--client-id",
        "throttled",
        "--delete-config",
        "producer_byte_rate",
        "--bootstrap",
        b,
    ]);
    let listed = must(&["quota", "list", "-o", "json", "--bootstrap", b]);
    assert!(!listed.contains("throttled"), "{listed}");
    for bad in [
        "controller_mutation_rate=10",
        "producer_byte_rate=-5",
        "bytes=1",
    ] {
        let (ok, out, err) = sluice(&[
            "quota",
            "set",
            "--user",
            "alice",
            "--add-config",
            bad,
            "--bootstrap",
            b,
        ]);
        assert!(
            !ok && err.contains("INVALID_REQUEST"),
            "{bad}: {out}\n{err}"
        );
        let key = bad.split('=').next().unwrap();
        assert!(err.contains(key), "{bad}: the error names it: {err}");
    }
    let listed = must(&["quota", "list", "-o", "json", "--bootstrap", b]);
    assert!(
        !listed.contains("alice"),
        "refused entries changed nothing: {listed}"
    );
}

/// Goal: quotas are managed through the Kafka port too (AlterClientQuotas and
/// DescribeClientQuotas, as `kafka-configs.sh` and AdminClient send them), a bad entry is
/// refused alone, and a request-time quota (`request_percentage`) throttles a chatty client
/// while another client id is not. Method: `sluice dev`; a quota set with `sluice quota set`;
/// `py/kafka_quota.py admin` (kafka-python raw requests) sets request_percentage=0.1 for client
/// id `chatty`, describes all quotas, then sends Metadata requests as `chatty` until one
/// carries a throttle time, and as many as `calm`.
#[tokio::test(flavor = "multi_thread")]
async fn quotas_are_managed_on_the_kafka_port_and_request_time_is_throttled() {
    let dev = DevCluster::start();
    let b = dev.bootstrap();
    let b = b.as_str();
    must(&[
        "quota",
        "set",
        "--user-default",
        "--consumer-byte-rate",
        "1048576",
        "--bootstrap",
        b,
    ]);
    let r = py(&["admin", b, "unused", "-"]);
    eprintln!("admin: {r}");
    assert_eq!(r["altered"][0][0], 0, "{r}");
    assert_eq!(
        r["altered"][1][0], 42,
        "INVALID_REQUEST for a negative rate: {r}"
    );
    assert!(
        r["altered"][1][1]
            .as_str()
            .unwrap_or_default()
            .contains("consumer_byte_rate"),
        "{r}"
    );
    assert_eq!(r["describe_error"], 0, "{r}");
    assert_eq!(
        r["described"],
        serde_json::json!([
            [{"client-id": "chatty"}, {"request_percentage": 0.1}],
            [{"user": null}, {"consumer_byte_rate": 1048576.0}],
        ]),
        "{r}"
    );
    assert!(r["chatty_max_throttle_ms"].as_i64().unwrap() > 0, "{r}");
    assert_eq!(r["calm_max_throttle_ms"], 0, "{r}");
    let listed = must(&["quota", "list", "--client-id", "chatty", "--bootstrap", b]);
    assert!(listed.contains("request_percentage"), "{listed}");
}
