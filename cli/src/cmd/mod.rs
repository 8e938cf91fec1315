//! Implementations of the `sluice` subcommands.

pub mod acl;
pub mod broker;
pub mod chaos;
pub mod cluster;
pub mod controller;
pub mod data;
pub mod dev;
pub mod dev_pki;
pub mod doctor;
pub mod election;
pub mod group;
pub mod quorum;
pub mod quota;
pub mod topic;
pub mod user;

/// A multi-threaded Tokio runtime for one command.
/// A node's TLS settings (`ssl.keystore.location` set), after making every channel this
/// process dials use TLS with its truststore and its own certificate.
pub fn node_tls(
    cfg: &crate::config::NodeConfig,
) -> anyhow::Result<Option<sluice_proto::tls::TlsSettings>> {
    let Some(keystore) = cfg.get("ssl.keystore.location") else {
        return Ok(None);
    };
    let truststore = cfg.get("ssl.truststore.location").ok_or_else(|| {
        anyhow::anyhow!(
            "ssl.keystore.location is set but ssl.truststore.location is not: nodes dial each other over TLS and verify each other with it"
        )
    })?;
    let settings = sluice_proto::tls::TlsSettings {
        keystore: keystore.into(),
        truststore: Some(truststore.into()),
        client_auth: sluice_proto::tls::ClientAuth::parse(
            cfg.get("ssl.client.auth").unwrap_or("none"),
        )
        .map_err(|e| anyhow::anyhow!(e))?,
    };
    // Loaded once here so a bad file stops the node at start, naming it.
    sluice_proto::tls::load_keystore(&settings.keystore, None).map_err(|e| anyhow::anyhow!(e))?;
    sluice_proto::tls::set_internal_client_tls(&sluice_proto::tls::ClientTls {
        ca: settings.truststore.clone(),
        certificate: Some(settings.keystore.clone()),
        key: None,
    })
    .map_err(|e| anyhow::anyhow!(e))?;
    Ok(Some(settings))
}

/// A node's `sasl.enabled.mechanisms`. SASL needs TLS that checks client certificates
/// (`ssl.client.auth=requested` or `required`): with SASL on, clients are no longer trusted,
/// so the node RPCs (Controller, Raft, replica fetches) must know nodes by their
/// certificates, or anyone could still act as a broker.
pub fn node_sasl(
    cfg: &crate::config::NodeConfig,
    tls: Option<&sluice_proto::tls::TlsSettings>,
) -> anyhow::Result<Vec<sluice_metadata::scram::SaslMechanism>> {
    let mechanisms = sluice_metadata::scram::SaslMechanism::parse_list(
        cfg.get("sasl.enabled.mechanisms").unwrap_or(""),
    )
    .map_err(|e| anyhow::anyhow!(e))?;
    if !mechanisms.is_empty()
        && !tls.is_some_and(sluice_proto::tls::TlsSettings::checks_client_certificates)
    {
        anyhow::bail!(
            "sasl.enabled.mechanisms is set, but nodes are not known by their certificates: set ssl.keystore.location, ssl.truststore.location and ssl.client.auth=requested (or required), or every node RPC stays open to anyone"
        );
    }
    Ok(mechanisms)
}

/// A node's authorizer (`authorizer.class.name`, `super.users`,
/// `allow.everyone.if.no.acl.found`). Like SASL it needs nodes known by their certificates:
/// brokers relay clients' Admin calls, and only a broker's certificate may say for whom.
pub fn node_authorizer(
    cfg: &crate::config::NodeConfig,
    tls: Option<&sluice_proto::tls::TlsSettings>,
) -> anyhow::Result<Option<sluice_metadata::acl::Authorizer>> {
    let authorizer = sluice_metadata::acl::Authorizer::from_config(
        cfg.get("authorizer.class.name").unwrap_or(""),
        cfg.get("super.users").unwrap_or(""),
        cfg.bool("allow.everyone.if.no.acl.found")?,
    )
    .map_err(|e| anyhow::anyhow!(e))?;
    if authorizer.is_some()
        && !tls.is_some_and(sluice_proto::tls::TlsSettings::checks_client_certificates)
    {
        anyhow::bail!(
            "authorizer.class.name is set, but nodes are not known by their certificates: set ssl.keystore.location, ssl.truststore.location and ssl.client.auth=requested (or required)"
        );
    }
    Ok(authorizer)
}

pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

/// The Prometheus endpoint's address: `metrics.listener`, else the gRPC listener's host
/// with port + 200.
pub fn metrics_addr(
    cfg: &crate::config::NodeConfig,
    grpc: std::net::SocketAddr,
) -> anyhow::Result<std::net::SocketAddr> {
    use anyhow::Context;
    use std::net::ToSocketAddrs;
    match cfg.get("metrics.listener").filter(|v| !v.is_empty()) {
        Some(v) => v
            .to_socket_addrs()
            .ok()
            .and_then(|mut a| a.next())
            .with_context(|| format!("metrics.listener={v:?} is not a host:port")),
        None => {
            let port = grpc.port().checked_add(200).with_context(|| {
                format!(
                    "metrics.listener: listener port {} + 200 overflows; set metrics.listener",
                    grpc.port()
                )
            })?;
            Ok(std::net::SocketAddr::new(grpc.ip(), port))
        }
    }
}

/// Serves `GET /metrics` (Prometheus text format) on `addr`; call inside the runtime.
pub fn install_metrics(addr: std::net::SocketAddr) -> anyhow::Result<()> {
    use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
    PrometheusBuilder::new()
        .with_http_listener(addr)
        .set_buckets_for_metric(
            Matcher::Suffix("_seconds".into()),
            &[
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                10.0,
            ],
        )
        .map_err(|e| anyhow::anyhow!("metrics: {e}"))?
        .install()
        .map_err(|e| anyhow::anyhow!("metrics.listener={addr}: {e}"))?;
    tracing::info!(%addr, "metrics on http://{addr}/metrics");
    Ok(())
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("installing a SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
