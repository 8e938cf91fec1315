//! Users' SCRAM credentials (RFC 5802, RFC 7677; Kafka's KIP-84 and KIP-554) and the
//! server side of the SASL exchanges that check them: SCRAM-SHA-256, SCRAM-SHA-512 and
//! PLAIN (a PLAIN password is checked against the user's SCRAM credential, so one stored
//! secret serves every mechanism). Pure code: salts and nonces come from the caller.
//!
//! Only salted hashes are ever stored (StoredKey = H(HMAC(SaltedPassword, "Client Key")),
//! ServerKey = HMAC(SaltedPassword, "Server Key")); a password never reaches the metadata log.
//!
//! ```text
//!   client-first  n,,n=alice,r=<cnonce>            ─► ScramServer::client_first
//!   server-first  r=<cnonce><snonce>,s=<salt>,i=N  ◄─
//!   client-final  c=biws,r=<nonce>,p=<proof>       ─► ScramServer::client_final
//!   server-final  v=<server signature>             ◄─ (or an authentication failure)
//! ```
//!
//! An unknown user goes through the same steps with a credential derived from a server
//! secret and the name, and fails at the same place a wrong password does, doing the same
//! work: neither the answers nor their timing tell which names exist.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256, Sha512};
use subtle::ConstantTimeEq;

/// Kafka's SCRAM iteration bounds (`ScramMechanism.minIterations`/`maxIterations`).
pub const ITERATIONS_MIN: u32 = 4096;
/// Upper bound (Kafka's 16384).
pub const ITERATIONS_MAX: u32 = 16384;
/// Longest user name accepted.
pub const NAME_BYTES_MAX: usize = 255;

/// A SCRAM mechanism, by Kafka's name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum ScramMechanism {
    /// `SCRAM-SHA-256` (Kafka's ScramMechanism 1).
    Sha256,
    /// `SCRAM-SHA-512` (Kafka's ScramMechanism 2).
    Sha512,
}

impl ScramMechanism {
    /// Both, in Kafka's order.
    pub const ALL: [ScramMechanism; 2] = [ScramMechanism::Sha256, ScramMechanism::Sha512];

    /// Kafka's mechanism name.
    pub fn name(self) -> &'static str {
        match self {
            ScramMechanism::Sha256 => "SCRAM-SHA-256",
            ScramMechanism::Sha512 => "SCRAM-SHA-512",
        }
    }

    /// From Kafka's mechanism name (case-insensitive).
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|m| m.name().eq_ignore_ascii_case(s.trim()))
    }

    /// Kafka's numeric code (DescribeUserScramCredentials / AlterUserScramCredentials).
    pub fn code(self) -> i8 {
        match self {
            ScramMechanism::Sha256 => 1,
            ScramMechanism::Sha512 => 2,
        }
    }

    /// From Kafka's numeric code.
    pub fn from_code(c: i8) -> Option<Self> {
        Self::ALL.into_iter().find(|m| m.code() == c)
    }

    fn hmac(self, key: &[u8], data: &[u8]) -> Vec<u8> {
        fn with<M: Mac + hmac::digest::KeyInit>(key: &[u8], data: &[u8]) -> Vec<u8> {
            let mut m = <M as hmac::digest::KeyInit>::new_from_slice(key)
                .expect("HMAC takes keys of any length");
            m.update(data);
            m.finalize().into_bytes().to_vec()
        }
        match self {
            ScramMechanism::Sha256 => with::<Hmac<Sha256>>(key, data),
            ScramMechanism::Sha512 => with::<Hmac<Sha512>>(key, data),
        }
    }

    fn hash(self, data: &[u8]) -> Vec<u8> {
        match self {
            ScramMechanism::Sha256 => Sha256::digest(data).to_vec(),
            ScramMechanism::Sha512 => Sha512::digest(data).to_vec(),
        }
    }

    /// Hi(password, salt, i) of RFC 5802: PBKDF2 with this mechanism's HMAC.
    pub fn salted_password(self, password: &[u8], salt: &[u8], iterations: u32) -> Vec<u8> {
        match self {
            ScramMechanism::Sha256 => {
                let mut out = vec![0u8; 32];
                pbkdf2::pbkdf2_hmac::<Sha256>(password, salt, iterations, &mut out);
                out
            }
            ScramMechanism::Sha512 => {
                let mut out = vec![0u8; 64];
                pbkdf2::pbkdf2_hmac::<Sha512>(password, salt, iterations, &mut out);
                out
            }
        }
    }
}

