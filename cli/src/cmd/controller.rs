//! `sluice controller`: one metadata-quorum node.

use std::net::ToSocketAddrs;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use sluice_controller::logic::Defaults;
use sluice_controller::{service, ControllerConfig, ControllerNode};

use crate::config::{parse_voters, strip_listener_scheme, NodeConfig};

/// Builds the controller's settings from the layered configuration.
pub fn controller_config(cfg: &NodeConfig) -> anyhow::Result<ControllerConfig> {
    let node_id: u64 = cfg.num("node.id")?;
    let voters = parse_voters(cfg.require("controller.quorum.voters")?)?;
    anyhow::ensure!(
        voters.contains_key(&node_id),
        "node.id {node_id} is not one of controller.quorum.voters {voters:?}"
    );
    let listener = strip_listener_scheme(cfg.require("listeners")?);
    let listen = listener
        .to_socket_addrs()
        .with_context(|| format!("listeners={listener:?} is not a host:port"))?
        .next()
        .with_context(|| format!("listeners={listener:?} resolves to nothing"))?;
    let data_dir = match cfg.get("metadata.log.dir") {
        Some(d) => PathBuf::from(d),
        None => PathBuf::from(cfg.require("log.dirs")?).join("metadata"),
    };
    let ms = |key: &str| -> anyhow::Result<Duration> { Ok(Duration::from_millis(cfg.num(key)?)) };
    let election = ms("controller.quorum.election.timeout.ms")?;
    anyhow::ensure!(
        election >= Duration::from_millis(100),
        "controller.quorum.election.timeout.ms must be at least 100"
    );
    let heartbeat = ms("controller.quorum.heartbeat.interval.ms")?;
    anyhow::ensure!(
        heartbeat * 2 < election,
        "controller.quorum.heartbeat.interval.ms must be under half the election timeout"
    );
    let tls = super::node_tls(cfg)?;
    let sasl_enabled = !super::node_sasl(cfg, tls.as_ref())?.is_empty();
    let authorizer = super::node_authorizer(cfg, tls.as_ref())?;
    Ok(ControllerConfig {
        node_id,
        tls,
        sasl_enabled,
        authorizer,
        listen,
        voters,
        data_dir,
        cluster_id: cfg.require("cluster.id")?.to_string(),
        session_timeout: ms("broker.session.timeout.ms")?,
        broker_heartbeat_interval: ms("broker.heartbeat.interval.ms")?,
        election_timeout: election,
        raft_heartbeat_interval: heartbeat,
        snapshot_interval_entries: cfg.num("metadata.snapshot.interval.records")?,
        defaults: Defaults {
            num_partitions: cfg.num("num.partitions")?,
            replication_factor: cfg.num("default.replication.factor")?,
        },
        write_timeout: ms("request.timeout.ms")?,
        leader_rebalance: match cfg.require("auto.leader.rebalance.enable")?.trim() {
            "true" => Some((
                Duration::from_secs(cfg.num("leader.imbalance.check.interval.seconds")?),
                cfg.num("leader.imbalance.per.broker.percentage")?,
            )),
            "false" => None,
            other => anyhow::bail!("auto.leader.rebalance.enable={other:?}: true or false"),
        },
    })
}

/// Runs a controller until SIGTERM / Ctrl-C.
pub fn run(cfg: NodeConfig) -> anyhow::Result<()> {
    let config = controller_config(&cfg)?;
    let metrics = super::metrics_addr(&cfg, config.listen)?;
    let rt = super::runtime()?;
    rt.block_on(async move {
        super::install_metrics(metrics)?;
        let node = ControllerNode::start(config)
            .await
            .map_err(|e| anyhow::anyhow!(e))?;
        let mut checker = tokio::spawn(node.clone().run_session_checker());
        let gauges = tokio::spawn(node.clone().run_gauges());
        let observers = tokio::spawn(node.clone().run_observer_probe());
        let rebalancer = tokio::spawn(node.clone().run_leader_rebalancer());
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let shutdown = async move {
            tokio::select! {
                _ = super::shutdown_signal() => {}
                _ = stop_rx => {}
            }
        };
        let mut server = tokio::spawn(service::serve(node.clone(), shutdown));
        // The checker only returns when Raft stopped: a fatal error, so stop serving too.
        let (fatal, served) = tokio::select! {
            _ = &mut checker => {
                let _ = stop_tx.send(());
                (true, server.await?)
            }
            r = &mut server => (false, r?),
        };
        tracing::info!(node = node.id, "controller stopping");
        checker.abort();
        gauges.abort();
        observers.abort();
        rebalancer.abort();
        let _ = node.raft.shutdown().await;
        served.map_err(|e| anyhow::anyhow!(e))?;
        anyhow::ensure!(
            !fatal,
            "the Raft node stopped with a fatal error (see the log above)"
        );
        Ok(())
    })
}
