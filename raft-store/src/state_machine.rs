//! The state machine on sled: each entity of [`ControlState`] under its own key in one tree,
//! written in one atomic batch per `apply` call, and mirrored in memory for reads. Snapshots are
//! the whole state encoded once, kept in their own tree so they survive restarts.

use std::io::Cursor;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use openraft::storage::{RaftSnapshotBuilder, RaftStateMachine};
use openraft::{EntryPayload, OptionalSend, StorageIOError};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::codec;
use crate::command::{Command, Response, FORMAT_VERSION};
use crate::governance::{GovTouched, Governance};
use crate::state::{ControlState, Touched};
use crate::typ::{Entry, LogId, Snapshot, SnapshotMeta, StorageError, StoredMembership};
use crate::TypeConfig;

const APPLIED: &[u8] = b"m/applied";
const MEMBERSHIP: &[u8] = b"m/membership";
const SNAPSHOT: &[u8] = b"current";

const P_SUB: u8 = b's';
const P_CURSOR: u8 = b'c';
const P_RETRY: u8 = b'r';
const P_DEAD: u8 = b'd';
const P_NODE: u8 = b'n';
const P_API: u8 = b'A';
const P_PLAN: u8 = b'P';
const P_APP: u8 = b'a';
const P_KEY: u8 = b'k';
const P_ACCESS: u8 = b'g';
const P_USAGE: u8 = b'u';
const P_CONNS: u8 = b'x';
const P_WEBSUB_APPLICATION: u8 = b'w';
const P_WEBSUB_KEY: u8 = b'W';
const P_WEBSUB_RESERVATION: u8 = b'v';
const P_CLIENT_SECRET: u8 = b'C';
const P_SIGNING_KEY: u8 = b'S';
const P_ACCOUNT: u8 = b'U';
const P_SESSION: u8 = b'e';
const P_INVITATION: u8 = b'I';
const P_IDEMPOTENCY: u8 = b'K';
const P_ENDPOINT: u8 = b'E';
const P_DISABLED: u8 = b'D';

/// The state machine's data at one applied log id.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct StateMachineData {
    pub last_applied: Option<LogId>,
    pub membership: StoredMembership,
    pub state: ControlState,
}

#[derive(Debug)]
struct Shared {
    data: RwLock<StateMachineData>,
    applied_tx: watch::Sender<Option<LogId>>,
    snapshot_seq: AtomicU64,
}

/// Read access to the replicated state, for the rest of the node. Cheap to clone.
#[derive(Debug, Clone)]
pub struct StateReader {
    shared: Arc<Shared>,
}

impl StateReader {
    /// Runs `f` on the current state. Do not block inside `f`.
    pub fn read<R>(&self, f: impl FnOnce(&ControlState) -> R) -> R {
        let data = self.shared.data.read().unwrap_or_else(|p| p.into_inner());
        f(&data.state)
    }

    /// The last log id applied to the state machine.
    pub fn last_applied(&self) -> Option<LogId> {
        self.shared
            .data
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .last_applied
    }

    /// A receiver that changes whenever an entry is applied (or a snapshot installed).
    pub fn watch_applied(&self) -> watch::Receiver<Option<LogId>> {
        self.shared.applied_tx.subscribe()
    }
}

/// openraft state machine (and snapshot builder) on sled. Cheap to clone.
#[derive(Debug, Clone)]
pub struct SledStateMachine {
    db: sled::Db,
    tree: sled::Tree,
    snapshots: sled::Tree,
    shared: Arc<Shared>,
}

fn read_err(e: impl std::error::Error + 'static) -> StorageError {
    StorageIOError::read_state_machine(&e).into()
}

fn write_err(e: impl std::error::Error + 'static) -> StorageError {
    StorageIOError::write_state_machine(&e).into()
}

fn entity_key<K: Serialize>(prefix: u8, key: &K) -> Result<Vec<u8>, StorageError> {
    let mut out = vec![prefix];
    out.extend(codec::encode(key).map_err(write_err)?);
    Ok(out)
}

