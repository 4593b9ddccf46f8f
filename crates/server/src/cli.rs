//! The `roomstate` command line's client side: tokens, and the server API (rooms,
//! participants, the session store) for operators and scripts.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Subcommand};
use livekit_protocol as lk;
use roomstate_protocol::{Claims, Entry, RoomStateGrant, VideoGrant, WILDCARD_KEY};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::api::{
    StoreDeleteRequest, StoreEntryResponse, StoreKeyRequest, StoreListRequest, StoreListResponse,
    StoreSetRequest, TwirpError,
};
use crate::auth::{mint_token, unix_now};

/// Where the server is and how to sign requests to it.
#[derive(Args, Debug, Clone)]
pub struct Server {
    /// The server's address.
    #[arg(
        long,
        env = "ROOMSTATE_URL",
        default_value = "http://127.0.0.1:7880",
        global = true
    )]
    pub url: String,
    /// API key (the `iss` of the tokens the CLI signs).
    #[arg(long, env = "ROOMSTATE_API_KEY", global = true)]
    pub api_key: Option<String>,
    /// API secret matching the key.
    #[arg(
        long,
        env = "ROOMSTATE_API_SECRET",
        hide_env_values = true,
        global = true
    )]
    pub api_secret: Option<String>,
    /// Print JSON instead of tables, for scripts.
    #[arg(long, global = true)]
    pub json: bool,
}

#[derive(Subcommand, Debug)]
pub enum TokenCommand {
    /// Mint an access token for a participant.
    ///
    /// Example: roomstate token create --room class-7 --identity alice --can-update-metadata
    Create(TokenCreate),
}

#[derive(Args, Debug)]
pub struct TokenCreate {
    #[arg(long)]
    pub room: String,
    #[command(flatten)]
    pub participant: ParticipantClaims,
    /// Grant roomAdmin (the server API for this room) and roomList.
    #[arg(long)]
    pub admin: bool,
    /// Join as a hidden participant: not listed, not announced.
    #[arg(long)]
    pub hidden: bool,
    /// Make the participant read-only in the session store.
    #[arg(long)]
    pub read_only_store: bool,
    /// How long the token is valid, e.g. 30m, 6h, 2days.
    #[arg(long, default_value = "6h", value_parser = humantime::parse_duration)]
    pub valid_for: Duration,
}

#[derive(Subcommand, Debug)]
pub enum RoomCommand {
    /// List rooms with an active session.
    List,
    /// Room metadata.
    Metadata {
        #[command(subcommand)]
        action: MetadataAction,
    },
}

#[derive(Subcommand, Debug)]
pub enum MetadataAction {
    /// Set a room's metadata; every participant is told.
    Set { room: String, metadata: String },
}

#[derive(Subcommand, Debug)]
pub enum ParticipantCommand {
    /// List a room's participants.
    List { room: String },
    /// Show one participant.
    Get { room: String, identity: String },
    /// Change a participant's metadata, name, attributes or permission.
    ///
    /// Example: roomstate participant update class-7 alice --attribute hand=up --attribute brb=
    Update {
        room: String,
        identity: String,
        #[arg(long)]
        metadata: Option<String>,
        #[arg(long)]
        name: Option<String>,
        /// key=value to set, key= to delete (repeatable).
        #[arg(long = "attribute", value_parser = parse_pair)]
        attributes: Vec<(String, String)>,
        /// Allow or forbid the participant to change its own metadata.
        #[arg(long)]
        can_update_metadata: Option<bool>,
    },
    /// Remove a participant from the room.
    Remove { room: String, identity: String },
}

#[derive(Subcommand, Debug)]
pub enum StoreCommand {
    /// Print one key's entry.
    Get { room: String, key: String },
    /// Write JSON under a key, e.g. roomstate store set class-7 pinned '{"text":"hi"}'.
    Set {
        room: String,
        key: String,
        /// Any JSON value (a bare word that is not JSON is stored as a string).
        value: String,
        /// Only if the key is at this version (0: it must not exist).
        #[arg(long)]
        if_version: Option<u64>,
    },
    /// Delete a key.
    Delete {
        room: String,
        key: String,
        #[arg(long)]
        if_version: Option<u64>,
    },
    /// Print every key.
    List { room: String },
    /// Print the keys' current values, then every change as it happens, until the
    /// session ends or Ctrl-C. Joins as a hidden participant, which neither starts nor
    /// keeps a session alive.
    Watch {
        room: String,
        /// Keys to watch (default: all).
        #[arg(long, value_delimiter = ',')]
        keys: Vec<String>,
        #[command(flatten)]
        keepalive: Keepalive,
    },
}

