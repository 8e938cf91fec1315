//! Kafka's ACL model (KIP-11, KIP-290 prefixed patterns), pure: bindings of principal, host,
//! resource pattern, operation and permission, and the decision an authorizer makes from
//! them — super users may do anything; otherwise a matching DENY wins over any ALLOW, and
//! with no matching ALLOW the answer is no (default deny, as Kafka's StandardAuthorizer with
//! `allow.everyone.if.no.acl.found=false`).
//!
//! Codes are Kafka's (CreateAcls/DescribeAcls/DeleteAcls and `kafka-acls`): resource types
//! TOPIC 2, GROUP 3, CLUSTER 4, TRANSACTIONAL_ID 5; patterns LITERAL 3, PREFIXED 4 (ANY 1 and
//! MATCH 2 only in filters); operations ALL 2 … IDEMPOTENT_WRITE 12; permissions DENY 2,
//! ALLOW 3. This module is the model; the brokers' and controllers' enforcement builds on it.

use serde::{Deserialize, Serialize};

/// What an ACL is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum ResourceType {
    /// A topic (code 2).
    Topic,
    /// A consumer group (3).
    Group,
    /// The cluster (4; its one resource is named `kafka-cluster`).
    Cluster,
    /// A transactional id (5).
    TransactionalId,
}

/// How a binding's resource name matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum PatternType {
    /// The name exactly, or every resource for the name `*` (code 3).
    Literal,
    /// Every resource whose name starts with it (4).
    Prefixed,
}

/// An operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Operation {
    /// Every operation (2).
    All,
    /// 3.
    Read,
    /// 4.
    Write,
    /// 5.
    Create,
    /// 6.
    Delete,
    /// 7.
    Alter,
    /// 8.
    Describe,
    /// 9: what brokers do to each other.
    ClusterAction,
    /// 10.
    DescribeConfigs,
    /// 11.
    AlterConfigs,
    /// 12.
    IdempotentWrite,
}

/// Allow or deny.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Permission {
    /// 2.
    Deny,
    /// 3.
    Allow,
}

/// One ACL.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct AclBinding {
    /// `User:NAME`, or `User:*` for everyone.
    pub principal: String,
    /// The client host, or `*`.
    pub host: String,
    /// What kind of resource.
    pub resource_type: ResourceType,
    /// Its name (`*` with Literal: all of them; `kafka-cluster` for the cluster).
    pub resource_name: String,
    /// Literal or prefixed.
    pub pattern: PatternType,
    /// The operation.
    pub operation: Operation,
    /// Allow or deny.
    pub permission: Permission,
}

macro_rules! codes {
    ($t:ty { $($v:ident = $c:expr, $n:expr;)* }) => {
        impl $t {
            /// Kafka's numeric code.
            pub fn code(self) -> i8 {
                match self { $(Self::$v => $c,)* }
            }
            /// From Kafka's numeric code.
            pub fn from_code(c: i8) -> Option<Self> {
                match c { $($c => Some(Self::$v),)* _ => None }
            }
            /// Kafka's name (`kafka-acls` spelling, case-insensitive on input).
            pub fn name(self) -> &'static str {
                match self { $(Self::$v => $n,)* }
            }
            /// From Kafka's name, any case, `-`/`_` alike.
            pub fn parse(s: &str) -> Option<Self> {
                let norm = |x: &str| x.to_ascii_lowercase().replace(['-', '_'], "");
                let want = norm(s.trim());
                [$(Self::$v,)*].into_iter().find(|v| norm(v.name()) == want)
            }
        }
    };
}

codes!(ResourceType {
    Topic = 2, "Topic";
    Group = 3, "Group";
    Cluster = 4, "Cluster";
    TransactionalId = 5, "TransactionalId";
});
codes!(PatternType {
    Literal = 3, "Literal";
    Prefixed = 4, "Prefixed";
});
codes!(Operation {
    All = 2, "All";
    Read = 3, "Read";
    Write = 4, "Write";
    Create = 5, "Create";
    Delete = 6, "Delete";
    Alter = 7, "Alter";
    Describe = 8, "Describe";
    ClusterAction = 9, "ClusterAction";
    DescribeConfigs = 10, "DescribeConfigs";
    AlterConfigs = 11, "AlterConfigs";
    IdempotentWrite = 12, "IdempotentWrite";
});
codes!(Permission {
    Deny = 2, "Deny";
    Allow = 3, "Allow";
});

/// The cluster resource's name.
pub const CLUSTER_NAME: &str = "kafka-cluster";
/// The principal every user matches.
pub const EVERYONE: &str = "User:*";

