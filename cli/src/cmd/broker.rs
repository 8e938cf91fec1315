//! `sluice broker`: one broker node.

use std::net::ToSocketAddrs;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::Context;
use sluice_broker::{service, BrokerConfig, BrokerNode};

use crate::config::{parse_listener_list, parse_voters, ListenerName, NodeConfig};

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// With `SLUICE_FAULT_INJECTION=1`, the faults set once at start-up (before any log opens):
/// a shifted storage clock and slow recovery scans.
fn fault_settings() {
    if std::env::var("SLUICE_FAULT_INJECTION").as_deref() != Ok("1") {
        return;
    }
    if let Some(ms) = std::env::var("SLUICE_FAULT_CLOCK_OFFSET_MS")
        .ok()
        .and_then(|v| v.parse::<i64>().ok())
    {
        sluice_storage::fault::set_clock_offset_ms(ms);
        tracing::warn!(offset_ms = ms, "fault injection: storage clock shifted");
    }
    if let Some(rate) = std::env::var("SLUICE_FAULT_RECOVERY_BYTES_PER_S")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
    {
        sluice_storage::fault::set_recovery_rate(rate);
        tracing::warn!(bytes_per_s = rate, "fault injection: slow recovery scans");
    }
}

/// With `SLUICE_FAULT_INJECTION=1` (the verification suite), SIGUSR1 toggles a simulated
/// full disk (appends fail with ENOSPC) and SIGUSR2 a 1.5 s stall in every fsync. Inert
/// otherwise.
async fn fault_injection() {
    if std::env::var("SLUICE_FAULT_INJECTION").as_deref() != Ok("1") {
        return;
    }
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut usr1), Ok(mut usr2)) = (
        signal(SignalKind::user_defined1()),
        signal(SignalKind::user_defined2()),
    ) else {
        return;
    };
    loop {
        tokio::select! {
            Some(()) = usr1.recv() => {
                let on = !sluice_storage::fault::disk_full();
                sluice_storage::fault::set_disk_full(on);
                tracing::warn!(disk_full = on, "fault injection: simulated full disk toggled");
            }
            Some(()) = usr2.recv() => {
                let stall = if sluice_storage::fault::fsync_stall().is_zero() {
                    Duration::from_millis(1500)
                } else {
                    Duration::ZERO
                };
                sluice_storage::fault::set_fsync_stall(stall);
                tracing::warn!(stall_ms = stall.as_millis() as u64, "fault injection: fsync stall toggled");
            }
            else => return,
        }
    }
}

