//! Many nodes on one Redis: each room's log, its snapshots, its fan-out, and which
//! nodes are alive.
//!
//! Per room, Redis holds a counter, a stream (the log) and the latest snapshot, under
//! keys that share a hash tag. One Lua script appends: it numbers the entries it is
//! given from the counter, adds them to the stream and publishes them in one message,
//! atomically, so Redis decides the one order every node applies (what a node batches,
//! and when: `room::appends`). Nodes subscribe to the rooms they hold; a number that
//! skips ahead means entries were missed, and the node reads them from the stream
//! before applying more. Nodes heartbeat with expiring keys; a node whose key expired
//! is taken for dead, and the rooms it had participants in are told so.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::AsyncCommands;
use roomstate_protocol::{ErrorBody, ErrorCode};
use serde::Deserialize;
use tokio::sync::{mpsc, oneshot};

use crate::rules::command::{Command, LogEntry};

/// How to reach the cluster's Redis, and how quickly to give up on it and on dead nodes.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterConfig {
    /// `redis://host:port/db`
    pub url: String,
    /// This node's name; random when unset. Must be unique in the cluster.
    pub node_id: Option<String>,
    /// Prefix of every Redis key and channel, so clusters can share a Redis.
    pub prefix: String,
    /// How often the node refreshes its heartbeat and looks for dead nodes.
    pub heartbeat_ms: u64,
    /// A node whose heartbeat is this old is dead: its participants are removed.
    pub node_timeout_ms: u64,
    /// How long a Redis command may take before the node answers `unavailable` (or
    /// `outcome_unknown`, for a change that may have been stored meanwhile).
    pub timeout_ms: u64,
    /// Bytes of log entries the node may have queued for Redis, all rooms together
    /// (one room at most 8 MiB); past it, connections that submit more are not read
    /// until the queue drains.
    pub queue_bytes: usize,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            url: String::new(),
            node_id: None,
            prefix: "roomstate".into(),
            heartbeat_ms: 1_000,
            node_timeout_ms: 5_000,
            timeout_ms: 1_000,
            queue_bytes: 64 << 20,
        }
    }
}

/// Redis could not be reached, or did not answer in time. (An append says more:
/// [`NotAppended`].)
#[derive(Debug, Clone)]
pub struct Unavailable(pub String);

/// Why entries are not known to be in a room's log.
#[derive(Debug, Clone, PartialEq)]
pub enum NotAppended {
    /// Redis never got them: nothing was changed.
    NotSent(String),
    /// The call carrying them failed under way, so Redis may have stored them after
    /// all; if it did, every node applies them as usual.
    Unknown(String),
}

impl From<NotAppended> for Unavailable {
    fn from(not_appended: NotAppended) -> Self {
        match not_appended {
            NotAppended::NotSent(problem) | NotAppended::Unknown(problem) => Unavailable(problem),
        }
    }
}

impl NotAppended {
    pub fn problem(&self) -> &str {
        match self {
            NotAppended::NotSent(problem) | NotAppended::Unknown(problem) => problem,
        }
    }

    /// The error a request that appended it is answered with.
    pub fn error_body(&self) -> ErrorBody {
        match self {
            NotAppended::NotSent(problem) => ErrorBody::new(
                ErrorCode::Unavailable,
                format!("the room's shared state cannot be reached: {problem}"),
            ),
            NotAppended::Unknown(problem) => ErrorBody::new(
                ErrorCode::OutcomeUnknown,
                format!("the room's shared state stopped answering: {problem}"),
            ),
        }
    }
}

impl From<redis::RedisError> for Unavailable {
    fn from(error: redis::RedisError) -> Self {
        Unavailable(format!("redis: {error}"))
    }
}

/// Where an entry is in a room's log: its number (1, 2, ...) and its stream id.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Position {
    pub n: u64,
    pub id: String,
}