impl SledStateMachine {
    /// Opens the state machine trees of `db` and loads the state into memory.
    pub fn new(db: sled::Db) -> crate::Result<Self> {
        let tree = db.open_tree("state_machine")?;
        let snapshots = db.open_tree("snapshots")?;
        let data = load(&tree)?;
        let (applied_tx, _) = watch::channel(data.last_applied);
        Ok(Self {
            db,
            tree,
            snapshots,
            shared: Arc::new(Shared {
                data: RwLock::new(data),
                applied_tx,
                snapshot_seq: AtomicU64::new(0),
            }),
        })
    }

    /// A reader of the state, for the rest of the node.
    pub fn reader(&self) -> StateReader {
        StateReader {
            shared: self.shared.clone(),
        }
    }

    fn write_touched(
        batch: &mut sled::Batch,
        state: &ControlState,
        touched: &[Touched],
    ) -> Result<(), StorageError> {
        for t in touched {
            match t {
                Touched::Subscription(id) => {
                    let key = entity_key(P_SUB, id)?;
                    put_or_remove(batch, key, state.subscriptions.get(id))?;
                }
                Touched::Cursor(id) => {
                    let key = entity_key(P_CURSOR, id)?;
                    put_or_remove(batch, key, state.cursors.get(id))?;
                }
                Touched::Retries(id) => {
                    let key = entity_key(P_RETRY, id)?;
                    put_or_remove(batch, key, state.retries.get(id))?;
                }
                Touched::DeadLetter(id, p, o) => {
                    let k = (id.clone(), *p, *o);
                    let key = entity_key(P_DEAD, &k)?;
                    put_or_remove(batch, key, state.dead_letters.get(&k))?;
                }
                Touched::Node(n) => {
                    let key = entity_key(P_NODE, n)?;
                    put_or_remove(batch, key, state.nodes.get(n))?;
                }
                Touched::Gov(g) => Self::write_governance(batch, &state.governance, g)?,
                Touched::Endpoint(origin) => {
                    let key = entity_key(P_ENDPOINT, origin)?;
                    put_or_remove(batch, key, state.endpoints.get(origin))?;
                }
                Touched::Disabled(id) => {
                    let key = entity_key(P_DISABLED, id)?;
                    put_or_remove(batch, key, state.disabled.get(id))?;
                }
            }
        }
        Ok(())
    }

    fn write_governance(
        batch: &mut sled::Batch,
        g: &Governance,
        touched: &GovTouched,
    ) -> Result<(), StorageError> {
        match touched {
            GovTouched::Api(name) => {
                put_or_remove(batch, entity_key(P_API, name)?, g.apis.get(name))
            }
            GovTouched::Plan(name) => {
                put_or_remove(batch, entity_key(P_PLAN, name)?, g.plans.get(name))
            }
            GovTouched::Application(id) => {
                put_or_remove(batch, entity_key(P_APP, id)?, g.applications.get(id))
            }
            GovTouched::Key(id) => put_or_remove(batch, entity_key(P_KEY, id)?, g.keys.get(id)),
            GovTouched::Access(app, api) => {
                let k = (app.clone(), api.clone());
                put_or_remove(batch, entity_key(P_ACCESS, &k)?, g.access.get(&k))
            }
            GovTouched::Usage(k) => put_or_remove(batch, entity_key(P_USAGE, k)?, g.usage.get(k)),
            GovTouched::Connections(app, api) => {
                let k = (app.clone(), api.clone());
                put_or_remove(batch, entity_key(P_CONNS, &k)?, g.connections.get(&k))
            }
            GovTouched::WebsubApplication(id) => put_or_remove(
                batch,
                entity_key(P_WEBSUB_APPLICATION, id)?,
                g.websub_applications.get(id),
            ),
            GovTouched::WebsubKey(id) => {
                put_or_remove(batch, entity_key(P_WEBSUB_KEY, id)?, g.websub_keys.get(id))
            }
            GovTouched::WebsubReservation(id) => put_or_remove(
                batch,
                entity_key(P_WEBSUB_RESERVATION, id)?,
                g.websub_reservations.get(id),
            ),
            GovTouched::ClientSecret(id) => put_or_remove(
                batch,
                entity_key(P_CLIENT_SECRET, id)?,
                g.client_secrets.get(id),
            ),
            GovTouched::SigningKey(kid) => put_or_remove(
                batch,
                entity_key(P_SIGNING_KEY, kid)?,
                g.signing_keys.get(kid),
            ),
            GovTouched::Account(id) => {
                put_or_remove(batch, entity_key(P_ACCOUNT, id)?, g.accounts.get(id))
            }
            GovTouched::Session(id) => {
                put_or_remove(batch, entity_key(P_SESSION, id)?, g.sessions.get(id))
            }
            GovTouched::Invitation(id) => {
                put_or_remove(batch, entity_key(P_INVITATION, id)?, g.invitations.get(id))
            }
            GovTouched::Idempotency(id) => {
                put_or_remove(batch, entity_key(P_IDEMPOTENCY, id)?, g.idempotency.get(id))
            }
        }
    }

