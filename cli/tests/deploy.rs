//! `deploy/` agrees with the binary it deploys. Nothing here can start a container, so these are
//! static checks:
//!
//! - every `SLUICE_*` variable named in deploy/ (compose, Kubernetes, systemd, README) is a config
//!   key that `sluice config print` knows, or a client variable (`[env: …]` in `--help`);
//! - the gRPC and metrics ports agree between listeners, voters, advertised addresses,
//!   healthchecks, probes, Services and Prometheus annotations;
//! - every node's literal settings load with `sluice config print` (each variable reaches its key)
//!   and are well-formed (numbers, `host:port`, `id@host:port,…`);
//! - the systemd units start a real role with a `--config` file, and the example configs form one
//!   cluster on one host.
//!
//! YAML is read with the small parser at the end of this file (the subset deploy/ uses).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

fn deploy() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

fn read(rel: &str) -> String {
    let path = deploy().join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// `deploy/<dir>` file names ending in `ext`, sorted.
fn files_in(dir: &str, ext: &str) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(deploy().join(dir))
        .unwrap_or_else(|e| panic!("deploy/{dir}: {e}"))
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(ext))
        .collect();
    names.sort();
    names
}

/// The binary, without any `SLUICE_*` variable of the environment running the tests.
fn sluice() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sluice"));
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("SLUICE_") {
            cmd.env_remove(&k);
        }
    }
    cmd
}

/// Key → (value, source) from `sluice config print -o json`, with `env` set and `args` added.
type Config = BTreeMap<String, (String, String)>;

fn config_print(env: &BTreeMap<String, String>, args: &[&str]) -> Result<Config, String> {
    let out = sluice()
        .args(["config", "print", "-o", "json"])
        .args(args)
        .envs(env)
        .output()
        .unwrap();
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).trim().to_string());
    }
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    Ok(v.as_array()
        .expect("config print -o json prints an array")
        .iter()
        .map(|e| {
            let s = |f: &str| e[f].as_str().unwrap_or("").to_string();
            (s("key"), (s("value"), s("source")))
        })
        .collect())
}

/// The built-in defaults (nothing set).
fn defaults() -> Config {
    config_print(&BTreeMap::new(), &[]).unwrap()
}

/// `node.id` → `SLUICE_NODE_ID` (cli/src/config.rs).
fn env_name(key: &str) -> String {
    format!("SLUICE_{}", key.to_uppercase().replace(['.', '-'], "_"))
}

/// Variable name → key, for every key `sluice config print` lists.
fn known_vars() -> BTreeMap<String, String> {
    defaults().into_keys().map(|k| (env_name(&k), k)).collect()
}

/// Variables the client commands read: `[env: NAME=…]` in their help.
fn client_vars() -> BTreeSet<String> {
    let out = sluice().args(["topic", "list", "--help"]).output().unwrap();
    let help = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    help.split("[env: ")
        .skip(1)
        .filter_map(|s| s.split(['=', ']']).next())
        .map(str::to_string)
        .collect()
}

/// Every `SLUICE_*` name in `text`.
fn sluice_vars(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for (i, _) in text.match_indices("SLUICE_") {
        if text[..i]
            .chars()
            .next_back()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            continue;
        }
        let name: String = text[i..]
            .chars()
            .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_')
            .collect();
        if name.trim_end_matches('_').len() > "SLUICE".len() {
            out.insert(name);
        }
    }
    out
}

/// The port of `[SCHEME://]host:port`.
fn port(addr: &str) -> Option<u16> {
    addr.rsplit_once(':')?.1.parse().ok()
}

/// The host of `[SCHEME://]host:port`.
fn host(addr: &str) -> &str {
    let addr = addr.split_once("://").map_or(addr, |(_, rest)| rest);
    addr.rsplit_once(':').map_or(addr, |(h, _)| h)
}

/// `id@host:port,…` → (id, host, port) entries.
fn voters(s: &str) -> Vec<(String, String, Option<u16>)> {
    s.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (id, addr) = p.split_once('@').unwrap_or(("", p));
            (id.to_string(), host(addr).to_string(), port(addr))
        })
        .collect()
}