impl Position {
    /// Whether this entry was appended after `other` although its number is not higher:
    /// Redis lost the room's log (restarted without it, or from an older save) and
    /// numbers it again from where its copy stops.
    pub fn renumbered_since(&self, other: &Position) -> bool {
        fn parse(id: &str) -> Option<(u64, u64)> {
            let (ms, seq) = id.split_once('-')?;
            Some((ms.parse().ok()?, seq.parse().ok()?))
        }
        match (parse(&self.id), parse(&other.id)) {
            (Some(this), Some(that)) => self.n <= other.n && this > that,
            _ => false,
        }
    }
}

/// What the cluster hands to the node's rooms.
pub enum Delivery {
    /// Entries appended to a room this node subscribed to, as published: one
    /// `"<n> <stream id> <entry>"` line each (`published_entries` reads them). Parsed
    /// by the room, which skips the entries it already applied (its own).
    Published { room: String, payload: String },
    /// The subscription connection came back: anything may have been missed.
    Resubscribed,
    /// A dead node's participants were removed from `room` by an entry this node
    /// appended: the node should apply it now (and send its webhooks), even if it
    /// holds no copy of the room.
    Reaped { room: String },
}

enum Subscription {
    Add(String, oneshot::Sender<Result<(), Unavailable>>),
    Remove(String),
}

/// Appends entries in the order given: numbers them, stores them, publishes them in
/// one message, a line each. KEYS: counter, stream. ARGV: channel, entry, entry...
/// Returns {n of the first, {stream id, ...}}.
const APPEND: &str = r"
local count = #ARGV - 1
local first = redis.call('INCRBY', KEYS[1], count) - count + 1
local ids = {}
local lines = {}
for i = 1, count do
  local n = first + i - 1
  ids[i] = redis.call('XADD', KEYS[2], '*', 'n', n, 'e', ARGV[i + 1])
  lines[i] = n .. ' ' .. ids[i] .. ' ' .. ARGV[i + 1]
end
redis.call('PUBLISH', ARGV[1], table.concat(lines, '\n'))
return {first, ids}
";

/// A log entry as it is stored and published: JSON, which has no raw newline (the
/// separator of a published batch).
pub struct Serialized {
    ticket: u64,
    text: String,
}

impl Serialized {
    pub fn new(entry: &LogEntry) -> Self {
        Serialized {
            ticket: entry.ticket,
            text: serde_json::to_string(entry).expect("log entries serialize"),
        }
    }

    /// Its size in bytes, as stored.
    pub fn bytes(&self) -> usize {
        self.text.len()
    }
}

/// Saves a snapshot unless a newer one is there, then drops the log before it.
/// KEYS: snapshot, stream. ARGV: n, stream id, snapshot.
const SAVE_SNAPSHOT: &str = r"
local current = redis.call('HGET', KEYS[1], 'n')
if current and tonumber(current) >= tonumber(ARGV[1]) then return 0 end
redis.call('HSET', KEYS[1], 'n', ARGV[1], 'id', ARGV[2], 's', ARGV[3])
redis.call('XTRIM', KEYS[2], 'MINID', ARGV[2])
return 1
";

pub struct Cluster {
    node_id: String,
    config: ClusterConfig,
    commands: ConnectionManager,
    append: redis::Script,
    save_snapshot: redis::Script,
    subscriptions: mpsc::UnboundedSender<Subscription>,
    index: mpsc::UnboundedSender<(String, bool)>,
    own: parking_lot::Mutex<OwnTickets>,
}

/// Tickets of entries this process appended and has not applied yet: it applies them as
/// their origin (answers, admits, counts, sends webhooks). Those of a call that failed
/// under way stay, as Redis may still store them, but only the newest
/// `MAX_UNCERTAIN_TICKETS`: most never land.
#[derive(Default)]
struct OwnTickets {
    expected: HashSet<u64>,
    uncertain: VecDeque<u64>,
}