    fn write_all(batch: &mut sled::Batch, data: &StateMachineData) -> Result<(), StorageError> {
        let s = &data.state;
        for (id, v) in &s.subscriptions {
            batch.insert(entity_key(P_SUB, id)?, codec::encode(v).map_err(write_err)?);
        }
        for (id, v) in &s.cursors {
            batch.insert(
                entity_key(P_CURSOR, id)?,
                codec::encode(v).map_err(write_err)?,
            );
        }
        for (id, v) in &s.retries {
            batch.insert(
                entity_key(P_RETRY, id)?,
                codec::encode(v).map_err(write_err)?,
            );
        }
        for (k, v) in &s.dead_letters {
            batch.insert(entity_key(P_DEAD, k)?, codec::encode(v).map_err(write_err)?);
        }
        for (n, v) in &s.nodes {
            batch.insert(entity_key(P_NODE, n)?, codec::encode(v).map_err(write_err)?);
        }
        for (k, v) in &s.endpoints {
            batch.insert(entity_key(P_ENDPOINT, k)?, enc(v)?);
        }
        for (k, v) in &s.disabled {
            batch.insert(entity_key(P_DISABLED, k)?, enc(v)?);
        }
        let g = &s.governance;
        for (k, v) in &g.apis {
            batch.insert(entity_key(P_API, k)?, enc(v)?);
        }
        for (k, v) in &g.plans {
            batch.insert(entity_key(P_PLAN, k)?, enc(v)?);
        }
        for (k, v) in &g.applications {
            batch.insert(entity_key(P_APP, k)?, enc(v)?);
        }
        for (k, v) in &g.keys {
            batch.insert(entity_key(P_KEY, k)?, enc(v)?);
        }
        for (k, v) in &g.access {
            batch.insert(entity_key(P_ACCESS, k)?, enc(v)?);
        }
        for (k, v) in &g.usage {
            batch.insert(entity_key(P_USAGE, k)?, enc(v)?);
        }
        for (k, v) in &g.connections {
            batch.insert(entity_key(P_CONNS, k)?, enc(v)?);
        }
        for (k, v) in &g.websub_applications {
            batch.insert(entity_key(P_WEBSUB_APPLICATION, k)?, enc(v)?);
        }
        for (k, v) in &g.websub_keys {
            batch.insert(entity_key(P_WEBSUB_KEY, k)?, enc(v)?);
        }
        for (k, v) in &g.websub_reservations {
            batch.insert(entity_key(P_WEBSUB_RESERVATION, k)?, enc(v)?);
        }
        for (k, v) in &g.client_secrets {
            batch.insert(entity_key(P_CLIENT_SECRET, k)?, enc(v)?);
        }
        for (k, v) in &g.signing_keys {
            batch.insert(entity_key(P_SIGNING_KEY, k)?, enc(v)?);
        }
        for (k, v) in &g.accounts {
            batch.insert(entity_key(P_ACCOUNT, k)?, enc(v)?);
        }
        for (k, v) in &g.sessions {
            batch.insert(entity_key(P_SESSION, k)?, enc(v)?);
        }
        for (k, v) in &g.invitations {
            batch.insert(entity_key(P_INVITATION, k)?, enc(v)?);
        }
        for (k, v) in &g.idempotency {
            batch.insert(entity_key(P_IDEMPOTENCY, k)?, enc(v)?);
        }
        put_meta(batch, data)
    }
}

fn enc<V: Serialize>(value: &V) -> Result<Vec<u8>, StorageError> {
    codec::encode(value).map_err(write_err)
}

fn put_or_remove<V: Serialize>(
    batch: &mut sled::Batch,
    key: Vec<u8>,
    value: Option<&V>,
) -> Result<(), StorageError> {
    match value {
        Some(v) => batch.insert(key, codec::encode(v).map_err(write_err)?),
        None => batch.remove(key),
    }
    Ok(())
}