/// What `config print` does not check: numbers (keys whose default is a number), `host:port`
/// addresses and the voters list.
fn check_values(cfg: &Config, defaults: &Config) -> Vec<String> {
    let mut bad = Vec::new();
    for (key, (value, _)) in cfg {
        if value.is_empty() {
            continue;
        }
        let ok = match key.as_str() {
            "listeners" | "advertised.listeners" | "metrics.listener" => {
                port(value).is_some_and(|p| p > 0) && !host(value).is_empty()
            }
            "controller.quorum.voters" => voters(value)
                .iter()
                .all(|(id, h, p)| id.parse::<u64>().is_ok() && !h.is_empty() && p.is_some()),
            _ => {
                let numeric = key == "node.id"
                    || defaults
                        .get(key)
                        .is_some_and(|(d, _)| d.parse::<u64>().is_ok());
                !numeric || value.trim().parse::<u64>().is_ok()
            }
        };
        if !ok {
            bad.push(format!("{key}={value:?} is malformed"));
        }
    }
    bad
}

/// Loads a node's `SLUICE_*` variables with `sluice config print`: each must reach its key
/// (source env, same value) and every value must be well-formed.
fn check_node_env(what: &str, env: &BTreeMap<String, String>, defaults: &Config) -> Vec<String> {
    let env: BTreeMap<String, String> = env
        .iter()
        .filter(|(k, _)| k.starts_with("SLUICE_"))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let cfg = match config_print(&env, &[]) {
        Ok(cfg) => cfg,
        Err(e) => return vec![format!("{what}: `sluice config print` failed: {e}")],
    };
    let keys: BTreeMap<String, String> = cfg.keys().map(|k| (env_name(k), k.clone())).collect();
    let mut bad = Vec::new();
    for (var, value) in &env {
        match keys.get(var).and_then(|k| cfg.get(k)) {
            Some((v, source)) if v == value && source.as_str() == "env" => {}
            got => bad.push(format!(
                "{what}: {var}={value:?} was not read (got {got:?})"
            )),
        }
    }
    bad.extend(
        check_values(&cfg, defaults)
            .into_iter()
            .map(|e| format!("{what}: {e}")),
    );
    bad
}

fn assert_none(bad: Vec<String>) {
    assert!(
        bad.is_empty(),
        "{} problem(s):\n{}",
        bad.len(),
        bad.join("\n")
    );
}

#[test]
fn every_sluice_variable_in_deploy_is_a_config_key() {
    let keys = known_vars();
    let client = client_vars();
    assert!(keys.contains_key("SLUICE_NODE_ID"), "{keys:?}");
    assert!(client.contains("SLUICE_BOOTSTRAP"), "{client:?}");
    let mut files = vec!["compose.yaml".to_string(), "README.md".to_string()];
    files.extend(
        files_in("k8s", ".yaml")
            .into_iter()
            .map(|f| format!("k8s/{f}")),
    );
    files.extend(
        files_in("systemd", ".service")
            .into_iter()
            .map(|f| format!("systemd/{f}")),
    );
    let mut bad = Vec::new();
    for file in &files {
        for var in sluice_vars(&read(file)) {
            if !keys.contains_key(&var) && !client.contains(&var) {
                bad.push(format!("deploy/{file}: {var} is no config key"));
            }
        }
    }
    if !bad.is_empty() {
        bad.push(format!(
            "known: {:?} and {client:?}",
            keys.keys().collect::<Vec<_>>()
        ));
    }
    assert_none(bad);
}

fn strs(list: &[Yaml]) -> Vec<&str> {
    list.iter()
        .filter_map(|y| match y {
            Yaml::Str(s) => Some(s.as_str()),
            _ => None,
        })
        .collect()
}

fn str_map(m: &[(String, Yaml)]) -> BTreeMap<String, String> {
    m.iter()
        .filter_map(|(k, v)| match v {
            Yaml::Str(s) => Some((k.clone(), s.clone())),
            _ => None,
        })
        .collect()
}

