//! `--command-config FILE`: how a command reaches a secured cluster, with the keys of
//! librdkafka and the Java client (`admin.properties`), so one file serves `kcat -F`,
//! Kafka's tools and `sluice` alike.
//!
//! Keys read: `security.protocol` (`PLAINTEXT`, `SSL`, `SASL_SSL` or `SASL_PLAINTEXT`),
//! `ssl.ca.location` (librdkafka) or `ssl.truststore.location` (Java, PEM), for a client
//! certificate `ssl.certificate.location` + `ssl.key.location` (librdkafka) or
//! `ssl.keystore.location` (Java, one PEM file with both), and with SASL `sasl.username` +
//! `sasl.password` (librdkafka; Java's `sasl.jaas.config` with `username="…" password="…"`
//! works too). gRPC calls carry the user's name and password as Basic credentials, checked
//! against the same SCRAM credential whatever `sasl.mechanism` names. Other keys are Kafka
//! clients' business and are ignored.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};

/// The `key=value` lines of a properties file (`#` and `!` start comments).
pub fn parse_properties(text: &str) -> anyhow::Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with('!') {
            continue;
        }
        let Some((k, v)) = line.split_once('=') else {
            bail!("line {}: {line:?} is not key=value", n + 1);
        };
        out.insert(k.trim().to_string(), v.trim().to_string());
    }
    Ok(out)
}

/// The TLS settings a command config asks for (`None`: plaintext).
pub fn client_tls(
    props: &BTreeMap<String, String>,
    base: &Path,
) -> anyhow::Result<Option<sluice_proto::tls::ClientTls>> {
    let path = |k: &str| -> Option<PathBuf> {
        props.get(k).filter(|v| !v.is_empty()).map(|v| base.join(v))
    };
    let protocol = props
        .get("security.protocol")
        .map(|p| p.to_ascii_uppercase())
        .unwrap_or_else(|| "PLAINTEXT".into());
    match protocol.as_str() {
        "PLAINTEXT" | "SASL_PLAINTEXT" => return Ok(None),
        "SSL" | "SASL_SSL" => {}
        other => {
            bail!("security.protocol={other:?} must be PLAINTEXT, SSL, SASL_SSL or SASL_PLAINTEXT")
        }
    }
    let ca = path("ssl.ca.location").or_else(|| path("ssl.truststore.location"));
    if ca.is_none() {
        bail!("security.protocol={protocol} needs ssl.ca.location (or ssl.truststore.location): the CA that signs the cluster's certificates");
    }
    let (certificate, key) = match (
        path("ssl.certificate.location"),
        path("ssl.keystore.location"),
    ) {
        (Some(c), _) => (Some(c), path("ssl.key.location")),
        (None, Some(k)) => (Some(k), None),
        (None, None) => (None, None),
    };
    Ok(Some(sluice_proto::tls::ClientTls {
        ca,
        certificate,
        key,
    }))
}

/// The user a command config names with SASL (`None` without SASL).
pub fn sasl_credentials(
    props: &BTreeMap<String, String>,
) -> anyhow::Result<Option<(String, String)>> {
    let protocol = props
        .get("security.protocol")
        .map(|p| p.to_ascii_uppercase())
        .unwrap_or_default();
    if !protocol.starts_with("SASL_") {
        return Ok(None);
    }
    let jaas = |field: &str| -> Option<String> {
        let j = props.get("sasl.jaas.config")?;
        let at = j.find(&format!("{field}=\""))? + field.len() + 2;
        let end = j[at..].find('"')?;
        Some(j[at..at + end].to_string())
    };
    let user = props
        .get("sasl.username")
        .cloned()
        .or_else(|| jaas("username"));
    let password = props
        .get("sasl.password")
        .cloned()
        .or_else(|| jaas("password"));
    match (user, password) {
        (Some(u), Some(p)) if !u.is_empty() => Ok(Some((u, p))),
        _ => bail!(
            "security.protocol={protocol} needs sasl.username and sasl.password (or sasl.jaas.config with username=\"…\" password=\"…\")"
        ),
    }
}

