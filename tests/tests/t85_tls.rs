//! TLS on every listener (issue #16, first step): controllers and brokers with
//! `ssl.keystore.location` serve TLS only, dial each other over TLS, and Kafka clients
//! (kcat), the gRPC client and `sluice` (with `--command-config`) reach them with a CA file;
//! plaintext clients are refused and the node keeps serving; `ssl.client.auth=required`
//! refuses clients without a certificate; a replaced keystore is served without a restart.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use sluice_tests::cluster::Cluster;
use sluice_tests::*;

const WAIT: Duration = Duration::from_secs(60);

/// A throwaway CA and certificates it signs, as PEM files in a temp dir.
struct Pki {
    dir: tempfile::TempDir,
    issuer: Issuer<'static, KeyPair>,
}

impl Pki {
    fn new() -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(DnType::CommonName, "sluice test CA");
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().unwrap();
        let cert = ca.self_signed(&key).unwrap();
        std::fs::write(dir.path().join("ca.pem"), cert.pem()).unwrap();
        Pki {
            dir,
            issuer: Issuer::new(ca, key),
        }
    }

    fn ca(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// A certificate for 127.0.0.1 / localhost named `cn`, usable as server and client, in
    /// one PEM file (chain + key, a Kafka PEM keystore) at `name`.
    fn keystore(&self, name: &str, cn: &str) -> PathBuf {
        self.keystore_until(name, cn, None)
    }

    /// [`Pki::keystore`] valid from 2019-01-01 until `until` (y, m, d): an expired one.
    fn keystore_until(&self, name: &str, cn: &str, until: Option<(i32, u8, u8)>) -> PathBuf {
        let mut p =
            CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()]).unwrap();
        p.distinguished_name.push(DnType::CommonName, cn);
        if let Some((y, m, d)) = until {
            p.not_before = rcgen::date_time_ymd(2019, 1, 1);
            p.not_after = rcgen::date_time_ymd(y, m, d);
        }
        p.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let key = KeyPair::generate().unwrap();
        let cert = p.signed_by(&key, &self.issuer).unwrap();
        let path = self.dir.path().join(name);
        // Written whole then renamed, as a certificate rotation would.
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, format!("{}{}", cert.pem(), key.serialize_pem())).unwrap();
        std::fs::rename(&tmp, &path).unwrap();
        path
    }
}

fn node_overrides(keystore: &Path, pki: &Pki, client_auth: &str) -> Vec<String> {
    vec![
        format!("ssl.keystore.location={}", keystore.display()),
        format!("ssl.truststore.location={}", pki.ca().display()),
        format!("ssl.client.auth={client_auth}"),
    ]
}