#[test]
fn compose_nodes_agree_on_keys_and_ports() {
    let defaults = defaults();
    let compose = parse_yaml(&read("compose.yaml")).remove(0);
    struct Node<'a> {
        name: &'a str,
        role: &'a str,
        env: BTreeMap<String, String>,
        spec: &'a Yaml,
    }
    let mut nodes = Vec::new();
    let mut bootstrap = None;
    for (name, spec) in compose.map(&["services"]) {
        let env = str_map(spec.map(&["environment"]));
        let role = spec
            .str(&["command", "0"])
            .or(spec.str(&["command"]))
            .unwrap_or("");
        if role == "controller" || role == "broker" {
            nodes.push(Node {
                name,
                role,
                env,
                spec,
            });
        } else if let Some(b) = env.get("SLUICE_BOOTSTRAP") {
            bootstrap = Some(b.clone());
        }
    }
    let count = |role: &str| nodes.iter().filter(|n| n.role == role).count();
    assert_eq!(
        (count("controller"), count("broker")),
        (3, 3),
        "compose.yaml: nodes"
    );

    let mut bad = Vec::new();
    let mut ids = BTreeSet::new();
    let mut host_ports = BTreeSet::new();
    let mut volumes = BTreeSet::new();
    let mut advertised = BTreeSet::new();
    let all = |var: &str| {
        nodes
            .iter()
            .map(|n| n.env.get(var).cloned())
            .collect::<BTreeSet<_>>()
    };
    for var in ["SLUICE_CONTROLLER_QUORUM_VOTERS", "SLUICE_CLUSTER_ID"] {
        if all(var).len() != 1 {
            bad.push(format!(
                "compose.yaml: {var} differs between nodes: {:?}",
                all(var)
            ));
        }
    }
    for n in &nodes {
        let what = format!("compose.yaml: {}", n.name);
        let Some(listen) = n.env.get("SLUICE_LISTENERS").and_then(|a| port(a)) else {
            bad.push(format!("{what}: SLUICE_LISTENERS with a port is required"));
            continue;
        };
        let metrics = n
            .env
            .get("SLUICE_METRICS_LISTENER")
            .map_or(listen.checked_add(200), |a| port(a));
        let id = n.env.get("SLUICE_NODE_ID").cloned().unwrap_or_default();
        if !ids.insert((n.role, id.clone())) {
            bad.push(format!("{what}: {} id {id:?} used twice", n.role));
        }
        let voters = voters(
            n.env
                .get("SLUICE_CONTROLLER_QUORUM_VOTERS")
                .map_or("", String::as_str),
        );
        if n.role == "controller" {
            // Its own voter entry: id@<service name>:<listener port>.
            let entry = voters.iter().find(|(vid, ..)| *vid == id);
            if entry.map(|(_, h, p)| (h.as_str(), *p)) != Some((n.name, Some(listen))) {
                bad.push(format!(
                    "{what}: voter {id} is {entry:?}, not {}:{listen}",
                    n.name
                ));
            }
        } else {
            // Voters name controller services at their listener ports.
            for (vid, h, p) in &voters {
                let ok = nodes.iter().any(|c| {
                    c.role == "controller"
                        && c.name == h.as_str()
                        && c.env.get("SLUICE_NODE_ID") == Some(vid)
                        && c.env.get("SLUICE_LISTENERS").and_then(|a| port(a)) == *p
                });
                if !ok {
                    bad.push(format!(
                        "{what}: voter {vid}@{h}:{p:?} is no controller service"
                    ));
                }
            }
            let adv = n
                .env
                .get("SLUICE_ADVERTISED_LISTENERS")
                .map_or("", String::as_str);
            if host(adv) != n.name || port(adv) != Some(listen) {
                bad.push(format!(
                    "{what}: SLUICE_ADVERTISED_LISTENERS={adv:?}, not {}:{listen}",
                    n.name
                ));
            }
            advertised.insert(adv.to_string());
        }
        // The healthcheck asks this node, on its listener port.
        let test = strs(n.spec.list(&["healthcheck", "test"]));
        let asked = test
            .iter()
            .position(|a| *a == "--bootstrap")
            .and_then(|i| test.get(i + 1));
        if !test.contains(&"sluice") || asked.and_then(|a| port(a)) != Some(listen) {
            bad.push(format!(
                "{what}: healthcheck {test:?} does not ask sluice on port {listen}"
            ));
        }
        // Published ports are the gRPC or metrics port, on distinct host ports.
        for p in strs(n.spec.list(&["ports"])) {
            let parts: Vec<&str> = p.split(':').collect();
            let inside = parts
                .last()
                .and_then(|s| s.split('/').next()?.parse::<u16>().ok());
            if inside != Some(listen) && inside != metrics {
                bad.push(format!(
                    "{what}: port {p:?} is neither gRPC ({listen}) nor metrics ({metrics:?})"
                ));
            }
            if parts.len() > 1 && !host_ports.insert(parts[parts.len() - 2].to_string()) {
                bad.push(format!("{what}: host port of {p:?} is published twice"));
            }
        }
        // The data directory is a volume of its own.
        let dir = n.env.get("SLUICE_LOG_DIRS").map_or("", String::as_str);
        let volume = strs(n.spec.list(&["volumes"]))
            .into_iter()
            .find_map(|v| v.split_once(':').filter(|(_, target)| *target == dir));
        match volume {
            Some((source, _)) if volumes.insert(source.to_string()) => {}
            v => bad.push(format!(
                "{what}: no volume of its own at SLUICE_LOG_DIRS={dir:?} ({v:?})"
            )),
        }
        bad.extend(check_node_env(&what, &n.env, &defaults));
    }
    // The client service bootstraps from the brokers' advertised addresses.
    match bootstrap {
        Some(b) if b.split(',').all(|a| advertised.contains(a)) => {}
        b => bad.push(format!(
            "compose.yaml: cli SLUICE_BOOTSTRAP {b:?} is not {advertised:?}"
        )),
    }
    assert_none(bad);
}

