//! `LeaderId` ↔ `missive.v1.LeaderId`.

use missive_proto::v1 as pb;

use crate::types::LeaderId;

pub(crate) fn leader_id_to_pb(id: &LeaderId) -> pb::LeaderId {
    pb::LeaderId {
        term: id.term,
        node_id: id.node_id,
    }
}

pub(crate) fn leader_id_from_pb(id: &pb::LeaderId) -> LeaderId {
    LeaderId {
        term: id.term,
        node_id: id.node_id,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leader_id_round_trips() {
        let id = LeaderId {
            term: 7,
            node_id: 3,
        };
        assert_eq!(leader_id_from_pb(&leader_id_to_pb(&id)), id);
    }
}