/// Join a room as a participant (visible to everyone) and print what it sees: who is
/// there, who comes and goes, attribute and metadata changes, and the session store.
///
/// Stays connected until Ctrl-C (then leaves) or until the server ends the connection.
/// Example: roomstate join class-7 --identity alice --can-update-metadata --attribute hand=down
#[derive(Args, Debug)]
pub struct JoinArgs {
    pub room: String,
    #[command(flatten)]
    pub participant: ParticipantClaims,
    /// Store keys to print (default: all).
    #[arg(long, value_delimiter = ',')]
    pub keys: Vec<String>,
    #[command(flatten)]
    pub keepalive: Keepalive,
}

/// Who a participant is, as its token says: `token create` and `join` take the same.
#[derive(Args, Debug)]
pub struct ParticipantClaims {
    #[arg(long)]
    pub identity: String,
    #[arg(long)]
    pub name: Option<String>,
    #[arg(long)]
    pub metadata: Option<String>,
    /// An initial attribute, key=value (repeatable).
    #[arg(long = "attribute", value_parser = parse_pair)]
    pub attributes: Vec<(String, String)>,
    /// Let the participant change its own attributes, metadata and name (the server API's
    /// `participant update` needs no grant).
    #[arg(long)]
    pub can_update_metadata: bool,
}

impl ParticipantClaims {
    /// Claims for joining `room`, signed by API key `key`, valid for `valid_for`.
    fn claims(&self, key: &str, room: &str, valid_for: Duration) -> Claims {
        Claims {
            iss: key.to_string(),
            sub: self.identity.clone(),
            exp: Some(unix_now() + valid_for.as_secs()),
            nbf: Some(unix_now().saturating_sub(10)),
            name: self.name.clone().unwrap_or_default(),
            metadata: self.metadata.clone().unwrap_or_default(),
            attributes: self.attributes.iter().cloned().collect(),
            video: VideoGrant {
                room: room.to_string(),
                room_join: true,
                can_update_own_metadata: Some(self.can_update_metadata),
                ..Default::default()
            },
            ..Default::default()
        }
    }
}

/// The engine's keep-alive (docs/protocol.md, Keepalive). Shorter values notice a dead
/// link sooner at the cost of more pings.
#[derive(Args, Debug, Clone, Copy)]
pub struct Keepalive {
    /// Ping the server this often, in milliseconds.
    #[arg(long, default_value_t = 5_000)]
    pub ping_interval_ms: u64,
    /// Reconnect after this long without any frame from the server, in milliseconds.
    #[arg(long, default_value_t = 15_000)]
    pub ping_timeout_ms: u64,
}

impl Keepalive {
    fn options(self) -> roomstate::ConnectOptions {
        roomstate::ConnectOptions {
            ping_interval: Duration::from_millis(self.ping_interval_ms),
            ping_timeout: Duration::from_millis(self.ping_timeout_ms),
            ..roomstate::ConnectOptions::default()
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("{0}")]
    Usage(String),
    #[error("cannot reach the roomstate server at {url}: {reason}\n  is `roomstate serve` running there? (set --url or ROOMSTATE_URL)")]
    Unreachable { url: String, reason: String },
    #[error("the server refused the credentials: {0}\n  check --api-key/--api-secret (ROOMSTATE_API_KEY, ROOMSTATE_API_SECRET)")]
    Credentials(String),
    #[error("{0}")]
    NotFound(String),
    #[error("the server said {code}: {msg}")]
    Server { code: String, msg: String },
    #[error("{0}")]
    Room(#[from] roomstate::RoomError),
}

fn parse_pair(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_string(), value.to_string())),
        _ => Err(format!("expected key=value, got {text:?}")),
    }
}

impl Server {
    fn credentials(&self) -> Result<(&str, &str), CliError> {
        match (&self.api_key, &self.api_secret) {
            (Some(key), Some(secret)) => Ok((key, secret)),
            _ => Err(CliError::Usage(
                "this command needs an API key and secret: pass --api-key and --api-secret, or set ROOMSTATE_API_KEY and ROOMSTATE_API_SECRET (roomstate serve --dev uses devkey / secret)".into(),
            )),
        }
    }

