//! The floor: the least a WebSocket fan-out can do. A client's first frame says
//! `writer` or `observer`; every later frame from a writer goes, as the same bytes, to
//! every observer. No state, no parsing, no auth. It moves frames with the machinery
//! roomstate's server uses (its WebSocket reader and writer, frames encoded once, the
//! bounded per-connection outbox), so that the distance between the two is what
//! roomstate does beyond moving bytes.

use std::sync::Arc;

use bytes::Bytes;
use parking_lot::Mutex;
use roomstate_server::room::{Outbox, Outgoing, WRITE_BATCH};
use roomstate_server::websocket::{self, Frame, Incoming, Reader, Writer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

pub async fn serve() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    println!("floor listening on ws://{}", listener.local_addr().unwrap());
    let observers: Arc<Mutex<Vec<Arc<Outbox>>>> = Arc::default();
    while let Ok((stream, _)) = listener.accept().await {
        let _ = stream.set_nodelay(true);
        let observers = observers.clone();
        tokio::spawn(async move {
            let Some((stream, read)) = handshake(stream).await else {
                return;
            };
            let (read_half, write_half) = stream.into_split();
            let mut reader = Reader::new(read_half, read, 1 << 20);
            let writer = Writer::new(write_half);
            let Ok(Incoming::Text(role)) = reader.next().await else {
                return;
            };
            if role.as_str() == "observer" {
                let outbox = Outbox::new(65536, usize::MAX);
                observers.lock().push(outbox.clone());
                tokio::spawn(write_frames(writer, outbox.clone()));
                while reader.next().await.is_ok() {}
                outbox.end(websocket::close(1000, ""));
            } else {
                while let Ok(message) = reader.next().await {
                    if let Incoming::Text(text) = message {
                        let frame = Frame::text(text.as_str());
                        for observer in observers.lock().iter() {
                            observer.push(frame.wire().clone());
                        }
                    }
                }
            }
        });
    }
}

async fn write_frames(mut writer: Writer, outbox: Arc<Outbox>) {
    while let Outgoing::Frames(frames) = outbox.next(WRITE_BATCH, usize::MAX).await {
        if writer.write(&frames).await.is_err() {
            return;
        }
    }
}

/// The opening handshake, by the RFC and nothing more; the socket and whatever the
/// client sent after its request.
async fn handshake(mut stream: TcpStream) -> Option<(TcpStream, Bytes)> {
    let mut request = Vec::with_capacity(1024);
    loop {
        if stream.read_buf(&mut request).await.ok()? == 0 || request.len() > 16 * 1024 {
            return None;
        }
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut parsed = httparse::Request::new(&mut headers);
        if let httparse::Status::Complete(len) = parsed.parse(&request).ok()? {
            let key = parsed
                .headers
                .iter()
                .find(|header| header.name.eq_ignore_ascii_case("sec-websocket-key"))?
                .value;
            let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key);
            let response = format!(
                "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\n\
                 Upgrade: websocket\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
            );
            stream.write_all(response.as_bytes()).await.ok()?;
            return Some((stream, Bytes::copy_from_slice(&request[len..])));
        }
    }
}
