//! `sluice acl add|remove|list`: Kafka's ACLs with `kafka-acls.sh`'s flags
//! (`--allow-principal User:N`, `--deny-principal`, `--operation`, `--topic`, `--group`,
//! `--cluster`, `--transactional-id`, `--resource-pattern-type`, `--producer`, `--consumer`).

use serde_json::json;
use sluice_client::Admin;
use sluice_metadata::acl::{Operation, PatternFilter, PatternType, Permission, ResourceType};
use sluice_metadata::acl::{CLUSTER_NAME, EVERYONE};
use sluice_proto::v1::{AclBinding, AclFilter, ErrorCode};

use crate::output::{table, OutputFormat};

/// The flags `add`, `remove` and `list` share (kafka-acls' names).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct AclArgs {
    /// Principal to allow (`User:NAME`, `User:*` for everyone); repeatable.
    #[arg(long = "allow-principal", value_name = "PRINCIPAL")]
    pub allow_principal: Vec<String>,
    /// Principal to deny; repeatable. A matching DENY wins over any ALLOW.
    #[arg(long = "deny-principal", value_name = "PRINCIPAL")]
    pub deny_principal: Vec<String>,
    /// Hosts the allow ACLs apply to (default `*`).
    #[arg(long = "allow-host", value_name = "HOST")]
    pub allow_host: Vec<String>,
    /// Hosts the deny ACLs apply to (default `*`).
    #[arg(long = "deny-host", value_name = "HOST")]
    pub deny_host: Vec<String>,
    /// Operation: All, Read, Write, Create, Delete, Alter, Describe, ClusterAction,
    /// DescribeConfigs, AlterConfigs, IdempotentWrite; repeatable.
    #[arg(long = "operation", value_name = "OP")]
    pub operation: Vec<String>,
    /// Topic (`*` for all); repeatable.
    #[arg(long = "topic", value_name = "TOPIC")]
    pub topic: Vec<String>,
    /// Consumer group (`*` for all); repeatable.
    #[arg(long = "group", value_name = "GROUP")]
    pub group: Vec<String>,
    /// The cluster resource.
    #[arg(long)]
    pub cluster: bool,
    /// Transactional id; repeatable.
    #[arg(long = "transactional-id", value_name = "ID")]
    pub transactional_id: Vec<String>,
    /// literal or prefixed (add; default literal); remove and list also take any and match
    /// (remove's default literal, list's any).
    #[arg(long = "resource-pattern-type", value_name = "TYPE")]
    pub resource_pattern_type: Option<String>,
    /// The producer's ACLs: Write, Describe and Create on the topics.
    #[arg(long)]
    pub producer: bool,
    /// The consumer's ACLs: Read and Describe on the topics, Read on the groups.
    #[arg(long)]
    pub consumer: bool,
    /// `list`: only ACLs of this principal.
    #[arg(long, value_name = "PRINCIPAL")]
    pub principal: Option<String>,
}

fn bad(msg: impl Into<String>) -> anyhow::Error {
    anyhow::anyhow!(msg.into())
}

impl AclArgs {
    fn resources(&self) -> Vec<(ResourceType, String)> {
        let mut out: Vec<(ResourceType, String)> = Vec::new();
        out.extend(self.topic.iter().map(|t| (ResourceType::Topic, t.clone())));
        out.extend(self.group.iter().map(|g| (ResourceType::Group, g.clone())));
        if self.cluster {
            out.push((ResourceType::Cluster, CLUSTER_NAME.to_string()));
        }
        out.extend(
            self.transactional_id
                .iter()
                .map(|t| (ResourceType::TransactionalId, t.clone())),
        );
        out
    }

    fn operations(&self) -> anyhow::Result<Vec<Operation>> {
        self.operation
            .iter()
            .map(|o| {
                Operation::parse(o).ok_or_else(|| {
                    bad(format!(
                        "--operation {o:?} is not an operation: use All, Read, Write, Create, Delete, Alter, Describe, ClusterAction, DescribeConfigs, AlterConfigs or IdempotentWrite"
                    ))
                })
            })
            .collect()
    }

