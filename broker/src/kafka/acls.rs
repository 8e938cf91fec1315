//! CreateAcls, DescribeAcls and DeleteAcls (KIP-140, v1–3), relayed to the controllers like
//! Sluice's own Admin calls, so `kafka-acls.sh`, `AdminClient.createAcls` and kafka-python's
//! `create_acls` work unchanged. Kafka's codes for resource types, pattern types, operations
//! and permissions are Sluice's wire values too, so fields are copied as they are.

use std::collections::BTreeMap;

use kafka_protocol::messages::create_acls_response::AclCreationResult;
use kafka_protocol::messages::delete_acls_response::{
    DeleteAclsFilterResult, DeleteAclsMatchingAcl,
};
use kafka_protocol::messages::describe_acls_response::{AclDescription, DescribeAclsResource};
use kafka_protocol::messages::{
    CreateAclsRequest, CreateAclsResponse, DeleteAclsRequest, DeleteAclsResponse,
    DescribeAclsRequest, DescribeAclsResponse,
};
use kafka_protocol::protocol::StrBytes;
use sluice_proto::v1 as pb;

use super::{code_of, kstr, Ctx};

fn text(s: &Option<StrBytes>) -> String {
    s.as_ref()
        .map(|s| s.as_str().to_string())
        .unwrap_or_default()
}

fn message(m: String) -> Option<StrBytes> {
    (!m.is_empty()).then(|| kstr(m))
}

pub(super) async fn create_acls(ctx: &Ctx, req: CreateAclsRequest) -> CreateAclsResponse {
    let n = req.creations.len();
    let relayed = pb::CreateAclsRequest {
        creations: req
            .creations
            .into_iter()
            .map(|c| pb::AclBinding {
                principal: c.principal.as_str().to_string(),
                host: c.host.as_str().to_string(),
                resource_type: c.resource_type as i32,
                resource_name: c.resource_name.as_str().to_string(),
                pattern_type: c.resource_pattern_type as i32,
                operation: c.operation as i32,
                permission: c.permission_type as i32,
            })
            .collect(),
    };
    let r = ctx
        .node
        .relay_admin(relayed, &ctx.caller, |mut c, r| async move {
            c.create_acls(r).await
        })
        .await;
    let results = match r {
        Ok(resp) => resp
            .results
            .into_iter()
            .map(|r| {
                AclCreationResult::default()
                    .with_error_code(r.error_code as i16)
                    .with_error_message(message(r.error_message))
            })
            .collect(),
        Err(s) => {
            let (code, m) = code_of(&s);
            (0..n)
                .map(|_| {
                    AclCreationResult::default()
                        .with_error_code(code)
                        .with_error_message(message(m.clone()))
                })
                .collect()
        }
    };
    CreateAclsResponse::default().with_results(results)
}

fn filter(
    resource_type: i8,
    name: &Option<StrBytes>,
    pattern: i8,
    principal: &Option<StrBytes>,
    host: &Option<StrBytes>,
    operation: i8,
    permission: i8,
) -> pb::AclFilter {
    pb::AclFilter {
        principal: text(principal),
        host: text(host),
        resource_type: resource_type as i32,
        resource_name: text(name),
        pattern_type: pattern as i32,
        operation: operation as i32,
        permission: permission as i32,
    }
}

pub(super) async fn describe_acls(ctx: &Ctx, req: DescribeAclsRequest) -> DescribeAclsResponse {
    let relayed = pb::DescribeAclsRequest {
        filter: Some(filter(
            req.resource_type_filter,
            &req.resource_name_filter,
            req.pattern_type_filter,
            &req.principal_filter,
            &req.host_filter,
            req.operation,
            req.permission_type,
        )),
    };
    let r = ctx
        .node
        .relay_admin(relayed, &ctx.caller, |mut c, r| async move {
            c.describe_acls(r).await
        })
        .await;
    match r {
        Ok(resp) => {
            // Kafka groups the bindings by resource pattern.
            let mut by_resource: BTreeMap<(i32, String, i32), Vec<AclDescription>> =
                BTreeMap::new();
            for a in resp.acls {
                by_resource
                    .entry((a.resource_type, a.resource_name, a.pattern_type))
                    .or_default()
                    .push(
                        AclDescription::default()
                            .with_principal(kstr(a.principal))
                            .with_host(kstr(a.host))
                            .with_operation(a.operation as i8)
                            .with_permission_type(a.permission as i8),
                    );
            }
            DescribeAclsResponse::default().with_resources(
                by_resource
                    .into_iter()
                    .map(|((t, name, pattern), acls)| {
                        DescribeAclsResource::default()
                            .with_resource_type(t as i8)
                            .with_resource_name(kstr(name))
                            .with_pattern_type(pattern as i8)
                            .with_acls(acls)
                    })
                    .collect(),
            )
        }
        Err(s) => {
            let (code, m) = code_of(&s);
            DescribeAclsResponse::default()
                .with_error_code(code)
                .with_error_message(message(m))
        }
    }
}

pub(super) async fn delete_acls(ctx: &Ctx, req: DeleteAclsRequest) -> DeleteAclsResponse {
    let n = req.filters.len();
    let relayed = pb::DeleteAclsRequest {
        filters: req
            .filters
            .iter()
            .map(|f| {
                filter(
                    f.resource_type_filter,
                    &f.resource_name_filter,
                    f.pattern_type_filter,
                    &f.principal_filter,
                    &f.host_filter,
                    f.operation,
                    f.permission_type,
                )
            })
            .collect(),
    };
    let r = ctx
        .node
        .relay_admin(relayed, &ctx.caller, |mut c, r| async move {
            c.delete_acls(r).await
        })
        .await;
    let results = match r {
        Ok(resp) => resp
            .results
            .into_iter()
            .map(|r| {
                DeleteAclsFilterResult::default()
                    .with_error_code(r.error_code as i16)
                    .with_error_message(message(r.error_message))
                    .with_matching_acls(
                        r.matched
                            .into_iter()
                            .map(|a| {
                                DeleteAclsMatchingAcl::default()
                                    .with_resource_type(a.resource_type as i8)
                                    .with_resource_name(kstr(a.resource_name))
                                    .with_pattern_type(a.pattern_type as i8)
                                    .with_principal(kstr(a.principal))
                                    .with_host(kstr(a.host))
                                    .with_operation(a.operation as i8)
                                    .with_permission_type(a.permission as i8)
                            })
                            .collect(),
                    )
            })
            .collect(),
        Err(s) => {
            let (code, m) = code_of(&s);
            (0..n)
                .map(|_| {
                    DeleteAclsFilterResult::default()
                        .with_error_code(code)
                        .with_error_message(message(m.clone()))
                })
                .collect()
        }
    };
    DeleteAclsResponse::default().with_filter_results(results)
}