impl std::fmt::Display for ScramMechanism {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A SASL mechanism the Kafka port offers (`sasl.enabled.mechanisms`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SaslMechanism {
    /// `PLAIN` (RFC 4616), offered over TLS only; checked against the SCRAM credential.
    Plain,
    /// `SCRAM-SHA-256` or `SCRAM-SHA-512`.
    Scram(ScramMechanism),
}

impl SaslMechanism {
    /// Kafka's name.
    pub fn name(self) -> &'static str {
        match self {
            SaslMechanism::Plain => "PLAIN",
            SaslMechanism::Scram(m) => m.name(),
        }
    }

    /// Parses Kafka's `sasl.enabled.mechanisms` list (comma-separated; empty: SASL off).
    pub fn parse_list(s: &str) -> Result<Vec<SaslMechanism>, String> {
        let mut out = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let m = if part.eq_ignore_ascii_case("PLAIN") {
                SaslMechanism::Plain
            } else if let Some(m) = ScramMechanism::parse(part) {
                SaslMechanism::Scram(m)
            } else {
                return Err(format!(
                    "sasl.enabled.mechanisms: {part:?} is not PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512"
                ));
            };
            if !out.contains(&m) {
                out.push(m);
            }
        }
        Ok(out)
    }
}

/// What the cluster keeps of a user's password for one mechanism (Kafka's
/// UserScramCredentialRecord): never the password.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScramCredential {
    /// Random salt.
    pub salt: Vec<u8>,
    /// H(ClientKey).
    pub stored_key: Vec<u8>,
    /// HMAC(SaltedPassword, "Server Key").
    pub server_key: Vec<u8>,
    /// PBKDF2 iterations.
    pub iterations: u32,
}

impl std::fmt::Debug for ScramCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Salted hashes still help an offline guesser: logs get the iterations only.
        write!(f, "ScramCredential {{ iterations: {} }}", self.iterations)
    }
}

impl ScramCredential {
    /// The credential of a salted password (what Kafka's AlterUserScramCredentials carries).
    pub fn from_salted_password(
        m: ScramMechanism,
        salt: &[u8],
        salted: &[u8],
        iterations: u32,
    ) -> Self {
        let client_key = m.hmac(salted, b"Client Key");
        ScramCredential {
            salt: salt.to_vec(),
            stored_key: m.hash(&client_key),
            server_key: m.hmac(salted, b"Server Key"),
            iterations,
        }
    }

    /// The credential of a password.
    pub fn new(m: ScramMechanism, password: &str, salt: &[u8], iterations: u32) -> Self {
        let salted = m.salted_password(password.as_bytes(), salt, iterations);
        Self::from_salted_password(m, salt, &salted, iterations)
    }

    /// Whether `password` is the one this credential was made from (constant time in the
    /// comparison; the PBKDF2 work is the same for every password).
    pub fn verify_password(&self, m: ScramMechanism, password: &str) -> bool {
        let other = Self::new(m, password, &self.salt, self.iterations);
        bool::from(other.stored_key.ct_eq(&self.stored_key))
    }

    /// A stand-in for a user that does not exist: derived from the server's secret and the
    /// name, so the same unknown name always gets the same salt (a changing salt would tell).
    pub fn decoy(m: ScramMechanism, secret: &[u8], name: &str) -> Self {
        // 32 bytes, as `sluice user create` salts.
        let salt = m.hmac(secret, format!("salt\0{name}").as_bytes())[..32].to_vec();
        let key = m.hmac(secret, format!("key\0{name}").as_bytes());
        ScramCredential::from_salted_password(m, &salt, &key, ITERATIONS_MIN)
    }
}

/// The secret unknown users' decoy credentials are made from: the cluster id and the metadata
/// history id, so every node of a cluster's history makes the same decoys (comparing brokers
/// tells nothing); the history id is never sent to clients.
pub fn decoy_secret(cluster_id: &str, history_id: u64) -> Vec<u8> {
    format!("{cluster_id}\0{history_id:016x}").into_bytes()
}

