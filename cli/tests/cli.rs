//! The command-line contract at its simplest: help works, and commands that cannot do their
//! job fail with a non-zero exit and one clear line on stderr.
//!
//! (Having an integration test here also makes `cargo test --workspace` build the `sluice`
//! binary that the multi-process tests in `tests/` start.)

use std::process::Command;

fn sluice() -> Command {
    Command::new(env!("CARGO_BIN_EXE_sluice"))
}

#[test]
fn help_lists_every_contract_command() {
    let out = sluice().arg("--help").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for cmd in [
        "dev",
        "controller",
        "broker",
        "topic",
        "produce",
        "consume",
        "group",
        "cluster",
        "quorum",
        "kill-leader",
        "chaos",
        "config",
        "bench",
    ] {
        assert!(text.contains(cmd), "--help does not mention {cmd}:\n{text}");
    }
}

#[test]
fn unreachable_cluster_fails_with_one_clear_line() {
    // Port 1 on loopback: nothing listens there.
    let out = sluice()
        .args(["topic", "list", "--bootstrap", "127.0.0.1:1"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("NETWORK_EXCEPTION"), "{err}");
}

#[test]
fn unknown_config_key_is_an_error_naming_the_key() {
    let out = sluice()
        .args(["config", "print", "--override", "no.such.key=1"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no.such.key"));
}

#[test]
fn config_print_shows_value_sources() {
    let out = sluice()
        .args(["config", "print", "--node-id", "7", "-o", "json"])
        .env("SLUICE_NUM_PARTITIONS", "6")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let find = |k: &str| {
        v.as_array()
            .unwrap()
            .iter()
            .find(|e| e["key"] == k)
            .unwrap()
            .clone()
    };
    assert_eq!(find("node.id")["value"], "7");
    assert_eq!(find("node.id")["source"], "flag");
    assert_eq!(find("num.partitions")["value"], "6");
    assert_eq!(find("num.partitions")["source"], "env");
    assert_eq!(find("broker.session.timeout.ms")["source"], "default");
}

#[test]
fn chaos_names_the_scenarios_when_given_an_unknown_one() {
    let out = sluice()
        .args([
            "chaos",
            "--scenario",
            "meteor-strike",
            "--bootstrap",
            "127.0.0.1:1",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("meteor-strike") && err.contains("kill-leader"),
        "{err}"
    );
}

#[test]
fn example_configs_in_deploy_parse() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/examples");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let out = sluice()
            .args(["config", "print", "-o", "json", "--config"])
            .arg(&path)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let node_id = v
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["key"] == "node.id")
            .unwrap();
        assert_eq!(node_id["source"], "file", "{}", path.display());
        n += 1;
    }
    assert_eq!(n, 6, "three controller and three broker examples");
}

/// `config print -o json` → key → (value, source).
fn effective(args: &[&str], env: &[(&str, &str)]) -> Result<serde_json::Value, String> {
    let out = sluice()
        .args(["config", "print", "-o", "json"])
        .args(args)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    Ok(serde_json::from_slice(&out.stdout).unwrap())
}

fn entry(v: &serde_json::Value, key: &str) -> (String, String) {
    let e = v
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["key"] == key)
        .unwrap();
    (
        e["value"].as_str().unwrap().to_string(),
        e["source"].as_str().unwrap().to_string(),
    )
}

