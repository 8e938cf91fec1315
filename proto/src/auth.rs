//! Who is calling (issue #16): gRPC callers authenticate with the same users as SASL on the
//! Kafka port, sending `authorization: Basic base64(user:password)` on every call over TLS
//! (checked against the user's SCRAM credential), or with a client certificate.
//!
//! Why a password per call and not a SCRAM exchange or bearer tokens: gRPC calls are
//! independent HTTP/2 streams, so a challenge–response would cost two round trips per call or a
//! session the server must keep; tokens would need issuing, expiry and revocation in the
//! metadata log. A password checked against the stored SCRAM credential (PBKDF2 once, then a
//! cache of verified (user, password digest, credential) triples) gives one user database for
//! both protocols, and deleting a user stops its calls at the next one, because every call is
//! checked against the current metadata image. TLS keeps the password off the wire.
//!
//! ```text
//!   call ─► Authenticate (interceptor) ─► Basic credentials? ── check ──► Principal::User
//!                                         client certificate? ─────────► Node | User(CN)
//!                                         neither: refused when SASL is on, else Anonymous
//! ```

use std::sync::{Arc, OnceLock};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use tonic::metadata::MetadataValue;
use tonic::{Request, Status};

use crate::tls::{node_identity, NodeIdentity};
use crate::ErrorCode;

/// Who made a call or opened a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// Nobody in particular (no authentication configured).
    Anonymous,
    /// A user: SASL (or Basic credentials on gRPC), or a client certificate's common name.
    User(String),
    /// A cluster node, by its certificate.
    Node(NodeIdentity),
}

impl std::fmt::Display for Principal {
    /// Kafka's principal form, `User:<name>`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Principal::Anonymous => f.write_str("User:ANONYMOUS"),
            Principal::User(n) => write!(f, "User:{n}"),
            Principal::Node(id) => write!(f, "User:{id}"),
        }
    }
}

/// Checks a user name and password against the current users.
pub type PasswordCheck = Arc<dyn Fn(&str, &str) -> bool + Send + Sync>;

/// The gRPC interceptor of the services clients call (Broker, Admin).
#[derive(Clone)]
pub struct Authenticate {
    /// SASL is enabled (`sasl.enabled.mechanisms`): calls must authenticate.
    pub required: bool,
    /// How passwords are checked.
    pub check: PasswordCheck,
}

impl tonic::service::Interceptor for Authenticate {
    fn call(&mut self, mut r: Request<()>) -> Result<Request<()>, Status> {
        let principal = self.principal(&r)?;
        r.extensions_mut().insert(principal);
        Ok(r)
    }
}

fn unauthenticated(message: String) -> Status {
    crate::status::error_status(ErrorCode::SaslAuthenticationFailed, message, None)
}

impl Authenticate {
    /// The caller of `r`, or why it is refused.
    pub fn principal<T>(&self, r: &Request<T>) -> Result<Principal, Status> {
        if self.required {
            if let Some(v) = r.metadata().get("authorization") {
                let (user, password) = v.to_str().ok().and_then(parse_basic).ok_or_else(|| {
                    unauthenticated(
                        "the authorization header is not `Basic base64(user:password)`".into(),
                    )
                })?;
                // A cache miss costs PBKDF2 (milliseconds): off this worker's other tasks.
                if in_place(|| (self.check)(&user, &password)) {
                    return Ok(Principal::User(user));
                }
                return Err(unauthenticated(format!(
                    "authentication failed for user {user:?}: unknown user or wrong password"
                )));
            }
        }
        if let Some(p) = certificate_principal(r) {
            return Ok(p);
        }
        if self.required {
            return Err(unauthenticated(
                "SASL is enabled on this cluster: calls need a user's credentials (sasl.username and sasl.password in --command-config) or a client certificate".into(),
            ));
        }
        Ok(Principal::Anonymous)
    }
}

/// The principal a verified client certificate names: a node (`broker-N`, `controller-N`),
/// else `User:<common name>`.
pub fn certificate_principal<T>(r: &Request<T>) -> Option<Principal> {
    chain_principal(&crate::tls::request_certificates(r)?)
}

/// The principal a verified certificate chain names (see [`certificate_principal`]).
pub fn chain_principal(certs: &[rustls::pki_types::CertificateDer<'_>]) -> Option<Principal> {
    let leaf = certs.first()?;
    if let Some(id) = node_identity(leaf) {
        return Some(Principal::Node(id));
    }
    common_name(leaf).map(Principal::User)
}

/// A certificate's subject common name.
pub fn common_name(leaf: &rustls::pki_types::CertificateDer<'_>) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(leaf.as_ref()).ok()?;
    let cn = cert.subject().iter_common_name().next()?.as_str().ok()?;
    Some(cn.to_string())
}

/// `Basic base64(user:password)` → (user, password).
pub fn parse_basic(header: &str) -> Option<(String, String)> {
    let b64 = header.strip_prefix("Basic ")?;
    let raw = B64.decode(b64.trim()).ok()?;
    let text = String::from_utf8(raw).ok()?;
    let (user, password) = text.split_once(':')?;
    (!user.is_empty()).then(|| (user.to_string(), password.to_string()))
}

/// Runs CPU-heavy `f` from inside an async task without stalling the worker's other tasks
/// (`block_in_place` on a multi-thread runtime; directly elsewhere).
pub fn in_place<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(f)
        }
        _ => f(),
    }
}

/// The caller of a request the [`Authenticate`] interceptor let through.
pub fn principal_of<T>(r: &Request<T>) -> Principal {
    r.extensions()
        .get::<Principal>()
        .cloned()
        .unwrap_or(Principal::Anonymous)
}