/// Builds the broker's settings from the layered configuration.
pub fn broker_config(cfg: &NodeConfig) -> anyhow::Result<BrokerConfig> {
    let node_id: i32 = cfg.num("node.id")?;
    anyhow::ensure!(node_id >= 0, "node.id must be >= 0");
    let voters = parse_voters(cfg.require("controller.quorum.voters")?)?;
    // Brokers default to Kafka's 9092; the shared default (9093) is the controller's.
    let listeners = if cfg.is_default("listeners") {
        vec![(ListenerName::Both, "127.0.0.1:9092".to_string())]
    } else {
        parse_listener_list("listeners", cfg.require("listeners")?)?
    };
    let resolve = |addr: &str| -> anyhow::Result<std::net::SocketAddr> {
        addr.to_socket_addrs()
            .with_context(|| format!("listeners: {addr:?} is not a host:port"))?
            .next()
            .with_context(|| format!("listeners: {addr:?} resolves to nothing"))
    };
    let (grpc_name, listener) = listeners
        .iter()
        .find(|(n, _)| *n != ListenerName::Kafka)
        .cloned()
        .context(
            "listeners: one listener must serve gRPC (host:port, PLAINTEXT:// or GRPC://): \
             brokers replicate and reach the controllers over it",
        )?;
    let kafka_listener = listeners
        .iter()
        .find(|(n, _)| *n == ListenerName::Kafka)
        .map(|(_, a)| a.clone());
    anyhow::ensure!(
        listeners
            .iter()
            .filter(|(n, _)| *n != ListenerName::Kafka)
            .count()
            == 1,
        "listeners: one listener serves gRPC: either host:port / PLAINTEXT:// (with Kafka on the same port) or GRPC:// (with a KAFKA:// one), not both"
    );
    anyhow::ensure!(
        !(grpc_name == ListenerName::Grpc && kafka_listener.is_none()),
        "listeners: a GRPC:// listener needs a KAFKA:// one beside it (Kafka clients are sent to every broker); for both on one port use host:port"
    );
    anyhow::ensure!(
        !(grpc_name == ListenerName::Both && kafka_listener.is_some()),
        "listeners: the Kafka protocol is served on one listener: a KAFKA:// entry goes with a GRPC:// one, not a PLAINTEXT:// (both) one"
    );
    let listen = resolve(&listener)?;
    let kafka_listen = kafka_listener.as_deref().map(resolve).transpose()?;
    let advertised_list = match cfg.get("advertised.listeners") {
        Some(a) if !a.trim().is_empty() => parse_listener_list("advertised.listeners", a)?,
        _ => Vec::new(),
    };
    let advertised = advertised_list
        .iter()
        .find(|(n, _)| *n != ListenerName::Kafka)
        .map_or(listener, |(_, a)| a.clone());
    let advertised_kafka = match (
        advertised_list
            .iter()
            .find(|(n, _)| *n == ListenerName::Kafka),
        &kafka_listener,
    ) {
        (Some((_, a)), Some(_)) => Some(a.clone()),
        (None, Some(bound)) => Some(bound.clone()),
        (Some((_, a)), None) => anyhow::bail!(
            "advertised.listeners: KAFKA://{a} advertises a listener that listeners does not have"
        ),
        (None, None) => None,
    };
    let split = |key: &str, a: &str| -> anyhow::Result<(String, u16)> {
        let (host, port) = a
            .rsplit_once(':')
            .with_context(|| format!("{key}={a:?} is not host:port"))?;
        Ok((
            host.to_string(),
            port.parse()
                .with_context(|| format!("bad port in {key}={a:?}"))?,
        ))
    };
    let advertised_kafka = advertised_kafka
        .map(|a| split("advertised.listeners", &a))
        .transpose()?;
    let (advertised_host, advertised_port) = split("advertised.listeners", &advertised)?;
    let ms = |key: &str| -> anyhow::Result<Duration> { Ok(Duration::from_millis(cfg.num(key)?)) };
    let tls = super::node_tls(cfg)?;
    let sasl_mechanisms = super::node_sasl(cfg, tls.as_ref())?;
    let authorizer = super::node_authorizer(cfg, tls.as_ref())?;
    Ok(BrokerConfig {
        node_id: sluice_metadata::BrokerId(node_id),
        tls,
        sasl_mechanisms,
        authorizer,
        listen,
        listen_serves_kafka: grpc_name == ListenerName::Both,
        kafka_listen,
        advertised_kafka,
        advertised_host,
        advertised_port,
        controllers: voters.into_values().collect(),
        log_dir: PathBuf::from(cfg.require("log.dirs")?),
        cluster_id: cfg.require("cluster.id")?.to_string(),
        heartbeat_interval: ms("broker.heartbeat.interval.ms")?,
        replica_lag_time_max: ms("replica.lag.time.max.ms")?,
        replica_fetch_max_bytes: cfg.num("replica.fetch.max.bytes")?,
        replica_fetch_wait_max_ms: cfg.num("replica.fetch.wait.max.ms")?,
        replica_fetch_min_bytes: cfg.num("replica.fetch.min.bytes")?,
        replica_fetch_response_max_bytes: cfg.num("replica.fetch.response.max.bytes")?,
        num_replica_fetchers: positive(cfg, "num.replica.fetchers")? as usize,
        retention_check_interval: ms("log.retention.check.interval.ms")?,
        auto_create_topics: cfg.bool("auto.create.topics.enable")?,
        static_configs: cfg
            .entries()
            .map(|(name, value, source, _)| {
                (
                    name.to_string(),
                    (!value.is_empty()).then(|| value.to_string()),
                    source == crate::config::Source::Default,
                )
            })
            .collect(),
        listener_limits: sluice_broker::listener::ListenerLimits {
            connections_max: positive(cfg, "max.connections")? as usize,
            request_bytes_in_flight_max: positive(cfg, "queued.max.request.bytes")? as usize,
            streams_per_connection_max: positive(cfg, "max.concurrent.streams")? as u32,
        },
        groups: sluice_broker::group::GroupSettings {
            offsets_partitions: positive(cfg, "offsets.topic.num.partitions")?,
            offsets_replication_factor: positive(cfg, "offsets.topic.replication.factor")?,
            session_timeout: ms("group.consumer.session.timeout.ms")?,
            heartbeat_interval: ms("group.consumer.heartbeat.interval.ms")?,
            classic: sluice_broker::group::classic::ClassicSettings {
                min_session_timeout: ms("group.min.session.timeout.ms")?,
                max_session_timeout: ms("group.max.session.timeout.ms")?,
                initial_rebalance_delay: ms("group.initial.rebalance.delay.ms")?,
                max_size: sluice_broker::group::GROUP_MEMBERS_MAX,
            },
            offsets_retention: Duration::from_secs(
                60 * positive(cfg, "offsets.retention.minutes")? as u64,
            ),
            offsets_retention_check: ms("offsets.retention.check.interval.ms")?,
        },
    })
}