const MAX_UNCERTAIN_TICKETS: usize = 1 << 16;

impl OwnTickets {
    fn failed(&mut self, tickets: impl Iterator<Item = u64>, why: &NotAppended) {
        for ticket in tickets {
            match why {
                NotAppended::NotSent(_) => {
                    self.expected.remove(&ticket);
                }
                NotAppended::Unknown(_) => self.uncertain.push_back(ticket),
            }
        }
        while self.uncertain.len() > MAX_UNCERTAIN_TICKETS {
            let oldest = self.uncertain.pop_front().expect("not empty");
            self.expected.remove(&oldest);
        }
    }
}

impl Cluster {
    /// Connects, announces this node and starts its heartbeat and subscription tasks.
    pub async fn connect(
        config: ClusterConfig,
        node_id: String,
        deliveries: mpsc::UnboundedSender<Delivery>,
    ) -> Result<Arc<Cluster>, Unavailable> {
        let client = redis::Client::open(config.url.as_str())?;
        let timeout = Duration::from_millis(config.timeout_ms);
        let manager_config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(500));
        let commands = ConnectionManager::new_with_config(client.clone(), manager_config).await?;
        let (subscriptions, subscription_changes) = mpsc::unbounded_channel();
        let (index, index_changes) = mpsc::unbounded_channel();
        let cluster = Arc::new(Cluster {
            node_id,
            config,
            commands,
            append: redis::Script::new(APPEND),
            save_snapshot: redis::Script::new(SAVE_SNAPSHOT),
            subscriptions,
            index,
            own: Default::default(),
        });
        cluster.heartbeat().await?;
        tokio::spawn(subscriber(
            client,
            cluster.channel_prefix(),
            subscription_changes,
            deliveries.clone(),
        ));
        tokio::spawn(keep_index(Arc::downgrade(&cluster), index_changes));
        tokio::spawn(keep_alive(Arc::downgrade(&cluster), deliveries));
        Ok(cluster)
    }

    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.config.timeout_ms)
    }

    fn key(&self, room: &str, what: &str) -> String {
        format!("{}:{{room:{room}}}:{what}", self.config.prefix)
    }

    fn channel_prefix(&self) -> String {
        format!("{}:room:", self.config.prefix)
    }

    fn node_key(&self, node: &str) -> String {
        format!("{}:node:{node}", self.config.prefix)
    }

    fn node_rooms_key(&self, node: &str) -> String {
        format!("{}:node:{node}:rooms", self.config.prefix)
    }

    fn nodes_key(&self) -> String {
        format!("{}:nodes", self.config.prefix)
    }

    fn rooms_key(&self) -> String {
        format!("{}:rooms", self.config.prefix)
    }

    /// Runs a Redis call with the node's timeout.
    async fn run<T>(
        &self,
        call: impl std::future::Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, Unavailable> {
        match tokio::time::timeout(self.timeout(), call).await {
            Ok(result) => result.map_err(Unavailable::from),
            Err(_) => Err(Unavailable(self.no_answer())),
        }
    }

    fn no_answer(&self) -> String {
        format!("redis did not answer within {} ms", self.config.timeout_ms)
    }

    /// Appends `entries` to `room`'s log, in this order, one after the other; `Ok`
    /// with their positions once Redis stored them all (it stores all or none).
    pub async fn append(
        &self,
        room: &str,
        entries: &[&Serialized],
    ) -> Result<Vec<Position>, NotAppended> {
        let mut connection = self.commands.clone();
        self.own
            .lock()
            .expected
            .extend(entries.iter().map(|entry| entry.ticket));
        let mut call = self.append.key(self.key(room, "n"));
        call.key(self.key(room, "log"))
            .arg(format!("{}{room}", self.channel_prefix()));
        for entry in entries {
            call.arg(&entry.text);
        }
        let call = call.invoke_async::<(u64, Vec<String>)>(&mut connection);
        let maybe_stored = |problem: String| {
            NotAppended::Unknown(format!("{problem}; the change may still have been stored"))
        };
        let appended = match tokio::time::timeout(self.timeout(), call).await {
            Ok(Ok((first, ids))) if ids.len() == entries.len() => Ok((first..)
                .zip(ids)
                .map(|(n, id)| Position { n, id })
                .collect()),
            Ok(Ok((_, ids))) => Err(maybe_stored(format!(
                "redis answered an append of {} entries with {} ids",
                entries.len(),
                ids.len()
            ))),
            // Refused before anything was sent.
            Ok(Err(error)) if error.is_connection_refusal() => {
                Err(NotAppended::NotSent(format!("redis: {error}")))
            }
            Ok(Err(error)) => Err(maybe_stored(format!("redis: {error}"))),
            Err(_) => Err(maybe_stored(self.no_answer())),
        };
        if let Err(why) = &appended {
            let tickets = entries.iter().map(|entry| entry.ticket);
            self.own.lock().failed(tickets, why);
        }
        appended
    }

    /// Whether this process appended the entry with `ticket` and has not applied it.
    pub fn take_own(&self, ticket: u64) -> bool {
        self.own.lock().expected.remove(&ticket)
    }

    /// Up to `count` entries of `room`'s log after `after`.
    pub async fn read_after(
        &self,
        room: &str,
        after: &Position,
        count: usize,
    ) -> Result<Vec<(Position, LogEntry)>, Unavailable> {
        let start = if after.id.is_empty() {
            "-".to_string()
        } else {
            format!("({}", after.id)
        };
        let mut connection = self.commands.clone();
        let raw: Vec<(String, Vec<String>)> = self
            .run(
                redis::cmd("XRANGE")
                    .arg(self.key(room, "log"))
                    .arg(start)
                    .arg("+")
                    .arg("COUNT")
                    .arg(count)
                    .query_async(&mut connection),
            )
            .await?;
        raw.into_iter()
            .map(|(id, fields)| parse_stream_entry(id, &fields))
            .collect()
    }

    /// The latest snapshot of `room`: its position and the serialized room.
    pub async fn load_snapshot(
        &self,
        room: &str,
    ) -> Result<Option<(Position, String)>, Unavailable> {
        let mut connection = self.commands.clone();
        let (n, id, snapshot): (Option<u64>, Option<String>, Option<String>) = self
            .run(
                redis::cmd("HMGET")
                    .arg(self.key(room, "snapshot"))
                    .arg("n")
                    .arg("id")
                    .arg("s")
                    .query_async(&mut connection),
            )
            .await?;
        Ok(match (n, id, snapshot) {
            (Some(n), Some(id), Some(snapshot)) => Some((Position { n, id }, snapshot)),
            _ => None,
        })
    }

    /// Saves a snapshot of `room` at `position` in the background; an older one than
    /// Redis has is ignored. Losing one only means a longer log to read.
    pub fn save_snapshot(self: &Arc<Self>, room: &str, position: Position, snapshot: String) {
        let cluster = Arc::clone(self);
        let room = room.to_string();
        tokio::spawn(async move {
            let mut connection = cluster.commands.clone();
            let saved: Result<i64, _> = cluster
                .run(
                    cluster
                        .save_snapshot
                        .key(cluster.key(&room, "snapshot"))
                        .key(cluster.key(&room, "log"))
                        .arg(position.n)
                        .arg(&position.id)
                        .arg(&snapshot)
                        .invoke_async(&mut connection),
                )
                .await;
            if let Err(Unavailable(problem)) = saved {
                tracing::warn!(%room, %problem, "snapshot not saved");
            }
        });
    }

    /// Subscribes to `room`'s entries; `Ok` once Redis confirmed.
    pub async fn subscribe(&self, room: &str) -> Result<(), Unavailable> {
        let (done, confirmed) = oneshot::channel();
        self.subscriptions
            .send(Subscription::Add(room.to_string(), done))
            .map_err(|_| Unavailable("the subscription task stopped".into()))?;
        match tokio::time::timeout(self.timeout(), confirmed).await {
            Ok(Ok(result)) => result,
            _ => Err(Unavailable("redis did not confirm the subscription".into())),
        }
    }

    pub fn unsubscribe(&self, room: &str) {
        let _ = self
            .subscriptions
            .send(Subscription::Remove(room.to_string()));
    }

    /// Records that this node has participants in `room`, for whoever finds it dead.
    pub async fn host(&self, room: &str) -> Result<(), Unavailable> {
        let mut connection = self.commands.clone();
        let key = self.node_rooms_key(&self.node_id);
        self.run(connection.sadd::<_, _, ()>(key, room)).await
    }

    /// Records that `room` has a session (or no longer has), for listing rooms.
    /// Applied in the order given.
    pub fn index(&self, room: &str, has_session: bool) {
        let _ = self.index.send((room.to_string(), has_session));
    }

    /// Rooms with a session, on any node.
    pub async fn room_names(&self) -> Result<Vec<String>, Unavailable> {
        let mut connection = self.commands.clone();
        self.run(connection.smembers(self.rooms_key())).await
    }

    async fn heartbeat(&self) -> Result<(), Unavailable> {
        let mut connection = self.commands.clone();
        self.run(
            redis::pipe()
                .cmd("SET")
                .arg(self.node_key(&self.node_id))
                .arg(crate::clock::now_millis())
                .arg("PX")
                .arg(self.config.node_timeout_ms)
                .ignore()
                .sadd(self.nodes_key(), &self.node_id)
                .ignore()
                .query_async::<()>(&mut connection),
        )
        .await
    }

    /// Finds nodes whose heartbeat expired, and hands their rooms over to be cleared.
    async fn reap(&self, deliveries: &mpsc::UnboundedSender<Delivery>) -> Result<(), Unavailable> {
        let mut connection = self.commands.clone();
        let nodes: Vec<String> = self.run(connection.smembers(self.nodes_key())).await?;
        for node in nodes.into_iter().filter(|node| *node != self.node_id) {
            let alive: bool = self.run(connection.exists(self.node_key(&node))).await?;
            if alive {
                continue;
            }
            // One node clears a dead one; if it dies too, the claim expires.
            let claimed: Option<String> = self
                .run(
                    redis::cmd("SET")
                        .arg(format!("{}:reaping:{node}", self.config.prefix))
                        .arg(&self.node_id)
                        .arg("NX")
                        .arg("PX")
                        .arg(self.config.node_timeout_ms)
                        .query_async(&mut connection),
                )
                .await?;
            if claimed.is_none() {
                continue;
            }
            let rooms: Vec<String> = self
                .run(connection.smembers(self.node_rooms_key(&node)))
                .await?;
            tracing::warn!(%node, rooms = rooms.len(), "node stopped heartbeating; removing its participants");
            for room in &rooms {
                let gone = LogEntry {
                    origin: self.node_id.as_str().into(),
                    ticket: crate::rules::command::next_ticket(),
                    at: crate::clock::now_millis(),
                    command: Command::NodeGone { node: node.clone() },
                };
                // On failure the claim expires and a later round (here or elsewhere)
                // appends again; applying it twice removes nobody twice.
                self.append(room, &[&Serialized::new(&gone)]).await?;
            }
            for room in rooms {
                let _ = deliveries.send(Delivery::Reaped { room });
            }
            self.run(
                redis::pipe()
                    .del(self.node_rooms_key(&node))
                    .ignore()
                    .srem(self.nodes_key(), &node)
                    .ignore()
                    .query_async::<()>(&mut connection),
            )
            .await?;
        }
        Ok(())
    }
}

