//! DescribeClientQuotas and AlterClientQuotas (KIP-546, v0–1), relayed to the controllers like
//! Sluice's own Admin calls, so `kafka-configs.sh --entity-type users|clients`,
//! `AdminClient.alterClientQuotas` and kafka-python's `alter_client_quotas` work unchanged.

use kafka_protocol::messages::{
    alter_client_quotas_response, describe_client_quotas_response, AlterClientQuotasRequest,
    AlterClientQuotasResponse, DescribeClientQuotasRequest, DescribeClientQuotasResponse,
};
use sluice_proto::v1 as pb;

use super::{code_of, kstr, Ctx};

pub(super) async fn alter_client_quotas(
    ctx: &Ctx,
    req: AlterClientQuotasRequest,
) -> AlterClientQuotasResponse {
    let relayed = pb::AlterClientQuotasRequest {
        entries: req
            .entries
            .iter()
            .map(|e| pb::AlterClientQuotaEntry {
                entity: e
                    .entity
                    .iter()
                    .map(|p| pb::QuotaEntityPart {
                        entity_type: p.entity_type.as_str().to_string(),
                        name: p.entity_name.as_ref().map(|n| n.as_str().to_string()),
                    })
                    .collect(),
                ops: e
                    .ops
                    .iter()
                    .map(|o| pb::QuotaOp {
                        key: o.key.as_str().to_string(),
                        value: o.value,
                        remove: o.remove,
                    })
                    .collect(),
            })
            .collect(),
        validate_only: req.validate_only,
    };
    let r = ctx
        .node
        .relay_admin(relayed, &ctx.caller, |mut c, r| async move {
            c.alter_client_quotas(r).await
        })
        .await;
    let results: Vec<(i16, Option<String>)> = match r {
        Ok(resp) => resp
            .results
            .into_iter()
            .map(|r| {
                (
                    r.error_code as i16,
                    (!r.error_message.is_empty()).then_some(r.error_message),
                )
            })
            .collect(),
        Err(s) => {
            let (code, m) = code_of(&s);
            req.entries
                .iter()
                .map(|_| (code, Some(m.clone())))
                .collect()
        }
    };
    let entries = req
        .entries
        .into_iter()
        .zip(results)
        .map(|(e, (code, message))| {
            alter_client_quotas_response::EntryData::default()
                .with_error_code(code)
                .with_error_message(message.map(kstr))
                .with_entity(
                    e.entity
                        .into_iter()
                        .map(|p| {
                            alter_client_quotas_response::EntityData::default()
                                .with_entity_type(p.entity_type)
                                .with_entity_name(p.entity_name)
                        })
                        .collect(),
                )
        })
        .collect();
    AlterClientQuotasResponse::default().with_entries(entries)
}

pub(super) async fn describe_client_quotas(
    ctx: &Ctx,
    req: DescribeClientQuotasRequest,
) -> DescribeClientQuotasResponse {
    let relayed = pb::DescribeClientQuotasRequest {
        components: req
            .components
            .iter()
            .map(|c| pb::QuotaFilterComponent {
                entity_type: c.entity_type.as_str().to_string(),
                r#match: c.match_type as i32,
                name: c
                    ._match
                    .as_ref()
                    .map(|m| m.as_str().to_string())
                    .unwrap_or_default(),
            })
            .collect(),
        strict: req.strict,
    };
    let r = ctx
        .node
        .relay_admin(relayed, &ctx.caller, |mut c, r| async move {
            c.describe_client_quotas(r).await
        })
        .await;
    match r {
        Ok(resp) => DescribeClientQuotasResponse::default().with_entries(Some(
            resp.entries
                .into_iter()
                .map(|e| {
                    let mut values: Vec<_> = e.values.into_iter().collect();
                    values.sort_by(|a, b| a.0.cmp(&b.0));
                    describe_client_quotas_response::EntryData::default()
                        .with_entity(
                            e.entity
                                .into_iter()
                                .map(|p| {
                                    describe_client_quotas_response::EntityData::default()
                                        .with_entity_type(kstr(p.entity_type))
                                        .with_entity_name(p.name.map(kstr))
                                })
                                .collect(),
                        )
                        .with_values(
                            values
                                .into_iter()
                                .map(|(k, v)| {
                                    describe_client_quotas_response::ValueData::default()
                                        .with_key(kstr(k))
                                        .with_value(v)
                                })
                                .collect(),
                        )
                })
                .collect(),
        )),
        Err(s) => {
            let (code, m) = code_of(&s);
            DescribeClientQuotasResponse::default()
                .with_error_code(code)
                .with_error_message(Some(kstr(m)))
                .with_entries(None)
        }
    }
}
