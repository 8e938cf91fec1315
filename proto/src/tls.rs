//! TLS on every listener and channel (issue #16), with rustls (ring provider; no OpenSSL).
//!
//! A node's settings are Kafka's key names: `ssl.keystore.location` (one PEM file with the
//! node's certificate chain and its private key, Kafka's PEM keystore), `ssl.truststore.location`
//! (PEM CA certificates that sign peers: the channels to other nodes verify against them, and
//! client certificates are checked against them) and `ssl.client.auth`
//! (`none` | `requested` | `required`). The keystore and the truststore are reloaded when their
//! files change (checked every [`RELOAD_CHECK_INTERVAL`]): new connections get the new
//! certificate and are checked against the new CAs, channels dialed from then on present the
//! new certificate; open connections keep theirs. A file that does not load is logged and the
//! previous settings stay.
//!
//! ```text
//!   TcpStream ─► TlsAcceptor::accept (handshake ≤ HANDSHAKE_TIMEOUT) ─► TlsStream
//!        resolver ◄── ReloadingKey (mtime poll) ◄── ssl.keystore.location
//! ```

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;

/// How often a keystore file is checked for changes.
pub const RELOAD_CHECK_INTERVAL: Duration = Duration::from_secs(2);
/// A TLS handshake not done within this closes the connection.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// TLS handshakes a controller's listener runs at once; more connections wait to be accepted.
pub const HANDSHAKES_MAX: usize = 256;

/// Kafka's `ssl.client.auth`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ClientAuth {
    /// Clients present no certificate (the default).
    #[default]
    None,
    /// A client certificate is asked for and checked when given.
    Requested,
    /// A connection without a valid client certificate is refused.
    Required,
}

impl ClientAuth {
    /// Parses Kafka's values `none`, `requested`, `required`.
    pub fn parse(s: &str) -> Result<Self, String> {
        match s.trim() {
            "none" => Ok(ClientAuth::None),
            "requested" => Ok(ClientAuth::Requested),
            "required" => Ok(ClientAuth::Required),
            other => Err(format!(
                "ssl.client.auth={other:?} must be none, requested or required"
            )),
        }
    }
}

/// A node's TLS settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSettings {
    /// `ssl.keystore.location`: PEM with the certificate chain and the private key.
    pub keystore: PathBuf,
    /// `ssl.truststore.location`: PEM CA certificates.
    pub truststore: Option<PathBuf>,
    /// `ssl.client.auth`.
    pub client_auth: ClientAuth,
}

impl TlsSettings {
    /// Whether client certificates are checked (`ssl.client.auth=requested` or `required`):
    /// then node RPCs are checked against the node the peer's certificate names, and a call
    /// without one cannot act as a node.
    pub fn checks_client_certificates(&self) -> bool {
        self.client_auth != ClientAuth::None
    }
}

/// A node RPC claiming to come from broker `broker_id` ([`check_peer`]), as the status a
/// service answers: CLUSTER_AUTHORIZATION_FAILED when the certificate does not name it.
pub fn require_broker_peer(
    settings: Option<&TlsSettings>,
    peer: Option<&[CertificateDer<'_>]>,
    broker_id: i32,
) -> Result<(), tonic::Status> {
    check_peer(
        settings.is_some_and(TlsSettings::checks_client_certificates),
        peer,
        &format!("broker-{broker_id}"),
        |id| id == NodeIdentity::Broker(broker_id),
    )
    .map_err(|e| crate::status::error_status(crate::ErrorCode::ClusterAuthorizationFailed, e, None))
}

/// The ring provider: rustls' default (aws-lc-rs) needs a C/cmake build.
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read(path: &Path, what: &str) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("{what} {}: {e}", path.display()))
}

/// The certificates of a PEM file.
pub fn load_certs(path: &Path, what: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let pem = read(path, what)?;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{what} {}: not PEM certificates: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{what} {}: no certificate in it", path.display()));
    }
    Ok(certs)
}

/// A keystore (certificate chain and private key in one PEM file, or the key in `key`).
pub fn load_keystore(path: &Path, key: Option<&Path>) -> Result<CertifiedKey, String> {
    let certs = load_certs(path, "ssl.keystore.location")?;
    let key_pem = match key {
        Some(k) => read(k, "ssl.key.location")?,
        None => read(path, "ssl.keystore.location")?,
    };
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| {
        format!(
            "{}: no usable private key: {e}",
            key.unwrap_or(path).display()
        )
    })?;
    let signing = provider()
        .key_provider
        .load_private_key(key)
        .map_err(|e| format!("{}: the private key does not load: {e}", path.display()))?;
    let ck = CertifiedKey::new(certs, signing);
    ck.keys_match().map_err(|e| {
        format!(
            "{}: the key does not match the certificate: {e}",
            path.display()
        )
    })?;
    Ok(ck)
}