    fn who(&self) -> anyhow::Result<Vec<(String, String, Permission)>> {
        let hosts = |h: &[String]| -> Vec<String> {
            if h.is_empty() {
                vec!["*".to_string()]
            } else {
                h.to_vec()
            }
        };
        let mut out = Vec::new();
        for (principals, host_flags, perm) in [
            (&self.allow_principal, &self.allow_host, Permission::Allow),
            (&self.deny_principal, &self.deny_host, Permission::Deny),
        ] {
            for p in principals {
                if !p.starts_with("User:") || p.len() == "User:".len() {
                    return Err(bad(format!(
                        "principal {p:?} must be User:NAME (or {EVERYONE})"
                    )));
                }
                for h in hosts(host_flags) {
                    out.push((p.clone(), h, perm));
                }
            }
        }
        Ok(out)
    }

    /// The (operations, resource) pairs: --operation on each resource, or what --producer /
    /// --consumer mean.
    fn grants(&self) -> anyhow::Result<Vec<(Operation, ResourceType, String)>> {
        let resources = self.resources();
        let mut out = Vec::new();
        let ops = self.operations()?;
        for (t, name) in &resources {
            for op in &ops {
                out.push((*op, *t, name.clone()));
            }
        }
        if self.producer {
            for t in &self.topic {
                for op in [Operation::Write, Operation::Describe, Operation::Create] {
                    out.push((op, ResourceType::Topic, t.clone()));
                }
            }
        }
        if self.consumer {
            anyhow::ensure!(
                !self.group.is_empty(),
                "--consumer needs --group (consumers read a group's offsets)"
            );
            for t in &self.topic {
                for op in [Operation::Read, Operation::Describe] {
                    out.push((op, ResourceType::Topic, t.clone()));
                }
            }
            for g in &self.group {
                out.push((Operation::Read, ResourceType::Group, g.clone()));
            }
        }
        Ok(out)
    }
}

fn pattern_filter(s: Option<&str>, default: PatternFilter) -> anyhow::Result<PatternFilter> {
    let Some(s) = s else { return Ok(default) };
    match s.to_ascii_lowercase().as_str() {
        "any" => Ok(PatternFilter::Any),
        "match" => Ok(PatternFilter::Match),
        other => PatternType::parse(other)
            .map(PatternFilter::Only)
            .ok_or_else(|| {
                bad(format!(
                    "--resource-pattern-type {s:?} must be literal, prefixed, any or match"
                ))
            }),
    }
}

/// The bindings `add` creates.
pub fn bindings(a: &AclArgs) -> anyhow::Result<Vec<AclBinding>> {
    let pattern = match pattern_filter(
        a.resource_pattern_type.as_deref(),
        PatternFilter::Only(PatternType::Literal),
    )? {
        PatternFilter::Only(p) => p,
        _ => return Err(bad("add takes --resource-pattern-type literal or prefixed")),
    };
    let who = a.who()?;
    anyhow::ensure!(
        !who.is_empty(),
        "say who: --allow-principal User:NAME or --deny-principal User:NAME"
    );
    let grants = a.grants()?;
    anyhow::ensure!(
        !grants.is_empty(),
        "say what: --operation OP with --topic T, --group G, --cluster or --transactional-id ID (or --producer / --consumer)"
    );
    let mut out = Vec::new();
    for (principal, host, perm) in &who {
        for (op, t, name) in &grants {
            out.push(AclBinding {
                principal: principal.clone(),
                host: host.clone(),
                resource_type: t.code() as i32,
                resource_name: name.clone(),
                pattern_type: pattern.code() as i32,
                operation: op.code() as i32,
                permission: perm.code() as i32,
            });
        }
    }
    Ok(out)
}