/// Checks a user name for `sluice user create`: Kafka allows any string; we refuse the
/// empty name, control characters (NUL separates PLAIN's fields) and over-long names.
pub fn validate_user_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("a user name cannot be empty".into());
    }
    if name.len() > NAME_BYTES_MAX {
        return Err(format!(
            "a user name is at most {NAME_BYTES_MAX} bytes ({} given)",
            name.len()
        ));
    }
    if name.chars().any(char::is_control) {
        return Err(format!("user name {name:?} has control characters"));
    }
    Ok(())
}

/// Why an exchange failed. `BadCredentials` is all a client is told about who exists.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SaslError {
    /// Unknown user or wrong password (never told apart).
    #[error("Authentication failed during authentication due to invalid credentials with SASL mechanism {0}")]
    BadCredentials(&'static str),
    /// A message that does not follow the mechanism's grammar.
    #[error("malformed {mechanism} message: {why}")]
    Malformed {
        /// Mechanism name.
        mechanism: &'static str,
        /// What is wrong.
        why: String,
    },
}

fn malformed<T>(m: &'static str, why: impl Into<String>) -> Result<T, SaslError> {
    Err(SaslError::Malformed {
        mechanism: m,
        why: why.into(),
    })
}

/// A SCRAM exchange after the client's first message.
pub struct ScramServer {
    mechanism: ScramMechanism,
    /// Who the client said it is (checked only at the end).
    pub user: String,
    /// Whether `user` exists (the credential is a decoy otherwise).
    known: bool,
    credential: ScramCredential,
    gs2_header: String,
    client_first_bare: String,
    server_first: String,
    nonce: String,
    /// Length of the client's part of `nonce`.
    cnonce_len: usize,
}

impl ScramServer {
    /// Reads the client-first message and answers the server-first one. `lookup` finds the
    /// user's credential for this mechanism; `server_nonce` is fresh randomness (printable,
    /// no comma); `secret` makes decoys for unknown users.
    pub fn client_first(
        mechanism: ScramMechanism,
        message: &[u8],
        lookup: impl Fn(&str) -> Option<ScramCredential>,
        server_nonce: &str,
        secret: &[u8],
    ) -> Result<(ScramServer, Vec<u8>), SaslError> {
        let m = mechanism.name();
        let Ok(text) = std::str::from_utf8(message) else {
            return malformed(m, "client-first message is not UTF-8");
        };
        // gs2-header: channel-binding flag "n" or "y" (no binding; "p=" asks for one we
        // do not offer), then an optional authzid.
        let mut parts = text.splitn(3, ',');
        let (Some(cb), Some(authz), Some(bare)) = (parts.next(), parts.next(), parts.next()) else {
            return malformed(m, "client-first message has no gs2 header");
        };
        match cb {
            "n" | "y" => {}
            c if c.starts_with("p=") => return malformed(m, "channel binding is not supported"),
            other => return malformed(m, format!("unknown channel-binding flag {other:?}")),
        }
        let authzid = match authz {
            "" => None,
            a => match a.strip_prefix("a=") {
                Some(a) => Some(decode_saslname(m, a)?),
                None => return malformed(m, format!("bad authzid field {a:?}")),
            },
        };
        let mut fields = bare.split(',');
        let user = match fields.next().and_then(|f| f.strip_prefix("n=")) {
            Some(u) => decode_saslname(m, u)?,
            None => return malformed(m, "client-first message has no n= (user name)"),
        };
        let cnonce = match fields.next().and_then(|f| f.strip_prefix("r=")) {
            Some(r) if !r.is_empty() && r.bytes().all(|b| (0x21..=0x7e).contains(&b)) => r,
            _ => return malformed(m, "client-first message has no valid r= (client nonce)"),
        };
        for ext in fields {
            // Kafka's extensions are key=value; `tokenauth` asks for delegation tokens,
            // which this cluster does not issue.
            let Some((k, v)) = ext.split_once('=') else {
                return malformed(m, format!("bad extension {ext:?}"));
            };
            if k == "tokenauth" && v.eq_ignore_ascii_case("true") {
                return malformed(m, "delegation tokens (tokenauth) are not supported");
            }
        }
        if authzid.as_ref().is_some_and(|a| a != &user) {
            return malformed(
                m,
                "an authorization id different from the user name is not supported",
            );
        }
        let (known, credential) = match lookup(&user) {
            Some(c) => (true, c),
            None => (false, ScramCredential::decoy(mechanism, secret, &user)),
        };
        let nonce = format!("{cnonce}{server_nonce}");
        let server_first = format!(
            "r={nonce},s={},i={}",
            B64.encode(&credential.salt),
            credential.iterations
        );
        let gs2_header = format!("{cb},{authz},");
        Ok((
            ScramServer {
                mechanism,
                user,
                known,
                credential,
                gs2_header,
                client_first_bare: bare.to_string(),
                server_first: server_first.clone(),
                cnonce_len: cnonce.len(),
                nonce,
            },
            server_first.into_bytes(),
        ))
    }