#[test]
fn config_layers_toml_then_env_then_flags() {
    let dir = std::env::temp_dir().join(format!("sluice-cfg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("node.toml");
    std::fs::write(&file, "\"num.partitions\" = 2\n\"node.id\" = 1\n").unwrap();
    let f = file.to_str().unwrap();
    let env = [("SLUICE_NUM_PARTITIONS", "4")];
    let v = effective(&["--config", f], &[]).unwrap();
    assert_eq!(entry(&v, "num.partitions"), ("2".into(), "file".into()));
    let v = effective(&["--config", f], &env).unwrap();
    assert_eq!(entry(&v, "num.partitions"), ("4".into(), "env".into()));
    let v = effective(&["--config", f, "--override", "num.partitions=6"], &env).unwrap();
    assert_eq!(entry(&v, "num.partitions"), ("6".into(), "flag".into()));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bad_config_values_fail_with_one_line_naming_the_key() {
    for (args, env, key) in [
        (
            vec!["--override", "broker.session.timeout.ms=-5"],
            vec![],
            "broker.session.timeout.ms",
        ),
        (
            vec![],
            vec![("SLUICE_REPLICA_LAG_TIME_MAX_MS", "-1")],
            "replica.lag.time.max.ms",
        ),
        (vec!["--listeners", "nonsense"], vec![], "listeners"),
        (vec!["--listeners", "127.0.0.1:99999"], vec![], "listeners"),
        (
            vec!["--override", "num.partitions=many"],
            vec![],
            "num.partitions",
        ),
        (vec!["--override", "no.such.key=1"], vec![], "no.such.key"),
    ] {
        let err = effective(&args, &env).unwrap_err();
        let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
        assert_eq!(lines.len(), 1, "one line for {args:?} {env:?}: {err}");
        assert!(lines[0].contains(key), "{key} named in: {err}");
    }
}

#[test]
fn log_format_json_writes_one_json_object_per_line() {
    use std::io::{BufRead, BufReader};
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = std::env::temp_dir().join(format!("sluice-logjson-{}", std::process::id()));
    let mut child = sluice()
        .args(["--log-format", "json", "controller", "--node-id", "1"])
        .args(["--listeners", &format!("127.0.0.1:{port}")])
        .args(["--controller-quorum-voters", &format!("1@127.0.0.1:{port}")])
        .args(["--override", "metrics.listener=127.0.0.1:0", "--log-dirs"])
        .arg(&dir)
        .env("RUST_LOG", "info")
        .stderr(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let first = rx.recv_timeout(std::time::Duration::from_secs(30));
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
    let line = first.expect("a log line within 30 s");
    let v: serde_json::Value =
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
    assert!(
        v["level"].is_string() && v["timestamp"].is_string(),
        "{line}"
    );
}

/// `sluice bench recovery` reopens the log it wrote after a crash and a clean stop; after
/// the background flushes of rolled segments only the active segment is scanned (#19).
#[test]
fn bench_recovery_reports_a_crash_reopen_that_scans_only_the_active_segment() {
    let dir = tempfile::tempdir().unwrap();
    let out = sluice()
        .args([
            "bench",
            "recovery",
            "--total-bytes",
            "400000",
            "--segment-bytes",
            "65536",
            "--batch-records",
            "10",
            "--dir",
            dir.path().to_str().unwrap(),
            "-o",
            "json",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let phases = r["phases"].as_array().unwrap();
    assert_eq!(phases.len(), 3, "{r}");
    let (crash, lost, clean) = (&phases[0], &phases[1], &phases[2]);
    assert_eq!(lost["segments_scanned"], lost["segments"], "{r}");
    assert!(crash["segments"].as_u64().unwrap() >= 5, "{r}");
    assert_eq!(crash["segments_scanned"], 1, "{r}");
    assert_eq!(clean["segments_scanned"], 0, "{r}");
    // Nothing lost: the clean reopen sees what the first reopen saw plus two appended batches.
    assert_eq!(
        clean["log_end_offset"].as_i64().unwrap(),
        crash["log_end_offset"].as_i64().unwrap() + 20,
        "{r}"
    );
}

#[test]
fn bench_recovery_broker_times_a_restarted_broker_until_every_partition_is_writable() {
    let out = sluice()
        .args(["bench", "recovery", "--broker", "-o", "json"])
        .args(["--total-bytes", &(6u64 << 20).to_string()])
        .args(["--segment-bytes", &(1u64 << 20).to_string()])
        .args(["--batch-records", "100", "--partitions", "20"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["partitions"], 21);
    let phases = v["phases"].as_array().unwrap();
    let names: Vec<&str> = phases
        .iter()
        .map(|p| p["phase"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "broker kill -9",
            "broker kill -9, no recovery point",
            "broker clean stop"
        ]
    );
    for p in phases {
        let ms = |k: &str| p[k].as_f64().unwrap();
        let (big, first, all) = (
            ms("big_partition_writable_ms"),
            ms("first_partition_writable_ms"),
            ms("all_partitions_writable_ms"),
        );
        // Counted from the new process's start: never negative, and the last partition
        // is writable no earlier than the first.
        assert!(big >= 0.0 && first >= 0.0, "{p}");
        assert!(all >= first, "{p}");
    }
}
