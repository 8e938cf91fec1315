//! SASL and users (issue #16): `sluice dev --secure` serves TLS + SASL (SCRAM-SHA-256/512,
//! PLAIN over TLS) with a super-user; `sluice user create|delete|list` keeps users as SCRAM
//! credentials in the metadata log; the same users authenticate Kafka clients (kcat,
//! confluent-kafka) and gRPC calls (`sluice --command-config`); a deleted user's sessions end
//! within one metadata propagation; malformed exchanges, wrong passwords and unknown users are
//! refused alike and the broker keeps serving.

use std::io::BufRead;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use sluice_tests::*;

fn py(script: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("py")
        .join(script)
}

/// Goal: one user database serves both protocols, and deleting a user ends what it had open.
/// Method: `sluice dev --secure`; the super-user (admin.properties) creates `alice`
/// (SCRAM-SHA-512) and a topic; alice lists topics over gRPC and produces/consumes with kcat
/// (SCRAM-SHA-512) and with PLAIN; a wrong password is refused on both protocols. A
/// confluent-kafka producer authenticated as alice delivers a record and keeps its
/// connections; `sluice user delete alice` returns; that producer's next record is not
/// delivered (its session ended) and it reports an authentication error, and a new kcat or
/// `sluice` as alice is refused within the bound.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_authenticate_on_both_protocols_and_a_deleted_users_sessions_end() {
    let dev = DevCluster::start_with(&["--secure"]);
    let admin = dev.dir().join("admin.properties").display().to_string();
    let b = dev.bootstrap();
    let (ok, out, err) = sluice(&[
        "--command-config",
        &admin,
        "user",
        "create",
        "alice",
        "--password",
        "wonder land",
        "--mechanism",
        "SCRAM-SHA-512",
        "--bootstrap",
        &b,
    ]);
    assert!(ok, "user create: {out}\n{err}");
    let (ok, out, err) = sluice(&[
        "--command-config",
        &admin,
        "user",
        "list",
        "-o",
        "json",
        "--bootstrap",
        &b,
    ]);
    assert!(ok, "user list: {err}");
    let list: serde_json::Value = serde_json::from_str(&out).unwrap();
    let alice = list["users"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["name"] == "alice")
        .unwrap_or_else(|| panic!("alice listed: {out}"));
    assert_eq!(
        alice["credentials"],
        serde_json::json!([{"mechanism": "SCRAM-SHA-512", "iterations": 4096}])
    );
    let (ok, _, err) = sluice(&[
        "--command-config",
        &admin,
        "topic",
        "create",
        "wonder",
        "-p",
        "1",
        "-r",
        "3",
        "--bootstrap",
        &b,
    ]);
    assert!(ok, "topic create as admin: {err}");
    // The authorizer is on (default deny): alice may use the topic.
    let (ok, _, err) = sluice(&[
        "--command-config",
        &admin,
        "acl",
        "add",
        "--allow-principal",
        "User:alice",
        "--operation",
        "All",
        "--topic",
        "wonder",
        "--bootstrap",
        &b,
    ]);
    assert!(ok, "acl add as admin: {err}");

    let alice = sasl_properties(&dev, "alice", "alice", "SCRAM-SHA-512", "wonder land");
    let plain = sasl_properties(&dev, "alice-plain", "alice", "PLAIN", "wonder land");
    let wrong = sasl_properties(&dev, "alice-wrong", "alice", "SCRAM-SHA-512", "wonder");

    // gRPC: Basic credentials against the SCRAM credential.
    let (ok, out, err) = sluice(&[
        "--command-config",
        &alice,
        "topic",
        "list",
        "--bootstrap",
        &b,
    ]);
    assert!(
        ok && out.contains("wonder"),
        "alice over gRPC: {out}\n{err}"
    );
    let (ok, _, err) = sluice(&[
        "--command-config",
        &wrong,
        "topic",
        "list",
        "--bootstrap",
        &b,
    ]);
    assert!(
        !ok && err.contains("SASL_AUTHENTICATION_FAILED"),
        "wrong password over gRPC: {err}"
    );
    // TLS alone (no user, no client certificate) is not enough once SASL is on.
    let tls_only = dev.dir().join("tls-only.properties");
    std::fs::write(
        &tls_only,
        format!(
            "security.protocol=SSL\nssl.ca.location={}\n",
            dev.dir().join("tls/ca.pem").display()
        ),
    )
    .unwrap();
    let (ok, _, err) = sluice(&[
        "--command-config",
        &tls_only.display().to_string(),
        "topic",
        "list",
        "--bootstrap",
        &b,
    ]);
    assert!(
        !ok && err.contains("SASL_AUTHENTICATION_FAILED"),
        "anonymous gRPC call: {err}"
    );

    // Kafka: SCRAM-SHA-512 and PLAIN as alice; the wrong password refused.
    let (ok, _, err) = kcat(&["-F", &alice, "-P", "-t", "wonder"], Some("scram\n"));
    assert!(ok, "kcat SCRAM-SHA-512 produce: {err}");
    let (ok, _, err) = kcat(&["-F", &plain, "-P", "-t", "wonder"], Some("plain\n"));
    assert!(ok, "kcat PLAIN produce: {err}");
    let (ok, out, err) = kcat(&["-F", &alice, "-C", "-t", "wonder", "-e"], None);
    assert!(
        ok && out.contains("scram") && out.contains("plain"),
        "kcat consume as alice: {out}\n{err}"
    );
    let (ok, _, err) = kcat(&["-F", &wrong, "-L", "-m", "10"], None);
    assert!(
        !ok && err.contains("invalid credentials"),
        "kcat with a wrong password: {err}"
    );

    // An open, authenticated session, then the user is deleted.
    let ca = dev.dir().join("tls/ca.pem").display().to_string();
    let mut child = Command::new("timeout")
        .arg("120")
        .arg("python3")
        .arg(py("kafka_sasl_session.py"))
        .args([&b, &ca, "wonder", "alice", "wonder land"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 runs (scripts/test installs confluent-kafka)");
    let mut stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    loop {
        line.clear();
        let n = stderr.read_line(&mut line).unwrap();
        assert!(n > 0, "kafka_sasl_session.py ended before it was ready");
        if line.starts_with("ready") {
            break;
        }
    }
    assert!(line.contains("delivered"), "first record as alice: {line}");
    let (ok, out, err) = sluice(&[
        "--command-config",
        &admin,
        "user",
        "delete",
        "alice",
        "--bootstrap",
        &b,
    ]);
    assert!(ok, "user delete: {out}\n{err}");
    let deleted = Instant::now();
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        writeln!(stdin, "deleted").unwrap();
    }
    let out = child.wait_with_output().unwrap();
    let report: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("session report ({e}): {:?}", out));
    assert_ne!(
        report["after"], "delivered",
        "a deleted user's open session still produced: {report}"
    );
    assert!(
        report["errors"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e.as_str().unwrap_or("").contains("Authentication")),
        "the client is told why: {report}"
    );
    // New sessions as alice fail on both protocols, within one propagation.
    wait_for(
        "alice refused everywhere",
        Duration::from_secs(10),
        || async {
            let (k, _, _) = kcat(&["-F", &alice, "-L", "-m", "5"], None);
            let (s, _, _) = sluice(&[
                "--command-config",
                &alice,
                "topic",
                "list",
                "--bootstrap",
                &b,
            ]);
            (!k && !s).then_some(())
        },
    )
    .await;
    eprintln!(
        "alice refused {:?} after the delete returned",
        deleted.elapsed()
    );
    // The admin is unaffected.
    let (ok, out, err) = sluice(&[
        "--command-config",
        &admin,
        "user",
        "list",
        "--bootstrap",
        &b,
    ]);
    assert!(
        ok && out.contains("admin") && !out.contains("alice"),
        "user list after the delete: {out}\n{err}"
    );
}