    /// Checks the client-final message; answers the server-final message (`v=…`) when the
    /// proof is right.
    pub fn client_final(&self, message: &[u8]) -> Result<Vec<u8>, SaslError> {
        let mech = self.mechanism;
        let m = mech.name();
        let Ok(text) = std::str::from_utf8(message) else {
            return malformed(m, "client-final message is not UTF-8");
        };
        let Some((without_proof, proof)) = text.rsplit_once(",p=") else {
            return malformed(m, "client-final message has no p= (proof)");
        };
        let mut fields = without_proof.split(',');
        let binding = match fields.next().and_then(|f| f.strip_prefix("c=")) {
            Some(c) => c,
            None => return malformed(m, "client-final message has no c= (channel binding)"),
        };
        if B64.decode(binding).ok().as_deref() != Some(self.gs2_header.as_bytes()) {
            return malformed(m, "the channel binding does not repeat the gs2 header");
        }
        // RFC 5802 wants the server's nonce back; librdkafka before 2.6.1 (kcat and
        // confluent-kafka builds of Debian and many distributions) prepends its client nonce
        // once more (librdkafka#4895). That form still carries the server's fresh nonce, so
        // it proves as much against replay; Kafka 3.8.1–3.9 accepted it the same way.
        match fields.next().and_then(|f| f.strip_prefix("r=")) {
            Some(r)
                if r == self.nonce
                    || (r.len() == self.cnonce_len + self.nonce.len()
                        && r.ends_with(&self.nonce)
                        && r.starts_with(&self.nonce[..self.cnonce_len])) => {}
            _ => return malformed(m, "the nonce is not the one the server sent"),
        }
        let Ok(proof) = B64.decode(proof) else {
            return malformed(m, "the proof is not base64");
        };
        let auth_message = format!(
            "{},{},{}",
            self.client_first_bare, self.server_first, without_proof
        );
        let signature = mech.hmac(&self.credential.stored_key, auth_message.as_bytes());
        if proof.len() != signature.len() {
            return Err(SaslError::BadCredentials(m));
        }
        let client_key: Vec<u8> = proof.iter().zip(&signature).map(|(a, b)| a ^ b).collect();
        let matches = bool::from(mech.hash(&client_key).ct_eq(&self.credential.stored_key));
        if !(matches && self.known) {
            return Err(SaslError::BadCredentials(m));
        }
        let server_signature = mech.hmac(&self.credential.server_key, auth_message.as_bytes());
        Ok(format!("v={}", B64.encode(server_signature)).into_bytes())
    }
}

/// `=2C` → `,`, `=3D` → `=` (RFC 5802 saslname); any other `=` is an error.
fn decode_saslname(m: &'static str, s: &str) -> Result<String, SaslError> {
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find('=') {
        out.push_str(&rest[..i]);
        match rest.get(i..i + 3) {
            Some("=2C") => out.push(','),
            Some("=3D") => out.push('='),
            _ => return malformed(m, format!("bad escape in name {s:?}")),
        }
        rest = &rest[i + 3..];
    }
    out.push_str(rest);
    Ok(out)
}

/// A PLAIN message (`authzid NUL user NUL password`, RFC 4616) → (user, password).
pub fn parse_plain(message: &[u8]) -> Result<(String, String), SaslError> {
    let m = "PLAIN";
    let Ok(text) = std::str::from_utf8(message) else {
        return malformed(m, "the message is not UTF-8");
    };
    let parts: Vec<&str> = text.split('\0').collect();
    let [authz, user, password] = parts[..] else {
        return malformed(
            m,
            format!(
                "expected authzid NUL user NUL password, got {} fields",
                parts.len()
            ),
        );
    };
    if user.is_empty() || password.is_empty() {
        return malformed(m, "the user name and password must not be empty");
    }
    if !authz.is_empty() && authz != user {
        return malformed(
            m,
            "an authorization id different from the user name is not supported",
        );
    }
    Ok((user.to_string(), password.to_string()))
}

