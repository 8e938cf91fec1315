//! `sluice dev --secure`: a throwaway CA and the certificates of every node and of an admin
//! client, and the super-user's password, written into `<dir>/tls/` (kept across restarts of
//! the same dev cluster), and `<dir>/admin.properties` with librdkafka / Java-client keys
//! (`security.protocol=SASL_SSL`, SCRAM-SHA-256 as user `admin`), so `kcat -F`, Kafka's tools
//! and `sluice --command-config` reach the cluster as they are.

use std::path::{Path, PathBuf};

use anyhow::Context;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

/// What `--secure` wrote.
pub struct DevPki {
    /// `tls/ca.pem`.
    pub ca: PathBuf,
    /// `tls/admin.pem`: the admin client's certificate and key.
    pub admin: PathBuf,
    /// `admin.properties`.
    pub properties: PathBuf,
    /// The super-user's name (`admin`) and password (`tls/admin.password`).
    pub user: (String, String),
    dir: PathBuf,
}

impl DevPki {
    /// The keystore of `role` `id` (`controller-1`, `broker-2`, ...).
    pub fn keystore(&self, role: &str, id: u16) -> PathBuf {
        self.dir.join(format!("{role}-{id}.pem"))
    }
}

fn write_pem(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::io::Write::write_all(&mut f, text.as_bytes())?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// Creates (or keeps, when a CA is already there) the dev cluster's certificates and
/// `admin.properties` for `bootstrap`.
pub fn ensure(
    dir: &Path,
    controllers: u16,
    brokers: u16,
    bootstrap: &str,
) -> anyhow::Result<DevPki> {
    let dir = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    let tls = dir.join("tls");
    std::fs::create_dir_all(&tls).with_context(|| format!("creating {}", tls.display()))?;
    let ca_pem = tls.join("ca.pem");
    let ca_key = tls.join("ca.key");
    let issuer = if ca_pem.exists() && ca_key.exists() {
        let key = KeyPair::from_pem(&std::fs::read_to_string(&ca_key)?)
            .with_context(|| format!("{}", ca_key.display()))?;
        Issuer::from_ca_cert_pem(&std::fs::read_to_string(&ca_pem)?, key)
            .with_context(|| format!("{}", ca_pem.display()))?
    } else {
        let mut ca = CertificateParams::new(Vec::<String>::new())?;
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(DnType::CommonName, "sluice dev CA (throwaway)");
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate()?;
        let cert = ca.self_signed(&key)?;
        write_pem(&ca_key, &key.serialize_pem())?;
        write_pem(&ca_pem, &cert.pem())?;
        Issuer::new(ca, key)
    };
    let issue = |cn: &str| -> anyhow::Result<PathBuf> {
        let path = tls.join(format!("{cn}.pem"));
        let mut p = CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])?;
        p.distinguished_name.push(DnType::CommonName, cn);
        p.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let key = KeyPair::generate()?;
        let cert = p.signed_by(&key, &issuer)?;
        write_pem(&path, &format!("{}{}", cert.pem(), key.serialize_pem()))?;
        Ok(path)
    };
    for i in 1..=controllers {
        issue(&format!("controller-{i}"))?;
    }
    for i in 1..=brokers {
        issue(&format!("broker-{i}"))?;
    }
    let admin = issue("admin")?;
    let password_file = tls.join("admin.password");
    let password = match std::fs::read_to_string(&password_file) {
        Ok(p) if !p.trim().is_empty() => p.trim().to_string(),
        _ => {
            use rand::Rng;
            let p: String = rand::thread_rng()
                .sample_iter(&rand::distributions::Alphanumeric)
                .take(24)
                .map(char::from)
                .collect();
            write_pem(&password_file, &p)?;
            p
        }
    };
    let properties = dir.join("admin.properties");
    write_pem(
        &properties,
        &format!(
            "# Written by `sluice dev --secure`: TLS, SASL/SCRAM as the super-user `admin`.\n\
             # kcat -F {p} -L; sluice --command-config {p} topic list\n\
             bootstrap.servers={bootstrap}\n\
             security.protocol=SASL_SSL\n\
             sasl.mechanism=SCRAM-SHA-256\n\
             sasl.username=admin\n\
             sasl.password={password}\n\
             ssl.ca.location={ca}\n",
            p = properties.display(),
            ca = ca_pem.display(),
        ),
    )?;
    // The Java client and Kafka's tools (`--command-config`) do not know librdkafka's keys
    // (and librdkafka refuses Java's), so they get a file of their own.
    write_pem(
        &dir.join("admin.java.properties"),
        &format!(
            "# Written by `sluice dev --secure` for the Java client and Kafka's tools:\n\
             # kafka-topics.sh --bootstrap-server {first} --command-config {p} --list\n\
             bootstrap.servers={bootstrap}\n\
             security.protocol=SASL_SSL\n\
             sasl.mechanism=SCRAM-SHA-256\n\
             sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username=\"admin\" password=\"{password}\";\n\
             ssl.truststore.type=PEM\n\
             ssl.truststore.location={ca}\n",
            first = bootstrap.split(',').next().unwrap_or(bootstrap),
            p = dir.join("admin.java.properties").display(),
            ca = ca_pem.display(),
        ),
    )?;
    Ok(DevPki {
        ca: ca_pem,
        admin,
        properties,
        user: ("admin".into(), password),
        dir: tls,
    })
}
