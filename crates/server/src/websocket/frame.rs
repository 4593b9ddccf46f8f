//! Frames as the server writes them, encoded once: the header and the payload in one
//! shared buffer. A change fanned out to a thousand observers is one allocation, and
//! every writer hands the kernel the same bytes (server frames are not masked, so every
//! recipient's copy would be identical).

use bytes::Bytes;
use serde::Serialize;

const FIN: u8 = 0x80;
const TEXT: u8 = 0x1;
const CLOSE: u8 = 0x8;
const PONG: u8 = 0xA;

/// The longest header of an unmasked frame: two bytes and a 64-bit length.
const MAX_HEADER: usize = 10;

/// The most a thread keeps of the buffer `Frame::json` serializes into.
const SCRATCH_KEPT: usize = 16 * 1024;

/// A text frame, ready to write: shared (not copied) by every queue it goes to.
#[derive(Clone, PartialEq, Eq)]
pub struct Frame {
    /// Header and payload.
    wire: Bytes,
    /// Where the payload starts in `wire`.
    text_at: u8,
}

impl Frame {
    /// A frame carrying `message` as JSON.
    ///
    /// Serialized into a buffer each thread keeps, then copied into an allocation of
    /// exactly its size: a buffer grown while serializing would have a third of it to
    /// spare on average, kept for as long as the frame is (a room's replay log keeps
    /// thousands), and would be reallocated on the way. A buffer grown past
    /// `SCRATCH_KEPT` by a large frame is let go of.
    pub fn json(message: &impl Serialize) -> Frame {
        thread_local! {
            static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
        }
        SCRATCH.with_borrow_mut(|scratch| {
            scratch.clear();
            scratch.extend_from_slice(&[0; MAX_HEADER]);
            serde_json::to_writer(&mut *scratch, message).expect("server messages serialize");
            let header = header(TEXT, scratch.len() - MAX_HEADER);
            let start = MAX_HEADER - header.len();
            scratch[start..MAX_HEADER].copy_from_slice(&header);
            let wire = Bytes::copy_from_slice(&scratch[start..]);
            if scratch.capacity() > SCRATCH_KEPT {
                *scratch = Vec::new();
            }
            Frame {
                wire,
                text_at: header.len() as u8,
            }
        })
    }

    /// A frame carrying `text`.
    pub fn text(text: &str) -> Frame {
        Frame {
            wire: encode(TEXT, &[text.as_bytes()]),
            text_at: header(TEXT, text.len()).len() as u8,
        }
    }

    /// The frame `wire` holds, if it is one whole text frame as the server writes them
    /// (for tests and tools that read what a connection was sent).
    pub fn from_wire(wire: Bytes) -> Option<Frame> {
        let (&first, rest) = wire.split_first()?;
        let (&second, rest) = rest.split_first()?;
        let (len, text_at) = match second {
            126 => (
                u16::from_be_bytes(rest.get(..2)?.try_into().ok()?) as usize,
                4,
            ),
            127 => (
                u64::from_be_bytes(rest.get(..8)?.try_into().ok()?) as usize,
                10,
            ),
            len @ 0..126 => (len as usize, 2),
            _ => return None, // masked
        };
        let whole = first == FIN | TEXT && wire.len() == text_at + len;
        let text = std::str::from_utf8(&wire[text_at.min(wire.len())..]).is_ok();
        (whole && text).then_some(Frame {
            wire,
            text_at: text_at as u8,
        })
    }

    /// The payload.
    pub fn as_str(&self) -> &str {
        // SAFETY: every constructor puts UTF-8 after `text_at`: `json` serde_json's
        // output, `text` a `&str`, `from_wire` only what it checked. Not checking again
        // matters: a room's snapshot reads every frame of its replay log.
        unsafe { std::str::from_utf8_unchecked(&self.wire[self.text_at as usize..]) }
    }

    /// Header and payload, as the writer sends them.
    pub fn wire(&self) -> &Bytes {
        &self.wire
    }

    pub fn into_wire(self) -> Bytes {
        self.wire
    }

    /// The bytes it takes on the wire (and in a queue).
    pub fn len(&self) -> usize {
        self.wire.len()
    }

