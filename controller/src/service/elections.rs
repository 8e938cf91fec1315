//! ElectLeaders (Kafka's; `sluice leader-election`): preferred and unclean elections, Alter on
//! the cluster. An unclean election is logged at WARN with the principal that ran it.

use sluice_metadata::acl::{Caller, Operation};
use sluice_metadata::MetadataRecord;
use sluice_proto::status::error_status;
use sluice_proto::v1 as pb;
use sluice_proto::v1::ErrorCode;
use tonic::Status;

use super::acls::Access;
use crate::logic::{self, Election};

impl super::AdminService {
    pub(super) async fn elect_leaders_local(
        &self,
        req: pb::ElectLeadersRequest,
        caller: &Caller,
    ) -> Result<pb::ElectLeadersResponse, Status> {
        super::admin::check_count(req.partitions.len())?;
        Access::new(&self.node, caller).cluster(Operation::Alter)?;
        let election = match pb::ElectionType::try_from(req.election_type) {
            Ok(pb::ElectionType::Preferred) => Election::Preferred,
            Ok(pb::ElectionType::Unclean) => Election::Unclean,
            Err(_) => {
                return Err(error_status(
                    ErrorCode::InvalidRequest,
                    format!("unknown election type {}", req.election_type),
                    None,
                ))
            }
        };
        let named: Vec<(String, i32)> = req
            .partitions
            .iter()
            .map(|p| (p.topic.clone(), p.partition))
            .collect();
        let partitions = (!req.all_partitions).then_some(named);
        let dry_run = req.dry_run;
        let (_, (outcomes, records)) = self
            .node
            .decide(|img| {
                let (records, outcomes) =
                    logic::elect_leaders(img, election, partitions.as_deref());
                let kept = records.clone();
                Ok((if dry_run { Vec::new() } else { records }, (outcomes, kept)))
            })
            .await?;
        let image = self.node.image();
        let leaders: std::collections::BTreeMap<(String, i32), i32> = records
            .iter()
            .filter_map(|r| match r {
                MetadataRecord::PartitionChange {
                    topic_id,
                    index,
                    leader: Some(l),
                    ..
                } => {
                    let name = image.topics.get(topic_id)?.name.clone();
                    Some(((name, *index), l.get()))
                }
                _ => None,
            })
            .collect();
        let results = outcomes
            .into_iter()
            .map(|((topic, partition), r)| {
                let leader = leaders
                    .get(&(topic.clone(), partition))
                    .copied()
                    .unwrap_or(-1);
                if r.is_ok() && election == Election::Unclean && !dry_run {
                    tracing::warn!(
                        principal = %caller.principal,
                        %topic, partition, leader,
                        "unclean leader election: records only the previous ISR held are lost"
                    );
                }
                let (error_code, error_message) = match r {
                    Ok(()) => (ErrorCode::None as i32, String::new()),
                    Err(e) => (e.code as i32, e.message),
                };
                pb::ElectLeaderResult {
                    topic,
                    partition,
                    error_code,
                    error_message,
                    leader,
                }
            })
            .collect();
        Ok(pb::ElectLeadersResponse { results })
    }
}
