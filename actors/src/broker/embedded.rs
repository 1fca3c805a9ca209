//! The embedded broker: an append-only log per topic on local disk, one partition each.
//!
//! A topic is a directory of segment files named by their first offset (`00000000000000000000.log`).
//! A segment starts with an 8-byte magic and holds records framed as
//! `[u32 length LE][u32 crc32 LE][body]`, the body a versioned bincode `StoredRecord`; a record's
//! offset is its segment's base plus its index. One writer task per topic appends in batches and
//! fsyncs once per batch (group commit) before any publisher of the batch is answered. Opening a
//! topic scans its segments; a torn tail in the last segment (a crash mid-write) is cut off,
//! damage anywhere else is refused. Retention drops whole segments, oldest first, by age and by
//! total size; the segment being written is never dropped.
//!
//! It serves one node: in a cluster, use Kafka or MQTT so that every node reads the same log.

use eventgate_raft_store::clock::now_ms;
use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot, watch};

use super::{
    validate_topic_name, BrokerDriver, BrokerError, BrokerResult, Message, OutgoingMessage,
    PartitionConsumer, Position, StartAt,
};

const MAGIC: &[u8; 8] = b"EGLOG\x00\x00\x01";
const FRAME_HEADER: u64 = 8;
/// Records appended in one batch (one fsync) at most.
const MAX_BATCH_RECORDS: usize = 4096;
/// Bytes appended in one batch at most.
const MAX_BATCH_BYTES: usize = 8 * 1024 * 1024;

/// Settings of the embedded broker.
#[derive(Debug, Clone)]
pub struct EmbeddedConfig {
    /// Directory holding one sub-directory per topic.
    pub dir: PathBuf,
    /// A segment is closed and a new one started past this size.
    pub segment_bytes: u64,
    /// Segments whose newest record is older than this are deleted.
    pub retention_age: Option<Duration>,
    /// Oldest segments are deleted while a topic is larger than this.
    pub retention_bytes: Option<u64>,
    /// Largest message accepted (payload, key and headers together).
    pub max_message_bytes: usize,
}

impl EmbeddedConfig {
    /// Defaults under `dir`: 64 MiB segments, 7 days and no size limit, 16 MiB messages.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            segment_bytes: 64 * 1024 * 1024,
            retention_age: Some(Duration::from_secs(7 * 24 * 3600)),
            retention_bytes: None,
            max_message_bytes: 16 * 1024 * 1024,
        }
    }
}

/// One record on disk. Byte fields are (de)serialized as byte strings (`serde_bytes`), not as
/// sequences of `u8`: the same bytes in bincode, without a call per byte.
#[derive(Debug, Serialize, Deserialize)]
struct StoredRecord {
    timestamp_ms: u64,
    #[serde(with = "serde_bytes")]
    key: Option<Vec<u8>>,
    headers: Vec<(String, serde_bytes::ByteBuf)>,
    content_type: Option<String>,
    #[serde(with = "serde_bytes")]
    payload: Vec<u8>,
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> BrokerError + '_ {
    move |source| BrokerError::Io {
        path: path.display().to_string(),
        source,
    }
}

fn segment_path(dir: &Path, base: u64) -> PathBuf {
    dir.join(format!("{base:020}.log"))
}

#[derive(Debug)]
struct Segment {
    base: u64,
    path: PathBuf,
    file: Arc<File>,
    /// File position of each record; record `i` has offset `base + i`.
    positions: Vec<u64>,
    /// Bytes in the file, header included.
    size: u64,
    newest_ms: u64,
}

impl Segment {
    fn end(&self) -> u64 {
        self.base + self.positions.len() as u64
    }
}

#[derive(Debug)]
struct LogState {
    segments: Vec<Segment>,
}

impl LogState {
    fn start(&self) -> u64 {
        self.segments.first().map_or(0, |s| s.base)
    }

    fn end(&self) -> u64 {
        self.segments.last().map_or(0, Segment::end)
    }
}