    fn http_url(&self) -> String {
        let url = self.url.trim_end_matches('/');
        if let Some(rest) = url.strip_prefix("ws://") {
            format!("http://{rest}")
        } else if let Some(rest) = url.strip_prefix("wss://") {
            format!("https://{rest}")
        } else {
            url.to_string()
        }
    }

    fn sign(
        &self,
        video: VideoGrant,
        identity: &str,
        valid_for: Duration,
    ) -> Result<String, CliError> {
        let (key, secret) = self.credentials()?;
        let claims = Claims {
            iss: key.to_string(),
            sub: identity.to_string(),
            exp: Some(unix_now() + valid_for.as_secs()),
            video,
            ..Default::default()
        };
        Ok(mint_token(&claims, secret))
    }

    /// Calls a Twirp method with a short-lived admin token for `room`.
    async fn call<Request: Serialize, Response: DeserializeOwned>(
        &self,
        service: &str,
        method: &str,
        room: Option<&str>,
        request: &Request,
    ) -> Result<Response, CliError> {
        let video = VideoGrant {
            room: room.unwrap_or_default().to_string(),
            room_admin: room.is_some(),
            room_list: room.is_none(),
            ..Default::default()
        };
        let token = self.sign(video, "", Duration::from_secs(600))?;
        let url = format!("{}/twirp/{service}/{method}", self.http_url());
        let response = reqwest::Client::new()
            .post(&url)
            .bearer_auth(token)
            .json(request)
            .send()
            .await
            .map_err(|error| CliError::Unreachable {
                url: self.url.clone(),
                reason: error.to_string(),
            })?;
        let status = response.status();
        let body = response
            .text()
            .await
            .map_err(|error| CliError::Unreachable {
                url: self.url.clone(),
                reason: error.to_string(),
            })?;
        if status.is_success() {
            return serde_json::from_str(&body).map_err(|error| CliError::Server {
                code: "malformed".into(),
                msg: format!("unreadable answer ({error}): {body}"),
            });
        }
        Err(match serde_json::from_str::<TwirpError>(&body) {
            Ok(error) if error.code == "unauthenticated" || error.code == "permission_denied" => {
                CliError::Credentials(error.msg)
            }
            Ok(error) if error.code == "not_found" => CliError::NotFound(error.msg),
            Ok(error) => CliError::Server {
                code: error.code,
                msg: error.msg,
            },
            Err(_) => CliError::Server {
                code: status.to_string(),
                msg: format!("{body:.200} (is {} a roomstate server?)", self.url),
            },
        })
    }
}

fn print_json(value: &impl Serialize) {
    println!(
        "{}",
        serde_json::to_string_pretty(value).expect("serializes")
    );
}

pub fn token_create(server: &Server, args: TokenCreate) -> Result<(), CliError> {
    let (key, secret) = server.credentials()?;
    let mut claims = args.participant.claims(key, &args.room, args.valid_for);
    claims.video.room_admin = args.admin;
    claims.video.room_list = args.admin;
    claims.video.hidden = args.hidden;
    claims.roomstate = args.read_only_store.then_some(RoomStateGrant {
        can_write_store: Some(false),
        store_write_prefixes: None,
    });
    let token = mint_token(&claims, secret);
    if server.json {
        print_json(
            &serde_json::json!({"token": token, "room": args.room, "identity": args.participant.identity}),
        );
    } else {
        println!("{token}");
    }
    Ok(())
}

pub async fn room(server: &Server, command: RoomCommand) -> Result<(), CliError> {
    match command {
        RoomCommand::List => {
            let response: lk::ListRoomsResponse = server
                .call(
                    "livekit.RoomService",
                    "ListRooms",
                    None,
                    &lk::ListRoomsRequest::default(),
                )
                .await?;
            if server.json {
                print_json(&response.rooms);
                return Ok(());
            }
            if response.rooms.is_empty() {
                println!("no rooms with an active session");
                return Ok(());
            }
            let rows = response.rooms.iter().map(|room| {
                vec![
                    room.name.clone(),
                    room.num_participants.to_string(),
                    room.sid.clone(),
                    room.metadata.clone(),
                ]
            });
            print_table(&["ROOM", "PARTICIPANTS", "SESSION", "METADATA"], rows);
        }
        RoomCommand::Metadata {
            action: MetadataAction::Set { room, metadata },
        } => {
            let request = lk::UpdateRoomMetadataRequest {
                room: room.clone(),
                metadata,
            };
            let updated: lk::Room = server
                .call(
                    "livekit.RoomService",
                    "UpdateRoomMetadata",
                    Some(&room),
                    &request,
                )
                .await?;
            if server.json {
                print_json(&updated);
            } else {
                println!("room {room}: metadata set");
            }
        }
    }
    Ok(())
}