    pub fn is_empty(&self) -> bool {
        self.wire.len() == self.text_at as usize
    }
}

impl std::fmt::Debug for Frame {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Frame").field(&self.as_str()).finish()
    }
}

/// A close frame with `code` and `reason` (cut to the 123 bytes a control frame leaves
/// for it, on a character boundary).
pub fn close(code: u16, reason: &str) -> Bytes {
    let mut cut = reason.len().min(123);
    while !reason.is_char_boundary(cut) {
        cut -= 1;
    }
    encode(CLOSE, &[&code.to_be_bytes(), &reason.as_bytes()[..cut]])
}

/// The answer to a ping carrying `payload` (at most 125 bytes: the reader checks).
pub fn pong(payload: &[u8]) -> Bytes {
    encode(PONG, &[payload])
}

/// A final frame of `opcode` whose payload is `parts`, one after the other.
fn encode(opcode: u8, parts: &[&[u8]]) -> Bytes {
    let len = parts.iter().map(|part| part.len()).sum();
    let header = header(opcode, len);
    let mut buffer = Vec::with_capacity(header.len() + len);
    buffer.extend_from_slice(&header);
    for part in parts {
        buffer.extend_from_slice(part);
    }
    buffer.into()
}

/// The header of an unmasked, final frame (RFC 6455, section 5.2).
fn header(opcode: u8, len: usize) -> Header {
    let mut header = Header::default();
    header.push(FIN | opcode);
    if len < 126 {
        header.push(len as u8);
    } else if let Ok(len) = u16::try_from(len) {
        header.push(126);
        header.extend(&len.to_be_bytes());
    } else {
        header.push(127);
        header.extend(&(len as u64).to_be_bytes());
    }
    header
}

#[derive(Default)]
struct Header {
    bytes: [u8; MAX_HEADER],
    len: usize,
}

impl Header {
    fn push(&mut self, byte: u8) {
        self.bytes[self.len] = byte;
        self.len += 1;
    }

    fn extend(&mut self, bytes: &[u8]) {
        self.bytes[self.len..self.len + bytes.len()].copy_from_slice(bytes);
        self.len += bytes.len();
    }

    fn len(&self) -> usize {
        self.len
    }
}

impl std::ops::Deref for Header {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_take_the_shortest_header() {
        for (len, header_len) in [(0, 2), (125, 2), (126, 4), (65_535, 4), (65_536, 10)] {
            let text = "x".repeat(len);
            let frame = Frame::text(&text);
            assert_eq!(frame.len(), header_len + len, "payload of {len}");
            assert_eq!(frame.as_str(), text);
            let json = Frame::json(&text);
            assert_eq!(json.as_str(), format!("\"{text}\""));
            assert_eq!(Frame::from_wire(json.wire().clone()), Some(json), "whole");
            assert_eq!(Frame::from_wire(frame.wire().clone()), Some(frame));
        }
        let frame = Frame::text(&"y".repeat(300));
        assert_eq!(&frame.wire()[..4], &[0x81, 126, 1, 44]);
        assert_eq!(Frame::from_wire(frame.wire().slice(..299)), None);
        assert_eq!(Frame::from_wire(pong(b"p")), None);
    }

    #[test]
    fn json_frames_are_right_whichever_way_the_thread_s_buffer_went_before() {
        // Small, large (the buffer let go of after), small again (a new buffer).
        for len in [10, SCRATCH_KEPT * 2, 10, 300] {
            let text = "z".repeat(len);
            let frame = Frame::json(&text);
            assert_eq!(frame.as_str(), format!("\"{text}\""));
            assert_eq!(Frame::from_wire(frame.wire().clone()), Some(frame));
        }
    }

    #[test]
    fn close_reasons_fit_a_control_frame() {
        let long = "é".repeat(100);
        let frame = close(1008, &long);
        assert!(frame.len() <= 2 + 125, "{}", frame.len());
        assert_eq!(&frame[..4], &[0x88, frame.len() as u8 - 2, 0x03, 0xF0]);
        assert!(std::str::from_utf8(&frame[4..]).is_ok());
    }
}