/// The root store of a truststore file.
pub fn load_roots(path: &Path) -> Result<rustls::RootCertStore, String> {
    let mut roots = rustls::RootCertStore::empty();
    for c in load_certs(path, "ssl.truststore.location")? {
        roots
            .add(c)
            .map_err(|e| format!("ssl.truststore.location {}: {e}", path.display()))?;
    }
    Ok(roots)
}

/// The server certificate, swapped when its file changes.
#[derive(Debug)]
pub struct ReloadingKey {
    path: PathBuf,
    current: RwLock<(Arc<CertifiedKey>, Option<SystemTime>)>,
}

impl ReloadingKey {
    /// Loads `path` now.
    pub fn load(path: &Path) -> Result<Self, String> {
        let key = load_keystore(path, None)?;
        Ok(ReloadingKey {
            path: path.to_path_buf(),
            current: RwLock::new((Arc::new(key), modified(path))),
        })
    }

    /// Reloads the file if its modification time moved: `Ok(true)` when a new certificate
    /// is in use; an error leaves the previous one in use.
    pub fn reload_if_changed(&self) -> Result<bool, String> {
        let now = modified(&self.path);
        if now == self.current.read().expect("key lock").1 {
            return Ok(false);
        }
        // The mtime is recorded only with a certificate that loaded: a half-written file is
        // tried again at the next check.
        let key = load_keystore(&self.path, None)?;
        *self.current.write().expect("key lock") = (Arc::new(key), now);
        Ok(true)
    }

    /// The certificate chain in use.
    pub fn chain(&self) -> Vec<CertificateDer<'static>> {
        self.current.read().expect("key lock").0.cert.clone()
    }
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

impl ResolvesServerCert for ReloadingKey {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.read().expect("key lock").0.clone())
    }
}

/// Accepts TLS connections with a node's settings.
#[derive(Clone)]
pub struct TlsAcceptor {
    /// Swapped whole when the truststore changes (a new client verifier).
    inner: Arc<RwLock<tokio_rustls::TlsAcceptor>>,
    key: Arc<ReloadingKey>,
    settings: Arc<TlsSettings>,
    /// The truststore's modification time the verifier in use was built from.
    truststore_mtime: Arc<RwLock<Option<SystemTime>>>,
}

impl std::fmt::Debug for TlsAcceptor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsAcceptor")
            .field("keystore", &self.key.path)
            .finish()
    }
}