fn refs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// The certificate chain a TLS server at `addr` presents (its leaf first), as DER.
async fn served_leaf(addr: &str, ca: &Path) -> Vec<u8> {
    use rustls::pki_types::ServerName;
    let mut roots = rustls::RootCertStore::empty();
    for c in sluice_proto::tls::load_certs(ca, "ca").unwrap() {
        roots.add(c).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
        .connect(ServerName::try_from("127.0.0.1").unwrap(), tcp)
        .await
        .expect("a TLS handshake");
    tls.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}

/// Goal: a cluster whose nodes all serve TLS works end to end for every kind of client, and
/// refuses plaintext. Method: 1 controller + 2 brokers, each with its own keystore signed
/// by one CA (`ssl.client.auth=none`); this test process dials with the CA
/// (`set_internal_client_tls`). Topic creation over gRPC reaches the controller through a
/// broker (broker → controller over TLS); kcat with `security.protocol=ssl` produces to an
/// RF 2 topic with acks=all (replication between the brokers over TLS) and reads every record
/// back; `sluice --command-config` lists the topic and consumes; plaintext kcat and plaintext
/// `sluice` are refused, and TLS clients are served afterwards; a keystore replaced on disk is
/// what the next handshake presents, without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_cluster_serves_tls_clients_and_refuses_plaintext() {
    let pki = Pki::new();
    let stores: Vec<PathBuf> = (1..=3)
        .map(|i| pki.keystore(&format!("node-{i}.pem"), &format!("node-{i}")))
        .collect();
    let controller = node_overrides(&stores[0], &pki, "none");
    let c = Cluster::start_with(
        1,
        2,
        &controller.iter().map(String::as_str).collect::<Vec<_>>(),
        &[],
        |b| node_overrides(&stores[b as usize], &pki, "none"),
    );
    sluice_proto::tls::set_internal_client_tls(&sluice_proto::tls::ClientTls {
        ca: Some(pki.ca()),
        certificate: None,
        key: None,
    })
    .unwrap();
    create_topic_with(&c.broker_addr(1), "secure", 2, 2, &[]).await;
    let ca = pki.ca().display().to_string();
    let b1 = c.broker_addr(1);
    let ssl = |extra: &[&str]| -> Vec<String> {
        let mut v: Vec<String> = ["-b", b1.as_str(), "-X", "security.protocol=ssl", "-X"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        v.push(format!("ssl.ca.location={ca}"));
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    };
    // The topic led with both replicas in sync, seen over TLS.
    wait_for("the topic led over TLS", WAIT, || async {
        let (ok, out, _) = kcat(&refs(&ssl(&["-L", "-t", "secure", "-J"])), None);
        let m: serde_json::Value = serde_json::from_str(&out).ok()?;
        let parts = m["topics"][0]["partitions"].as_array()?;
        (ok && parts.len() == 2
            && parts
                .iter()
                .all(|p| p["isrs"].as_array().map(|i| i.len()) == Some(2)))
        .then_some(())
    })
    .await;
    let input: String = (0..50).map(|i| format!("k{i}:v{i}\n")).collect();
    let (ok, _, err) = kcat(
        &refs(&ssl(&["-P", "-t", "secure", "-K", ":", "-X", "acks=all"])),
        Some(&input),
    );
    assert!(ok, "kcat produce over TLS: {err}");
    let (ok, out, err) = kcat(
        &refs(&ssl(&[
            "-C",
            "-t",
            "secure",
            "-o",
            "beginning",
            "-e",
            "-f",
            "%k:%s\n",
        ])),
        None,
    );
    assert!(ok, "kcat consume over TLS: {err}");
    let mut got: Vec<&str> = out.lines().collect();
    got.sort();
    let mut want: Vec<String> = (0..50).map(|i| format!("k{i}:v{i}")).collect();
    want.sort();
    assert_eq!(got, want, "every record back over TLS");

    // sluice with a command config (librdkafka keys, as admin.properties has them).
    let conf = pki.dir.path().join("client.properties");
    std::fs::write(
        &conf,
        format!("security.protocol=SSL\nssl.ca.location={ca}\n"),
    )
    .unwrap();
    let conf = conf.display().to_string();
    let (ok, out, err) = sluice(&[
        "topic",
        "list",
        "--bootstrap",
        &b1,
        "--command-config",
        &conf,
        "-o",
        "json",
    ]);
    assert!(
        ok && out.contains("secure"),
        "sluice topic list over TLS: {out}\n{err}"
    );
    let (ok, out, err) = sluice(&["topic", "list", "--bootstrap", &b1, "-o", "json"]);
    assert!(
        !ok,
        "plaintext sluice against a TLS broker must fail: {out}\n{err}"
    );

    // Plaintext Kafka clients are refused; the broker keeps serving TLS ones.
    let (ok, out, _) = kcat(&["-b", &b1, "-L", "-J", "-m", "5"], None);
    assert!(
        !ok || !out.contains("secure"),
        "plaintext kcat got metadata: {out}"
    );
    let (ok, out, err) = kcat(&refs(&ssl(&["-L", "-t", "secure"])), None);
    assert!(
        ok && out.contains("secure"),
        "TLS after plaintext attempts: {err}"
    );

    // Rotation: the broker presents the new certificate on the next handshake.
    let before = served_leaf(&b1, &pki.ca()).await;
    pki.keystore("node-2.pem", "node-2-rotated");
    wait_for("the rotated certificate served", WAIT, || async {
        let now = served_leaf(&b1, &pki.ca()).await;
        (now != before).then_some(())
    })
    .await;
    let (ok, out, err) = kcat(&refs(&ssl(&["-L", "-t", "secure"])), None);
    assert!(
        ok && out.contains("secure"),
        "TLS with the rotated certificate: {err}"
    );
}

/// Goal: `ssl.client.auth=required` refuses a client without a certificate signed by the
/// truststore's CAs, and serves one with. Method: 1 controller + 1 broker, both requiring
/// client certificates (the broker dials the controller with its own certificate); kcat
/// without a certificate gets no metadata, kcat with a certificate from the CA does, and
/// one from another CA, or an expired one from the CA, is refused; once the other CA is added
/// to the truststore file, its certificate is accepted without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn required_client_certificates_are_checked() {
    let pki = Pki::new();
    let c_store = pki.keystore("controller.pem", "controller-1");
    let b_store = pki.keystore("broker.pem", "broker-1");
    let client = pki.keystore("client.pem", "client");
    // Kept: its files live as long as it does.
    let strangers = Pki::new();
    let stranger = strangers.keystore("stranger.pem", "stranger");
    let expired = pki.keystore_until("expired.pem", "client", Some((2020, 6, 1)));
    let controller = node_overrides(&c_store, &pki, "required");
    let broker = node_overrides(&b_store, &pki, "required");
    let c = Cluster::start(
        1,
        1,
        &controller.iter().map(String::as_str).collect::<Vec<_>>(),
        &broker.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    let b = c.broker_addr(1);
    let ca = pki.ca().display().to_string();
    let kcat_with = |cert: Option<&Path>| {
        let mut args = vec![
            "-b".to_string(),
            b.clone(),
            "-X".into(),
            "security.protocol=ssl".into(),
            "-X".into(),
            format!("ssl.ca.location={ca}"),
            "-L".into(),
            "-m".into(),
            "5".into(),
        ];
        if let Some(p) = cert {
            args.extend([
                "-X".into(),
                format!("ssl.certificate.location={}", p.display()),
                "-X".into(),
                format!("ssl.key.location={}", p.display()),
            ]);
        }
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        kcat(&refs, None)
    };
    wait_for("metadata with a client certificate", WAIT, || async {
        let (ok, out, _) = kcat_with(Some(&client));
        (ok && out.contains("1 brokers")).then_some(())
    })
    .await;
    let (ok, out, _) = kcat_with(None);
    assert!(
        !ok || !out.contains("1 brokers"),
        "no certificate, yet metadata: {out}"
    );
    let (ok, out, _) = kcat_with(Some(&stranger));
    assert!(
        !ok || !out.contains("1 brokers"),
        "another CA's certificate, yet metadata: {out}"
    );
    let (ok, out, _) = kcat_with(Some(&expired));
    assert!(
        !ok || !out.contains("1 brokers"),
        "an expired certificate, yet metadata: {out}"
    );
    let (ok, out, err) = kcat_with(Some(&client));
    assert!(
        ok && out.contains("1 brokers"),
        "served after the refusals: {err}"
    );

    // The truststore is reloaded when it changes: once the other CA is in it (written whole
    // then renamed), its certificate is accepted without a restart, and ours still are.
    let both = format!(
        "{}{}",
        std::fs::read_to_string(pki.ca()).unwrap(),
        std::fs::read_to_string(strangers.ca()).unwrap()
    );
    let tmp = pki.ca().with_extension("tmp");
    std::fs::write(&tmp, both).unwrap();
    std::fs::rename(&tmp, pki.ca()).unwrap();
    wait_for(
        "the other CA's certificate accepted once trusted",
        WAIT,
        || async {
            let (ok, out, _) = kcat_with(Some(&stranger));
            (ok && out.contains("1 brokers")).then_some(())
        },
    )
    .await;
    let (ok, out, err) = kcat_with(Some(&client));
    assert!(
        ok && out.contains("1 brokers"),
        "our CA's certificate after the reload: {err}"
    );
}

/// A channel to `addr` over TLS presenting `keystore` (a certificate of this CA).
fn mtls_channel(addr: &str, pki: &Pki, keystore: &Path) -> tonic::transport::Channel {
    let tls = sluice_proto::tls::ClientTls {
        ca: Some(pki.ca()),
        certificate: Some(keystore.to_path_buf()),
        key: None,
    }
    .tonic()
    .unwrap();
    tonic::transport::Endpoint::from_shared(format!("https://{addr}"))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .timeout(Duration::from_secs(10))
        .connect_lazy()
}

/// Goal: with mutual TLS (`ssl.client.auth=required`) a node's identity is its certificate,
/// not what a request claims: a process holding a certificate the cluster's CA signed for
/// broker 2 cannot register, heartbeat or take producer ids as broker 1, a client certificate
/// cannot send Raft RPCs or fetch as a follower (which would move the high watermark), and the
/// real nodes keep working. Method: 1 controller (`controller-1`) + 1 broker (`broker-1`),
/// both requiring client certificates; a topic is created and written through the real broker
/// with a client certificate; then the forged calls, each answered CLUSTER_AUTHORIZATION_FAILED;
/// then the topic still takes writes. Seen failing with the identity checks switched off (the
/// forged registration reached the controller's decision, answered
/// DUPLICATE_BROKER_REGISTRATION only because broker 1's session was alive).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_rpcs_must_come_from_the_node_their_certificate_names() {
    use sluice_proto::status::error_code;
    use sluice_proto::v1::broker_client::BrokerClient;
    use sluice_proto::v1::controller_client::ControllerClient;
    use sluice_proto::v1::raft_client::RaftClient;
    use sluice_proto::v1::*;
    let pki = Pki::new();
    let c_store = pki.keystore("controller.pem", "controller-1");
    let b_store = pki.keystore("broker.pem", "broker-1");
    let client = pki.keystore("client.pem", "client");
    let rogue = pki.keystore("rogue.pem", "broker-2");
    let controller = node_overrides(&c_store, &pki, "required");
    let broker = node_overrides(&b_store, &pki, "required");
    let c = Cluster::start(
        1,
        1,
        &controller.iter().map(String::as_str).collect::<Vec<_>>(),
        &broker.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    let (ctl, b) = (c.controller_addr(1), c.broker_addr(1));
    // The real broker registers and serves (its certificate names broker-1).
    let produce = |value: &'static str| {
        let ch = mtls_channel(&b, &pki, &client);
        async move {
            let batch = batch_of(&[value.as_bytes()]);
            BrokerClient::new(ch)
                .produce(ProduceRequest {
                    topic: "ids".into(),
                    partition: 0,
                    acks: Some(-1),
                    payload: Some(produce_request::Payload::RecordBatch(batch)),
                    timeout_ms: 5000,
                    ..Default::default()
                })
                .await
        }
    };
    wait_for("the topic created and written over mTLS", WAIT, || async {
        let _ = sluice_proto::v1::admin_client::AdminClient::new(mtls_channel(&b, &pki, &client))
            .create_topics(CreateTopicsRequest {
                topics: vec![TopicSpec {
                    name: "ids".into(),
                    num_partitions: 1,
                    replication_factor: 1,
                    ..Default::default()
                }],
                ..Default::default()
            })
            .await;
        produce("first").await.ok()
    })
    .await;
    let forged = ControllerClient::new(mtls_channel(&ctl, &pki, &rogue));
    let denied = |what: &str, r: Result<(), tonic::Status>| {
        let e = r.expect_err(what);
        assert_eq!(
            error_code(&e),
            sluice_proto::ErrorCode::ClusterAuthorizationFailed,
            "{what}: {e:?}"
        );
        assert!(
            e.message().contains("broker-2") || e.message().contains("names no node"),
            "{what}: {}",
            e.message()
        );
    };
    denied(
        "a registration as broker 1 with broker 2's certificate",
        forged
            .clone()
            .register_broker(RegisterBrokerRequest {
                broker_id: 1,
                incarnation_id: "forged".into(),
                host: "127.0.0.1".into(),
                port: 1,
                ..Default::default()
            })
            .await
            .map(|_| ()),
    );
    denied(
        "a heartbeat as broker 1",
        forged
            .clone()
            .broker_heartbeat(BrokerHeartbeatRequest {
                broker_id: 1,
                broker_epoch: 0,
                ..Default::default()
            })
            .await
            .map(|_| ()),
    );
    denied(
        "producer ids for broker 1",
        forged
            .clone()
            .allocate_producer_ids(AllocateProducerIdsRequest {
                broker_id: 1,
                ..Default::default()
            })
            .await
            .map(|_| ()),
    );
    for (who, store) in [("a broker", &rogue), ("a client", &client)] {
        denied(
            &format!("Raft AppendEntries from {who} certificate"),
            RaftClient::new(mtls_channel(&ctl, &pki, store))
                .append_entries(RaftPayload::default())
                .await
                .map(|_| ()),
        );
    }
    // Another controller's certificate (CA-signed, controller-2) cannot speak for controller 1.
    let other = pki.keystore("other.pem", "controller-2");
    let e = RaftClient::new(mtls_channel(&ctl, &pki, &other))
        .vote(RaftPayload {
            sender_id: 1,
            ..Default::default()
        })
        .await
        .expect_err("a Vote as controller 1 with controller 2's certificate");
    assert_eq!(
        error_code(&e),
        sluice_proto::ErrorCode::ClusterAuthorizationFailed,
        "{e:?}"
    );
    assert!(
        e.message().contains("controller-2") && e.message().contains("controller-1"),
        "{}",
        e.message()
    );
    // With its own id as sender, controller 2 still cannot carry controller 1's candidacy.
    let vote = openraft::raft::VoteRequest::<u64>::new(openraft::Vote::new(99, 1), None);
    let e = RaftClient::new(mtls_channel(&ctl, &pki, &other))
        .vote(RaftPayload {
            sender_id: 2,
            payload: postcard::to_stdvec(&vote).unwrap().into(),
            ..Default::default()
        })
        .await
        .expect_err("a Vote for candidate 1 sent by controller 2");
    assert_eq!(
        error_code(&e),
        sluice_proto::ErrorCode::ClusterAuthorizationFailed,
        "{e:?}"
    );
    assert!(e.message().contains("speaks for"), "{}", e.message());
    denied(
        "a follower fetch as broker 1 from a client certificate",
        BrokerClient::new(mtls_channel(&b, &pki, &client))
            .fetch(FetchRequest {
                topic: "ids".into(),
                partition: 0,
                fetch_offset: 1,
                replica_id: Some(1),
                max_bytes: 1000,
                ..Default::default()
            })
            .await
            .map(|_| ()),
    );
    // The real broker was never fenced or replaced: it still takes acks=all writes.
    produce("after")
        .await
        .expect("the real broker still serves");
}