/// Scans one segment file; answers its records' positions and newest timestamp, and the size
/// of its valid prefix (where a torn tail starts, if any).
fn scan_segment(path: &Path) -> BrokerResult<(Vec<u64>, u64, u64, bool)> {
    let bytes = std::fs::read(path).map_err(io_err(path))?;
    if bytes.len() < MAGIC.len() || &bytes[..MAGIC.len()] != MAGIC {
        return Err(BrokerError::Corrupt {
            path: path.display().to_string(),
            reason: "not an eventgate log segment (bad magic)".to_owned(),
        });
    }
    let mut positions = Vec::new();
    let mut newest = 0;
    let mut pos = MAGIC.len();
    let torn = loop {
        if pos == bytes.len() {
            break false;
        }
        if pos + FRAME_HEADER as usize > bytes.len() {
            break true;
        }
        let len = u32::from_le_bytes(bytes[pos..pos + 4].try_into().expect("4 bytes")) as usize;
        let crc = u32::from_le_bytes(bytes[pos + 4..pos + 8].try_into().expect("4 bytes"));
        let body_start = pos + FRAME_HEADER as usize;
        if body_start + len > bytes.len() {
            break true;
        }
        let body = &bytes[body_start..body_start + len];
        if crc32fast::hash(body) != crc {
            break true;
        }
        match eventgate_raft_store::codec::decode::<StoredRecord>(body) {
            Ok(record) => newest = newest.max(record.timestamp_ms),
            Err(_) => break true,
        }
        positions.push(pos as u64);
        pos = body_start + len;
    };
    Ok((positions, newest, pos as u64, torn))
}

fn create_segment(dir: &Path, base: u64) -> BrokerResult<(File, Segment)> {
    let path = segment_path(dir, base);
    let mut file = OpenOptions::new()
        .create_new(true)
        .append(true)
        .read(true)
        .open(&path)
        .map_err(io_err(&path))?;
    file.write_all(MAGIC).map_err(io_err(&path))?;
    file.sync_all().map_err(io_err(&path))?;
    sync_dir(dir)?;
    let reader = File::open(&path).map_err(io_err(&path))?;
    Ok((
        file,
        Segment {
            base,
            path,
            file: Arc::new(reader),
            positions: Vec::new(),
            size: MAGIC.len() as u64,
            newest_ms: 0,
        },
    ))
}

fn sync_dir(dir: &Path) -> BrokerResult<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir))
}

/// Opens (recovering) or creates the log in `dir`; answers the segments and the writable file
/// of the last one.
fn open_log(dir: &Path) -> BrokerResult<(Vec<Segment>, File)> {
    std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    let mut bases = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io_err(dir))? {
        let entry = entry.map_err(io_err(dir))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if let Some(stem) = name.strip_suffix(".log") {
            if let Ok(base) = stem.parse::<u64>() {
                bases.push(base);
            }
        }
    }
    bases.sort_unstable();
    if bases.is_empty() {
        let (file, segment) = create_segment(dir, 0)?;
        return Ok((vec![segment], file));
    }
    let mut segments: Vec<Segment> = Vec::new();
    let last = bases.len() - 1;
    for (i, base) in bases.iter().copied().enumerate() {
        let path = segment_path(dir, base);
        let (positions, newest_ms, valid, torn) = scan_segment(&path)?;
        if let Some(prev) = segments.last() {
            if prev.end() != base {
                return Err(BrokerError::Corrupt {
                    path: path.display().to_string(),
                    reason: format!(
                        "starts at offset {base} but the previous segment ends at {}",
                        prev.end()
                    ),
                });
            }
        }
        if torn {
            if i != last {
                return Err(BrokerError::Corrupt {
                    path: path.display().to_string(),
                    reason: format!("damaged record at byte {valid} of a closed segment"),
                });
            }
            tracing::warn!(path = %path.display(), valid_bytes = valid, "cutting a torn tail from the log (crash during a write)");
            let f = OpenOptions::new()
                .write(true)
                .open(&path)
                .map_err(io_err(&path))?;
            f.set_len(valid).map_err(io_err(&path))?;
            f.sync_all().map_err(io_err(&path))?;
        }
        let reader = File::open(&path).map_err(io_err(&path))?;
        segments.push(Segment {
            base,
            path,
            file: Arc::new(reader),
            positions,
            size: valid,
            newest_ms,
        });
    }
    let active_path = &segments[last].path;
    let file = OpenOptions::new()
        .append(true)
        .open(active_path)
        .map_err(io_err(active_path))?;
    Ok((segments, file))
}