/// The server configuration for `s` with the certificate from `key`.
fn server_config(s: &TlsSettings, key: Arc<ReloadingKey>) -> Result<rustls::ServerConfig, String> {
    let builder = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let builder = match s.client_auth {
        ClientAuth::None => builder.with_no_client_auth(),
        auth => {
            let ts = s.truststore.as_ref().ok_or_else(|| {
                format!(
                    "ssl.client.auth={} needs ssl.truststore.location (the CAs client certificates are checked against)",
                    if auth == ClientAuth::Required { "required" } else { "requested" }
                )
            })?;
            let roots = Arc::new(load_roots(ts)?);
            let mut v = WebPkiClientVerifier::builder_with_provider(roots, provider());
            if auth == ClientAuth::Requested {
                v = v.allow_unauthenticated();
            }
            builder.with_client_cert_verifier(v.build().map_err(|e| e.to_string())?)
        }
    };
    let mut config = builder.with_cert_resolver(key);
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

/// [`TlsAcceptor::reload_truststore_if_changed`].
fn reload_truststore(
    settings: &TlsSettings,
    key: &Arc<ReloadingKey>,
    inner: &RwLock<tokio_rustls::TlsAcceptor>,
    mtime: &RwLock<Option<SystemTime>>,
) -> Result<bool, String> {
    let Some(ts) = &settings.truststore else {
        return Ok(false);
    };
    let now = modified(ts);
    if now == *mtime.read().expect("truststore lock") {
        return Ok(false);
    }
    let config = server_config(settings, key.clone())?;
    *inner.write().expect("acceptor lock") = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    *mtime.write().expect("truststore lock") = now;
    Ok(true)
}

impl TlsAcceptor {
    /// An acceptor for `s` (ALPN `h2` offered, for gRPC; Kafka clients send none), and
    /// the task that reloads the keystore and the truststore when they change (needs a Tokio
    /// runtime).
    pub fn new(s: &TlsSettings) -> Result<Self, String> {
        let key = Arc::new(ReloadingKey::load(&s.keystore)?);
        let truststore_mtime = s.truststore.as_deref().and_then(modified);
        let config = server_config(s, key.clone())?;
        let acceptor = TlsAcceptor {
            inner: Arc::new(RwLock::new(tokio_rustls::TlsAcceptor::from(Arc::new(
                config,
            )))),
            key,
            settings: Arc::new(s.clone()),
            truststore_mtime: Arc::new(RwLock::new(truststore_mtime)),
        };
        acceptor.spawn_reloader();
        Ok(acceptor)
    }

    /// Rebuilds the client verifier if the truststore's modification time moved: `Ok(true)`
    /// when new CAs are in use; an error (a file that does not load) leaves the previous ones.
    pub fn reload_truststore_if_changed(&self) -> Result<bool, String> {
        reload_truststore(
            &self.settings,
            &self.key,
            &self.inner,
            &self.truststore_mtime,
        )
    }

    fn spawn_reloader(&self) {
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        // Weak: the task ends once the acceptor is gone.
        let key = Arc::downgrade(&self.key);
        let inner = Arc::downgrade(&self.inner);
        let (settings, mtime) = (self.settings.clone(), self.truststore_mtime.clone());
        rt.spawn(async move {
            let mut tick = tokio::time::interval(RELOAD_CHECK_INTERVAL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let (Some(key), Some(inner)) = (key.upgrade(), inner.upgrade()) else {
                    return;
                };
                let (k, s, m) = (key.clone(), settings.clone(), mtime.clone());
                let checked = tokio::task::spawn_blocking(move || {
                    (k.reload_if_changed(), reload_truststore(&s, &k, &inner, &m))
                })
                .await;
                let Ok((keystore, truststore)) = checked else { return };
                let mut changed = false;
                match keystore {
                    Ok(true) => {
                        changed = true;
                        tracing::info!(keystore = %key.path.display(), "TLS certificate reloaded")
                    }
                    Ok(false) => {}
                    Err(e) => tracing::warn!(error = %e,
                        "the changed TLS keystore does not load; the previous certificate stays in use"),
                }
                match truststore {
                    Ok(true) => {
                        changed = true;
                        tracing::info!("TLS truststore reloaded: client certificates are checked against its CAs")
                    }
                    Ok(false) => {}
                    Err(e) => tracing::warn!(error = %e,
                        "the changed TLS truststore does not load; the previous CAs stay in use"),
                }
                if changed {
                    if let Err(e) = refresh_internal_client_tls() {
                        tracing::warn!(error = %e, "channels dialed from now on keep the previous TLS settings");
                    }
                }
            }
        });
    }

    /// The TLS handshake on an accepted connection, bounded by [`HANDSHAKE_TIMEOUT`].
    pub async fn accept<IO>(&self, io: IO) -> std::io::Result<tokio_rustls::server::TlsStream<IO>>
    where
        IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    {
        let inner = self.inner.read().expect("acceptor lock").clone();
        match tokio::time::timeout(HANDSHAKE_TIMEOUT, inner.accept(io)).await {
            Ok(r) => r,
            Err(_) => Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("no TLS handshake within {HANDSHAKE_TIMEOUT:?}"),
            )),
        }
    }

    /// The server certificate chain in use.
    pub fn chain(&self) -> Vec<CertificateDer<'static>> {
        self.key.chain()
    }
}

/// What a client needs to dial TLS: the CAs to trust, and its own certificate for mTLS
/// (librdkafka's `ssl.ca.location`, `ssl.certificate.location`, `ssl.key.location`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ClientTls {
    /// PEM CA certificates; `None`: the server certificate is not verified against a CA
    /// of ours (refused: Sluice always verifies, so this must be set).
    pub ca: Option<PathBuf>,
    /// PEM certificate chain presented to the server (with the key in it, or in `key`).
    pub certificate: Option<PathBuf>,
    /// PEM private key of `certificate`, if not in the same file.
    pub key: Option<PathBuf>,
}