/// Header a broker sets when it relays an Admin call to the controllers: the principal it
/// authenticated (`User:NAME`). Controllers accept it only from a broker's certificate.
pub const ON_BEHALF_OF: &str = "sluice-on-behalf-of";
/// With [`ON_BEHALF_OF`]: the relayed client's host (its IP address).
pub const CLIENT_HOST: &str = "sluice-client-host";

/// Marks a relayed call as made for `principal` from `host`.
pub fn set_on_behalf_of<T>(r: &mut Request<T>, principal: &str, host: &str) -> Result<(), Status> {
    let value = |v: &str| {
        MetadataValue::try_from(v).map_err(|_| {
            crate::status::error_status(
                ErrorCode::InvalidRequest,
                format!("{v:?} cannot be relayed in a header"),
                None,
            )
        })
    };
    r.metadata_mut().insert(ON_BEHALF_OF, value(principal)?);
    r.metadata_mut().insert(CLIENT_HOST, value(host)?);
    Ok(())
}

/// The (principal, host) a relayed call was made for, if it is one; refused unless the
/// relaying peer is a broker (anyone else could claim to be anyone).
pub fn on_behalf_of<T>(r: &Request<T>) -> Result<Option<(String, String)>, Status> {
    let Some(who) = r.metadata().get(ON_BEHALF_OF) else {
        return Ok(None);
    };
    if !matches!(principal_of(r), Principal::Node(NodeIdentity::Broker(_))) {
        return Err(crate::status::error_status(
            ErrorCode::ClusterAuthorizationFailed,
            format!("only brokers may relay calls for other principals ({ON_BEHALF_OF})"),
            None,
        ));
    }
    let text = |v: Option<&MetadataValue<tonic::metadata::Ascii>>| {
        v.and_then(|v| v.to_str().ok()).unwrap_or("").to_string()
    };
    Ok(Some((text(Some(who)), text(r.metadata().get(CLIENT_HOST)))))
}

/// The IP address a request came from, as ACL hosts name it (empty when unknown).
pub fn request_host<T>(r: &Request<T>) -> String {
    r.extensions()
        .get::<crate::tls::PeerInfo>()
        .and_then(|p| p.remote)
        .or_else(|| r.remote_addr())
        .map(|a| a.ip().to_string())
        .unwrap_or_default()
}

static CLIENT_CREDENTIALS: OnceLock<MetadataValue<tonic::metadata::Ascii>> = OnceLock::new();

/// Makes every call this process sends carry `user`'s credentials (`--command-config` with
/// `sasl.username` / `sasl.password`). Once per process.
pub fn set_client_credentials(user: &str, password: &str) -> Result<(), String> {
    if user.contains(':') {
        return Err(format!(
            "sasl.username {user:?} contains ':', which Basic credentials cannot carry"
        ));
    }
    let value = format!("Basic {}", B64.encode(format!("{user}:{password}")));
    let value = MetadataValue::try_from(value).map_err(|e| format!("sasl credentials: {e}"))?;
    CLIENT_CREDENTIALS
        .set(value)
        .map_err(|_| "client credentials are already set".to_string())
}

/// The client-side interceptor: adds the process's credentials, if any, to each call.
#[derive(Clone, Copy, Debug, Default)]
pub struct CallCredentials;

impl tonic::service::Interceptor for CallCredentials {
    fn call(&mut self, mut r: Request<()>) -> Result<Request<()>, Status> {
        if let Some(v) = CLIENT_CREDENTIALS.get() {
            r.metadata_mut().insert("authorization", v.clone());
        }
        Ok(r)
    }
}

/// A channel whose calls carry the process's credentials.
pub type AuthChannel =
    tonic::service::interceptor::InterceptedService<tonic::transport::Channel, CallCredentials>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_credentials_parse() {
        let h = format!("Basic {}", B64.encode("alice:pa:ss"));
        assert_eq!(parse_basic(&h), Some(("alice".into(), "pa:ss".into())));
        assert_eq!(parse_basic("Bearer x"), None);
        assert_eq!(parse_basic("Basic !!!"), None);
        assert_eq!(parse_basic(&format!("Basic {}", B64.encode(":pw"))), None);
        assert_eq!(
            parse_basic(&format!("Basic {}", B64.encode("nocolon"))),
            None
        );
    }

    #[test]
    fn calls_without_credentials_are_refused_only_when_sasl_is_on() {
        let check: PasswordCheck = Arc::new(|u, p| u == "alice" && p == "pw");
        let on = Authenticate {
            required: true,
            check: check.clone(),
        };
        let off = Authenticate {
            required: false,
            check,
        };
        let call = |h: Option<String>| {
            let mut r = Request::new(());
            if let Some(h) = h {
                r.metadata_mut()
                    .insert("authorization", MetadataValue::try_from(h).unwrap());
            }
            r
        };
        let basic = |s: &str| Some(format!("Basic {}", B64.encode(s)));
        assert_eq!(off.principal(&call(None)).unwrap(), Principal::Anonymous);
        assert_eq!(
            on.principal(&call(basic("alice:pw"))).unwrap(),
            Principal::User("alice".into())
        );
        for bad in [
            None,
            basic("alice:nope"),
            basic("bob:pw"),
            Some("Basic x".into()),
        ] {
            let e = on.principal(&call(bad.clone())).unwrap_err();
            assert_eq!(e.code(), tonic::Code::Unauthenticated, "{bad:?}");
            assert_eq!(
                crate::status::error_code(&e),
                ErrorCode::SaslAuthenticationFailed
            );
        }
    }
}