struct AppendRequest {
    frame: Vec<u8>,
    timestamp_ms: u64,
    reply: oneshot::Sender<BrokerResult<u64>>,
}

/// One topic's log: a writer task and shared read state.
#[derive(Debug)]
struct TopicLog {
    name: String,
    state: RwLock<LogState>,
    end: watch::Sender<u64>,
    appends: mpsc::Sender<AppendRequest>,
}

struct Writer {
    dir: PathBuf,
    file: File,
    config: EmbeddedConfig,
}

impl TopicLog {
    fn open(name: &str, config: &EmbeddedConfig) -> BrokerResult<Arc<Self>> {
        let dir = config.dir.join(name);
        let (segments, file) = open_log(&dir)?;
        let state = LogState { segments };
        let (end, _) = watch::channel(state.end());
        let (tx, rx) = mpsc::channel(MAX_BATCH_RECORDS);
        let log = Arc::new(Self {
            name: name.to_owned(),
            state: RwLock::new(state),
            end,
            appends: tx,
        });
        let writer = Writer {
            dir,
            file,
            config: config.clone(),
        };
        tokio::spawn(run_writer(Arc::downgrade(&log), writer, rx));
        Ok(log)
    }

    fn read_state<R>(&self, f: impl FnOnce(&LogState) -> R) -> R {
        f(&self.state.read().unwrap_or_else(|p| p.into_inner()))
    }

    async fn append(&self, frame: Vec<u8>, timestamp_ms: u64) -> BrokerResult<u64> {
        let (reply, answer) = oneshot::channel();
        let unavailable = || BrokerError::Unavailable {
            reason: format!("writer of topic `{}` stopped", self.name),
        };
        self.appends
            .send(AppendRequest {
                frame,
                timestamp_ms,
                reply,
            })
            .await
            .map_err(|_| unavailable())?;
        answer.await.map_err(|_| unavailable())?
    }

    /// Reads up to `max` records from `from` (clamped to the retained range).
    async fn read(&self, from: u64, max: usize) -> BrokerResult<Vec<Message>> {
        // Pick the byte range under the lock, read it outside.
        let plan = self.read_state(|state| {
            let from = from.max(state.start());
            let seg = state
                .segments
                .iter()
                .rev()
                .find(|s| s.base <= from && from < s.end())?;
            let first = (from - seg.base) as usize;
            let last = (first + max).min(seg.positions.len());
            let start_pos = seg.positions[first];
            let end_pos = seg.positions.get(last).copied().unwrap_or(seg.size);
            Some((
                seg.file.clone(),
                seg.path.clone(),
                from,
                seg.positions[first..last].to_vec(),
                start_pos,
                end_pos,
            ))
        });
        let Some((file, path, first_offset, positions, start_pos, end_pos)) = plan else {
            return Ok(Vec::new());
        };
        tokio::task::spawn_blocking(move || {
            let mut buf = vec![0u8; (end_pos - start_pos) as usize];
            file.read_exact_at(&mut buf, start_pos)
                .map_err(io_err(&path))?;
            let mut out = Vec::with_capacity(positions.len());
            for (i, pos) in positions.iter().enumerate() {
                let at = (pos - start_pos) as usize;
                let len = u32::from_le_bytes(buf[at..at + 4].try_into().expect("4 bytes")) as usize;
                let body = &buf[at + FRAME_HEADER as usize..at + FRAME_HEADER as usize + len];
                let record: StoredRecord =
                    eventgate_raft_store::codec::decode(body).map_err(|e| {
                        BrokerError::Corrupt {
                            path: path.display().to_string(),
                            reason: format!("record at byte {pos}: {e}"),
                        }
                    })?;
                out.push(Message {
                    partition: 0,
                    offset: first_offset + i as u64,
                    timestamp_ms: record.timestamp_ms,
                    key: record.key.map(Bytes::from),
                    headers: record
                        .headers
                        .into_iter()
                        .map(|(k, v)| (k, Some(Bytes::from(v.into_vec()))))
                        .collect(),
                    content_type: record.content_type,
                    payload: Bytes::from(record.payload),
                    tombstone: false,
                });
            }
            Ok(out)
        })
        .await
        .map_err(|e| BrokerError::Unavailable {
            reason: format!("read task failed: {e}"),
        })?
    }
}