impl ClientTls {
    /// The tonic client configuration.
    pub fn tonic(&self) -> Result<tonic::transport::ClientTlsConfig, String> {
        let ca = self
            .ca
            .as_ref()
            .ok_or("TLS needs ssl.ca.location (or ssl.truststore.location): the CA that signs the cluster's certificates")?;
        let mut c = tonic::transport::ClientTlsConfig::new().ca_certificate(
            tonic::transport::Certificate::from_pem(read(ca, "ssl.ca.location")?),
        );
        if let Some(cert) = &self.certificate {
            let pem = read(cert, "ssl.certificate.location")?;
            let key = match &self.key {
                Some(k) => read(k, "ssl.key.location")?,
                None => pem.clone(),
            };
            // Checked here so a bad file is an error naming it, not a failed handshake.
            load_keystore(cert, self.key.as_deref())?;
            c = c.identity(tonic::transport::Identity::from_pem(pem, key));
        }
        Ok(c)
    }
}

/// The TLS settings every internal channel of this process dials with (set once at start
/// by a node with TLS, or by a client command given a command config), and the files they
/// were built from (rebuilt when a node's keystore or truststore is reloaded).
static INTERNAL_TLS: RwLock<Option<(ClientTls, tonic::transport::ClientTlsConfig)>> =
    RwLock::new(None);

/// Makes every channel [`crate::transport`] dials from now on use TLS with `c`. Set once;
/// a second call is refused.
pub fn set_internal_client_tls(c: &ClientTls) -> Result<(), String> {
    let config = c.tonic()?;
    let mut tls = INTERNAL_TLS.write().expect("internal TLS lock");
    if tls.is_some() {
        return Err("the process's TLS client settings are already set".to_string());
    }
    *tls = Some((c.clone(), config));
    Ok(())
}

/// Reads the internal channels' certificate and CA files again: channels dialed from now on
/// present the reloaded certificate and trust the reloaded CAs (channels already connected
/// keep the handshake they made). An error keeps the previous settings.
pub fn refresh_internal_client_tls() -> Result<(), String> {
    let files = match &*INTERNAL_TLS.read().expect("internal TLS lock") {
        Some((files, _)) => files.clone(),
        None => return Ok(()),
    };
    let config = files.tonic()?;
    *INTERNAL_TLS.write().expect("internal TLS lock") = Some((files, config));
    Ok(())
}

/// The channels' TLS settings, if TLS is on.
pub fn internal_client_tls() -> Option<tonic::transport::ClientTlsConfig> {
    INTERNAL_TLS
        .read()
        .expect("internal TLS lock")
        .as_ref()
        .map(|(_, c)| c.clone())
}

/// TLS connections accepted on `listener`: each handshake runs in a task of its own (a slow
/// or plaintext client never holds up the accept loop); failed handshakes are logged and
/// dropped. For tonic's `serve_with_incoming` (peer certificates reach each request).
pub fn incoming(
    listener: tokio::net::TcpListener,
    acceptor: TlsAcceptor,
) -> tokio_stream::wrappers::ReceiverStream<
    std::io::Result<tokio_rustls::server::TlsStream<tokio::net::TcpStream>>,
> {
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    let handshakes = Arc::new(tokio::sync::Semaphore::new(HANDSHAKES_MAX));
    tokio::spawn(async move {
        loop {
            // At most HANDSHAKES_MAX connections wait in their handshake at once: silent
            // peers cannot pile up sockets (and file descriptors) without bound.
            let Ok(permit) = handshakes.clone().acquire_owned().await else {
                return;
            };
            let (tcp, peer) = tokio::select! {
                r = listener.accept() => match r {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed; retrying");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
                () = tx.closed() => return,
            };
            let _ = tcp.set_nodelay(true);
            let (tx, acceptor) = (tx.clone(), acceptor.clone());
            tokio::spawn(async move {
                let accepted = acceptor.accept(tcp).await;
                drop(permit);
                match accepted {
                    Ok(s) => {
                        let _ = tx.send(Ok(s)).await;
                    }
                    Err(e) => tracing::info!(%peer, error = %e, "TLS handshake failed; closed"),
                }
            });
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

/// Who is at the other end of a broker connection: what tonic puts in each request's
/// extensions (`Request::extensions().get::<PeerInfo>()`), and what a Kafka connection is told.
#[derive(Debug, Clone)]
pub struct PeerInfo {
    /// The peer's address.
    pub remote: Option<std::net::SocketAddr>,
    /// The certificate chain the peer presented over TLS (mTLS), if any.
    pub certificates: Option<Arc<Vec<CertificateDer<'static>>>>,
}

/// The certificate chain a request's peer presented: from a broker listener's [`PeerInfo`]
/// or tonic's own TLS connection info (controllers).
pub fn request_certificates<T>(r: &tonic::Request<T>) -> Option<Arc<Vec<CertificateDer<'static>>>> {
    if let Some(p) = r.extensions().get::<PeerInfo>() {
        return p.certificates.clone();
    }
    r.peer_certs()
}

/// The node a certificate names: subject common name `broker-N` or `controller-N`
/// (how `sluice dev --secure` and docs/security.md name node certificates).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeIdentity {
    /// `broker-N`.
    Broker(i32),
    /// `controller-N`.
    Controller(u64),
}

impl std::fmt::Display for NodeIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NodeIdentity::Broker(id) => write!(f, "broker-{id}"),
            NodeIdentity::Controller(id) => write!(f, "controller-{id}"),
        }
    }
}

