//! The client-quota RPCs (Kafka's AlterClientQuotas and DescribeClientQuotas): AlterConfigs on
//! the cluster to change quotas, DescribeConfigs on the cluster to read them, as in Kafka.

use sluice_metadata::acl::{Caller, Operation};
use sluice_metadata::quota::{filter_matches, Match, QuotaEntity};
use sluice_proto::v1 as pb;
use sluice_proto::v1::ErrorCode;
use tonic::Status;

use super::acls::Access;
use crate::logic;

/// An entity from its parts; two parts of one type are refused.
pub fn entity_from_pb(parts: &[pb::QuotaEntityPart]) -> Result<QuotaEntity, String> {
    let mut entity = QuotaEntity::new();
    for p in parts {
        if entity
            .insert(p.entity_type.clone(), p.name.clone())
            .is_some()
        {
            return Err(format!("the entity names {} twice", p.entity_type));
        }
    }
    Ok(entity)
}

/// The parts of an entity.
pub fn entity_to_pb(entity: &QuotaEntity) -> Vec<pb::QuotaEntityPart> {
    entity
        .iter()
        .map(|(t, n)| pb::QuotaEntityPart {
            entity_type: t.clone(),
            name: n.clone(),
        })
        .collect()
}

impl super::AdminService {
    pub(super) async fn alter_client_quotas_local(
        &self,
        req: pb::AlterClientQuotasRequest,
        caller: &Caller,
    ) -> Result<pb::AlterClientQuotasResponse, Status> {
        super::admin::check_count(req.entries.len())?;
        Access::new(&self.node, caller).cluster(Operation::AlterConfigs)?;
        let parsed: Vec<Result<logic::QuotaAlteration, String>> = req
            .entries
            .iter()
            .map(|e| {
                let entity = entity_from_pb(&e.entity)?;
                let ops = e
                    .ops
                    .iter()
                    .map(|o| (o.key.clone(), (!o.remove).then_some(o.value)))
                    .collect();
                Ok((entity, ops))
            })
            .collect();
        let valid: Vec<logic::QuotaAlteration> =
            parsed.iter().filter_map(|p| p.clone().ok()).collect();
        let validate_only = req.validate_only;
        let (_, decided) = self
            .node
            .decide(|img| {
                let (records, results) = logic::alter_client_quotas(img, &valid);
                Ok((if validate_only { Vec::new() } else { records }, results))
            })
            .await?;
        let results = super::admin::per_item(parsed, decided)
            .into_iter()
            .map(|(code, message)| pb::AlterClientQuotaResult {
                error_code: code as i32,
                error_message: message,
            })
            .collect();
        Ok(pb::AlterClientQuotasResponse { results })
    }

    pub(super) async fn describe_client_quotas_local(
        &self,
        req: pb::DescribeClientQuotasRequest,
        caller: &Caller,
    ) -> Result<pb::DescribeClientQuotasResponse, Status> {
        Access::new(&self.node, caller).cluster(Operation::DescribeConfigs)?;
        let components: Vec<(String, Match)> = req
            .components
            .iter()
            .map(|c| {
                let m = match pb::QuotaMatch::try_from(c.r#match) {
                    Ok(pb::QuotaMatch::Exact) => Match::Exact(c.name.clone()),
                    Ok(pb::QuotaMatch::Default) => Match::Default,
                    Ok(pb::QuotaMatch::Specified) => Match::Specified,
                    Err(_) => {
                        return Err(sluice_proto::status::error_status(
                            ErrorCode::InvalidRequest,
                            format!("unknown quota match type {}", c.r#match),
                            None,
                        ))
                    }
                };
                Ok((c.entity_type.clone(), m))
            })
            .collect::<Result<_, Status>>()?;
        let image = self.node.ensure_current().await?;
        let entries = image
            .client_quotas
            .iter()
            .filter(|(e, _)| filter_matches(e, &components, req.strict))
            .map(|(e, values)| pb::ClientQuotaEntry {
                entity: entity_to_pb(e),
                values: values.iter().map(|(k, v)| (k.clone(), v.0)).collect(),
            })
            .collect();
        Ok(pb::DescribeClientQuotasResponse { entries })
    }
}
