//! Raw protocol clients for the load generator: thousands share one runtime, which the
//! engine (one runtime and listener thread per room) is not made for.

use std::net::{IpAddr, SocketAddr};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use roomstate_protocol::{Claims, VideoGrant};
use roomstate_server::auth::{mint_token, unix_now};
use tokio::net::TcpSocket;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use crate::target::{System, API_KEY, API_SECRET};

pub type Socket = WebSocketStream<tokio::net::TcpStream>;
pub type Sink = SplitSink<Socket, Message>;
pub type Stream = SplitStream<Socket>;

/// Every timestamp is nanoseconds since this instant, in this one process.
pub fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

pub fn nanos_since_epoch(at: Instant) -> u64 {
    at.duration_since(epoch()).as_nanos() as u64
}

/// A 64-byte payload naming the write and when it was meant to be sent.
pub fn payload(index: u64, intended: Instant) -> String {
    let mut text = format!("{index:010}.{:016}.", nanos_since_epoch(intended));
    text.extend(std::iter::repeat_n('x', 64 - text.len()));
    text
}

/// The write index and intended send time (ns since epoch) of a payload.
pub fn parse_payload(payload: &str) -> Option<(u64, u64)> {
    let index = payload.get(0..10)?.parse().ok()?;
    let nanos = payload.get(11..27)?.parse().ok()?;
    Some((index, nanos))
}

/// Finds `"field":"` in a frame and returns the string after it: cheap enough to keep
/// the load generator from being what is measured.
pub fn string_field<'a>(frame: &'a str, field: &str) -> Option<&'a str> {
    let pattern = format!("\"{field}\":\"");
    let start = frame.find(&pattern)? + pattern.len();
    let end = frame[start..].find('"')?;
    Some(&frame[start..start + end])
}

pub fn token(room: &str, identity: &str) -> String {
    let claims = Claims {
        iss: API_KEY.into(),
        sub: identity.into(),
        exp: Some(unix_now() + 24 * 3600),
        video: VideoGrant {
            room: room.into(),
            room_join: true,
            can_update_own_metadata: Some(true),
            ..Default::default()
        },
        ..Default::default()
    };
    mint_token(&claims, API_SECRET)
}

/// Opens a WebSocket from `source` (spread clients over 127.0.0.x past one address'
/// ports).
pub async fn open(addr: SocketAddr, path: &str, source: Option<IpAddr>) -> Socket {
    let socket = TcpSocket::new_v4().unwrap();
    if let Some(source) = source {
        // Choose the port at connect time (by the whole 4-tuple), not at bind time,
        // where the kernel searches the bound ports one by one.
        use std::os::fd::AsRawFd;
        let on: libc::c_int = 1;
        // SAFETY: a valid socket and option buffer.
        unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                libc::IPPROTO_IP,
                libc::IP_BIND_ADDRESS_NO_PORT,
                &on as *const libc::c_int as *const libc::c_void,
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
        }
        socket.bind(SocketAddr::new(source, 0)).unwrap();
    }
    let stream = socket.connect(addr).await.expect("connect to the target");
    stream.set_nodelay(true).unwrap();
    let url = format!("ws://{addr}{path}");
    let (socket, _) = tokio_tungstenite::client_async(url, stream)
        .await
        .expect("websocket handshake");
    socket
}

/// A joined client of `system`: for roomstate it joined `room` and observes `keys`; for
/// the floor it announced itself.
pub async fn join(
    system: System,
    addr: SocketAddr,
    room: &str,
    identity: &str,
    observe: &[&str],
    source: Option<IpAddr>,
) -> (Sink, Stream) {
    match system {
        System::Roomstate | System::RoomstateCluster => {
            let path = format!("/rtc?protocol=1&access_token={}", token(room, identity));
            let (mut sink, mut stream) = open(addr, &path, source).await.split();
            next_text(&mut stream).await; // joined
            if !observe.is_empty() {
                let keys: Vec<String> = observe.iter().map(|key| format!("\"{key}\"")).collect();
                sink.send(Message::text(format!(
                    "{{\"type\":\"observe\",\"id\":1,\"keys\":[{}]}}",
                    keys.join(",")
                )))
                .await
                .unwrap();
                loop {
                    if next_text(&mut stream).await.contains("\"type\":\"reply\"") {
                        break;
                    }
                }
            }
            (sink, stream)
        }
        System::Floor => {
            let (mut sink, stream) = open(addr, "/", source).await.split();
            let role = if observe.is_empty() {
                "writer"
            } else {
                "observer"
            };
            sink.send(Message::text(role)).await.unwrap();
            (sink, stream)
        }
        System::YWebsocket => {
            // A Yjs client joining the room's document: y-websocket's sync step 1 with
            // an empty state vector (message sync = 0, step 1 = 0, a one-byte vector 0).
            let (mut sink, stream) = open(addr, &format!("/{room}"), source).await.split();
            sink.send(Message::binary(vec![0u8, 0, 1, 0]))
                .await
                .unwrap();
            (sink, stream)
        }
    }
}

pub async fn next_text(stream: &mut Stream) -> String {
    loop {
        match tokio::time::timeout(Duration::from_secs(30), stream.next()).await {
            Ok(Some(Ok(Message::Text(text)))) => return text.to_string(),
            Ok(Some(Ok(_))) => continue,
            other => panic!("the connection ended: {other:?}"),
        }
    }
}

/// The frame a writer sends: a store write for roomstate, the bare payload for the floor.
pub fn write_frame(system: System, id: u64, key: &str, payload: &str) -> Message {
    match system {
        System::Roomstate | System::RoomstateCluster => Message::text(format!(
            "{{\"type\":\"set\",\"id\":{id},\"key\":\"{key}\",\"value\":\"{payload}\"}}"
        )),
        System::Floor => Message::text(payload.to_string()),
        System::YWebsocket => unreachable!("y-websocket is driven by peer/driver.mjs"),
    }
}

/// The payload a frame delivers, if it delivers one.
pub fn delivered(system: System, frame: &str) -> Option<&str> {
    match system {
        System::Roomstate | System::RoomstateCluster => frame
            .contains("store_changed")
            .then(|| string_field(frame, "value"))
            .flatten(),
        System::Floor => Some(frame),
        System::YWebsocket => unreachable!("y-websocket is driven by peer/driver.mjs"),
    }
}

/// Raises the open-file limit as far as allowed (thousands of sockets per side).
pub fn raise_fd_limit() -> u64 {
    // SAFETY: getrlimit/setrlimit with a valid pointer.
    unsafe {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit);
        limit.rlim_cur = limit.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        limit.rlim_cur
    }
}

/// A TCP proxy that can drop every connection at once, as a server restart or a network
/// change would.
pub struct Proxy {
    pub addr: SocketAddr,
    connections: std::sync::Arc<parking_lot::Mutex<Vec<tokio::task::AbortHandle>>>,
}

impl Proxy {
    pub async fn start(target: SocketAddr) -> Proxy {
        let socket = TcpSocket::new_v4().unwrap();
        socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let listener = socket.listen(4096).unwrap();
        let addr = listener.local_addr().unwrap();
        let connections: std::sync::Arc<parking_lot::Mutex<Vec<tokio::task::AbortHandle>>> =
            Default::default();
        let tracked = connections.clone();
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let _ = inbound.set_nodelay(true);
                let task = tokio::spawn(async move {
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await {
                        let _ = outbound.set_nodelay(true);
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                tracked.lock().push(task.abort_handle());
            }
        });
        Proxy { addr, connections }
    }

    pub fn cut(&self) {
        for connection in self.connections.lock().drain(..) {
            connection.abort();
        }
    }
}