/// The node identity of a peer's leaf certificate, if it names one.
pub fn node_identity(leaf: &CertificateDer<'_>) -> Option<NodeIdentity> {
    let (_, cert) = x509_parser::parse_x509_certificate(leaf.as_ref()).ok()?;
    let cn = cert.subject().iter_common_name().next()?.as_str().ok()?;
    // Digits only, no leading zero: `broker-+2` or `broker-02` name no node.
    fn id(n: &str) -> Option<&str> {
        (!n.is_empty()
            && n.bytes().all(|b| b.is_ascii_digit())
            && (n == "0" || !n.starts_with('0')))
        .then_some(n)
    }
    if let Some(n) = cn.strip_prefix("broker-") {
        return id(n)?.parse().ok().map(NodeIdentity::Broker);
    }
    id(cn.strip_prefix("controller-")?)?
        .parse()
        .ok()
        .map(NodeIdentity::Controller)
}

/// Checks that a node RPC comes from the node it claims: when `enforced` (the serving node
/// checks client certificates, `ssl.client.auth=requested` or `required`), the peer's certificate must name
/// a node `wanted` accepts. The error says who the peer is and what it claimed.
pub fn check_peer(
    enforced: bool,
    peer: Option<&[CertificateDer<'_>]>,
    claimed: &str,
    wanted: impl Fn(NodeIdentity) -> bool,
) -> Result<(), String> {
    if !enforced {
        return Ok(());
    }
    let who = peer.and_then(|c| c.first()).map(node_identity);
    match who {
        Some(Some(id)) if wanted(id) => Ok(()),
        Some(Some(id)) => Err(format!(
            "the peer's certificate names {id}, but the request claims {claimed}"
        )),
        Some(None) => Err(format!(
            "the peer's certificate names no node (broker-N / controller-N), but the request claims {claimed}"
        )),
        None => Err(format!(
            "no client certificate, but the request claims {claimed}"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert(cn: &str) -> CertificateDer<'static> {
        let mut p = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap();
        p.distinguished_name.push(rcgen::DnType::CommonName, cn);
        let key = rcgen::KeyPair::generate().unwrap();
        p.self_signed(&key).unwrap().der().clone()
    }

    #[test]
    fn node_identities_come_from_the_common_name() {
        assert_eq!(
            node_identity(&cert("broker-2")),
            Some(NodeIdentity::Broker(2))
        );
        assert_eq!(
            node_identity(&cert("controller-3")),
            Some(NodeIdentity::Controller(3))
        );
        assert_eq!(node_identity(&cert("client")), None);
        assert_eq!(node_identity(&cert("broker-two")), None);
        assert_eq!(node_identity(&cert("broker-+2")), None);
        assert_eq!(node_identity(&cert("broker-02")), None);
        assert_eq!(node_identity(&cert("controller-")), None);
        assert_eq!(node_identity(&CertificateDer::from(vec![1, 2, 3])), None);
    }

    #[test]
    fn a_node_rpc_must_come_from_the_node_it_claims() {
        let b2 = [cert("broker-2")];
        let client = [cert("client")];
        let is_b2 = |id| id == NodeIdentity::Broker(2);
        assert!(check_peer(true, Some(&b2), "broker-2", is_b2).is_ok());
        let e = check_peer(true, Some(&b2), "broker-3", |id| {
            id == NodeIdentity::Broker(3)
        })
        .unwrap_err();
        assert!(
            e.contains("names broker-2") && e.contains("claims broker-3"),
            "{e}"
        );
        let e = check_peer(true, Some(&client), "broker-2", is_b2).unwrap_err();
        assert!(e.contains("names no node"), "{e}");
        let e = check_peer(true, None, "broker-2", is_b2).unwrap_err();
        assert!(e.contains("no client certificate"), "{e}");
        assert!(
            check_peer(false, None, "broker-2", is_b2).is_ok(),
            "not enforced without required client certificates"
        );
    }
}