/// Checks a user name and password against the user's credentials (PLAIN, and gRPC
/// callers): the strongest mechanism the user has; an unknown user costs the same PBKDF2
/// work against a decoy.
pub fn verify_password(
    credentials: Option<&std::collections::BTreeMap<ScramMechanism, ScramCredential>>,
    name: &str,
    password: &str,
    secret: &[u8],
) -> bool {
    match credentials.and_then(|c| c.iter().next_back()) {
        Some((m, c)) => c.verify_password(*m, password),
        None => {
            let decoy = ScramCredential::decoy(ScramMechanism::Sha512, secret, name);
            let _ = decoy.verify_password(ScramMechanism::Sha512, password);
            false
        }
    }
}

/// Passwords already verified against a credential, so callers that send a password on
/// every call (gRPC) pay the PBKDF2 work once: (user, SHA-256 of the password) → the stored
/// key it matched. An entry counts only while the user's credential is still that one, so a
/// changed or deleted user is checked afresh at the next call.
/// Shared by threads: the lock is held only to look up and record, never during PBKDF2.
#[derive(Default)]
pub struct PasswordCache {
    verified: std::sync::Mutex<Verified>,
}

/// (user, SHA-256 of the password) → the stored key it matched.
type Verified = std::collections::HashMap<(String, [u8; 32]), Vec<u8>>;

impl PasswordCache {
    /// Entries kept; a full cache starts over.
    pub const ENTRIES_MAX: usize = 4096;