impl AclBinding {
    /// Checks a binding before it is stored: a `User:` principal, a non-empty host and
    /// resource name, the cluster named `kafka-cluster`.
    pub fn validate(&self) -> Result<(), String> {
        let Some(name) = self.principal.strip_prefix("User:") else {
            return Err(format!(
                "principal {:?} must be User:NAME (or User:*)",
                self.principal
            ));
        };
        if name.is_empty() {
            return Err("the principal's name is empty".into());
        }
        if self.host.is_empty() {
            return Err("the host is empty (use * for any)".into());
        }
        if self.resource_name.is_empty() {
            return Err("the resource name is empty".into());
        }
        if self.resource_type == ResourceType::Cluster && self.resource_name != CLUSTER_NAME {
            return Err(format!(
                "the cluster resource is named {CLUSTER_NAME:?}, not {:?}",
                self.resource_name
            ));
        }
        if self.pattern == PatternType::Prefixed && self.resource_name == "*" {
            return Err("a prefixed pattern of \"*\" is not allowed (use literal *)".into());
        }
        Ok(())
    }

    fn matches_resource(&self, t: ResourceType, name: &str) -> bool {
        self.resource_type == t
            && match self.pattern {
                PatternType::Literal => self.resource_name == "*" || self.resource_name == name,
                PatternType::Prefixed => name.starts_with(&self.resource_name),
            }
    }

    fn matches_who(&self, principal: &str, host: &str) -> bool {
        (self.principal == principal || self.principal == EVERYONE)
            && (self.host == "*" || self.host == host)
    }
}

/// Whether an ALLOW for `granted` allows `wanted` (Kafka's implied operations: Read, Write,
/// Delete and Alter imply Describe; AlterConfigs implies DescribeConfigs; All implies all).
fn allow_implies(granted: Operation, wanted: Operation) -> bool {
    use Operation::*;
    granted == wanted
        || granted == All
        || (wanted == Describe && matches!(granted, Read | Write | Delete | Alter))
        || (wanted == DescribeConfigs && granted == AlterConfigs)
}

/// Whether a DENY for `denied` denies `wanted` (a denied Describe is not implied by anything
/// else being denied; All denies all).
fn deny_implies(denied: Operation, wanted: Operation) -> bool {
    denied == wanted || denied == Operation::All
}