/// The filters `remove` deletes with: one per (principal, operation, resource) named; what
/// is left out matches anything (kafka-acls: `--remove --topic T` removes every ACL of T).
pub fn filters(a: &AclArgs) -> anyhow::Result<Vec<AclFilter>> {
    let pattern = pattern_filter(
        a.resource_pattern_type.as_deref(),
        PatternFilter::Only(PatternType::Literal),
    )?;
    let resources = a.resources();
    anyhow::ensure!(
        !resources.is_empty(),
        "say which resource: --topic T, --group G, --cluster or --transactional-id ID"
    );
    let who: Vec<(Option<String>, Option<String>, Option<Permission>)> = {
        let w = a.who()?;
        if w.is_empty() {
            vec![(None, None, None)]
        } else {
            w.into_iter()
                .map(|(p, h, perm)| (Some(p), Some(h), Some(perm)))
                .collect()
        }
    };
    let ops: Vec<Option<Operation>> = {
        let o = a.operations()?;
        if o.is_empty() {
            vec![None]
        } else {
            o.into_iter().map(Some).collect()
        }
    };
    let mut out = Vec::new();
    for (t, name) in &resources {
        for (principal, host, perm) in &who {
            for op in &ops {
                out.push(AclFilter {
                    principal: principal.clone().unwrap_or_default(),
                    host: host.clone().unwrap_or_default(),
                    resource_type: t.code() as i32,
                    resource_name: name.clone(),
                    pattern_type: pattern.code() as i32,
                    operation: op.map_or(1, |o| o.code() as i32),
                    permission: perm.map_or(1, |p| p.code() as i32),
                });
            }
        }
    }
    Ok(out)
}

fn name_of<T>(
    code: i32,
    from: impl Fn(i8) -> Option<T>,
    name: impl Fn(T) -> &'static str,
) -> String {
    i8::try_from(code)
        .ok()
        .and_then(from)
        .map_or_else(|| format!("UNKNOWN({code})"), |v| name(v).to_string())
}

fn row(b: &AclBinding) -> Vec<String> {
    vec![
        b.principal.clone(),
        b.host.clone(),
        name_of(b.permission, Permission::from_code, Permission::name),
        name_of(b.operation, Operation::from_code, Operation::name),
        name_of(b.resource_type, ResourceType::from_code, ResourceType::name),
        b.resource_name.clone(),
        name_of(b.pattern_type, PatternType::from_code, PatternType::name),
    ]
}

fn as_json(b: &AclBinding) -> serde_json::Value {
    let r = row(b);
    json!({
        "principal": r[0], "host": r[1], "permission": r[2], "operation": r[3],
        "resource_type": r[4], "resource_name": r[5], "pattern_type": r[6],
    })
}

const HEADERS: [&str; 7] = [
    "PRINCIPAL",
    "HOST",
    "PERMISSION",
    "OPERATION",
    "RESOURCE-TYPE",
    "RESOURCE",
    "PATTERN",
];

fn print(out: OutputFormat, key: &str, acls: &[AclBinding]) {
    match out {
        OutputFormat::Json => println!(
            "{}",
            json!({ key: acls.iter().map(as_json).collect::<Vec<_>>() })
        ),
        OutputFormat::Table => println!("{}", table(&HEADERS, acls.iter().map(row).collect())),
    }
}

fn failure(code: i32, message: &str) -> anyhow::Error {
    let code = ErrorCode::try_from(code).unwrap_or(ErrorCode::UnknownServerError);
    bad(format!("{}: {message}", code.as_str_name()))
}

/// `acl add`.
pub async fn add(bootstrap: &str, out: OutputFormat, a: &AclArgs) -> anyhow::Result<()> {
    let wanted = bindings(a)?;
    let admin = Admin::connect(bootstrap).await?;
    let r = admin.create_acls(wanted.clone()).await?;
    for (b, res) in wanted.iter().zip(&r.results) {
        if res.error_code != ErrorCode::None as i32 {
            return Err(failure(res.error_code, &res.error_message)
                .context(format!("ACL {}", row(b).join(" "))));
        }
    }
    print(out, "added", &wanted);
    Ok(())
}

/// `acl remove`.
pub async fn remove(bootstrap: &str, out: OutputFormat, a: &AclArgs) -> anyhow::Result<()> {
    let admin = Admin::connect(bootstrap).await?;
    let r = admin.delete_acls(filters(a)?).await?;
    let mut removed = Vec::new();
    for res in r.results {
        if res.error_code != ErrorCode::None as i32 {
            return Err(failure(res.error_code, &res.error_message));
        }
        for m in res.matched {
            if !removed.contains(&m) {
                removed.push(m);
            }
        }
    }
    print(out, "removed", &removed);
    Ok(())
}