pub async fn participant(server: &Server, command: ParticipantCommand) -> Result<(), CliError> {
    const SERVICE: &str = "livekit.RoomService";
    let shown: Vec<lk::ParticipantInfo> = match command {
        ParticipantCommand::List { room } => {
            let request = lk::ListParticipantsRequest { room: room.clone() };
            let response: lk::ListParticipantsResponse = server
                .call(SERVICE, "ListParticipants", Some(&room), &request)
                .await?;
            response.participants
        }
        ParticipantCommand::Get { room, identity } => {
            let request = lk::RoomParticipantIdentity {
                room: room.clone(),
                identity,
                ..Default::default()
            };
            vec![
                server
                    .call(SERVICE, "GetParticipant", Some(&room), &request)
                    .await?,
            ]
        }
        ParticipantCommand::Update {
            room,
            identity,
            metadata,
            name,
            attributes,
            can_update_metadata,
        } => {
            let request = lk::UpdateParticipantRequest {
                room: room.clone(),
                identity,
                metadata: metadata.unwrap_or_default(),
                name: name.unwrap_or_default(),
                attributes: attributes.into_iter().collect(),
                permission: can_update_metadata.map(|allowed| lk::ParticipantPermission {
                    can_update_metadata: allowed,
                    can_subscribe: true,
                    can_publish_data: true,
                    ..Default::default()
                }),
            };
            vec![
                server
                    .call(SERVICE, "UpdateParticipant", Some(&room), &request)
                    .await?,
            ]
        }
        ParticipantCommand::Remove { room, identity } => {
            let request = lk::RoomParticipantIdentity {
                room: room.clone(),
                identity: identity.clone(),
                ..Default::default()
            };
            let _: lk::RemoveParticipantResponse = server
                .call(SERVICE, "RemoveParticipant", Some(&room), &request)
                .await?;
            if server.json {
                print_json(&serde_json::json!({"removed": identity, "room": room}));
            } else {
                println!("removed {identity} from {room}");
            }
            return Ok(());
        }
    };
    if server.json {
        print_json(&shown);
        return Ok(());
    }
    let rows = shown.iter().map(|participant| {
        let attributes: BTreeMap<_, _> = participant.attributes.iter().collect();
        let attributes = attributes
            .iter()
            .fold(String::new(), |mut text, (key, value)| {
                let _ = write!(
                    text,
                    "{}{key}={value}",
                    if text.is_empty() { "" } else { " " }
                );
                text
            });
        vec![
            participant.identity.clone(),
            participant.sid.clone(),
            participant.name.clone(),
            participant.metadata.clone(),
            attributes,
        ]
    });
    print_table(&["IDENTITY", "SID", "NAME", "METADATA", "ATTRIBUTES"], rows);
    Ok(())
}