/// `log.segment.open.files.max`, with 0 meaning half the soft `RLIMIT_NOFILE` (the rest is
/// left for connections, indexes and checkpoints).
fn segment_files_max(configured: usize) -> usize {
    if configured > 0 {
        return configured;
    }
    use nix::sys::resource::{getrlimit, Resource};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, _)) if soft != nix::sys::resource::RLIM_INFINITY => {
            usize::try_from(soft / 2).unwrap_or(usize::MAX)
        }
        _ => sluice_storage::files::OPEN_FILES_MAX_DEFAULT,
    }
}

fn positive(cfg: &NodeConfig, key: &str) -> anyhow::Result<i32> {
    let v: i32 = cfg.num(key)?;
    anyhow::ensure!(v > 0, "{key}={v}: must be at least 1");
    Ok(v)
}

/// Runs a broker until SIGTERM / Ctrl-C, then shuts down in a controlled way: leadership
/// moves away before the process exits.
pub fn run(cfg: NodeConfig) -> anyhow::Result<()> {
    // `sluice bench recovery --broker` sets it to 0 so the recovery point follows each roll
    // at once instead of 30 s later; not a setting for production.
    if let Some(ms) = std::env::var("SLUICE_ROLL_FLUSH_DELAY_MS")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
    {
        sluice_storage::set_roll_flush_delay(Duration::from_millis(ms));
    }
    fault_settings();
    sluice_broker::partition::io::init(positive(&cfg, "num.io.threads")? as usize);
    let config = broker_config(&cfg)?;
    let open_files = segment_files_max(cfg.num("log.segment.open.files.max")?);
    sluice_storage::files::set_open_files_max(open_files);
    let metrics = super::metrics_addr(&cfg, config.listen)?;
    let rt = super::runtime()?;
    rt.block_on(async move {
        super::install_metrics(metrics)?;
        let node = BrokerNode::new(config).map_err(|e| anyhow::anyhow!(e))?;
        node.install();
        let heartbeats = tokio::spawn(node.clone().run_heartbeats());
        let follower = tokio::spawn(node.clone().run_metadata_follower());
        let isr = tokio::spawn(node.clone().run_isr_maintenance());
        let retention = tokio::spawn(node.clone().run_retention());
        let gauges = tokio::spawn(node.clone().run_gauges());
        let _gauges = AbortOnDrop(gauges);
        let _hw_checkpoints = AbortOnDrop(tokio::spawn(node.clone().run_hw_checkpoints()));
        let _faults = AbortOnDrop(tokio::spawn(fault_injection()));
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let mut server = tokio::spawn(service::serve(node.clone(), async move {
            let _ = stop_rx.await;
        }));
        // A server that stops on its own (e.g. the port is taken) ends the process.
        tokio::select! {
            _ = super::shutdown_signal() => {}
            r = &mut server => {
                heartbeats.abort();
                follower.abort();
                isr.abort();
                retention.abort();
                r?.map_err(|e| anyhow::anyhow!(e))?;
                anyhow::bail!("the broker's server stopped unexpectedly");
            }
        }
        tracing::info!(
            broker = node.id().get(),
            "controlled shutdown: moving leadership away"
        );
        node.shutting_down.store(true, Ordering::SeqCst);
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(10) {
            let me = node.id();
            let leads = node
                .image()
                .topics
                .values()
                .any(|t| t.partitions.iter().any(|p| p.leader == me));
            if !leads && node.fenced.load(Ordering::SeqCst) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let _ = stop_tx.send(());
        heartbeats.abort();
        follower.abort();
        isr.abort();
        retention.abort();
        let served = server.await?;
        node.close_logs().await;
        served.map_err(|e| anyhow::anyhow!(e))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(listeners: Option<&str>, advertised: Option<&str>) -> anyhow::Result<BrokerConfig> {
        let mut flags = vec![
            ("node.id".to_string(), "1".to_string()),
            (
                "controller.quorum.voters".to_string(),
                "1@127.0.0.1:9093".to_string(),
            ),
            (
                "log.dirs".to_string(),
                "/tmp/sluice-config-test".to_string(),
            ),
        ];
        if let Some(l) = listeners {
            flags.push(("listeners".into(), l.into()));
        }
        if let Some(a) = advertised {
            flags.push(("advertised.listeners".into(), a.into()));
        }
        broker_config(&NodeConfig::load(None, &flags)?)
    }

    /// `listeners` / `advertised.listeners` as Kafka writes them: one port for both
    /// protocols by default (bare or PLAINTEXT://), or GRPC:// and KAFKA:// ports of their own,
    /// each advertised by its name (the KAFKA:// one defaults to its bound address).
    #[test]
    fn listeners_name_one_port_for_both_or_a_port_per_protocol() {
        let c = config(None, None).unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:9092");
        assert!(c.listen_serves_kafka);
        assert_eq!((c.kafka_listen, c.advertised_kafka), (None, None));

        let c = config(Some("PLAINTEXT://127.0.0.1:9100"), Some("broker-1:19100")).unwrap();
        assert!(c.listen_serves_kafka);
        assert_eq!(
            (c.advertised_host.as_str(), c.advertised_port),
            ("broker-1", 19100)
        );

        let c = config(
            Some("GRPC://127.0.0.1:9200,KAFKA://127.0.0.1:9201"),
            Some("GRPC://g.example:1,KAFKA://k.example:2"),
        )
        .unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:9200");
        assert!(!c.listen_serves_kafka);
        assert_eq!(c.kafka_listen.unwrap().to_string(), "127.0.0.1:9201");
        assert_eq!(
            (c.advertised_host.as_str(), c.advertised_port),
            ("g.example", 1)
        );
        assert_eq!(c.advertised_kafka, Some(("k.example".to_string(), 2)));

        let c = config(Some("KAFKA://127.0.0.1:9301,GRPC://127.0.0.1:9300"), None).unwrap();
        assert_eq!(c.advertised_kafka, Some(("127.0.0.1".to_string(), 9301)));
        assert_eq!(c.advertised_port, 9300);
    }

    /// Listener lists that cannot work are refused at start-up with the problem named.
    #[test]
    fn impossible_listener_lists_are_refused_by_name() {
        for (listeners, advertised, says) in [
            (
                "KAFKA://127.0.0.1:9001",
                None,
                "one listener must serve gRPC",
            ),
            (
                "PLAINTEXT://127.0.0.1:9000,KAFKA://127.0.0.1:9001",
                None,
                "goes with a GRPC://",
            ),
            (
                "SSL://127.0.0.1:9000",
                None,
                "unknown listener name \"SSL\"",
            ),
            (
                "GRPC://127.0.0.1:9000,PLAINTEXT://127.0.0.1:9001",
                None,
                "one listener serves gRPC",
            ),
            ("GRPC://127.0.0.1:9000", None, "needs a KAFKA:// one"),
            (
                "GRPC://127.0.0.1:9000,GRPC://127.0.0.1:9001",
                None,
                "two Grpc listeners",
            ),
            (
                "127.0.0.1:9000",
                Some("KAFKA://k:1"),
                "advertises a listener that listeners does not have",
            ),
        ] {
            let e = format!("{:#}", config(Some(listeners), advertised).unwrap_err());
            assert!(e.contains(says), "{listeners}: {e}");
        }
    }
}
