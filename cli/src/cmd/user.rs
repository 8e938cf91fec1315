//! `sluice user create|delete|list`: SCRAM users (Kafka's `kafka-configs --entity-type users
//! --alter --add-config 'SCRAM-SHA-256=[password=…]'`). The password is salted and hashed
//! here; the cluster receives and keeps only the derived keys.

use serde_json::json;
use sluice_client::Admin;
use sluice_metadata::scram::ScramMechanism;
use sluice_proto::v1::{
    AlterUserScramCredentialsRequest, ErrorCode, ScramCredentialDeletion, ScramCredentialUpsertion,
};

use crate::output::{table, OutputFormat};

/// A credential for `name`: a random 32-byte salt and Hi(password, salt, iterations).
pub fn upsertion(
    name: &str,
    mechanism: ScramMechanism,
    password: &str,
    iterations: u32,
) -> ScramCredentialUpsertion {
    let salt: [u8; 32] = rand::random();
    ScramCredentialUpsertion {
        name: name.to_string(),
        mechanism: mechanism.code() as i32,
        iterations: iterations as i32,
        salt: salt.to_vec().into(),
        salted_password: mechanism
            .salted_password(password.as_bytes(), &salt, iterations)
            .into(),
    }
}

fn mechanism_name(code: i32) -> String {
    i8::try_from(code)
        .ok()
        .and_then(ScramMechanism::from_code)
        .map_or_else(|| format!("UNKNOWN({code})"), |m| m.name().to_string())
}

async fn alter(admin: &Admin, req: AlterUserScramCredentialsRequest) -> anyhow::Result<()> {
    let r = admin.alter_user_scram_credentials(req).await?;
    for res in r.results {
        if res.error_code != ErrorCode::None as i32 {
            let code = ErrorCode::try_from(res.error_code).unwrap_or(ErrorCode::UnknownServerError);
            anyhow::bail!(
                "user {:?}: {}: {}",
                res.name,
                code.as_str_name(),
                res.error_message
            );
        }
    }
    Ok(())
}

/// `user create NAME --password P [--mechanism M] [--iterations N]` (an existing user's
/// credential for M is replaced: a password change).
pub async fn create(
    bootstrap: &str,
    out: OutputFormat,
    name: &str,
    password: &str,
    mechanism: &str,
    iterations: u32,
) -> anyhow::Result<()> {
    let m = ScramMechanism::parse(mechanism).ok_or_else(|| {
        anyhow::anyhow!("--mechanism {mechanism:?} must be SCRAM-SHA-256 or SCRAM-SHA-512")
    })?;
    anyhow::ensure!(!password.is_empty(), "--password must not be empty");
    let admin = Admin::connect(bootstrap).await?;
    alter(
        &admin,
        AlterUserScramCredentialsRequest {
            deletions: Vec::new(),
            upsertions: vec![upsertion(name, m, password, iterations)],
        },
    )
    .await?;
    match out {
        OutputFormat::Json => println!(
            "{}",
            json!({"user": name, "mechanism": m.name(), "iterations": iterations})
        ),
        OutputFormat::Table => {
            println!("user {name:?}: {m} credential set ({iterations} iterations)")
        }
    }
    Ok(())
}

/// `user delete NAME [--mechanism M]`: every credential of the user unless one is named.
pub async fn delete(
    bootstrap: &str,
    out: OutputFormat,
    name: &str,
    mechanism: Option<&str>,
) -> anyhow::Result<()> {
    let admin = Admin::connect(bootstrap).await?;
    let mechanisms: Vec<i32> = match mechanism {
        Some(m) => vec![ScramMechanism::parse(m)
            .ok_or_else(|| {
                anyhow::anyhow!("--mechanism {m:?} must be SCRAM-SHA-256 or SCRAM-SHA-512")
            })?
            .code() as i32],
        None => {
            let d = admin
                .describe_user_scram_credentials(vec![name.to_string()])
                .await?;
            let r = d
                .results
                .into_iter()
                .next()
                .ok_or_else(|| anyhow::anyhow!("no answer for user {name:?}"))?;
            if r.error_code != ErrorCode::None as i32 {
                anyhow::bail!("user {name:?}: {}", r.error_message);
            }
            r.credentials.iter().map(|c| c.mechanism).collect()
        }
    };
    alter(
        &admin,
        AlterUserScramCredentialsRequest {
            deletions: mechanisms
                .iter()
                .map(|m| ScramCredentialDeletion {
                    name: name.to_string(),
                    mechanism: *m,
                })
                .collect(),
            upsertions: Vec::new(),
        },
    )
    .await?;
    let names: Vec<String> = mechanisms.iter().map(|m| mechanism_name(*m)).collect();
    match out {
        OutputFormat::Json => println!("{}", json!({"user": name, "deleted": names})),
        OutputFormat::Table => println!("user {name:?}: deleted {}", names.join(", ")),
    }
    Ok(())
}

/// `user list`.
pub async fn list(bootstrap: &str, out: OutputFormat) -> anyhow::Result<()> {
    let admin = Admin::connect(bootstrap).await?;
    let d = admin.describe_user_scram_credentials(Vec::new()).await?;
    match out {
        OutputFormat::Json => println!(
            "{}",
            json!({"users": d.results.iter().map(|r| json!({
                "name": r.name,
                "credentials": r.credentials.iter().map(|c| json!({
                    "mechanism": mechanism_name(c.mechanism),
                    "iterations": c.iterations,
                })).collect::<Vec<_>>(),
            })).collect::<Vec<_>>()})
        ),
        OutputFormat::Table => {
            let rows = d
                .results
                .iter()
                .map(|r| {
                    vec![
                        r.name.clone(),
                        r.credentials
                            .iter()
                            .map(|c| format!("{}({})", mechanism_name(c.mechanism), c.iterations))
                            .collect::<Vec<_>>()
                            .join(", "),
                    ]
                })
                .collect();
            println!("{}", table(&["USER", "CREDENTIALS"], rows));
        }
    }
    Ok(())
}
