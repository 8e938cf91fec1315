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

use std::collections::BTreeSet;

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

/// How a filter matches resource patterns (Kafka's `PatternType` in filters: ANY 1, MATCH 2,
/// LITERAL 3, PREFIXED 4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum PatternFilter {
    /// Bindings of either pattern whose name is the filter's exactly (1).
    Any,
    /// Bindings that would apply to the named resource: literal with its name or `*`,
    /// prefixed with a prefix of it (2).
    Match,
    /// One pattern type only (3, 4).
    Only(PatternType),
}

impl PatternFilter {
    /// Kafka's numeric code.
    pub fn code(self) -> i8 {
        match self {
            PatternFilter::Any => 1,
            PatternFilter::Match => 2,
            PatternFilter::Only(p) => p.code(),
        }
    }

    /// From Kafka's numeric code.
    pub fn from_code(c: i8) -> Option<Self> {
        match c {
            1 => Some(PatternFilter::Any),
            2 => Some(PatternFilter::Match),
            c => PatternType::from_code(c).map(PatternFilter::Only),
        }
    }
}

/// Which bindings a DescribeAcls or DeleteAcls means (Kafka's `AclBindingFilter`): every
/// `None` is ANY.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct AclFilter {
    /// Exactly this principal (`User:*` matches only bindings for everyone).
    pub principal: Option<String>,
    /// Exactly this host.
    pub host: Option<String>,
    /// This resource type.
    pub resource_type: Option<ResourceType>,
    /// This resource name (how it matches: `pattern`).
    pub resource_name: Option<String>,
    /// How names match.
    pub pattern: PatternFilter,
    /// Exactly this operation (`All` matches only bindings for All).
    pub operation: Option<Operation>,
    /// Allow or deny.
    pub permission: Option<Permission>,
}

impl AclFilter {
    /// The filter that matches every binding.
    pub fn any() -> Self {
        AclFilter {
            principal: None,
            host: None,
            resource_type: None,
            resource_name: None,
            pattern: PatternFilter::Any,
            operation: None,
            permission: None,
        }
    }

    /// Whether `acl` is one of the bindings this filter means.
    pub fn matches(&self, acl: &AclBinding) -> bool {
        let eq = |want: &Option<String>, have: &str| want.as_deref().is_none_or(|w| w == have);
        if !eq(&self.principal, &acl.principal)
            || !eq(&self.host, &acl.host)
            || self.resource_type.is_some_and(|t| t != acl.resource_type)
            || self.operation.is_some_and(|o| o != acl.operation)
            || self.permission.is_some_and(|p| p != acl.permission)
        {
            return false;
        }
        let name = self.resource_name.as_deref();
        match self.pattern {
            PatternFilter::Any => name.is_none_or(|n| n == acl.resource_name),
            PatternFilter::Only(p) => {
                p == acl.pattern && name.is_none_or(|n| n == acl.resource_name)
            }
            PatternFilter::Match => name.is_none_or(|n| match acl.pattern {
                PatternType::Literal => acl.resource_name == n || acl.resource_name == "*",
                PatternType::Prefixed => n.starts_with(&acl.resource_name),
            }),
        }
    }
}

/// What a node's authorizer is configured with (`authorizer.class.name` set): who may do
/// anything, and whether a resource no ACL names is open.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Authorizer {
    /// `super.users`: `User:NAME` principals that pass every check.
    pub super_users: Vec<String>,
    /// `allow.everyone.if.no.acl.found`: a resource that no binding names at all is open to
    /// everyone (Kafka's default is false: default deny).
    pub allow_if_no_acl: bool,
}

/// The `authorizer.class.name` values that turn the authorizer on: Kafka's KRaft
/// `StandardAuthorizer` and ZooKeeper-era `AclAuthorizer` names (so existing configs work as
/// they are) and the short `acl`.
pub const AUTHORIZER_CLASS_NAMES: &[&str] = &[
    "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
    "kafka.security.authorizer.AclAuthorizer",
    "acl",
];

impl Authorizer {
    /// From `authorizer.class.name`, `super.users` (`;`-separated, Kafka's form) and
    /// `allow.everyone.if.no.acl.found`; `None` when the class name is empty (authorizer off).
    pub fn from_config(
        class_name: &str,
        super_users: &str,
        allow_if_no_acl: bool,
    ) -> Result<Option<Self>, String> {
        let class_name = class_name.trim();
        if class_name.is_empty() {
            return Ok(None);
        }
        if !AUTHORIZER_CLASS_NAMES.contains(&class_name) {
            return Err(format!(
                "authorizer.class.name={class_name:?} is not an authorizer this node has: use one of {}",
                AUTHORIZER_CLASS_NAMES.join(", ")
            ));
        }
        let mut supers = Vec::new();
        for s in super_users
            .split(';')
            .map(str::trim)
            .filter(|s| !s.is_empty())
        {
            match s.strip_prefix("User:") {
                Some(n) if !n.is_empty() => supers.push(s.to_string()),
                _ => {
                    return Err(format!(
                        "super.users: {s:?} is not User:NAME (principals are separated by ';')"
                    ))
                }
            }
        }
        Ok(Some(Authorizer {
            super_users: supers,
            allow_if_no_acl,
        }))
    }