/// Goal: bad SASL input gets a clear error and a closed connection, and tells nothing about
/// which users exist; the broker keeps serving everyone else. Method: raw Kafka frames over
/// TLS (`kafka_sasl_raw.py`): a request before authenticating, an unknown mechanism,
/// garbage instead of a SCRAM message, a SaslAuthenticate before the handshake, a full SCRAM
/// exchange with a wrong password and one for a user that does not exist, PLAIN with a wrong
/// password. Then kcat with admin.properties still produces and consumes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_sasl_and_unknown_users_are_refused_alike_and_the_broker_keeps_serving() {
    let dev = DevCluster::start_with(&["--secure"]);
    let b = dev.bootstrap();
    let first = b.split(',').next().unwrap().to_string();
    let (host, port) = first.rsplit_once(':').unwrap();
    let ca = dev.dir().join("tls/ca.pem").display().to_string();
    let out = Command::new("timeout")
        .arg("60")
        .arg("python3")
        .arg(py("kafka_sasl_raw.py"))
        .args([host, port, &ca, "admin"])
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "kafka_sasl_raw.py: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["metadata_first"]["closed_without_answer"], true, "{r}");
    assert_eq!(r["unknown_mechanism"]["error"], 33, "{r}");
    assert_eq!(
        r["unknown_mechanism"]["mechanisms"],
        serde_json::json!(["SCRAM-SHA-256", "SCRAM-SHA-512", "PLAIN"]),
        "{r}"
    );
    assert_eq!(r["unknown_mechanism"]["closed"], true, "{r}");
    assert_eq!(r["garbage_first"]["error"], 58, "{r}");
    assert!(
        r["garbage_first"]["message"]
            .as_str()
            .unwrap()
            .contains("malformed SCRAM-SHA-256 message"),
        "{r}"
    );
    assert_eq!(r["garbage_first"]["closed"], true, "{r}");
    assert_eq!(r["out_of_order"]["error"], 34, "{r}");
    assert_eq!(r["out_of_order"]["closed"], true, "{r}");
    let (w, u) = (&r["wrong_password"], &r["unknown_user"]);
    assert_eq!(w["error"], 58, "{r}");
    assert_eq!(w["closed"], true, "{r}");
    for field in [
        "first_error",
        "salt_bytes",
        "iterations",
        "nonce_extends_ours",
        "error",
        "message",
        "closed",
    ] {
        assert_eq!(
            w[field], u[field],
            "an unknown user is told apart from a wrong password by {field}: {r}"
        );
    }
    assert_eq!(r["plain_wrong"]["error"], 58, "{r}");
    assert_eq!(r["plain_wrong"]["closed"], true, "{r}");

    let admin = dev.dir().join("admin.properties").display().to_string();
    let (ok, _, err) = kcat(&["-F", &admin, "-P", "-t", "still"], Some("serving\n"));
    assert!(ok, "kcat as admin after the bad input: {err}");
    let (ok, out, err) = kcat(&["-F", &admin, "-C", "-t", "still", "-e"], None);
    assert!(ok && out.contains("serving"), "{out}\n{err}");
}