async fn run_writer(
    log: std::sync::Weak<TopicLog>,
    mut writer: Writer,
    mut rx: mpsc::Receiver<AppendRequest>,
) {
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        let mut bytes = batch[0].frame.len();
        while batch.len() < MAX_BATCH_RECORDS && bytes < MAX_BATCH_BYTES {
            match rx.try_recv() {
                Ok(req) => {
                    bytes += req.frame.len();
                    batch.push(req);
                }
                Err(_) => break,
            }
        }
        let Some(log) = log.upgrade() else { return };
        let frames: Vec<(Vec<u8>, u64)> = batch
            .iter_mut()
            .map(|r| (std::mem::take(&mut r.frame), r.timestamp_ms))
            .collect();
        let needs_roll = log.read_state(|s| {
            let active = s.segments.last().expect("a log has an active segment");
            !active.positions.is_empty() && active.size + bytes as u64 > writer.config.segment_bytes
        });
        let next_offset = log.read_state(LogState::end);
        let result = tokio::task::spawn_blocking(move || {
            let mut new_segment = None;
            if needs_roll {
                let (file, segment) = create_segment(&writer.dir, next_offset)?;
                writer.file = file;
                new_segment = Some(segment);
            }
            let mut buf = Vec::with_capacity(bytes + frames.len() * FRAME_HEADER as usize);
            let mut lens = Vec::with_capacity(frames.len());
            for (frame, _) in &frames {
                buf.extend_from_slice(&(frame.len() as u32).to_le_bytes());
                buf.extend_from_slice(&crc32fast::hash(frame).to_le_bytes());
                buf.extend_from_slice(frame);
                lens.push(FRAME_HEADER + frame.len() as u64);
            }
            let path = writer.dir.clone();
            writer.file.write_all(&buf).map_err(io_err(&path))?;
            writer.file.sync_data().map_err(io_err(&path))?;
            let newest = frames.iter().map(|(_, t)| *t).max().unwrap_or(0);
            Ok::<_, BrokerError>((writer, new_segment, lens, newest))
        })
        .await;
        let (w, new_segment, lens, newest) = match result {
            Ok(Ok(done)) => done,
            Ok(Err(e)) => return fail_batch(&log, batch, &e),
            Err(e) => {
                let e = BrokerError::Unavailable {
                    reason: format!("write task failed: {e}"),
                };
                return fail_batch(&log, batch, &e);
            }
        };
        writer = w;
        let first = {
            let mut state = log.state.write().unwrap_or_else(|p| p.into_inner());
            if let Some(segment) = new_segment {
                state.segments.push(segment);
            }
            let active = state.segments.last_mut().expect("active segment");
            let first = active.end();
            for len in lens {
                active.positions.push(active.size);
                active.size += len;
            }
            active.newest_ms = active.newest_ms.max(newest);
            first
        };
        log.end.send_replace(log.read_state(LogState::end));
        for (i, req) in batch.into_iter().enumerate() {
            let _ = req.reply.send(Ok(first + i as u64));
        }
        if needs_roll {
            apply_retention(&log, &writer.config, now_ms());
        }
    }
}

/// Answers every publisher of a failed batch. The writer then stops: a failed write may have
/// left a partial frame, and nothing may be appended after it; reopening the topic cuts it.
fn fail_batch(log: &TopicLog, batch: Vec<AppendRequest>, e: &BrokerError) {
    tracing::error!(topic = %log.name, error = %e, "append failed; the topic's writer stops");
    let reason = e.to_string();
    for req in batch {
        let _ = req.reply.send(Err(BrokerError::Unavailable {
            reason: reason.clone(),
        }));
    }
}

