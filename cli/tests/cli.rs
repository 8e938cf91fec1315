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
fn roles_not_built_yet_say_so_and_fail() {
    let out = sluice()
        .args(["chaos", "--scenario", "kill-leader"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not yet available"));
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