fn put_meta(batch: &mut sled::Batch, data: &StateMachineData) -> Result<(), StorageError> {
    batch.insert(
        APPLIED,
        codec::encode(&data.last_applied).map_err(write_err)?,
    );
    batch.insert(
        MEMBERSHIP,
        codec::encode(&data.membership).map_err(write_err)?,
    );
    Ok(())
}

fn load(tree: &sled::Tree) -> crate::Result<StateMachineData> {
    let mut data = StateMachineData::default();
    for item in tree.iter() {
        let (key, value) = item?;
        match key.as_ref() {
            APPLIED => data.last_applied = codec::decode(&value)?,
            MEMBERSHIP => data.membership = codec::decode(&value)?,
            [prefix, rest @ ..] => match *prefix {
                P_SUB => {
                    let id: String = codec::decode(rest)?;
                    data.state.subscriptions.insert(id, codec::decode(&value)?);
                }
                P_CURSOR => {
                    let id: String = codec::decode(rest)?;
                    data.state.cursors.insert(id, codec::decode(&value)?);
                }
                P_RETRY => {
                    let id: String = codec::decode(rest)?;
                    data.state.retries.insert(id, codec::decode(&value)?);
                }
                P_DEAD => {
                    let k: (String, u32, u64) = codec::decode(rest)?;
                    data.state.dead_letters.insert(k, codec::decode(&value)?);
                }
                P_NODE => {
                    let n: u64 = codec::decode(rest)?;
                    data.state.nodes.insert(n, codec::decode(&value)?);
                }
                P_ENDPOINT => {
                    let origin: String = codec::decode(rest)?;
                    data.state.endpoints.insert(origin, codec::decode(&value)?);
                }
                P_DISABLED => {
                    let id: String = codec::decode(rest)?;
                    data.state.disabled.insert(id, codec::decode(&value)?);
                }
                P_API => {
                    let g = &mut data.state.governance;
                    g.apis.insert(codec::decode(rest)?, codec::decode(&value)?);
                }
                P_PLAN => {
                    let g = &mut data.state.governance;
                    g.plans.insert(codec::decode(rest)?, codec::decode(&value)?);
                }
                P_APP => {
                    let g = &mut data.state.governance;
                    g.applications
                        .insert(codec::decode(rest)?, codec::decode(&value)?);
                }
                P_KEY => {
                    let g = &mut data.state.governance;
                    g.keys.insert(codec::decode(rest)?, codec::decode(&value)?);
                }
                P_ACCESS => {
                    let g = &mut data.state.governance;
                    g.access
                        .insert(codec::decode(rest)?, codec::decode(&value)?);
                }
                P_USAGE => {
                    let g = &mut data.state.governance;
                    g.usage.insert(codec::decode(rest)?, codec::decode(&value)?);
                }
                P_CONNS => {
                    let g = &mut data.state.governance;
                    g.connections
                        .insert(codec::decode(rest)?, codec::decode(&value)?);
                }
                P_WEBSUB_APPLICATION => {
                    let g = &mut data.state.governance;
                    g.websub_applications
                        .insert(codec::decode(rest)?, codec::decode(&value)?);
                }
                P_WEBSUB_KEY => {
                    let g = &mut data.state.governance;
                    g.websub_keys
                        .insert(codec::decode(rest)?, codec::decode(&value)?);
                }
                P_WEBSUB_RESERVATION => {
                    let g = &mut data.state.governance;
                    g.websub_reservations
                        .insert(codec::decode(rest)?, codec::decode(&value)?);
                }
                P_CLIENT_SECRET => {
                    let g = &mut data.state.governance;
                    g.client_secrets
                        .insert(codec::decode(rest)?, codec::decode(&value)?);
                }
                P_SIGNING_KEY => {
                    let g = &mut data.state.governance;
                    g.signing_keys
                        .insert(codec::decode(rest)?, codec::decode(&value)?);
                }
                P_ACCOUNT => {
                    let g = &mut data.state.governance;
                    g.accounts
                        .insert(codec::decode(rest)?, codec::decode(&value)?);
                }
                P_SESSION => {
                    let g = &mut data.state.governance;
                    g.sessions
                        .insert(codec::decode(rest)?, codec::decode(&value)?);
                }
                P_INVITATION => {
                    let g = &mut data.state.governance;
                    g.invitations
                        .insert(codec::decode(rest)?, codec::decode(&value)?);
                }
                P_IDEMPOTENCY => {
                    let g = &mut data.state.governance;
                    g.idempotency
                        .insert(codec::decode(rest)?, codec::decode(&value)?);
                }
                other => tracing::warn!(prefix = other, "unknown key in state machine tree"),
            },
            [] => {}
        }
    }
    Ok(data)
}