/// Deletes closed segments past the retention limits (ages judged at `now`, unix ms), oldest
/// first.
fn apply_retention(log: &TopicLog, config: &EmbeddedConfig, now: u64) {
    let doomed: Vec<PathBuf> = {
        let mut state = log.state.write().unwrap_or_else(|p| p.into_inner());
        let mut doomed = Vec::new();
        loop {
            if state.segments.len() <= 1 {
                break;
            }
            let total: u64 = state.segments.iter().map(|s| s.size).sum();
            let oldest = &state.segments[0];
            let too_old = config
                .retention_age
                .is_some_and(|age| now.saturating_sub(oldest.newest_ms) > age.as_millis() as u64);
            let too_big = config.retention_bytes.is_some_and(|limit| total > limit);
            if !(too_old || too_big) {
                break;
            }
            doomed.push(state.segments.remove(0).path);
        }
        doomed
    };
    for path in doomed {
        tracing::info!(topic = %log.name, path = %path.display(), "retention: segment deleted");
        if let Err(e) = std::fs::remove_file(&path) {
            tracing::warn!(path = %path.display(), error = %e, "retention: could not delete segment");
        }
    }
}

/// How often retention is checked on every topic (besides whenever a segment closes), so that
/// age limits hold on topics nobody writes to.
pub const RETENTION_SWEEP_EVERY: Duration = Duration::from_secs(60);

/// The embedded broker: topics as local append-only logs.
#[derive(Debug)]
pub struct EmbeddedBroker {
    config: EmbeddedConfig,
    topics: Mutex<HashMap<String, Arc<TopicLog>>>,
}

impl EmbeddedBroker {
    /// Opens the broker in `config.dir`, recovering every topic found there.
    pub fn open(config: EmbeddedConfig) -> BrokerResult<Arc<Self>> {
        std::fs::create_dir_all(&config.dir).map_err(io_err(&config.dir))?;
        let broker = Arc::new(Self {
            config,
            topics: Mutex::new(HashMap::new()),
        });
        let dir = broker.config.dir.clone();
        for entry in std::fs::read_dir(&dir).map_err(io_err(&dir))? {
            let entry = entry.map_err(io_err(&dir))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if entry.path().is_dir() && validate_topic_name(&name).is_ok() {
                broker.topic(&name, true)?;
            }
        }
        let weak = Arc::downgrade(&broker);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(RETENTION_SWEEP_EVERY).await;
                let Some(broker) = weak.upgrade() else { return };
                broker.enforce_retention_at(now_ms());
            }
        });
        Ok(broker)
    }

    fn topic(&self, name: &str, create: bool) -> BrokerResult<Arc<TopicLog>> {
        validate_topic_name(name)?;
        let mut topics = self.topics.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(log) = topics.get(name) {
            return Ok(log.clone());
        }
        if !create {
            return Err(BrokerError::TopicNotFound {
                topic: name.to_owned(),
            });
        }
        let log = TopicLog::open(name, &self.config)?;
        topics.insert(name.to_owned(), log.clone());
        Ok(log)
    }

    /// Applies the retention limits to every topic as of `now` (unix ms).
    pub fn enforce_retention_at(&self, now: u64) {
        let logs: Vec<Arc<TopicLog>> = self
            .topics
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect();
        for log in logs {
            apply_retention(&log, &self.config, now);
        }
    }

    /// First and next offsets of `topic` (the retained range is `start..end`).
    pub fn offsets(&self, topic: &str) -> BrokerResult<(u64, u64)> {
        let log = self.topic(topic, false)?;
        Ok(log.read_state(|s| (s.start(), s.end())))
    }
}

fn check_partition(topic: &str, partition: u32) -> BrokerResult<()> {
    if partition == 0 {
        Ok(())
    } else {
        Err(BrokerError::PartitionNotFound {
            topic: topic.to_owned(),
            partition,
        })
    }
}