pub async fn store(server: &Server, command: StoreCommand) -> Result<(), CliError> {
    const SERVICE: &str = "roomstate.SessionStore";
    let entries: Vec<Entry> = match command {
        StoreCommand::Get { room, key } => {
            let response: StoreEntryResponse = server
                .call(
                    SERVICE,
                    "Get",
                    Some(&room),
                    &StoreKeyRequest {
                        room: room.clone(),
                        key,
                    },
                )
                .await?;
            vec![response.entry]
        }
        StoreCommand::Set {
            room,
            key,
            value,
            if_version,
        } => {
            // Bare words are strings, so `store set r pinned hello` does what it says.
            let value = serde_json::from_str(&value).unwrap_or(serde_json::Value::String(value));
            let request = StoreSetRequest {
                room: room.clone(),
                key,
                value,
                expected_version: if_version,
            };
            let response: StoreEntryResponse =
                server.call(SERVICE, "Set", Some(&room), &request).await?;
            vec![response.entry]
        }
        StoreCommand::Delete {
            room,
            key,
            if_version,
        } => {
            let request = StoreDeleteRequest {
                room: room.clone(),
                key,
                expected_version: if_version,
            };
            let response: StoreEntryResponse = server
                .call(SERVICE, "Delete", Some(&room), &request)
                .await?;
            vec![response.entry]
        }
        StoreCommand::List { room } => {
            let response: StoreListResponse = server
                .call(
                    SERVICE,
                    "List",
                    Some(&room),
                    &StoreListRequest { room: room.clone() },
                )
                .await?;
            response.entries
        }
        StoreCommand::Watch {
            room,
            keys,
            keepalive,
        } => return watch(server, room, keys, keepalive).await,
    };
    if server.json {
        print_json(&entries);
        return Ok(());
    }
    let rows = entries.iter().map(|entry| {
        vec![
            entry.key.clone(),
            entry.version.to_string(),
            entry.updated_by.clone(),
            entry
                .value
                .as_ref()
                .map_or("(absent)".to_string(), |value| value.to_string()),
        ]
    });
    print_table(&["KEY", "VERSION", "UPDATED_BY", "VALUE"], rows);
    Ok(())
}

/// Prints what a CLI participant hears: store changes, and (for `join`) the room's
/// participants.
struct Printer {
    json: bool,
    participants: bool,
    /// Put before each text line (`[alice] `), so a participant's lines stand apart from
    /// a watcher's in one terminal.
    prefix: String,
    ended: tokio::sync::mpsc::UnboundedSender<roomstate::DisconnectReason>,
}

impl Printer {
    fn participant_event(&self, event: &str, participant: &roomstate::Participant, detail: &str) {
        if !self.participants {
            return;
        }
        if self.json {
            let line = serde_json::json!({
                "event": event,
                "identity": participant.identity,
                "name": participant.name,
                "metadata": participant.metadata,
                "attributes": participant.attributes,
            });
            println!("{line}");
        } else {
            let attributes: BTreeMap<_, _> = participant.attributes.iter().collect();
            let attributes: Vec<String> = attributes
                .into_iter()
                .map(|(key, value)| format!("{key}={value}"))
                .collect();
            println!(
                "{}{event}: {}{detail}  [{}]",
                self.prefix,
                participant.identity,
                attributes.join(" ")
            );
        }
    }
}

impl roomstate::KeyChangeListener for Printer {
    fn on_key_changed(&self, key: String, entry: Option<roomstate::StoreEntry>) {
        if self.json {
            let line = match entry {
                Some(entry) => {
                    serde_json::json!({"key": key, "value": entry.value, "version": entry.version, "updated_by": entry.updated_by, "updated_at": entry.updated_at_ms})
                }
                None => serde_json::json!({"key": key, "value": null}),
            };
            println!("{line}");
        } else {
            match entry {
                Some(entry) => println!(
                    "{}{key} = {}  (v{} by {})",
                    self.prefix, entry.value, entry.version, entry.updated_by
                ),
                None => println!("{}{key} is absent", self.prefix),
            }
        }
    }
}

impl roomstate::RoomListener for Printer {
    fn on_connection_state_changed(&self, state: roomstate::ConnectionState) {
        match state {
            roomstate::ConnectionState::Disconnected { reason } => {
                let _ = self.ended.send(reason);
            }
            roomstate::ConnectionState::Reconnecting => {
                eprintln!("connection lost; reconnecting...")
            }
            _ => {}
        }
    }
    fn on_participant_joined(&self, participant: roomstate::Participant) {
        self.participant_event("joined", &participant, "");
    }
    fn on_participant_left(&self, participant: roomstate::Participant) {
        self.participant_event("left", &participant, "");
    }
    fn on_attributes_changed(&self, participant: roomstate::Participant, changed: Vec<String>) {
        let detail = format!(" changed {}", changed.join(","));
        self.participant_event("attributes", &participant, &detail);
    }
    fn on_metadata_changed(&self, participant: roomstate::Participant, _old: String, new: String) {
        self.participant_event("metadata", &participant, &format!(" = {new:?}"));
    }
    fn on_name_changed(&self, participant: roomstate::Participant, _old: String, new: String) {
        self.participant_event("name", &participant, &format!(" = {new:?}"));
    }
}

