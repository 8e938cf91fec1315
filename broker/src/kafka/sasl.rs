//! SASL on the Kafka port (KIP-43 handshake, KIP-152 SaslAuthenticate frames, KIP-84
//! SCRAM): with `sasl.enabled.mechanisms` set, a connection may send only ApiVersions,
//! SaslHandshake and SaslAuthenticate until it has authenticated, as Kafka's SASL listeners
//! do; anything else closes it. An authenticated connection's user is checked against the
//! current metadata image on every request, so deleting the user ends its sessions at their
//! next request after the deletion reaches this broker.
//!
//! ```text
//!   Handshake ──SaslHandshake(m)──► Authenticate(m) ──PLAIN: user\0pw──────────────► Done(user)
//!                                                  └─SCRAM: client-first─► ScramFinal ─► Done(user)
//!   any failure: the error answered (SASL_AUTHENTICATION_FAILED, UNSUPPORTED_SASL_MECHANISM,
//!   ILLEGAL_SASL_STATE), then the connection closes
//! ```

use bytes::Bytes;
use kafka_protocol::messages::{
    ApiKey, RequestKind, ResponseKind, SaslAuthenticateRequest, SaslAuthenticateResponse,
    SaslHandshakeRequest, SaslHandshakeResponse,
};
use sluice_metadata::scram::{parse_plain, SaslError, SaslMechanism, ScramServer};

use super::{kstr, Ctx};

/// Kafka's error codes for SASL.
const UNSUPPORTED_SASL_MECHANISM: i16 = 33;
const ILLEGAL_SASL_STATE: i16 = 34;
const SASL_AUTHENTICATION_FAILED: i16 = 58;
const UNSUPPORTED_VERSION: i16 = 35;

/// Where a connection stands.
pub(crate) enum SaslState {
    /// SASL is off: every request is served.
    Off,
    /// Waiting for SaslHandshake.
    Handshake,
    /// The handshake chose this mechanism; waiting for the first SaslAuthenticate.
    Authenticate(SaslMechanism),
    /// SCRAM: the server-first message went out; waiting for the client-final one.
    ScramFinal(Box<ScramServer>),
    /// Authenticated as this user.
    Done(String),
}

/// What to do with a request.
pub(crate) enum Gate {
    /// Serve it as usual.
    Serve,
    /// Answer this (a SASL step) and go on.
    Answer(ResponseKind),
    /// Answer this, then close the connection (why, for the log).
    AnswerAndClose(ResponseKind, String),
    /// Close the connection without an answer.
    Close(String),
}

impl SaslState {
    /// The user this connection authenticated as, once it has.
    pub fn user(&self) -> Option<&str> {
        match self {
            SaslState::Done(user) => Some(user),
            _ => None,
        }
    }

    /// The state a new connection starts in.
    pub fn new(ctx: &Ctx) -> Self {
        if ctx.node.config.sasl_mechanisms.is_empty() {
            SaslState::Off
        } else {
            SaslState::Handshake
        }
    }

    /// Decides about one request; SASL requests are answered here, in arrival order.
    pub async fn step(
        &mut self,
        ctx: &Ctx,
        api_key: ApiKey,
        version: i16,
        body: &RequestKind,
    ) -> Gate {
        if api_key == ApiKey::SaslHandshake && version == 0 {
            // v0 would send the SASL tokens unframed next (before KIP-152): not served.
            return Gate::AnswerAndClose(
                SaslHandshakeResponse::default()
                    .with_error_code(UNSUPPORTED_VERSION)
                    .with_mechanisms(offered(ctx).iter().map(|m| kstr(m.name())).collect())
                    .into(),
                "SaslHandshake v0 (unframed SASL tokens) is not supported; v1 is".into(),
            );
        }
        match (&*self, body) {
            (_, RequestKind::ApiVersions(_)) => Gate::Serve,
            (SaslState::Off, RequestKind::SaslHandshake(_)) => Gate::Answer(
                SaslHandshakeResponse::default()
                    .with_error_code(ILLEGAL_SASL_STATE)
                    .into(),
            ),
            (SaslState::Off, RequestKind::SaslAuthenticate(_)) => Gate::Answer(
                failed(ILLEGAL_SASL_STATE, "SASL is not enabled on this listener").into(),
            ),
            (SaslState::Off, _) => Gate::Serve,
            (SaslState::Handshake, RequestKind::SaslHandshake(r)) => self.handshake(ctx, r),
            (SaslState::Authenticate(m), RequestKind::SaslAuthenticate(r)) => {
                let m = *m;
                self.first(ctx, m, r).await
            }
            (SaslState::ScramFinal(server), RequestKind::SaslAuthenticate(r)) => {
                let answer = server.client_final(&r.auth_bytes);
                match answer {
                    Ok(last) => {
                        let user = server.user.clone();
                        tracing::info!(user, "Kafka connection authenticated (SCRAM)");
                        *self = SaslState::Done(user);
                        Gate::Answer(
                            SaslAuthenticateResponse::default()
                                .with_auth_bytes(Bytes::from(last))
                                .into(),
                        )
                    }
                    Err(e) => refuse(e),
                }
            }
            (
                SaslState::Done(user),
                RequestKind::SaslHandshake(_) | RequestKind::SaslAuthenticate(_),
            ) => Gate::AnswerAndClose(
                failed(
                    ILLEGAL_SASL_STATE,
                    "already authenticated (re-authentication is not offered)",
                )
                .into(),
                format!("user {user:?} sent a SASL request after authenticating"),
            ),
            (SaslState::Done(user), _) => {
                if ctx.node.image().users.contains_key(user) {
                    Gate::Serve
                } else {
                    Gate::Close(format!("user {user:?} was deleted: its sessions end"))
                }
            }
            (_, RequestKind::SaslHandshake(_) | RequestKind::SaslAuthenticate(_)) => {
                Gate::AnswerAndClose(
                    failed(ILLEGAL_SASL_STATE, "this SASL request is out of order").into(),
                    "a SASL request out of order".into(),
                )
            }
            (_, _) => Gate::Close(format!(
                "a {api_key:?} request before SASL authentication (sasl.enabled.mechanisms is set)"
            )),
        }
    }