fn kind(d: &Yaml) -> &str {
    d.str(&["kind"]).unwrap_or("")
}

fn name(d: &Yaml) -> &str {
    d.str(&["metadata", "name"]).unwrap_or("")
}

const COMPONENT: &str = "app.kubernetes.io/component";

#[test]
fn kubernetes_manifests_agree_on_keys_and_ports() {
    let defaults = defaults();
    let mut docs: Vec<(String, Yaml)> = Vec::new();
    for file in files_in("k8s", ".yaml") {
        for doc in parse_yaml(&read(&format!("k8s/{file}"))) {
            docs.push((format!("deploy/k8s/{file}"), doc));
        }
    }
    let of_kind = |k: &'static str| docs.iter().filter(move |(_, d)| kind(d) == k);
    let config_maps: BTreeMap<&str, &Yaml> =
        of_kind("ConfigMap").map(|(_, d)| (name(d), d)).collect();
    let mut bad = Vec::new();
    let mut roles = Vec::new();
    let mut all_voters = BTreeSet::new();
    for (file, sts) in of_kind("StatefulSet") {
        let sts_name = name(sts);
        let what = format!("{file}: StatefulSet {sts_name}");
        let pod = sts.at(&["spec", "template"]).expect("spec.template");
        let component = pod.str(&["metadata", "labels", COMPONENT]).unwrap_or("");
        if sts.str(&["spec", "selector", "matchLabels", COMPONENT]) != Some(component) {
            bad.push(format!(
                "{what}: selector does not match the pod's {COMPONENT}"
            ));
        }
        let container = pod.at(&["spec", "containers", "0"]).expect("a container");
        let cmd = ["command", "args"]
            .iter()
            .flat_map(|k| strs(container.list(&[*k])))
            .collect::<Vec<_>>()
            .join(" ");
        let Some(role) = ["controller", "broker"]
            .into_iter()
            .find(|r| cmd.contains(&format!("sluice {r}")) || cmd == *r)
        else {
            bad.push(format!(
                "{what}: command {cmd:?} runs no `sluice controller|broker`"
            ));
            continue;
        };
        roles.push(role);

        // The environment: ConfigMaps (envFrom), then literal `env` values (which win).
        let mut env: BTreeMap<String, String> = BTreeMap::new();
        let mut computed: BTreeSet<String> = BTreeSet::new();
        for from in container.list(&["envFrom"]) {
            if let Some(cm) = from.str(&["configMapRef", "name"]) {
                match config_maps.get(cm) {
                    Some(d) => env.extend(str_map(d.map(&["data"]))),
                    None => bad.push(format!("{what}: no ConfigMap {cm}")),
                }
            }
        }
        for e in container.list(&["env"]) {
            if let (Some(k), Some(v)) = (e.str(&["name"]), e.str(&["value"])) {
                env.insert(k.to_string(), v.to_string());
            }
        }
        // Values that Kubernetes ($(VAR)) or the shell computes are not literal.
        for (k, v) in &env {
            if v.contains("$(") {
                computed.insert(k.clone());
            }
        }
        if !env.contains_key("SLUICE_NODE_ID") && !cmd.contains("SLUICE_NODE_ID=") {
            bad.push(format!("{what}: sets no SLUICE_NODE_ID"));
        }

        let container_port = |n: &str| {
            container
                .list(&["ports"])
                .iter()
                .find(|p| p.str(&["name"]) == Some(n))
                .and_then(|p| p.str(&["containerPort"]))
                .and_then(|s| s.parse::<u16>().ok())
        };
        let grpc = container_port("grpc");
        let metrics = container_port("metrics");
        let listen = env.get("SLUICE_LISTENERS").and_then(|a| port(a));
        if grpc.is_none() || grpc != listen {
            bad.push(format!(
                "{what}: containerPort grpc {grpc:?} != SLUICE_LISTENERS port {listen:?}"
            ));
        }
        let metrics_cfg = env
            .get("SLUICE_METRICS_LISTENER")
            .map_or(listen.and_then(|p| p.checked_add(200)), |a| port(a));
        if metrics.is_none() || metrics != metrics_cfg {
            bad.push(format!("{what}: containerPort metrics {metrics:?} != metrics.listener port {metrics_cfg:?}"));
        }

        // Probes: readiness is the gRPC health service on the gRPC port.
        if container.at(&["readinessProbe", "grpc"]).is_none() {
            bad.push(format!("{what}: readinessProbe is not a grpc probe"));
        }
        for probe in ["readinessProbe", "livenessProbe", "startupProbe"] {
            for (how, path) in [
                ("grpc", ["grpc", "port"]),
                ("tcpSocket", ["tcpSocket", "port"]),
            ] {
                let Some(p) = container.str(&[probe, path[0], path[1]]) else {
                    continue;
                };
                if p.parse::<u16>().ok() != grpc && !(how == "tcpSocket" && p == "grpc") {
                    bad.push(format!(
                        "{what}: {probe} {how} port {p} is not the gRPC port {grpc:?}"
                    ));
                }
            }
        }

        // Prometheus scrapes the metrics port.
        let annotation = |k: &str| pod.str(&["metadata", "annotations", k]);
        if annotation("prometheus.io/scrape") != Some("true")
            || annotation("prometheus.io/path") != Some("/metrics")
            || annotation("prometheus.io/port").and_then(|p| p.parse::<u16>().ok()) != metrics
        {
            bad.push(format!(
                "{what}: prometheus.io annotations do not scrape /metrics on {metrics:?}"
            ));
        }

        // Services that select these pods expose the same ports.
        let service_name = sts.str(&["spec", "serviceName"]).unwrap_or("");
        let mut governing = false;
        for (sfile, svc) in of_kind("Service") {
            if svc.str(&["spec", "selector", COMPONENT]) != Some(component) {
                continue;
            }
            let swhat = format!("{sfile}: Service {}", name(svc));
            if name(svc) == service_name {
                governing = true;
                if svc.str(&["spec", "clusterIP"]) != Some("None")
                    || svc.str(&["spec", "publishNotReadyAddresses"]) != Some("true")
                {
                    bad.push(format!(
                        "{swhat}: must be headless with publishNotReadyAddresses"
                    ));
                }
            }
            for p in svc.list(&["spec", "ports"]) {
                let pname = p.str(&["name"]).unwrap_or("");
                let want = match pname {
                    "grpc" => grpc,
                    "metrics" => metrics,
                    _ => None,
                };
                let number = p.str(&["port"]).and_then(|s| s.parse::<u16>().ok());
                let target = p.str(&["targetPort"]).unwrap_or(pname);
                let target_ok = target == pname || target.parse::<u16>().ok() == want;
                if want.is_none() || number != want || !target_ok {
                    bad.push(format!("{swhat}: port {pname:?} {number:?} -> {target} does not match containerPort {want:?}"));
                }
            }
        }
        if !governing {
            bad.push(format!(
                "{what}: no Service {service_name:?} selecting {component:?}"
            ));
        }
        let pdb = of_kind("PodDisruptionBudget").find(|(_, d)| {
            d.str(&["spec", "selector", "matchLabels", COMPONENT]) == Some(component)
        });
        if pdb.and_then(|(_, d)| d.str(&["spec", "maxUnavailable"])) != Some("1") {
            bad.push(format!(
                "{what}: no PodDisruptionBudget with maxUnavailable 1"
            ));
        }

        // The data directory is the volume claim.
        let claims: BTreeSet<&str> = sts
            .list(&["spec", "volumeClaimTemplates"])
            .iter()
            .map(name)
            .collect();
        let dir = env.get("SLUICE_LOG_DIRS").map_or("", String::as_str);
        let mounted = container.list(&["volumeMounts"]).iter().any(|m| {
            m.str(&["mountPath"]) == Some(dir)
                && m.str(&["name"]).is_some_and(|n| claims.contains(n))
        });
        if !mounted {
            bad.push(format!(
                "{what}: SLUICE_LOG_DIRS={dir:?} is not a volumeClaimTemplate's mount"
            ));
        }

        let voters_value = env
            .get("SLUICE_CONTROLLER_QUORUM_VOTERS")
            .cloned()
            .unwrap_or_default();
        if role == "controller" {
            // node.id = ordinal + 1 at <sts>-<ordinal>.<service>:<grpc port>.
            let replicas = sts
                .str(&["spec", "replicas"])
                .and_then(|r| r.parse::<usize>().ok());
            let vs = voters(&voters_value);
            if Some(vs.len()) != replicas {
                bad.push(format!(
                    "{what}: {} voters for {replicas:?} replicas",
                    vs.len()
                ));
            }
            for (i, (id, h, p)) in vs.iter().enumerate() {
                let pod_dns = format!("{sts_name}-{i}.{service_name}");
                let dns_ok = *h == pod_dns || h.starts_with(&format!("{pod_dns}."));
                if *id != (i + 1).to_string() || !dns_ok || *p != grpc {
                    bad.push(format!(
                        "{what}: voter {id}@{h}:{p:?} is not {}@{pod_dns}:{grpc:?}",
                        i + 1
                    ));
                }
            }
        } else {
            let adv = env
                .get("SLUICE_ADVERTISED_LISTENERS")
                .map_or("", String::as_str);
            let adv_host = host(adv);
            let in_service = adv_host.contains(&format!(".{service_name}."))
                || adv_host.ends_with(&format!(".{service_name}"));
            if port(adv) != grpc || !in_service {
                bad.push(format!("{what}: SLUICE_ADVERTISED_LISTENERS={adv:?} is not a pod of {service_name} on {grpc:?}"));
            }
        }
        all_voters.insert(voters_value);

        let literal: BTreeMap<String, String> = env
            .into_iter()
            .filter(|(k, _)| !computed.contains(k))
            .collect();
        bad.extend(check_node_env(&what, &literal, &defaults));
    }
    if all_voters.len() != 1 {
        bad.push(format!(
            "controller.quorum.voters differ between StatefulSets: {all_voters:?}"
        ));
    }
    roles.sort();
    assert_eq!(roles, ["broker", "controller"], "one StatefulSet per role");
    assert_none(bad);
}

