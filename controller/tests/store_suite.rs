//! openraft's own storage conformance suite against the sled log store and state machine.
//!
//! Goal: the store keeps every promise openraft relies on (log state after purge and
//! truncate, vote persistence, snapshot install, applied state). Method: run
//! `openraft::testing::Suite::test_all`, which builds a fresh store per case.

use openraft::testing::{StoreBuilder, Suite};
use openraft::StorageError;
use sluice_controller::store::{open_db, LogStore, StateMachine};
use sluice_controller::types::TypeConfig;

struct Builder;

impl StoreBuilder<TypeConfig, LogStore, StateMachine, tempfile::TempDir> for Builder {
    async fn build(
        &self,
    ) -> Result<(tempfile::TempDir, LogStore, StateMachine), StorageError<u64>> {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = open_db(dir.path()).expect("open sled");
        let log = LogStore::new(&db).expect("log trees");
        let (sm, _rx) = StateMachine::new(&db).expect("state machine");
        Ok((dir, log, sm))
    }
}

#[test]
fn sled_store_passes_the_openraft_suite() {
    Suite::test_all(Builder).expect("suite passes");
}