async fn watch(
    server: &Server,
    room: String,
    keys: Vec<String>,
    keepalive: Keepalive,
) -> Result<(), CliError> {
    let identity = format!("roomstate-cli-{:08x}", rand::random::<u32>());
    let video = VideoGrant {
        room: room.clone(),
        room_join: true,
        hidden: true,
        ..Default::default()
    };
    let token = server.sign(video, &identity, Duration::from_secs(24 * 3600))?;
    let follow = Follow {
        token,
        prefix: String::new(),
        keys,
        keepalive,
        participants: false,
    };
    let room_handle = follow.connect(server).await?;
    eprintln!("watching room {room} (Ctrl-C to stop)");
    follow.run(room_handle).await
}

/// `roomstate join`: a visible participant that prints what it sees.
pub async fn join(server: &Server, args: JoinArgs) -> Result<(), CliError> {
    let (key, secret) = server.credentials()?;
    let claims = args
        .participant
        .claims(key, &args.room, Duration::from_secs(24 * 3600));
    let follow = Follow {
        token: mint_token(&claims, secret),
        prefix: format!("[{}] ", args.participant.identity),
        keys: args.keys,
        keepalive: args.keepalive,
        participants: true,
    };
    let room_handle = follow.connect(server).await?;
    let others = room_handle.room.remote_participants();
    eprintln!(
        "joined room {} as {} with {} other participant(s) (Ctrl-C to leave)",
        args.room,
        args.participant.identity,
        others.len()
    );
    follow.run(room_handle).await
}

/// A CLI client that stays in a room and prints what it hears.
struct Follow {
    token: String,
    prefix: String,
    keys: Vec<String>,
    keepalive: Keepalive,
    participants: bool,
}

impl Follow {
    async fn connect(&self, server: &Server) -> Result<Connected, CliError> {
        let (ended, end) = tokio::sync::mpsc::unbounded_channel();
        let printer = Arc::new(Printer {
            json: server.json,
            participants: self.participants,
            prefix: self.prefix.clone(),
            ended,
        });
        let url = server
            .url
            .replace("http://", "ws://")
            .replace("https://", "wss://");
        let joined =
            roomstate::Room::connect(&url, &self.token, printer.clone(), self.keepalive.options())
                .await;
        let room = joined.map_err(|error| match error {
            roomstate::RoomError::Connect { message } => CliError::Unreachable {
                url: server.url.clone(),
                reason: message,
            },
            roomstate::RoomError::InvalidToken { message, .. } => CliError::Credentials(message),
            other => CliError::Room(other),
        })?;
        Ok(Connected { room, printer, end })
    }

    async fn run(&self, connected: Connected) -> Result<(), CliError> {
        let Connected {
            room,
            printer,
            mut end,
        } = connected;
        if self.participants {
            for participant in room.remote_participants() {
                printer.participant_event("present", &participant, "");
            }
        }
        let keys = if self.keys.is_empty() {
            vec![WILDCARD_KEY.to_string()]
        } else {
            self.keys.clone()
        };
        room.session_store()
            .add_key_change_listener(keys, printer)?;
        tokio::select! {
            reason = end.recv() => {
                use roomstate::DisconnectReason as Reason;
                let why = match reason {
                    Some(Reason::SessionEnded) => "the session ended: everyone left the room".into(),
                    Some(Reason::Removed) => "removed from the room (server API)".into(),
                    Some(Reason::DuplicateIdentity) => {
                        "disconnected: the same identity joined the room elsewhere".into()
                    }
                    Some(Reason::TokenRefused { message }) => {
                        format!("disconnected: the server refused the token: {message}")
                    }
                    Some(Reason::ClientRequested) | None => "left the room".into(),
                };
                eprintln!("{}{why}", self.prefix);
            }
            _ = tokio::signal::ctrl_c() => room.disconnect().await,
        }
        Ok(())
    }
}

struct Connected {
    room: roomstate::Room,
    printer: Arc<Printer>,
    end: tokio::sync::mpsc::UnboundedReceiver<roomstate::DisconnectReason>,
}

fn print_table(headers: &[&str], rows: impl Iterator<Item = Vec<String>>) {
    let rows: Vec<Vec<String>> = rows.collect();
    let mut widths: Vec<usize> = headers.iter().map(|header| header.len()).collect();
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        println!("{}", padded.join("  ").trim_end());
    };
    line(headers.iter().map(|header| header.to_string()).collect());
    for row in rows {
        line(row);
    }
}