#[test]
fn systemd_units_start_a_role_with_its_config() {
    let units = files_in("systemd", ".service");
    assert_eq!(units.len(), 2, "{units:?}");
    for file in &units {
        let text = read(&format!("systemd/{file}"));
        let line = |prefix: &str| text.lines().find_map(|l| l.trim().strip_prefix(prefix));
        let role = file
            .strip_prefix("sluice-")
            .and_then(|f| f.split_once('@'))
            .map(|(r, _)| r)
            .unwrap_or_else(|| panic!("{file}: not sluice-<role>@.service"));
        let exec = line("ExecStart=").unwrap_or_else(|| panic!("{file}: no ExecStart="));
        let args: Vec<&str> = exec.split_whitespace().collect();
        assert!(
            args[0].ends_with("/sluice") && args.get(1) == Some(&role),
            "{file}: ExecStart does not run `sluice {role}`: {exec}"
        );
        let config = args
            .iter()
            .position(|a| *a == "--config")
            .and_then(|i| args.get(i + 1));
        assert_eq!(
            config.copied(),
            Some(format!("/etc/sluice/{role}-%i.toml").as_str()),
            "{file}: {exec}"
        );
        // A real role that takes --config, and an example config for each instance 1..3.
        let help = sluice().args([role, "--help"]).output().unwrap();
        let help_text = String::from_utf8_lossy(&help.stdout);
        assert!(
            help.status.success() && help_text.contains("--config"),
            "{file}: `sluice {role} --help`:\n{help_text}"
        );
        for i in 1..=3 {
            let example = deploy().join(format!("examples/{role}-{i}.toml"));
            assert!(
                example.is_file(),
                "{file}: {} is missing",
                example.display()
            );
        }
        for (key, want) in [
            ("User=", "sluice"),
            ("Restart=", "on-failure"),
            ("KillSignal=", "SIGTERM"),
        ] {
            assert_eq!(line(key), Some(want), "{file}: {key}");
        }
        if line("ProtectSystem=") == Some("strict") {
            let writable = line("ReadWritePaths=").unwrap_or("");
            assert!(
                writable
                    .split_whitespace()
                    .any(|p| p.trim_start_matches('-') == "/var/lib/sluice"),
                "{file}: ProtectSystem=strict needs ReadWritePaths=/var/lib/sluice"
            );
        }
    }
}