    /// [`verify_password`] through the cache.
    pub fn check(
        &self,
        credentials: Option<&std::collections::BTreeMap<ScramMechanism, ScramCredential>>,
        name: &str,
        password: &str,
        secret: &[u8],
    ) -> bool {
        let digest: [u8; 32] = Sha256::digest(password.as_bytes()).into();
        let key = (name.to_string(), digest);
        let current = credentials
            .and_then(|c| c.values().next_back())
            .map(|c| c.stored_key.clone());
        let lock = || self.verified.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(cur) = &current {
            if lock()
                .get(&key)
                .is_some_and(|seen| bool::from(cur.ct_eq(seen)))
            {
                return true;
            }
        }
        if !verify_password(credentials, name, password, secret) {
            lock().remove(&key);
            return false;
        }
        if let Some(cur) = current {
            let mut verified = lock();
            if verified.len() >= Self::ENTRIES_MAX {
                verified.clear();
            }
            verified.insert(key, cur);
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 7677 §3's SCRAM-SHA-256 example, end to end: the server's answers must be the
    /// RFC's bytes.
    #[test]
    fn rfc7677_example_exchange() {
        let salt = B64.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
        let cred = ScramCredential::new(ScramMechanism::Sha256, "pencil", &salt, 4096);
        let (server, first) = ScramServer::client_first(
            ScramMechanism::Sha256,
            b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO",
            |u| (u == "user").then(|| cred.clone()),
            "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0",
            b"secret",
        )
        .unwrap();
        assert_eq!(
            String::from_utf8(first).unwrap(),
            "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
        );
        let last = server
            .client_final(b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=")
            .unwrap();
        assert_eq!(
            String::from_utf8(last).unwrap(),
            "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
        );
    }

    /// A client side, to drive the server with any password.
    fn client_final(m: ScramMechanism, password: &str, first: &str, cnonce: &str) -> String {
        let fields: Vec<&str> = first.split(',').collect();
        let nonce = fields[0].strip_prefix("r=").unwrap();
        assert!(nonce.starts_with(cnonce));
        let salt = B64.decode(fields[1].strip_prefix("s=").unwrap()).unwrap();
        let iterations: u32 = fields[2].strip_prefix("i=").unwrap().parse().unwrap();
        let salted = m.salted_password(password.as_bytes(), &salt, iterations);
        let client_key = m.hmac(&salted, b"Client Key");
        let stored = m.hash(&client_key);
        let without = format!("c=biws,r={nonce}");
        let auth = format!("n=alice,r={cnonce},{first},{without}");
        let sig = m.hmac(&stored, auth.as_bytes());
        let proof: Vec<u8> = client_key.iter().zip(&sig).map(|(a, b)| a ^ b).collect();
        format!("{without},p={}", B64.encode(proof))
    }

    /// librdkafka < 2.6.1 sends r=<cnonce><cnonce><snonce>; its proof covers that message.
    #[test]
    fn the_old_librdkafka_nonce_form_is_accepted_and_others_are_not() {
        let m = ScramMechanism::Sha256;
        let cred = ScramCredential::new(m, "pw", b"salt", 4096);
        let run = |nonce_of: &dyn Fn(&str) -> String| {
            let (server, first) = ScramServer::client_first(
                m,
                b"n,,n=alice,r=abc",
                |_| Some(cred.clone()),
                "xyz",
                b"k",
            )
            .unwrap();
            let first = String::from_utf8(first).unwrap();
            let full = first.split(',').next().unwrap().strip_prefix("r=").unwrap();
            let sent = nonce_of(full);
            let salted = m.salted_password(b"pw", b"salt", 4096);
            let client_key = m.hmac(&salted, b"Client Key");
            let without = format!("c=biws,r={sent}");
            let auth = format!("n=alice,r=abc,{first},{without}");
            let sig = m.hmac(&m.hash(&client_key), auth.as_bytes());
            let proof: Vec<u8> = client_key.iter().zip(&sig).map(|(a, b)| a ^ b).collect();
            server.client_final(format!("{without},p={}", B64.encode(proof)).as_bytes())
        };
        assert!(run(&|n| n.to_string()).is_ok());
        assert!(run(&|n| format!("abc{n}")).is_ok());
        for bad in [
            &|_: &str| "abcxyy".to_string() as String,
            &|n: &str| format!("zzz{n}"),
            &|n: &str| format!("{n}x"),
            &|_: &str| "abc".to_string(),
        ] as [&dyn Fn(&str) -> String; 4]
        {
            let e = run(bad).unwrap_err().to_string();
            assert!(e.contains("nonce"), "{e}");
        }
    }

    fn exchange(
        m: ScramMechanism,
        stored: Option<&ScramCredential>,
        password: &str,
    ) -> Result<Vec<u8>, SaslError> {
        let (server, first) = ScramServer::client_first(
            m,
            b"n,,n=alice,r=abc",
            |u| (u == "alice").then(|| stored.cloned()).flatten(),
            "xyz",
            b"secret",
        )?;
        let fin = client_final(m, password, std::str::from_utf8(&first).unwrap(), "abc");
        server.client_final(fin.as_bytes())
    }

    #[test]
    fn right_password_wrong_password_and_unknown_user() {
        for m in ScramMechanism::ALL {
            let cred = ScramCredential::new(m, "s3cret", b"0123456789abcdef", 4096);
            assert!(exchange(m, Some(&cred), "s3cret").is_ok(), "{m}");
            assert_eq!(
                exchange(m, Some(&cred), "wrong"),
                Err(SaslError::BadCredentials(m.name()))
            );
            // An unknown user fails exactly as a wrong password does, even with the
            // "right" password for the decoy's derivation inputs.
            assert_eq!(
                exchange(m, None, "s3cret"),
                Err(SaslError::BadCredentials(m.name()))
            );
        }
    }

    #[test]
    fn an_unknown_user_gets_a_stable_decoy_salt() {
        let first = |name: &str| {
            let msg = format!("n,,n={name},r=abc");
            let (_, f) = ScramServer::client_first(
                ScramMechanism::Sha256,
                msg.as_bytes(),
                |_| None,
                "n",
                b"k",
            )
            .unwrap();
            String::from_utf8(f).unwrap()
        };
        assert_eq!(first("bob"), first("bob"));
        assert_ne!(first("bob"), first("carol"));
        assert!(first("bob").ends_with(",i=4096"));
    }

    #[test]
    fn malformed_messages_are_named() {
        let first = |msg: &[u8]| {
            ScramServer::client_first(ScramMechanism::Sha256, msg, |_| None, "n", b"k")
                .map(|_| ())
                .unwrap_err()
                .to_string()
        };
        for (msg, says) in [
            (&b"\xff\xfe"[..], "not UTF-8"),
            (b"garbage", "gs2 header"),
            (b"p=tls-unique,,n=a,r=b", "channel binding"),
            (b"x,,n=a,r=b", "channel-binding flag"),
            (b"n,,r=b", "n="),
            (b"n,,n=a", "r="),
            (b"n,,n=a=2,r=b", "bad escape"),
            (b"n,a=b,n=a,r=x", "authorization id"),
            (b"n,,n=a,r=b,tokenauth=true", "delegation tokens"),
        ] {
            let e = first(msg);
            assert!(e.contains(says), "{msg:?}: {e}");
        }
        let (server, _) =
            ScramServer::client_first(ScramMechanism::Sha256, b"n,,n=a,r=b", |_| None, "n", b"k")
                .unwrap();
        for (msg, says) in [
            (&b"c=biws,r=bn"[..], "p="),
            (b"c=eSws,r=bn,p=AAAA", "gs2 header"),
            (b"c=biws,r=other,p=AAAA", "nonce"),
            (b"c=biws,r=bn,p=!!", "base64"),
        ] {
            let e = server.client_final(msg).unwrap_err().to_string();
            assert!(e.contains(says), "{msg:?}: {e}");
        }
        // A proof of the wrong length is a failed login, not a crash.
        assert!(matches!(
            server.client_final(b"c=biws,r=bn,p=AAAA"),
            Err(SaslError::BadCredentials(_))
        ));
    }

    #[test]
    fn plain_messages_and_passwords() {
        assert_eq!(
            parse_plain(b"\0alice\0pw").unwrap(),
            ("alice".into(), "pw".into())
        );
        assert_eq!(
            parse_plain(b"alice\0alice\0pw").unwrap(),
            ("alice".into(), "pw".into())
        );
        for bad in [
            &b"alice\0pw"[..],
            b"\0\0pw",
            b"bob\0alice\0pw",
            b"\0a\0b\0c",
        ] {
            assert!(parse_plain(bad).is_err(), "{bad:?}");
        }
        let mut creds = std::collections::BTreeMap::new();
        creds.insert(
            ScramMechanism::Sha256,
            ScramCredential::new(ScramMechanism::Sha256, "pw", b"salt", 4096),
        );
        assert!(verify_password(Some(&creds), "alice", "pw", b"k"));
        assert!(!verify_password(Some(&creds), "alice", "pW", b"k"));
        assert!(!verify_password(None, "alice", "pw", b"k"));
    }

    #[test]
    fn the_password_cache_follows_credential_changes() {
        let cache = PasswordCache::default();
        let creds = |pw: &str| {
            let mut c = std::collections::BTreeMap::new();
            c.insert(
                ScramMechanism::Sha256,
                ScramCredential::new(ScramMechanism::Sha256, pw, b"salt", 4096),
            );
            c
        };
        let old = creds("one");
        assert!(cache.check(Some(&old), "alice", "one", b"k"));
        assert!(cache.check(Some(&old), "alice", "one", b"k"));
        // Password changed: the cached "one" no longer counts.
        let new = creds("two");
        assert!(!cache.check(Some(&new), "alice", "one", b"k"));
        assert!(cache.check(Some(&new), "alice", "two", b"k"));
        // User deleted.
        assert!(!cache.check(None, "alice", "two", b"k"));
    }

    #[test]
    fn enabled_mechanism_lists() {
        assert_eq!(SaslMechanism::parse_list(" ").unwrap(), vec![]);
        assert_eq!(
            SaslMechanism::parse_list("scram-sha-512, PLAIN,SCRAM-SHA-512").unwrap(),
            vec![
                SaslMechanism::Scram(ScramMechanism::Sha512),
                SaslMechanism::Plain
            ]
        );
        let e = SaslMechanism::parse_list("GSSAPI").unwrap_err();
        assert!(e.contains("GSSAPI"), "{e}");
    }

    #[test]
    fn user_names() {
        assert!(validate_user_name("alice").is_ok());
        assert!(validate_user_name("CN=x,O=y").is_ok());
        assert!(validate_user_name("").is_err());
        assert!(validate_user_name("a\0b").is_err());
        assert!(validate_user_name(&"x".repeat(256)).is_err());
    }
}
