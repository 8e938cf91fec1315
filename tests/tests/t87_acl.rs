//! ACLs (issue #16): Kafka's authorizer on both protocols. `sluice dev --secure` runs with
//! `authorizer.class.name` (default deny) and the super-user `admin`; `sluice acl add|remove|
//! list` manages bindings; every request of the Kafka port (confluent-kafka / kafka-python) and
//! of gRPC (`sluice --command-config`) is checked, and a refused call changes nothing.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use sluice_tests::*;

fn py(script: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("py")
        .join(script)
}

const USERS: [&str; 5] = ["writer", "reader", "denied", "opsadmin", "nobody"];

/// The outcome of a sluice command: "OK", or the first error code name on stderr.
fn outcome(args: &[&str]) -> String {
    let (ok, out, err) = sluice(args);
    if ok {
        return "OK".into();
    }
    for code in [
        "TOPIC_AUTHORIZATION_FAILED",
        "GROUP_AUTHORIZATION_FAILED",
        "CLUSTER_AUTHORIZATION_FAILED",
        "INVALID_TOPIC_EXCEPTION",
    ] {
        if err.contains(code) || out.contains(code) {
            return code.into();
        }
    }
    format!("other failure: {out} {err}")
}

/// Goal: an ACL matrix — five principals × topics, groups and the cluster × read, write,
/// create, delete, alter, describe — where every allowed call succeeds on both protocols and
/// every denied one fails with TOPIC_/GROUP_/CLUSTER_AUTHORIZATION_FAILED and changes nothing.
/// Method: `sluice dev --secure`; admin creates topics `data` and `other`, five users and their
/// ACLs (`writer`: Write on the prefix `da`; `reader`: Read+Describe on `data`, Read on group
/// `readers`; `denied`: Read/Write/Describe on every topic and group but a DENY of Write on
/// `data`; `opsadmin`: Create/Alter/Describe on the cluster; `nobody`: none). Each user runs
/// `py/kafka_acl_matrix.py` (Kafka port) and the same calls through `sluice` (gRPC); the
/// outcomes are compared with the expected table. Then admin checks nothing changed: `data`
/// holds exactly the allowed writers' records, its retention is unchanged, no unauthorized
/// topic exists, the group's offset is the allowed commit's. Finally removing reader's ACL
/// refuses reader within one propagation.
#[tokio::test(flavor = "multi_thread")]
async fn an_acl_matrix_allows_exactly_what_the_bindings_say_on_both_protocols() {
    let dev = DevCluster::start_with(&["--secure"]);
    let admin = dev.dir().join("admin.properties").display().to_string();
    let b = dev.bootstrap();
    let ca = dev.dir().join("tls/ca.pem").display().to_string();
    let adm = |args: &[&str]| -> String {
        let mut all = vec!["--command-config", admin.as_str()];
        all.extend_from_slice(args);
        all.extend(["--bootstrap", b.as_str()]);
        must(&all)
    };
    adm(&["topic", "create", "data", "-p", "1", "-r", "3"]);
    adm(&["topic", "create", "other", "-p", "1", "-r", "3"]);
    for u in USERS {
        adm(&["user", "create", u, "--password", &format!("pw-{u}")]);
    }
    let acl = |args: &[&str]| {
        let mut all = vec!["acl", "add"];
        all.extend_from_slice(args);
        adm(&all);
    };
    acl(&[
        "--allow-principal",
        "User:writer",
        "--operation",
        "Write",
        "--topic",
        "da",
        "--resource-pattern-type",
        "prefixed",
    ]);
    acl(&[
        "--allow-principal",
        "User:reader",
        "--operation",
        "Read",
        "--operation",
        "Describe",
        "--topic",
        "data",
    ]);
    acl(&[
        "--allow-principal",
        "User:reader",
        "--operation",
        "Read",
        "--group",
        "readers",
    ]);
    acl(&[
        "--allow-principal",
        "User:denied",
        "--operation",
        "Read",
        "--operation",
        "Write",
        "--operation",
        "Describe",
        "--topic",
        "*",
        "--group",
        "*",
    ]);
    acl(&[
        "--deny-principal",
        "User:denied",
        "--operation",
        "Write",
        "--topic",
        "data",
    ]);
    acl(&[
        "--allow-principal",
        "User:opsadmin",
        "--operation",
        "Create",
        "--operation",
        "Alter",
        "--operation",
        "Describe",
        "--cluster",
    ]);
    let listed: Value =
        serde_json::from_str(&adm(&["acl", "list", "-o", "json"])).expect("acl list json");
    assert_eq!(
        listed["acls"].as_array().unwrap().len(),
        1 + 2 + 1 + 6 + 1 + 3,
        "{listed}"
    );

    // Kafka port. Writers first, so readers find a record.
    const TAF: &str = "TOPIC_AUTHORIZATION_FAILED";
    const GAF: &str = "GROUP_AUTHORIZATION_FAILED";
    const CAF: &str = "CLUSTER_AUTHORIZATION_FAILED";
    let kafka_expected: [(&str, [(&str, &str); 10]); 5] = [
        (
            "writer",
            [
                ("metadata", "OK"), // Describe is implied by Write
                ("produce", "OK"),
                ("consume", TAF),
                ("commit", GAF),
                ("create_topic", TAF),
                ("delete_topic", TAF),
                ("alter_config", TAF),
                ("create_acl", CAF),
                ("describe_acls", CAF),
                ("produce_internal", TAF),
            ],
        ),
        (
            "reader",
            [
                ("metadata", "OK"),
                ("produce", TAF),
                ("consume", "OK"),
                ("commit", "OK"),
                ("create_topic", TAF),
                ("delete_topic", TAF),
                ("alter_config", TAF),
                ("create_acl", CAF),
                ("describe_acls", CAF),
                ("produce_internal", TAF),
            ],
        ),
        (
            "denied",
            [
                ("metadata", "OK"),
                ("produce", TAF), // the DENY wins over Write on *
                ("consume", "OK"),
                ("commit", "OK"),
                ("create_topic", TAF),
                ("delete_topic", TAF),
                ("alter_config", TAF),
                ("create_acl", CAF),
                ("describe_acls", CAF),
                // Write on * does not reach internal topics: brokers only.
                ("produce_internal", "TOPIC_EXCEPTION"),
            ],
        ),
        (
            "opsadmin",
            [
                ("metadata", TAF),
                ("produce", TAF),
                // No Describe: refused at Metadata, the client never fetches.
                ("consume", "NOTHING"),
                ("commit", GAF),
                ("create_topic", "OK"), // Create on the cluster
                ("delete_topic", TAF),
                ("alter_config", TAF),
                ("create_acl", "OK"), // Alter on the cluster
                ("describe_acls", "OK"),
                ("produce_internal", TAF),
            ],
        ),
        (
            "nobody",
            [
                ("metadata", TAF),
                ("produce", TAF),
                ("consume", "NOTHING"),
                ("commit", GAF),
                ("create_topic", TAF),
                ("delete_topic", TAF),
                ("alter_config", TAF),
                ("create_acl", CAF),
                ("describe_acls", CAF),
                ("produce_internal", TAF),
            ],
        ),
    ];
    let mut mismatches = Vec::new();
    for (user, expected) in &kafka_expected {
        let out = Command::new("timeout")
            .arg("300")
            .arg("python3")
            .arg(py("kafka_acl_matrix.py"))
            .args([
                b.as_str(),
                ca.as_str(),
                user,
                &format!("pw-{user}"),
                "data",
                "readers",
            ])
            .output()
            .expect("python3 runs (scripts/test installs confluent-kafka and kafka-python)");
        let text = String::from_utf8_lossy(&out.stdout);
        let got: Value = serde_json::from_str(text.trim()).unwrap_or_else(|e| {
            panic!(
                "{user}: {e}: {text}\n{}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
        for (op, want) in expected {
            if got[op] != *want {
                mismatches.push(format!("kafka {user} {op}: want {want}, got {}", got[op]));
            }
        }
    }

    // gRPC, the same users through sluice.
    for u in USERS {
        sasl_properties(&dev, u, u, "SCRAM-SHA-256", &format!("pw-{u}"));
    }
    let grpc_expected: [(&str, [(&str, &str); 7]); 5] = [
        (
            "writer",
            [
                ("produce", "OK"),
                ("consume", TAF),
                ("topic_delete", TAF),
                ("acl_list", CAF),
                ("quorum_status", CAF),
                ("group_describe", GAF),
                ("produce_internal", TAF),
            ],
        ),
        (
            "reader",
            [
                // An idempotent producer needs Write on some topic (or IdempotentWrite).
                ("produce", CAF),
                ("consume", "OK"),
                ("topic_delete", TAF),
                ("acl_list", CAF),
                ("quorum_status", CAF),
                ("group_describe", "OK"),
                ("produce_internal", CAF),
            ],
        ),
        (
            "denied",
            [
                ("produce", TAF),
                ("consume", "OK"),
                ("topic_delete", TAF),
                ("acl_list", CAF),
                ("quorum_status", CAF),
                ("group_describe", "OK"),
                ("produce_internal", "INVALID_TOPIC_EXCEPTION"),
            ],
        ),
        (
            "opsadmin",
            [
                ("produce", CAF),
                ("consume", TAF),
                ("topic_delete", TAF),
                ("acl_list", "OK"),
                ("quorum_status", "OK"),
                ("group_describe", GAF),
                ("produce_internal", CAF),
            ],
        ),
        (
            "nobody",
            [
                ("produce", CAF),
                ("consume", TAF),
                ("topic_delete", TAF),
                ("acl_list", CAF),
                ("quorum_status", CAF),
                ("group_describe", GAF),
                ("produce_internal", CAF),
            ],
        ),
    ];
    for (user, expected) in &grpc_expected {
        let props = dev.dir().join(format!("{user}.properties"));
        let props = props.display().to_string();
        let run = |args: &[&str]| {
            let mut all = vec!["--command-config", props.as_str()];
            all.extend_from_slice(args);
            all.extend(["--bootstrap", b.as_str()]);
            outcome(&all)
        };
        let produce = |topic: &str| {
            let (ok, out, err) = sluice_stdin(
                &[
                    "--command-config",
                    &props,
                    "produce",
                    topic,
                    "--partition",
                    "0",
                    "--bootstrap",
                    &b,
                ],
                &format!("grpc by {user}\n"),
            );
            if ok {
                "OK".to_string()
            } else {
                [TAF, CAF, GAF, "INVALID_TOPIC_EXCEPTION"]
                    .into_iter()
                    .find(|c| err.contains(c))
                    .map_or_else(|| format!("other: {out} {err}"), str::to_string)
            }
        };
        let got = [
            ("produce", produce("data")),
            (
                "consume",
                run(&[
                    "consume",
                    "data",
                    "--partition",
                    "0",
                    "--offset",
                    "0",
                    "--max-records",
                    "1",
                    "--timeout-ms",
                    "10000",
                ]),
            ),
            ("topic_delete", run(&["topic", "delete", "data"])),
            ("acl_list", run(&["acl", "list"])),
            ("quorum_status", run(&["quorum", "status"])),
            ("group_describe", run(&["group", "describe", "readers"])),
            ("produce_internal", produce("__consumer_offsets")),
        ];
        for ((op, want), (_, have)) in expected.iter().zip(&got) {
            if have != want {
                mismatches.push(format!("grpc {user} {op}: want {want}, got {have}"));
            }
        }
        // Listing shows only the topics the caller may describe.
        let (_, topics, _) = sluice(&[
            "--command-config",
            &props,
            "topic",
            "list",
            "-o",
            "json",
            "--bootstrap",
            &b,
        ]);
        let sees_data = topics.contains("\"data\"");
        let may = ["writer", "reader", "denied"].contains(user);
        if sees_data != may {
            mismatches.push(format!("grpc {user} topic list shows data: {sees_data}"));
        }
    }
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));

    // Nothing a refused call tried happened.
    let records = adm(&[
        "consume",
        "data",
        "--partition",
        "0",
        "--offset",
        "0",
        "--max-records",
        "100",
        "--timeout-ms",
        "3000",
        "-o",
        "json",
    ]);
    let values = consumed_values(&records);
    assert_eq!(
        values,
        ["by writer", "grpc by writer"],
        "only the allowed writes landed"
    );
    let described = adm(&["topic", "describe", "data", "-o", "json"]);
    assert!(
        !described.contains("1234"),
        "retention.ms was not altered: {described}"
    );
    let topics = adm(&["topic", "list", "-o", "json"]);
    for u in ["writer", "reader", "denied", "nobody"] {
        assert!(
            !topics.contains(&format!("acl-made-by-{u}")),
            "{u} created nothing: {topics}"
        );
    }
    assert!(topics.contains("acl-made-by-opsadmin"), "{topics}");
    let acls = adm(&["acl", "list", "-o", "json"]);
    assert!(acls.contains("User:ghost"), "opsadmin's ACL: {acls}");
    assert_eq!(
        serde_json::from_str::<Value>(&acls).unwrap()["acls"]
            .as_array()
            .unwrap()
            .len(),
        15,
        "{acls}"
    );

    // Removing reader's ACLs on `data` refuses reader at once (one metadata propagation).
    adm(&[
        "acl",
        "remove",
        "--topic",
        "data",
        "--allow-principal",
        "User:reader",
    ]);
    let reader = dev.dir().join("reader.properties").display().to_string();
    wait_for(
        "reader refused after acl remove",
        Duration::from_secs(10),
        || {
            let reader = reader.clone();
            let b = b.clone();
            async move {
                (outcome(&[
                    "--command-config",
                    &reader,
                    "consume",
                    "data",
                    "--partition",
                    "0",
                    "--offset",
                    "0",
                    "--max-records",
                    "1",
                    "--timeout-ms",
                    "3000",
                    "--bootstrap",
                    &b,
                ]) == TAF)
                    .then_some(())
            }
        },
    )
    .await;
}

/// Goal: ACL requests to a cluster without an authorizer say so (Kafka's SECURITY_DISABLED)
/// instead of storing bindings nothing would enforce. Method: a plain `sluice dev`; `sluice
/// acl add` and `acl list` fail naming SECURITY_DISABLED; the cluster keeps serving.
#[tokio::test(flavor = "multi_thread")]
async fn acls_on_a_cluster_without_an_authorizer_are_refused_as_security_disabled() {
    let dev = DevCluster::start();
    let b = dev.bootstrap();
    for args in [
        vec![
            "acl",
            "add",
            "--allow-principal",
            "User:a",
            "--operation",
            "Read",
            "--topic",
            "t",
        ],
        vec!["acl", "list"],
    ] {
        let mut all = args.clone();
        all.extend(["--bootstrap", b.as_str()]);
        let (ok, out, err) = sluice(&all);
        assert!(
            !ok && err.contains("SECURITY_DISABLED"),
            "{args:?}: {out}\n{err}"
        );
    }
    must(&["topic", "create", "still-serving", "--bootstrap", &b]);
}

/// Goal: producer ids are bound to the principal that was given them — a user who may write a
/// topic cannot write under another producer's id (which would make that producer's next real
/// batch look like a duplicate, acknowledged and dropped) nor under an id never handed out.
/// Method: `sluice dev --secure`; alice and mallory both get Write on `ids`;
/// `py/kafka_forged_producer_id.py` (raw kafka-python requests over SASL_SSL) has alice take an
/// id and write sequence 0, mallory write under alice's id at sequence 1 and under an
/// unallocated id (both CLUSTER_AUTHORIZATION_FAILED, code 31), mallory write under her own
/// id, and alice write sequence 1. The log then holds exactly alice-0, mallory-0, alice-1.
#[tokio::test(flavor = "multi_thread")]
async fn a_user_cannot_write_under_a_producer_id_given_to_someone_else() {
    let dev = DevCluster::start_with(&["--secure"]);
    let admin = dev.dir().join("admin.properties").display().to_string();
    let b = dev.bootstrap();
    let ca = dev.dir().join("tls/ca.pem").display().to_string();
    let adm = |args: &[&str]| -> String {
        let mut all = vec!["--command-config", admin.as_str()];
        all.extend_from_slice(args);
        all.extend(["--bootstrap", b.as_str()]);
        must(&all)
    };
    adm(&["topic", "create", "ids", "-p", "1", "-r", "3"]);
    for u in ["alice", "mallory"] {
        adm(&["user", "create", u, "--password", &format!("pw-{u}")]);
        adm(&[
            "acl",
            "add",
            "--allow-principal",
            &format!("User:{u}"),
            "--operation",
            "Write",
            "--topic",
            "ids",
        ]);
    }
    let r = py_report(
        "kafka_forged_producer_id.py",
        &[b.as_str(), ca.as_str(), "ids", "pw-alice", "pw-mallory"],
        120,
    );
    let code = |step: &str| r[step]["error_code"].as_i64().unwrap_or(-1);
    assert_eq!(code("alice_0"), 0, "{r}");
    assert_eq!(code("mallory_as_alice"), 31, "forged id refused: {r}");
    assert_eq!(
        code("mallory_unallocated"),
        31,
        "unallocated id refused: {r}"
    );
    assert_eq!(code("mallory_0"), 0, "{r}");
    assert_eq!(code("alice_1"), 0, "{r}");
    assert_ne!(r["alice_id"], r["mallory_id"], "{r}");
    let records = adm(&[
        "consume",
        "ids",
        "--partition",
        "0",
        "--offset",
        "0",
        "--max-records",
        "10",
        "--timeout-ms",
        "3000",
        "-o",
        "json",
    ]);
    let values = consumed_values(&records);
    assert_eq!(
        values,
        ["alice-0", "mallory-0", "alice-1"],
        "alice's second batch was stored, nothing forged was: {r}"
    );
}