fn parse_stream_entry(id: String, fields: &[String]) -> Result<(Position, LogEntry), Unavailable> {
    let field = |name: &str| {
        fields
            .chunks(2)
            .find(|pair| pair.first().map(String::as_str) == Some(name))
            .and_then(|pair| pair.get(1))
    };
    let malformed = || Unavailable(format!("malformed log entry {id}"));
    let n = field("n")
        .and_then(|n| n.parse().ok())
        .ok_or_else(malformed)?;
    let entry = field("e")
        .and_then(|text| serde_json::from_str(text).ok())
        .ok_or_else(malformed)?;
    Ok((Position { n, id }, entry))
}

/// The entries of a published batch, in order: each one's position and its JSON text,
/// or `None` for a line that is not `"<n> <stream id> <entry>"`.
pub fn published_entries(payload: &str) -> impl Iterator<Item = Option<(Position, &str)>> {
    payload.split('\n').map(|line| {
        let (n, rest) = line.split_once(' ')?;
        let (id, entry) = rest.split_once(' ')?;
        Some((
            Position {
                n: n.parse().ok()?,
                id: id.to_string(),
            },
            entry,
        ))
    })
}

/// Heartbeats and reaps dead nodes until the cluster is dropped.
async fn keep_alive(
    cluster: std::sync::Weak<Cluster>,
    deliveries: mpsc::UnboundedSender<Delivery>,
) {
    let Some(interval) = cluster
        .upgrade()
        .map(|cluster| Duration::from_millis(cluster.config.heartbeat_ms))
    else {
        return;
    };
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Since when this node's own heartbeats have all gone through. After an outage
    // every node's key may have expired: a node reaps others only once they all had a
    // full timeout to beat again, so a Redis restart does not make nodes reap each other.
    let mut healthy_since: Option<tokio::time::Instant> = None;
    loop {
        ticks.tick().await;
        let Some(cluster) = cluster.upgrade() else {
            return;
        };
        if let Err(Unavailable(problem)) = cluster.heartbeat().await {
            tracing::warn!(%problem, "heartbeat failed");
            healthy_since = None;
            continue;
        }
        let since = *healthy_since.get_or_insert_with(tokio::time::Instant::now);
        if since.elapsed() < Duration::from_millis(cluster.config.node_timeout_ms) {
            continue;
        }
        if let Err(Unavailable(problem)) = cluster.reap(&deliveries).await {
            tracing::warn!(%problem, "looking for dead nodes failed");
        }
    }
}