/// Reads `file` and makes every channel this process dials follow it.
pub fn apply(file: &Path) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(file)
        .with_context(|| format!("--command-config {}", file.display()))?;
    let props =
        parse_properties(&text).with_context(|| format!("--command-config {}", file.display()))?;
    // Relative paths in the file are relative to the file, as `sluice dev --secure` writes them.
    let base = file.parent().unwrap_or(Path::new("."));
    if let Some(tls) = client_tls(&props, base)? {
        sluice_proto::tls::set_internal_client_tls(&tls).map_err(|e| anyhow::anyhow!(e))?;
    }
    if let Some((user, password)) = sasl_credentials(&props)? {
        sluice_proto::auth::set_client_credentials(&user, &password)
            .map_err(|e| anyhow::anyhow!(e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn librdkafka_and_java_keys_give_the_same_settings() {
        let base = Path::new("/d");
        let rd = parse_properties(
            "# admin\nsecurity.protocol=ssl\nssl.ca.location=ca.pem\nssl.certificate.location=c.pem\nssl.key.location=k.pem\n",
        )
        .unwrap();
        let t = client_tls(&rd, base).unwrap().unwrap();
        assert_eq!(t.ca.as_deref(), Some(Path::new("/d/ca.pem")));
        assert_eq!(t.certificate.as_deref(), Some(Path::new("/d/c.pem")));
        assert_eq!(t.key.as_deref(), Some(Path::new("/d/k.pem")));
        let java = parse_properties(
            "security.protocol=SSL\nssl.truststore.location=/abs/ca.pem\nssl.keystore.location=both.pem\n",
        )
        .unwrap();
        let t = client_tls(&java, base).unwrap().unwrap();
        assert_eq!(t.ca.as_deref(), Some(Path::new("/abs/ca.pem")));
        assert_eq!(t.certificate.as_deref(), Some(Path::new("/d/both.pem")));
        assert_eq!(t.key, None);
    }

    #[test]
    fn plaintext_missing_cas_and_sasl_are_told_apart() {
        let p = |s: &str| parse_properties(s).unwrap();
        assert!(client_tls(&p("bootstrap.servers=x\n"), Path::new("."))
            .unwrap()
            .is_none());
        let e = client_tls(&p("security.protocol=SSL\n"), Path::new(".")).unwrap_err();
        assert!(e.to_string().contains("ssl.ca.location"), "{e}");
        let e = client_tls(&p("security.protocol=SASL_SSL\n"), Path::new(".")).unwrap_err();
        assert!(e.to_string().contains("ssl.ca.location"), "{e}");
        let e = client_tls(&p("security.protocol=TLS\n"), Path::new(".")).unwrap_err();
        assert!(e.to_string().contains("SASL_PLAINTEXT"), "{e}");
        assert!(parse_properties("no equals sign").is_err());
    }

    #[test]
    fn sasl_users_come_from_librdkafka_or_java_keys() {
        let p = |s: &str| parse_properties(s).unwrap();
        assert_eq!(
            sasl_credentials(&p("security.protocol=SSL\nsasl.username=x\n")).unwrap(),
            None
        );
        assert_eq!(
            sasl_credentials(&p(
                "security.protocol=sasl_ssl\nsasl.mechanism=SCRAM-SHA-256\nsasl.username=admin\nsasl.password=pw\n"
            ))
            .unwrap(),
            Some(("admin".into(), "pw".into()))
        );
        assert_eq!(
            sasl_credentials(&p(
                "security.protocol=SASL_SSL\nsasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username=\"bob\" password=\"b=b\";\n"
            ))
            .unwrap(),
            Some(("bob".into(), "b=b".into()))
        );
        let e = sasl_credentials(&p("security.protocol=SASL_SSL\nsasl.username=a\n")).unwrap_err();
        assert!(e.to_string().contains("sasl.password"), "{e}");
    }
}