#[test]
fn example_configs_form_one_cluster_on_one_host() {
    let defaults = defaults();
    let mut bad = Vec::new();
    let mut ports: BTreeMap<u16, String> = BTreeMap::new();
    let mut shared = BTreeSet::new();
    let mut controllers = Vec::new();
    for role in ["controller", "broker"] {
        for i in 1..=3 {
            let file = format!("examples/{role}-{i}.toml");
            let path = deploy().join(&file);
            let cfg = config_print(&BTreeMap::new(), &["--config", path.to_str().unwrap()])
                .unwrap_or_else(|e| panic!("{file}: {e}"));
            let get = |k: &str| cfg.get(k).map(|(v, _)| v.clone()).unwrap_or_default();
            bad.extend(
                check_values(&cfg, &defaults)
                    .into_iter()
                    .map(|e| format!("{file}: {e}")),
            );
            if get("node.id") != i.to_string() {
                bad.push(format!("{file}: node.id is {:?}, not {i}", get("node.id")));
            }
            let listen = port(&get("listeners"));
            let metrics = match get("metrics.listener").as_str() {
                "" => listen.and_then(|p| p.checked_add(200)),
                m => port(m),
            };
            for p in [listen, metrics] {
                match p {
                    Some(p) => {
                        if let Some(other) = ports.insert(p, file.clone()) {
                            bad.push(format!("{file}: port {p} is also used by {other}"));
                        }
                    }
                    None => bad.push(format!("{file}: listeners or metrics.listener has no port")),
                }
            }
            shared.insert((get("controller.quorum.voters"), get("cluster.id")));
            if role == "controller" {
                controllers.push(format!("{i}@{}", get("listeners")));
            }
        }
    }
    match shared.iter().next() {
        Some((voters, _)) if shared.len() == 1 => {
            let listed: BTreeSet<&str> = voters.split(',').map(str::trim).collect();
            if controllers.iter().any(|c| !listed.contains(c.as_str())) {
                bad.push(format!(
                    "controller.quorum.voters {voters:?} is not {controllers:?}"
                ));
            }
        }
        _ => bad.push(format!(
            "voters and cluster.id differ between examples: {shared:?}"
        )),
    }
    assert_none(bad);
}