/// `acl list`.
pub async fn list(bootstrap: &str, out: OutputFormat, a: &AclArgs) -> anyhow::Result<()> {
    let pattern = pattern_filter(a.resource_pattern_type.as_deref(), PatternFilter::Any)?;
    let mut resources: Vec<(i32, String)> = a
        .resources()
        .into_iter()
        .map(|(t, n)| (t.code() as i32, n))
        .collect();
    if resources.is_empty() {
        resources.push((1, String::new()));
    }
    let admin = Admin::connect(bootstrap).await?;
    let mut all = Vec::new();
    for (t, name) in resources {
        let acls = admin
            .describe_acls(AclFilter {
                principal: a.principal.clone().unwrap_or_default(),
                host: String::new(),
                resource_type: t,
                resource_name: name,
                pattern_type: pattern.code() as i32,
                operation: 1,
                permission: 1,
            })
            .await?;
        all.extend(acls);
    }
    print(out, "acls", &all);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_make_kafka_acls_bindings() {
        let a = AclArgs {
            allow_principal: vec!["User:alice".into()],
            deny_principal: vec!["User:eve".into()],
            deny_host: vec!["10.0.0.9".into()],
            operation: vec!["read".into(), "DESCRIBE".into()],
            topic: vec!["orders".into()],
            resource_pattern_type: Some("prefixed".into()),
            ..Default::default()
        };
        let b = bindings(&a).unwrap();
        assert_eq!(b.len(), 4);
        assert!(b
            .iter()
            .all(|b| b.pattern_type == 4 && b.resource_type == 2));
        let eve: Vec<_> = b.iter().filter(|b| b.principal == "User:eve").collect();
        assert!(eve
            .iter()
            .all(|b| b.permission == 2 && b.host == "10.0.0.9"));
        let consumer = AclArgs {
            allow_principal: vec!["User:c".into()],
            consumer: true,
            topic: vec!["t".into()],
            group: vec!["g".into()],
            ..Default::default()
        };
        let ops: Vec<(i32, i32)> = bindings(&consumer)
            .unwrap()
            .iter()
            .map(|b| (b.resource_type, b.operation))
            .collect();
        assert_eq!(ops, [(2, 3), (2, 8), (3, 3)]);
        for (bad_args, says) in [
            (
                AclArgs {
                    allow_principal: vec!["alice".into()],
                    operation: vec!["Read".into()],
                    topic: vec!["t".into()],
                    ..Default::default()
                },
                "User:NAME",
            ),
            (
                AclArgs {
                    allow_principal: vec!["User:a".into()],
                    operation: vec!["fly".into()],
                    topic: vec!["t".into()],
                    ..Default::default()
                },
                "not an operation",
            ),
            (
                AclArgs {
                    allow_principal: vec!["User:a".into()],
                    operation: vec!["Read".into()],
                    ..Default::default()
                },
                "say what",
            ),
            (
                AclArgs {
                    allow_principal: vec!["User:a".into()],
                    operation: vec!["Read".into()],
                    topic: vec!["t".into()],
                    resource_pattern_type: Some("match".into()),
                    ..Default::default()
                },
                "literal or prefixed",
            ),
        ] {
            let e = bindings(&bad_args).unwrap_err().to_string();
            assert!(e.contains(says), "{e}");
        }
    }

    #[test]
    fn remove_without_principal_or_operation_means_every_acl_of_the_resource() {
        let a = AclArgs {
            topic: vec!["t".into()],
            ..Default::default()
        };
        let f = filters(&a).unwrap();
        assert_eq!(f.len(), 1);
        assert_eq!((f[0].operation, f[0].permission), (1, 1));
        assert!(f[0].principal.is_empty() && f[0].host.is_empty());
        assert_eq!(f[0].pattern_type, 3);
        assert!(filters(&AclArgs::default()).is_err());
    }
}