/// The authorizer's decision: may `principal` from `host` do `op` on the resource?
pub fn authorize<'a>(
    acls: impl IntoIterator<Item = &'a AclBinding>,
    super_users: &[String],
    principal: &str,
    host: &str,
    op: Operation,
    resource_type: ResourceType,
    resource_name: &str,
) -> bool {
    if super_users.iter().any(|s| s == principal) {
        return true;
    }
    let mut allowed = false;
    for acl in acls {
        if !acl.matches_who(principal, host) || !acl.matches_resource(resource_type, resource_name)
        {
            continue;
        }
        match acl.permission {
            Permission::Deny if deny_implies(acl.operation, op) => return false,
            Permission::Allow if allow_implies(acl.operation, op) => allowed = true,
            _ => {}
        }
    }
    allowed
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn acl(
        principal: &str,
        t: ResourceType,
        name: &str,
        pattern: PatternType,
        op: Operation,
        perm: Permission,
    ) -> AclBinding {
        AclBinding {
            principal: principal.into(),
            host: "*".into(),
            resource_type: t,
            resource_name: name.into(),
            pattern,
            operation: op,
            permission: perm,
        }
    }

    use Operation::*;
    use PatternType::*;
    use Permission::*;
    use ResourceType::*;

    #[test]
    fn decisions_follow_kafkas_rules() {
        let acls = vec![
            acl("User:alice", Topic, "orders", Literal, Write, Allow),
            acl("User:alice", Topic, "logs-", Prefixed, Read, Allow),
            acl("User:alice", Topic, "logs-secret", Literal, Read, Deny),
            acl("User:*", Topic, "public", Literal, Read, Allow),
            acl("User:bob", Topic, "*", Literal, All, Allow),
            acl("User:bob", Topic, "orders", Literal, Write, Deny),
            acl("User:carol", Group, "g", Literal, Read, Allow),
            acl(
                "User:carol",
                Cluster,
                CLUSTER_NAME,
                Literal,
                AlterConfigs,
                Allow,
            ),
        ];
        let supers = vec!["User:admin".to_string()];
        // (principal, op, type, name, expected)
        let table = [
            ("User:alice", Write, Topic, "orders", true),
            ("User:alice", Describe, Topic, "orders", true), // implied by Write
            ("User:alice", Read, Topic, "orders", false),
            ("User:alice", Read, Topic, "logs-app", true),
            ("User:alice", Read, Topic, "logs-secret", false), // deny wins over the prefix
            ("User:alice", Read, Topic, "log", false),
            ("User:alice", Read, Topic, "public", true), // everyone
            ("User:dave", Read, Topic, "public", true),
            ("User:dave", Write, Topic, "public", false),
            ("User:bob", Delete, Topic, "anything", true),
            ("User:bob", Write, Topic, "orders", false), // deny wins over All
            ("User:bob", Read, Group, "g", false),       // topic wildcard is not a group one
            ("User:carol", Read, Group, "g", true),
            ("User:carol", DescribeConfigs, Cluster, CLUSTER_NAME, true), // implied by AlterConfigs
            ("User:carol", Alter, Cluster, CLUSTER_NAME, false),
            ("User:admin", ClusterAction, Cluster, CLUSTER_NAME, true), // super user
            ("User:nobody", Describe, Topic, "orders", false),          // default deny
        ];
        for (p, op, t, name, want) in table {
            assert_eq!(
                authorize(&acls, &supers, p, "10.0.0.1", op, t, name),
                want,
                "{p} {op:?} {t:?} {name}"
            );
        }
        // Hosts narrow a binding.
        let mut only = acl("User:eve", Topic, "t", Literal, Read, Allow);
        only.host = "10.0.0.9".into();
        assert!(authorize(
            [&only],
            &[],
            "User:eve",
            "10.0.0.9",
            Read,
            Topic,
            "t"
        ));
        assert!(!authorize(
            [&only],
            &[],
            "User:eve",
            "10.0.0.1",
            Read,
            Topic,
            "t"
        ));
    }

    #[test]
    fn codes_and_names_round_trip() {
        for op in [
            All,
            Read,
            Write,
            Create,
            Delete,
            Alter,
            Describe,
            ClusterAction,
            DescribeConfigs,
            AlterConfigs,
            IdempotentWrite,
        ] {
            assert_eq!(Operation::from_code(op.code()), Some(op));
            assert_eq!(Operation::parse(&op.name().to_uppercase()), Some(op));
        }
        assert_eq!(Operation::parse("describe-configs"), Some(DescribeConfigs));
        assert_eq!(Operation::parse("IDEMPOTENT_WRITE"), Some(IdempotentWrite));
        assert_eq!(ResourceType::from_code(5), Some(TransactionalId));
        assert_eq!(PatternType::parse("prefixed"), Some(Prefixed));
        assert_eq!(Permission::from_code(3), Some(Allow));
        assert_eq!(Operation::parse("fly"), None);
    }

    #[test]
    fn bindings_are_validated() {
        let ok = acl("User:a", Topic, "t", Literal, Read, Allow);
        assert!(ok.validate().is_ok());
        for (bad, says) in [
            (
                AclBinding {
                    principal: "Group:a".into(),
                    ..ok.clone()
                },
                "User:NAME",
            ),
            (
                AclBinding {
                    principal: "User:".into(),
                    ..ok.clone()
                },
                "empty",
            ),
            (
                AclBinding {
                    host: String::new(),
                    ..ok.clone()
                },
                "host",
            ),
            (
                AclBinding {
                    resource_name: String::new(),
                    ..ok.clone()
                },
                "resource name",
            ),
            (
                acl("User:a", Cluster, "c", Literal, Alter, Allow),
                "kafka-cluster",
            ),
            (acl("User:a", Topic, "*", Prefixed, Read, Allow), "prefixed"),
        ] {
            let e = bad.validate().unwrap_err();
            assert!(e.contains(says), "{bad:?}: {e}");
        }
    }

    fn any_acl() -> impl Strategy<Value = AclBinding> {
        (
            prop::sample::select(vec!["User:a", "User:b", "User:*"]),
            prop::sample::select(vec![Topic, Group]),
            prop::sample::select(vec!["t", "tx", "*", "g"]),
            prop::sample::select(vec![Literal, Prefixed]),
            prop::sample::select(vec![All, Read, Write, Describe, Delete]),
            prop::sample::select(vec![Allow, Deny]),
        )
            .prop_map(|(p, t, n, pat, op, perm)| acl(p, t, n, pat, op, perm))
    }

    proptest! {
        /// Deny wins: adding a DENY never grants anything, adding an ALLOW never takes
        /// anything away, and a matching DENY for the operation (or All) always refuses.
        #[test]
        fn deny_wins_and_allows_only_add(
            acls in prop::collection::vec(any_acl(), 0..12),
            extra in any_acl(),
            who in prop::sample::select(vec!["User:a", "User:b"]),
            op in prop::sample::select(vec![Read, Write, Describe, Delete]),
            t in prop::sample::select(vec![Topic, Group]),
            name in prop::sample::select(vec!["t", "tx", "g", "other"]),
        ) {
            let before = authorize(&acls, &[], who, "h", op, t, name);
            let mut with = acls.clone();
            with.push(extra.clone());
            let after = authorize(&with, &[], who, "h", op, t, name);
            match extra.permission {
                Deny => prop_assert!(!after || before),
                Allow => prop_assert!(after || !before),
            }
            let deny = AclBinding { principal: who.into(), resource_type: t, resource_name: name.into(), pattern: Literal, operation: op, permission: Deny, host: "*".into() };
            with.push(deny);
            prop_assert!(!authorize(&with, &[], who, "h", op, t, name));
        }
    }
}