// ---------------------------------------------------------------------------------------------
// A YAML subset: block mappings and sequences (`- key: value` items included), flow sequences of
// plain or quoted scalars, quoted scalars without escapes, comments, `---` documents, anchors
// (`&a`) with aliases (`*a`) and merges (`<<: *a`). Anything else fails loudly.

#[derive(Debug, Clone)]
enum Yaml {
    Str(String),
    List(Vec<Yaml>),
    Map(Vec<(String, Yaml)>),
}

impl Yaml {
    /// The node at `path`: map keys, or list indexes written as numbers.
    fn at(&self, path: &[&str]) -> Option<&Yaml> {
        let mut y = self;
        for p in path {
            y = match y {
                // The last entry wins, so a key after a `<<` merge overrides it.
                Yaml::Map(m) => &m.iter().rev().find(|(k, _)| k.as_str() == *p)?.1,
                Yaml::List(l) => l.get(p.parse::<usize>().ok()?)?,
                Yaml::Str(_) => return None,
            };
        }
        Some(y)
    }

    fn str(&self, path: &[&str]) -> Option<&str> {
        match self.at(path)? {
            Yaml::Str(s) => Some(s.as_str()),
            _ => None,
        }
    }

    fn list(&self, path: &[&str]) -> &[Yaml] {
        match self.at(path) {
            Some(Yaml::List(l)) => l.as_slice(),
            _ => &[],
        }
    }

    fn map(&self, path: &[&str]) -> &[(String, Yaml)] {
        match self.at(path) {
            Some(Yaml::Map(m)) => m.as_slice(),
            _ => &[],
        }
    }
}

struct Line {
    indent: usize,
    text: String,
}

/// Every non-empty document of `text`.
fn parse_yaml(text: &str) -> Vec<Yaml> {
    let mut docs = Vec::new();
    let mut lines: Vec<Line> = Vec::new();
    for raw in text.lines().chain(["---"]) {
        if raw.trim_end() == "---" {
            if !lines.is_empty() {
                let mut i = 0;
                docs.push(parse_node(&mut lines, &mut i, &mut BTreeMap::new()));
                if let Some(l) = lines.get(i) {
                    panic!("YAML subset: unexpected line {:?}", l.text);
                }
            }
            lines.clear();
            continue;
        }
        let body = strip_comment(raw).trim_end();
        if !body.trim().is_empty() {
            let text = body.trim_start();
            lines.push(Line {
                indent: body.len() - text.len(),
                text: text.to_string(),
            });
        }
    }
    docs
}