impl BrokerDriver for EmbeddedBroker {
    fn name(&self) -> &'static str {
        "embedded"
    }

    fn topic_exists<'a>(&'a self, topic: &'a str) -> BoxFuture<'a, BrokerResult<bool>> {
        Box::pin(async move {
            validate_topic_name(topic)?;
            Ok(self
                .topics
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .contains_key(topic))
        })
    }

    fn ensure_topic<'a>(&'a self, topic: &'a str) -> BoxFuture<'a, BrokerResult<()>> {
        Box::pin(async move { self.topic(topic, true).map(|_| ()) })
    }

    fn partitions<'a>(&'a self, topic: &'a str) -> BoxFuture<'a, BrokerResult<u32>> {
        Box::pin(async move { self.topic(topic, false).map(|_| 1) })
    }

    fn latest_offsets<'a>(
        &'a self,
        topic: &'a str,
    ) -> BoxFuture<'a, BrokerResult<Vec<(u32, u64)>>> {
        Box::pin(async move {
            let log = self.topic(topic, false)?;
            Ok(vec![(0, log.read_state(LogState::end))])
        })
    }

    fn publish<'a>(
        &'a self,
        topic: &'a str,
        message: OutgoingMessage,
    ) -> BoxFuture<'a, BrokerResult<Option<Position>>> {
        Box::pin(async move {
            let log = self.topic(topic, false)?;
            let size = message.payload.len()
                + message.key.as_ref().map_or(0, Bytes::len)
                + message
                    .headers
                    .iter()
                    .map(|(k, v)| k.len() + v.len())
                    .sum::<usize>();
            if size > self.config.max_message_bytes {
                return Err(BrokerError::MessageTooLarge {
                    size,
                    limit: self.config.max_message_bytes,
                });
            }
            let timestamp_ms = now_ms();
            let record = StoredRecord {
                timestamp_ms,
                key: message.key.map(|k| k.to_vec()),
                headers: message
                    .headers
                    .into_iter()
                    .map(|(k, v)| (k, serde_bytes::ByteBuf::from(v.to_vec())))
                    .collect(),
                content_type: message.content_type,
                payload: message.payload.to_vec(),
            };
            let frame = eventgate_raft_store::codec::encode(&record).map_err(|e| {
                BrokerError::Unavailable {
                    reason: format!("encode record: {e}"),
                }
            })?;
            let offset = log.append(frame, timestamp_ms).await?;
            Ok(Some(Position {
                partition: 0,
                offset,
            }))
        })
    }

    fn consumer<'a>(
        &'a self,
        topic: &'a str,
        partition: u32,
        start: StartAt,
    ) -> BoxFuture<'a, BrokerResult<Box<dyn PartitionConsumer>>> {
        Box::pin(async move {
            check_partition(topic, partition)?;
            let log = self.topic(topic, false)?;
            let end = log.end.subscribe();
            let (first, last) = log.read_state(|s| (s.start(), s.end()));
            let next = match start {
                StartAt::Earliest => first,
                StartAt::Latest => last,
                StartAt::Offset(o) => o.max(first),
            };
            Ok(Box::new(EmbeddedConsumer { log, next, end }) as Box<dyn PartitionConsumer>)
        })
    }
}

/// A reader of an embedded topic.
#[derive(Debug)]
struct EmbeddedConsumer {
    log: Arc<TopicLog>,
    next: u64,
    end: watch::Receiver<u64>,
}

impl PartitionConsumer for EmbeddedConsumer {
    fn next_batch(
        &mut self,
        max: usize,
        wait: Duration,
    ) -> BoxFuture<'_, BrokerResult<Vec<Message>>> {
        Box::pin(async move {
            let deadline = tokio::time::Instant::now() + wait;
            loop {
                let end = *self.end.borrow_and_update();
                if self.next < end {
                    let start = self.log.read_state(LogState::start);
                    if self.next < start {
                        tracing::warn!(
                            topic = %self.log.name,
                            from = self.next,
                            to = start,
                            "consumer fell behind retention; skipping to the oldest retained message"
                        );
                        self.next = start;
                    }
                    let messages = self.log.read(self.next, max.max(1)).await?;
                    if let Some(last) = messages.last() {
                        self.next = last.offset + 1;
                    }
                    return Ok(messages);
                }
                match tokio::time::timeout_at(deadline, self.end.changed()).await {
                    Ok(Ok(())) => {}
                    Ok(Err(_)) => {
                        return Err(BrokerError::Unavailable {
                            reason: format!("topic `{}` closed", self.log.name),
                        })
                    }
                    Err(_) => return Ok(Vec::new()),
                }
            }
        })
    }

    fn position(&self) -> u64 {
        self.next
    }
}

#[cfg(test)]
mod tests;