/// Goal: `sluice dev --secure` gives a mutual-TLS cluster that stock tools reach with the
/// file it writes, unchanged (DESIGN §12: `kcat -F <dir>/admin.properties`,
/// `--command-config`). Method: `sluice dev --secure` on free ports; `<dir>/admin.properties`
/// names the CA and the admin client's certificate; `sluice --command-config` creates a topic
/// and lists it, kcat `-F` (which also takes `bootstrap.servers` from the file) produces and
/// reads a record back; plaintext kcat, and `sluice` without the file, get nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_secure_writes_an_admin_properties_that_kcat_and_sluice_use_as_is() {
    let dev = DevCluster::start_with(&["--secure"]);
    let props = dev.dir().join("admin.properties");
    let text = std::fs::read_to_string(&props).expect("admin.properties written");
    for key in [
        "security.protocol=SASL_SSL",
        "sasl.mechanism=SCRAM-SHA-256",
        "sasl.username=admin",
        "sasl.password=",
        "ssl.ca.location=",
        "bootstrap.servers=",
    ] {
        assert!(text.contains(key), "{key} in {text}");
    }
    let p = props.display().to_string();
    let b = dev.bootstrap();
    let (ok, out, err) = sluice(&[
        "--command-config",
        &p,
        "topic",
        "create",
        "sec",
        "-p",
        "1",
        "-r",
        "3",
        "--bootstrap",
        &b,
    ]);
    assert!(ok, "topic create over mTLS: {out}\n{err}");
    let (ok, out, err) = sluice(&["--command-config", &p, "topic", "list", "--bootstrap", &b]);
    assert!(
        ok && out.contains("sec"),
        "topic list over mTLS: {out}\n{err}"
    );
    let (ok, _, err) = kcat(
        &["-F", &p, "-P", "-t", "sec", "-K", ":"],
        Some("key:value\n"),
    );
    assert!(ok, "kcat -F produce: {err}");
    let (ok, out, err) = kcat(&["-F", &p, "-C", "-t", "sec", "-e", "-f", "%k=%s\n"], None);
    assert!(
        ok && out.contains("key=value"),
        "kcat -F consume: {out}\n{err}"
    );
    let (ok, out, _) = kcat(&["-b", &b, "-L", "-m", "5"], None);
    assert!(
        !ok || !out.contains("sec"),
        "plaintext kcat got metadata: {out}"
    );
    let (ok, out, _) = sluice(&["topic", "list", "--bootstrap", &b]);
    assert!(
        !ok && !out.contains("sec"),
        "sluice without the command config: {out}"
    );
}
