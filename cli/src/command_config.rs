//! `--command-config FILE`: how a command reaches a secured cluster, with the keys of
//! librdkafka and the Java client (`admin.properties`), so one file serves `kcat -F`,
//! Kafka's tools and `sluice` alike.
//!
//! Keys read: `security.protocol` (`PLAINTEXT` or `SSL`), `ssl.ca.location` (librdkafka) or
//! `ssl.truststore.location` (Java, PEM), and for a client certificate
//! `ssl.certificate.location` + `ssl.key.location` (librdkafka) or `ssl.keystore.location`
//! (Java, one PEM file with both). Other keys are Kafka clients' business and are ignored.

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
        "PLAINTEXT" => return Ok(None),
        "SSL" => {}
        "SASL_SSL" | "SASL_PLAINTEXT" => {
            bail!("security.protocol={protocol}: SASL is not supported by this build yet; use SSL")
        }
        other => bail!("security.protocol={other:?} must be PLAINTEXT or SSL"),
    }
    let ca = path("ssl.ca.location").or_else(|| path("ssl.truststore.location"));
    if ca.is_none() {
        bail!("security.protocol=SSL needs ssl.ca.location (or ssl.truststore.location): the CA that signs the cluster's certificates");
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
        assert!(e.to_string().contains("SASL"), "{e}");
        let e = client_tls(&p("security.protocol=TLS\n"), Path::new(".")).unwrap_err();
        assert!(e.to_string().contains("PLAINTEXT or SSL"), "{e}");
        assert!(parse_properties("no equals sign").is_err());
    }
}