/// What a stored snapshot holds: its meta and the encoded [`StateMachineData`].
#[derive(Debug, Serialize, Deserialize)]
struct StoredSnapshot {
    meta: SnapshotMeta,
    data: Vec<u8>,
}

impl RaftSnapshotBuilder<TypeConfig> for SledStateMachine {
    async fn build_snapshot(&mut self) -> Result<Snapshot, StorageError> {
        let data = {
            let guard = self.shared.data.read().unwrap_or_else(|p| p.into_inner());
            guard.clone()
        };
        let bytes = codec::encode(&data).map_err(read_err)?;
        let seq = self.shared.snapshot_seq.fetch_add(1, Ordering::Relaxed);
        let snapshot_id = match data.last_applied {
            Some(id) => format!("{}-{}-{seq}", id.leader_id, id.index),
            None => format!("none-{seq}"),
        };
        let meta = SnapshotMeta {
            last_log_id: data.last_applied,
            last_membership: data.membership.clone(),
            snapshot_id,
        };
        // The snapshot lets openraft purge the log up to its last id: the state machine tree must
        // be durable at least that far before that happens, which `persist_snapshot` ensures.
        self.persist_snapshot(&meta, bytes.clone()).await?;
        tracing::info!(snapshot = %meta.snapshot_id, size = bytes.len(), "snapshot built");
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(bytes)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for SledStateMachine {
    type SnapshotBuilder = Self;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        let data = self.shared.data.read().unwrap_or_else(|p| p.into_inner());
        Ok((data.last_applied, data.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Response>, StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut responses = Vec::new();
        let mut batch = sled::Batch::default();
        let last_applied = {
            let mut data = self.shared.data.write().unwrap_or_else(|p| p.into_inner());
            let mut touched = Vec::new();
            for entry in entries {
                data.last_applied = Some(entry.log_id);
                let response = match entry.payload {
                    EntryPayload::Blank => Response::Applied,
                    EntryPayload::Normal(request) => {
                        if request.format > FORMAT_VERSION {
                            tracing::error!(
                                format = request.format,
                                supported = FORMAT_VERSION,
                                log_index = entry.log_id.index,
                                "command written by a newer eventgate: not applied, upgrade this node"
                            );
                            Response::UnsupportedFormat {
                                found: request.format,
                            }
                        } else {
                            match &request.command {
                                // A leader's decision holds only in the term it was made in.
                                Command::MoveOwners { term, .. }
                                    if *term != 0 && *term != entry.log_id.leader_id.term =>
                                {
                                    Response::Refused {
                                        reason: format!(
                                            "ownership decided in term {term}, committed in term {}",
                                            entry.log_id.leader_id.term
                                        ),
                                    }
                                }
                                command => data.state.apply(command, &mut touched),
                            }
                        }
                    }
                    EntryPayload::Membership(membership) => {
                        data.membership = StoredMembership::new(Some(entry.log_id), membership);
                        Response::Applied
                    }
                };
                responses.push(response);
            }
            touched.sort();
            touched.dedup();
            Self::write_touched(&mut batch, &data.state, &touched)?;
            put_meta(&mut batch, &data)?;
            data.last_applied
        };
        self.tree.apply_batch(batch).map_err(write_err)?;
        self.shared.applied_tx.send_replace(last_applied);
        Ok(responses)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let signature = Some(meta.signature());
        let bytes = snapshot.into_inner();
        let mut data: StateMachineData = codec::decode(&bytes)
            .map_err(|e| StorageIOError::read_snapshot(signature.clone(), &e))?;
        data.last_applied = meta.last_log_id;
        data.membership = meta.last_membership.clone();

        // Replace the tree in one atomic batch: remove every key, then write the new state.
        let mut batch = sled::Batch::default();
        for item in self.tree.iter().keys() {
            batch.remove(item.map_err(read_err)?);
        }
        Self::write_all(&mut batch, &data)?;
        self.tree.apply_batch(batch).map_err(write_err)?;

        self.persist_snapshot(meta, bytes).await?;

        let applied = data.last_applied;
        *self.shared.data.write().unwrap_or_else(|p| p.into_inner()) = data;
        self.shared.applied_tx.send_replace(applied);
        tracing::info!(snapshot = %meta.snapshot_id, "snapshot installed");
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, StorageError> {
        let Some(encoded) = self.snapshots.get(SNAPSHOT).map_err(read_err)? else {
            return Ok(None);
        };
        let stored: StoredSnapshot = codec::decode(&encoded).map_err(read_err)?;
        Ok(Some(Snapshot {
            meta: stored.meta,
            snapshot: Box::new(Cursor::new(stored.data)),
        }))
    }
}

/// Opens (or creates) the node's store at `path`: the log store and the state machine, sharing
/// one sled database.
pub fn open_store(
    path: &std::path::Path,
) -> crate::Result<(crate::log_store::SledLogStore, SledStateMachine)> {
    let db = sled::Config::new()
        .path(path)
        .mode(sled::Mode::HighThroughput)
        .open()?;
    let log = crate::log_store::SledLogStore::new(db.clone())?;
    let sm = SledStateMachine::new(db)?;
    Ok((log, sm))
}

impl SledStateMachine {
    /// Stores `data` as the current snapshot and flushes the whole database (state machine
    /// tree included).
    async fn persist_snapshot(
        &self,
        meta: &SnapshotMeta,
        data: Vec<u8>,
    ) -> Result<(), StorageError> {
        let signature = Some(meta.signature());
        let stored = StoredSnapshot {
            meta: meta.clone(),
            data,
        };
        let encoded = codec::encode(&stored)
            .map_err(|e| StorageIOError::write_snapshot(signature.clone(), &e))?;
        self.snapshots
            .insert(SNAPSHOT, encoded)
            .map_err(|e| StorageIOError::write_snapshot(signature.clone(), &e))?;
        self.db
            .flush_async()
            .await
            .map_err(|e| StorageIOError::write_snapshot(signature, &e))?;
        Ok(())
    }

    /// Flushes everything written so far (log and state machine share the database).
    pub async fn flush(&self) -> crate::Result<()> {
        self.db.flush_async().await?;
        Ok(())
    }
}

/// The replicated state without a log, Raft or disk: each command is applied as it comes, in
/// the order of the calls, through the same [`ControlState::apply`] the sled state machine
/// uses, and read through the same [`StateReader`] (whose watch fires on every apply). For
/// tests of the layers above (the delivery actors' control-plane seam) and for benches.
#[derive(Debug, Clone)]
pub struct MemoryStateMachine {
    shared: Arc<Shared>,
}

impl Default for MemoryStateMachine {
    fn default() -> Self {
        Self::new(ControlState::default())
    }
}

impl MemoryStateMachine {
    /// A state machine holding `state`, as if nothing had been applied yet.
    pub fn new(state: ControlState) -> Self {
        let (applied_tx, _) = watch::channel(None);
        Self {
            shared: Arc::new(Shared {
                data: RwLock::new(StateMachineData {
                    state,
                    ..StateMachineData::default()
                }),
                applied_tx,
                snapshot_seq: AtomicU64::new(0),
            }),
        }
    }

    /// A reader of the state.
    pub fn reader(&self) -> StateReader {
        StateReader {
            shared: self.shared.clone(),
        }
    }

    /// Applies `command` as the next log entry (term 1, leader 0) and answers what applying
    /// it said.
    pub fn apply(&self, command: &Command) -> Response {
        let (response, applied) = {
            let mut data = self.shared.data.write().unwrap_or_else(|p| p.into_inner());
            let index = data.last_applied.map_or(1, |l| l.index + 1);
            let log_id = LogId::new(openraft::CommittedLeaderId::new(1, 0), index);
            data.last_applied = Some(log_id);
            let mut touched = Vec::new();
            (data.state.apply(command, &mut touched), data.last_applied)
        };
        self.shared.applied_tx.send_replace(applied);
        response
    }
}