    fn handshake(&mut self, ctx: &Ctx, r: &SaslHandshakeRequest) -> Gate {
        let offered = offered(ctx);
        let names: Vec<_> = offered.iter().map(|m| kstr(m.name())).collect();
        let wanted = r.mechanism.as_str();
        match offered
            .iter()
            .find(|m| m.name().eq_ignore_ascii_case(wanted))
        {
            Some(m) => {
                *self = SaslState::Authenticate(*m);
                Gate::Answer(
                    SaslHandshakeResponse::default()
                        .with_mechanisms(names)
                        .into(),
                )
            }
            None => {
                let why = if wanted.eq_ignore_ascii_case("PLAIN")
                    && ctx
                        .node
                        .config
                        .sasl_mechanisms
                        .contains(&SaslMechanism::Plain)
                {
                    "PLAIN is offered over TLS only (security.protocol=SASL_SSL)".to_string()
                } else {
                    format!("SASL mechanism {wanted:?} is not enabled")
                };
                Gate::AnswerAndClose(
                    SaslHandshakeResponse::default()
                        .with_error_code(UNSUPPORTED_SASL_MECHANISM)
                        .with_mechanisms(names)
                        .into(),
                    why,
                )
            }
        }
    }

    async fn first(&mut self, ctx: &Ctx, m: SaslMechanism, r: &SaslAuthenticateRequest) -> Gate {
        match m {
            SaslMechanism::Plain => {
                let (user, password) = match parse_plain(&r.auth_bytes) {
                    Ok(p) => p,
                    Err(e) => return refuse(e),
                };
                let node = ctx.node.clone();
                let name = user.clone();
                // PBKDF2: off the async threads.
                let ok = tokio::task::spawn_blocking(move || node.check_password(&name, &password))
                    .await
                    .unwrap_or(false);
                if !ok {
                    return refuse(SaslError::BadCredentials("PLAIN"));
                }
                tracing::info!(user, "Kafka connection authenticated (PLAIN)");
                *self = SaslState::Done(user);
                Gate::Answer(SaslAuthenticateResponse::default().into())
            }
            SaslMechanism::Scram(mech) => {
                let image = ctx.node.image();
                let nonce = nonce();
                let secret = ctx.node.sasl_secret();
                let r = ScramServer::client_first(
                    mech,
                    &r.auth_bytes,
                    |u| image.users.get(u).and_then(|c| c.get(&mech)).cloned(),
                    &nonce,
                    &secret,
                );
                match r {
                    Ok((server, first)) => {
                        *self = SaslState::ScramFinal(Box::new(server));
                        Gate::Answer(
                            SaslAuthenticateResponse::default()
                                .with_auth_bytes(Bytes::from(first))
                                .into(),
                        )
                    }
                    Err(e) => refuse(e),
                }
            }
        }
    }
}

/// The mechanisms this connection is offered: PLAIN only over TLS.
fn offered(ctx: &Ctx) -> Vec<SaslMechanism> {
    ctx.node
        .config
        .sasl_mechanisms
        .iter()
        .copied()
        .filter(|m| ctx.tls || *m != SaslMechanism::Plain)
        .collect()
}

fn failed(code: i16, message: &str) -> SaslAuthenticateResponse {
    SaslAuthenticateResponse::default()
        .with_error_code(code)
        .with_error_message(Some(kstr(message)))
}

fn refuse(e: SaslError) -> Gate {
    Gate::AnswerAndClose(
        failed(SASL_AUTHENTICATION_FAILED, &e.to_string()).into(),
        format!("SASL authentication failed: {e}"),
    )
}

/// A fresh server nonce: 24 random printable characters (no comma).
fn nonce() -> String {
    use rand::Rng;
    const CHARS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut rng = rand::thread_rng();
    (0..24)
        .map(|_| CHARS[rng.gen_range(0..CHARS.len())] as char)
        .collect()
}