/// Applies room index changes in order, retrying while Redis is away.
async fn keep_index(
    cluster: std::sync::Weak<Cluster>,
    mut changes: mpsc::UnboundedReceiver<(String, bool)>,
) {
    while let Some((room, has_session)) = changes.recv().await {
        loop {
            let Some(cluster) = cluster.upgrade() else {
                return;
            };
            let mut connection = cluster.commands.clone();
            let key = cluster.rooms_key();
            let done = if has_session {
                cluster.run(connection.sadd::<_, _, ()>(key, &room)).await
            } else {
                cluster.run(connection.srem::<_, _, ()>(key, &room)).await
            };
            if done.is_ok() {
                break;
            }
            drop(cluster);
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

/// Owns the subscription connection: subscribes and unsubscribes in the order asked,
/// hands published entries to the rooms, and reconnects (then resubscribes) when the
/// connection drops.
async fn subscriber(
    client: redis::Client,
    channel_prefix: String,
    mut changes: mpsc::UnboundedReceiver<Subscription>,
    deliveries: mpsc::UnboundedSender<Delivery>,
) {
    let mut subscribed: HashSet<String> = HashSet::new();
    let mut first = true;
    let channel = |room: &str| format!("{channel_prefix}{room}");
    loop {
        let pubsub = match client.get_async_pubsub().await {
            Ok(pubsub) => pubsub,
            Err(error) => {
                tracing::warn!(%error, "cannot open the subscription connection; retrying");
                // Meanwhile, refuse new subscriptions rather than leave them waiting.
                let wait = tokio::time::sleep(Duration::from_millis(250));
                tokio::pin!(wait);
                loop {
                    tokio::select! {
                        _ = &mut wait => break,
                        change = changes.recv() => match change {
                            None => return,
                            Some(Subscription::Add(_, done)) => {
                                let _ = done.send(Err(Unavailable(format!("redis: {error}"))));
                            }
                            Some(Subscription::Remove(room)) => {
                                subscribed.remove(&room);
                            }
                        },
                    }
                }
                continue;
            }
        };
        let (mut sink, mut stream) = pubsub.split();
        if !subscribed.is_empty() {
            let channels: Vec<String> = subscribed.iter().map(|room| channel(room)).collect();
            if sink.subscribe(channels).await.is_err() {
                continue;
            }
        }
        if !first {
            tracing::info!("subscription connection restored; catching up every room");
            let _ = deliveries.send(Delivery::Resubscribed);
        }
        first = false;
        loop {
            tokio::select! {
                change = changes.recv() => match change {
                    None => return,
                    Some(Subscription::Add(room, done)) => {
                        let result = sink.subscribe(channel(&room)).await.map_err(Unavailable::from);
                        let failed = result.is_err();
                        if !failed {
                            subscribed.insert(room);
                        }
                        let _ = done.send(result);
                        if failed {
                            break;
                        }
                    }
                    Some(Subscription::Remove(room)) => {
                        subscribed.remove(&room);
                        if sink.unsubscribe(channel(&room)).await.is_err() {
                            break;
                        }
                    }
                },
                message = stream.next() => {
                    let Some(message) = message else {
                        tracing::warn!("subscription connection lost; reconnecting");
                        break;
                    };
                    let Some(room) = message.get_channel_name().strip_prefix(&channel_prefix) else {
                        continue;
                    };
                    let Ok(payload) = String::from_utf8(message.get_payload_bytes().to_vec()) else {
                        tracing::error!(%room, "published entries that are not UTF-8");
                        continue;
                    };
                    let _ = deliveries.send(Delivery::Published { room: room.to_string(), payload });
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tickets_of_a_failed_call_stay_own_only_if_it_may_have_stored_them() {
        let mut own = OwnTickets::default();
        own.expected.extend([1, 2, 3, 4]);
        own.failed([1, 2].into_iter(), &NotAppended::NotSent("refused".into()));
        own.failed([3].into_iter(), &NotAppended::Unknown("timed out".into()));
        assert_eq!(own.expected, HashSet::from([3, 4]));

        let many = 10..10 + MAX_UNCERTAIN_TICKETS as u64 + 2;
        own.expected.extend(many.clone());
        own.failed(many, &NotAppended::Unknown("timed out".into()));
        assert_eq!(own.uncertain.len(), MAX_UNCERTAIN_TICKETS);
        assert!(
            !own.expected.contains(&3),
            "the oldest uncertain tickets go first"
        );
        assert!(!own.expected.contains(&10) && own.expected.contains(&12));
        assert!(own.expected.contains(&4), "a ticket still expected stays");
    }

    #[test]
    fn a_published_batch_reads_as_its_entries_in_order() {
        let payload = "7 1-0 {\"a\":\"x y\"}\n8 1-1 {}\nnonsense\n9 2-0 {\"b\":1}";
        let read: Vec<_> = published_entries(payload)
            .map(|entry| entry.map(|(position, text)| (position.n, position.id, text)))
            .collect();
        assert_eq!(
            read,
            vec![
                Some((7, "1-0".to_string(), r#"{"a":"x y"}"#)),
                Some((8, "1-1".to_string(), "{}")),
                None,
                Some((9, "2-0".to_string(), r#"{"b":1}"#)),
            ]
        );
    }
}