/// `line` without its comment (`#` at the start or after a space, outside quotes).
fn strip_comment(line: &str) -> &str {
    let mut quote = None;
    let mut prev = ' ';
    for (i, c) in line.char_indices() {
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None if (c == '"' || c == '\'')
                && (prev.is_whitespace() || prev == '[' || prev == ',') =>
            {
                quote = Some(c)
            }
            None if c == '#' && prev.is_whitespace() => return &line[..i],
            None => {}
        }
        prev = c;
    }
    line
}

fn is_item(text: &str) -> bool {
    text == "-" || text.starts_with("- ")
}

/// `key: value` or `key:` → (key, value); None for a scalar.
fn split_key(text: &str) -> Option<(&str, &str)> {
    let mut quote = None;
    for (i, c) in text.char_indices() {
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None if i == 0 && (c == '"' || c == '\'') => quote = Some(c),
            None if i == 0 && c == '[' => return None,
            None if c == ':' && text[i + 1..].chars().next().is_none_or(|n| n == ' ') => {
                return Some((unquote(text[..i].trim()), text[i + 1..].trim()));
            }
            None => {}
        }
    }
    None
}

fn unquote(s: &str) -> &str {
    for q in ['"', '\''] {
        if s.len() >= 2 && s.starts_with(q) && s.ends_with(q) {
            return &s[1..s.len() - 1];
        }
    }
    s
}

fn scalar(v: &str, anchors: &BTreeMap<String, Yaml>) -> Yaml {
    if let Some(alias) = v.strip_prefix('*') {
        return anchors
            .get(alias)
            .cloned()
            .unwrap_or_else(|| panic!("YAML: unknown alias *{alias}"));
    }
    if let Some(inner) = v.strip_prefix('[').and_then(|s| s.strip_suffix(']')) {
        let items = inner.split(',').map(str::trim).filter(|s| !s.is_empty());
        return Yaml::List(items.map(|s| Yaml::Str(unquote(s).to_string())).collect());
    }
    Yaml::Str(unquote(v).to_string())
}

/// The mapping or sequence whose first line is `lines[*i]`, up to the first line indented less.
fn parse_node(lines: &mut Vec<Line>, i: &mut usize, anchors: &mut BTreeMap<String, Yaml>) -> Yaml {
    let indent = lines[*i].indent;
    if is_item(&lines[*i].text) {
        let mut items = Vec::new();
        while *i < lines.len() && lines[*i].indent == indent && is_item(&lines[*i].text) {
            let rest = lines[*i].text[1..].trim_start().to_string();
            if rest.is_empty() {
                *i += 1;
                let nested = lines.get(*i).is_some_and(|l| l.indent > indent);
                items.push(if nested {
                    parse_node(lines, i, anchors)
                } else {
                    Yaml::Str(String::new())
                });
            } else if split_key(&rest).is_some() {
                // `- key: value …`: a mapping whose keys sit at the column of `key`.
                let column = indent + lines[*i].text.len() - rest.len();
                lines[*i] = Line {
                    indent: column,
                    text: rest,
                };
                items.push(parse_node(lines, i, anchors));
            } else {
                *i += 1;
                items.push(scalar(&rest, anchors));
            }
        }
        return Yaml::List(items);
    }
    let mut map: Vec<(String, Yaml)> = Vec::new();
    while *i < lines.len() && lines[*i].indent == indent && !is_item(&lines[*i].text) {
        let text = lines[*i].text.clone();
        let (key, value) =
            split_key(&text).unwrap_or_else(|| panic!("YAML subset: not `key: value`: {text:?}"));
        *i += 1;
        let (anchor, value) = match value.strip_prefix('&') {
            Some(a) => {
                let (name, rest) = a.split_once(' ').unwrap_or((a, ""));
                (Some(name.to_string()), rest.trim())
            }
            None => (None, value),
        };
        // A block below `key:`, or a sequence at the same indentation.
        let nested = lines
            .get(*i)
            .is_some_and(|l| l.indent > indent || (l.indent == indent && is_item(&l.text)));
        let node = if !value.is_empty() {
            scalar(value, anchors)
        } else if nested {
            parse_node(lines, i, anchors)
        } else {
            Yaml::Str(String::new())
        };
        if let Some(a) = anchor {
            anchors.insert(a, node.clone());
        }
        match (key, node) {
            ("<<", Yaml::Map(merged)) => map.extend(merged),
            (key, node) => map.push((key.to_string(), node)),
        }
    }
    Yaml::Map(map)
}
