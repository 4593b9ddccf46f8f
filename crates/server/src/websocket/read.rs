//! Reading a client's frames. The bytes are parsed with tungstenite's header parser; what
//! is ours is the buffer: it exists only while a read is in progress or a frame is
//! partly read, so an idle connection holds no read buffer at all.

use std::io::{Cursor, Read};

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::AsyncReadExt;
use tokio::net::tcp::OwnedReadHalf;
use tungstenite::protocol::frame::coding::{Control, Data, OpCode};
use tungstenite::protocol::frame::{FrameHeader, Utf8Bytes};

/// Bytes asked of the kernel per read when nothing larger is expected: client requests
/// are small.
const READ_CHUNK: usize = 1024;

/// A control frame's payload limit (RFC 6455, section 5.5).
const MAX_CONTROL_PAYLOAD: u64 = 125;

/// A message from the client.
#[derive(Debug, PartialEq)]
pub enum Incoming {
    Text(Utf8Bytes),
    /// A binary message (not part of the protocol), of this many bytes.
    Binary(usize),
    /// A ping with its payload, to be answered with a pong.
    Ping(Bytes),
    Pong,
    /// The client's closing handshake, with its status code if it gave one.
    Close(Option<u16>),
}

/// Why reading ended without a closing handshake.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("a message was larger than {0} bytes")]
    TooLarge(usize),
    #[error("protocol violation: {0}")]
    Protocol(&'static str),
    #[error("the connection ended without a close frame")]
    Ended,
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Turns bytes into messages: frames unmasked, fragments joined, limits checked. No I/O.
#[derive(Debug)]
pub struct Decoder {
    max_message: usize,
    /// A fragmented message so far, and whether it is text.
    fragments: Option<(bool, BytesMut)>,
}

impl Decoder {
    pub fn new(max_message: usize) -> Self {
        Decoder {
            max_message,
            fragments: None,
        }
    }

    /// Takes the next message out of `buffer`; `None` when `buffer` ends inside a frame
    /// (room for the rest of it is then reserved in `buffer`).
    pub fn decode(&mut self, buffer: &mut BytesMut) -> Result<Option<Incoming>, ReadError> {
        loop {
            let mut cursor = Cursor::new(&buffer[..]);
            // The parser's one error is an opcode RFC 6455 reserves.
            let Some((header, len)) = FrameHeader::parse(&mut cursor)
                .map_err(|_| ReadError::Protocol("a reserved opcode"))?
            else {
                return Ok(None);
            };
            let header_len = cursor.position() as usize;
            let so_far = self.fragments.as_ref().map_or(0, |(_, data)| data.len());
            if len > (self.max_message - so_far) as u64 {
                return Err(ReadError::TooLarge(self.max_message));
            }
            let len = len as usize;
            if buffer.len() < header_len + len {
                buffer.reserve(header_len + len - buffer.len());
                return Ok(None);
            }
            if header.rsv1 || header.rsv2 || header.rsv3 {
                return Err(ReadError::Protocol(
                    "reserved bits set, no extension agreed",
                ));
            }
            let Some(mask) = header.mask else {
                return Err(ReadError::Protocol("a client frame was not masked"));
            };
            buffer.advance(header_len);
            let mut payload = buffer.split_to(len);
            unmask(&mut payload, mask);
            match header.opcode {
                OpCode::Control(control) => {
                    if !header.is_final || len as u64 > MAX_CONTROL_PAYLOAD {
                        return Err(ReadError::Protocol(
                            "a control frame over 125 bytes or fragmented",
                        ));
                    }
                    return match control {
                        Control::Ping => Ok(Some(Incoming::Ping(payload.freeze()))),
                        Control::Pong => Ok(Some(Incoming::Pong)),
                        Control::Close => Ok(Some(Incoming::Close(close_code(&payload)?))),
                        Control::Reserved(_) => Err(ReadError::Protocol("a reserved opcode")),
                    };
                }
                OpCode::Data(Data::Continue) => {
                    let Some((_, data)) = self.fragments.as_mut() else {
                        return Err(ReadError::Protocol("a continuation of nothing"));
                    };
                    data.extend_from_slice(&payload);
                    if header.is_final {
                        let (text, data) = self.fragments.take().expect("checked above");
                        return message(text, data).map(Some);
                    }
                }
                OpCode::Data(data @ (Data::Text | Data::Binary)) => {
                    if self.fragments.is_some() {
                        return Err(ReadError::Protocol("a new message inside a fragmented one"));
                    }
                    let text = data == Data::Text;
                    if header.is_final {
                        return message(text, payload).map(Some);
                    }
                    self.fragments = Some((text, payload));
                }
                OpCode::Data(Data::Reserved(_)) => {
                    return Err(ReadError::Protocol("a reserved opcode"))
                }
            }
        }
    }
}

fn message(text: bool, data: BytesMut) -> Result<Incoming, ReadError> {
    if !text {
        return Ok(Incoming::Binary(data.len()));
    }
    Utf8Bytes::try_from(data.freeze())
        .map(Incoming::Text)
        .map_err(|_| ReadError::Protocol("a text message that is not UTF-8"))
}

fn close_code(payload: &[u8]) -> Result<Option<u16>, ReadError> {
    match payload {
        [] => Ok(None),
        [high, low, reason @ ..] if std::str::from_utf8(reason).is_ok() => {
            Ok(Some(u16::from_be_bytes([*high, *low])))
        }
        _ => Err(ReadError::Protocol("a malformed close frame")),
    }
}

fn unmask(payload: &mut [u8], mask: [u8; 4]) {
    for (i, byte) in payload.iter_mut().enumerate() {
        *byte ^= mask[i & 3];
    }
}

/// The reading half of a connection.
pub struct Reader {
    socket: OwnedReadHalf,
    /// Bytes read and not yet decoded; empty (no allocation) between messages.
    buffer: BytesMut,
    decoder: Decoder,
}

impl Reader {
    /// `read` is what the HTTP server had read past the upgrade request.
    pub fn new(socket: OwnedReadHalf, read: Bytes, max_message: usize) -> Self {
        Reader {
            socket,
            buffer: BytesMut::from(&read[..]),
            decoder: Decoder::new(max_message),
        }
    }

    /// The next message.
    pub async fn next(&mut self) -> Result<Incoming, ReadError> {
        loop {
            if let Some(message) = self.decoder.decode(&mut self.buffer)? {
                return Ok(message);
            }
            if self.buffer.is_empty() {
                // Lets go of the last read's allocation (messages handed out may still
                // share it) instead of keeping it for an idle connection.
                self.buffer = BytesMut::new();
            }
            // Waits without a buffer; the read below then finds the bytes at once. It is
            // a `read_buf`, not a `try_read_buf`: a short read tells tokio the socket is
            // drained, which saves the `recv` that would only say "would block".
            self.socket.readable().await?;
            if self.buffer.capacity() == self.buffer.len() {
                self.buffer.reserve(READ_CHUNK);
            }
            if self.socket.read_buf(&mut self.buffer).await? == 0 {
                return Err(ReadError::Ended);
            }
        }
    }

    /// For a connection the server has ended: drops what was read and not yet handed
    /// out, then reads the client's next bytes (a chunk at most) and drops them too.
    /// Returns how many bytes that read dropped: 0 once the client closed its side.
    pub async fn discard(&mut self) -> std::io::Result<usize> {
        self.buffer = BytesMut::new();
        self.decoder.fragments = None;
        let mut chunk = [0; READ_CHUNK];
        self.socket.read(&mut chunk).await
    }

    /// The next message among the bytes that have already arrived, without waiting for
    /// more: for a connection that can no longer be written to, whose client may still
    /// have said something (a `leave`) before it went. `Ended` once no whole message is
    /// left. A reset socket still hands out what arrived before the reset; the read goes
    /// straight to it, as tokio may not have seen those bytes arrive yet.
    pub fn next_arrived(&mut self) -> Result<Incoming, ReadError> {
        let socket = socket2::SockRef::from(self.socket.as_ref());
        let mut chunk = [0; READ_CHUNK];
        loop {
            if let Some(message) = self.decoder.decode(&mut self.buffer)? {
                return Ok(message);
            }
            // The socket is non-blocking (tokio's): this never waits.
            match (&*socket).read(&mut chunk) {
                Ok(0) => return Err(ReadError::Ended),
                Ok(read) => self.buffer.extend_from_slice(&chunk[..read]),
                Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => {
                    return Err(ReadError::Ended)
                }
                Err(error) => return Err(ReadError::Io(error)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A client frame: masked, as RFC 6455 requires of clients.
    fn client_frame(first: u8, payload: &[u8]) -> Vec<u8> {
        let mask = [0x37, 0xfa, 0x21, 0x3d];
        let mut frame = vec![first];
        match payload.len() {
            len @ 0..=125 => frame.push(0x80 | len as u8),
            len @ 126..=65_535 => {
                frame.push(0x80 | 126);
                frame.extend_from_slice(&(len as u16).to_be_bytes());
            }
            len => {
                frame.push(0x80 | 127);
                frame.extend_from_slice(&(len as u64).to_be_bytes());
            }
        }
        frame.extend_from_slice(&mask);
        frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        frame
    }

    fn decode_all(bytes: &[u8], max: usize) -> Vec<Result<Incoming, String>> {
        let mut decoder = Decoder::new(max);
        let mut buffer = BytesMut::new();
        let mut out = Vec::new();
        // Byte by byte: every split of a frame across reads is taken.
        for byte in bytes {
            buffer.extend_from_slice(&[*byte]);
            loop {
                match decoder.decode(&mut buffer) {
                    Ok(Some(message)) => out.push(Ok(message)),
                    Ok(None) => break,
                    Err(error) => {
                        out.push(Err(error.to_string()));
                        return out;
                    }
                }
            }
        }
        out
    }

    #[test]
    fn messages_split_anywhere_come_out_whole() {
        let long = "ü".repeat(40_000);
        let mut bytes = client_frame(0x81, b"{\"type\":\"get\"}");
        bytes.extend(client_frame(0x89, b"hi"));
        bytes.extend(client_frame(0x81, long.as_bytes()));
        // A fragmented text message with a ping between its fragments.
        bytes.extend(client_frame(0x01, b"frag"));
        bytes.extend(client_frame(0x89, b""));
        bytes.extend(client_frame(0x80, b"ment"));
        bytes.extend(client_frame(0x82, &[0, 1, 2]));
        bytes.extend(client_frame(0x88, &[0x03, 0xe8, b'o', b'k']));
        let got = decode_all(&bytes, 100_000);
        let text = |s: &str| Ok(Incoming::Text(s.to_string().into()));
        assert_eq!(
            got,
            vec![
                text("{\"type\":\"get\"}"),
                Ok(Incoming::Ping(Bytes::from_static(b"hi"))),
                text(&long),
                Ok(Incoming::Ping(Bytes::new())),
                text("fragment"),
                Ok(Incoming::Binary(3)),
                Ok(Incoming::Close(Some(1000))),
            ]
        );
    }

    #[test]
    fn a_message_over_the_limit_is_refused_before_it_is_read() {
        let mut decoder = Decoder::new(1000);
        // Only the header of a 2,000-byte frame has arrived.
        let frame = client_frame(0x81, &[b'x'; 2000]);
        let mut buffer = BytesMut::from(&frame[..8]);
        assert!(matches!(
            decoder.decode(&mut buffer),
            Err(ReadError::TooLarge(1000))
        ));
        // Fragments count together.
        let mut bytes = client_frame(0x01, &[b'x'; 600]);
        bytes.extend(client_frame(0x80, &[b'x'; 600]));
        let got = decode_all(&bytes, 1000);
        assert_eq!(
            got,
            vec![Err("a message was larger than 1000 bytes".into())]
        );
    }

    #[test]
    fn protocol_violations_are_refused() {
        let unmasked = vec![0x81, 2, b'h', b'i'];
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (unmasked, "not masked"),
            (client_frame(0xC1, b"x"), "reserved bits"),
            (client_frame(0x83, b"x"), "reserved opcode"),
            (client_frame(0x80, b"x"), "continuation of nothing"),
            (client_frame(0x09, b"x"), "control frame"),
            (client_frame(0x89, &[0; 126]), "control frame"),
            (client_frame(0x81, &[0xff, 0xfe]), "not UTF-8"),
            (client_frame(0x88, &[3]), "malformed close"),
            (
                [client_frame(0x01, b"a"), client_frame(0x81, b"b")].concat(),
                "inside a fragmented",
            ),
        ];
        for (bytes, expected) in cases {
            let got = decode_all(&bytes, 1000);
            let Some(Err(error)) = got.last() else {
                panic!("{expected}: accepted as {got:?}");
            };
            assert!(error.contains(expected), "{expected}: {error}");
        }
    }
}
