//! openraft's storage conformance suite against the sled store, plus restart tests.

use openraft::storage::{RaftLogStorage, RaftLogStorageExt, RaftStateMachine};
use openraft::testing::{StoreBuilder, Suite};
use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId};

use crate::log_store::SledLogStore;
use crate::state_machine::{open_store, SledStateMachine};
use crate::typ::StorageError;
use crate::{Command, Request, Subscription, SubscriptionState, TypeConfig};

struct SledBuilder;

impl StoreBuilder<TypeConfig, SledLogStore, SledStateMachine, tempfile::TempDir> for SledBuilder {
    async fn build(
        &self,
    ) -> Result<(tempfile::TempDir, SledLogStore, SledStateMachine), StorageError> {
        let dir = tempfile::tempdir().expect("tempdir");
        let (log, sm) = open_store(dir.path()).expect("open store");
        Ok((dir, log, sm))
    }
}

#[test]
fn openraft_storage_suite() -> Result<(), StorageError> {
    Suite::test_all(SledBuilder)?;
    Ok(())
}

fn sub(id: &str) -> Subscription {
    Subscription {
        id: id.to_owned(),
        topic: "t".to_owned(),
        callback: "http://127.0.0.1:1/cb".to_owned(),
        secret: Some("s".to_owned()),
        lease_seconds: 10,
        lease_expires_at_ms: 10_000,
        state: SubscriptionState::Active,
        owner: Some(1),
        created_at_ms: 1,
        updated_at_ms: 1,
        handover_to: None,
        topic_url: None,
        signing: Default::default(),
        previous_secret: None,
    }
}

fn entry(index: u64, command: Command) -> Entry<TypeConfig> {
    Entry {
        log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
        payload: EntryPayload::Normal(Request::new(command)),
    }
}

#[tokio::test]
async fn state_machine_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (_log, mut sm) = open_store(dir.path()).unwrap();
        sm.apply(vec![
            entry(1, Command::UpsertSubscription(sub("a"))),
            entry(2, Command::UpsertSubscription(sub("b"))),
            entry(3, Command::RemoveSubscription { id: "a".to_owned() }),
        ])
        .await
        .unwrap();
    }
    let (_log, mut sm) = open_store(dir.path()).unwrap();
    let (applied, _) = sm.applied_state().await.unwrap();
    assert_eq!(applied.map(|l| l.index), Some(3));
    let ids: Vec<String> = sm
        .reader()
        .read(|s| s.subscriptions.keys().cloned().collect());
    assert_eq!(ids, vec!["b".to_owned()]);
}

#[tokio::test]
async fn log_survives_reopen_and_purge_is_recorded() {
    use openraft::storage::RaftLogReader;
    let dir = tempfile::tempdir().unwrap();
    {
        let (mut log, _sm) = open_store(dir.path()).unwrap();
        let entries: Vec<_> = (1..=10)
            .map(|i| entry(i, Command::NodeHeartbeat { node: 1, at_ms: i }))
            .collect();
        log.blocking_append(entries).await.unwrap();
        log.purge(LogId::new(CommittedLeaderId::new(1, 1), 4))
            .await
            .unwrap();
    }
    let (mut log, _sm) = open_store(dir.path()).unwrap();
    let state = log.get_log_state().await.unwrap();
    assert_eq!(state.last_purged_log_id.map(|l| l.index), Some(4));
    assert_eq!(state.last_log_id.map(|l| l.index), Some(10));
    let got = log.try_get_log_entries(5..=10).await.unwrap();
    assert_eq!(got.len(), 6);
    assert_eq!(got[0].log_id.index, 5);
}