    /// The decision for `caller` (a node passes every check).
    pub fn allows(
        &self,
        acls: &BTreeSet<AclBinding>,
        caller: &Caller,
        op: Operation,
        resource_type: ResourceType,
        resource_name: &str,
    ) -> bool {
        if caller.node {
            return true;
        }
        if self.allow_if_no_acl
            && !acls
                .iter()
                .any(|a| a.matches_resource(resource_type, resource_name))
        {
            return true;
        }
        authorize(
            acls,
            &self.super_users,
            &caller.principal,
            &caller.host,
            op,
            resource_type,
            resource_name,
        )
    }
}

/// Who a check is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// `User:NAME` (`User:ANONYMOUS` when nobody authenticated).
    pub principal: String,
    /// The client's address, as ACL hosts name it.
    pub host: String,
    /// A cluster node (broker or controller, by its certificate): passes every check.
    pub node: bool,
}

impl Caller {
    /// A node's own call.
    pub fn node(name: impl Into<String>) -> Self {
        Caller {
            principal: name.into(),
            host: "*".into(),
            node: true,
        }
    }

    /// A user's (or anonymous) call from `host`.
    pub fn user(principal: impl Into<String>, host: impl Into<String>) -> Self {
        Caller {
            principal: principal.into(),
            host: host.into(),
            node: false,
        }
    }
}

/// The decision when a node may or may not have an authorizer: none allows everything.
pub fn allowed(
    authorizer: Option<&Authorizer>,
    acls: &BTreeSet<AclBinding>,
    caller: &Caller,
    op: Operation,
    resource_type: ResourceType,
    resource_name: &str,
) -> bool {
    authorizer.is_none_or(|a| a.allows(acls, caller, op, resource_type, resource_name))
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

    #[test]
    fn filters_mean_what_kafkas_do() {
        let lit = acl("User:a", Topic, "orders", Literal, Read, Allow);
        let star = acl("User:*", Topic, "*", Literal, Write, Deny);
        let pre = acl("User:a", Topic, "ord", Prefixed, Read, Allow);
        let grp = acl("User:a", Group, "orders", Literal, Read, Allow);
        let all = [&lit, &star, &pre, &grp];
        let f = |name: Option<&str>, pattern, t: Option<ResourceType>| AclFilter {
            resource_name: name.map(str::to_string),
            pattern,
            resource_type: t,
            ..AclFilter::any()
        };
        let picks = |flt: AclFilter| -> Vec<bool> { all.iter().map(|a| flt.matches(a)).collect() };
        // (filter, lit, star, pre, grp)
        assert_eq!(picks(AclFilter::any()), [true, true, true, true]);
        assert_eq!(
            picks(f(Some("orders"), PatternFilter::Any, None)),
            [true, false, false, true]
        );
        assert_eq!(
            picks(f(Some("orders"), PatternFilter::Match, Some(Topic))),
            [true, true, true, false]
        );
        assert_eq!(
            picks(f(None, PatternFilter::Only(Prefixed), None)),
            [false, false, true, false]
        );
        assert_eq!(
            picks(f(Some("ord"), PatternFilter::Only(Literal), None)),
            [false, false, false, false]
        );
        let by_who = AclFilter {
            principal: Some("User:*".into()),
            ..AclFilter::any()
        };
        assert_eq!(picks(by_who), [false, true, false, false]);
        let by_op = AclFilter {
            operation: Some(Read),
            permission: Some(Allow),
            ..AclFilter::any()
        };
        assert_eq!(picks(by_op), [true, false, true, true]);
        for c in 1..=4 {
            assert_eq!(
                PatternFilter::from_code(c).map(PatternFilter::code),
                Some(c)
            );
        }
        assert_eq!(PatternFilter::from_code(0), None);
    }

    #[test]
    fn the_authorizer_is_configured_as_kafka_is() {
        assert_eq!(Authorizer::from_config("", "User:x", false), Ok(None));
        let a = Authorizer::from_config(
            "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
            "User:admin; User:ops",
            false,
        )
        .unwrap()
        .unwrap();
        assert_eq!(a.super_users, ["User:admin", "User:ops"]);
        let e = Authorizer::from_config("com.example.Mine", "", false).unwrap_err();
        assert!(e.contains("StandardAuthorizer"), "{e}");
        let e = Authorizer::from_config("acl", "admin", false).unwrap_err();
        assert!(e.contains("\"admin\""), "{e}");

        let acls: BTreeSet<AclBinding> = [acl("User:a", Topic, "t", Literal, Read, Allow)]
            .into_iter()
            .collect();
        let bob = Caller::user("User:bob", "10.0.0.1");
        let admin = Caller::user("User:admin", "10.0.0.1");
        assert!(!a.allows(&acls, &bob, Read, Topic, "t"));
        assert!(!a.allows(&acls, &bob, Read, Topic, "u"), "default deny");
        assert!(a.allows(&acls, &admin, Delete, Topic, "t"));
        assert!(a.allows(&acls, &Caller::node("User:broker-1"), Write, Topic, "t"));
        let open = Authorizer {
            allow_if_no_acl: true,
            ..a.clone()
        };
        assert!(open.allows(&acls, &bob, Read, Topic, "u"), "no ACL names u");
        assert!(
            !open.allows(&acls, &bob, Read, Topic, "t"),
            "an ACL names t"
        );
        assert!(
            allowed(None, &acls, &bob, Read, Topic, "t"),
            "no authorizer"
        );
        assert!(!allowed(Some(&a), &acls, &bob, Read, Topic, "t"));
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
