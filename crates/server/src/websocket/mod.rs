//! The server's side of WebSocket (RFC 6455) over its own TCP sockets: the handshake, a
//! reader that holds no buffer while a connection is idle, and a writer that sends
//! frames encoded once for all their recipients, several per system call. Header parsing
//! and the accept key are tungstenite's; the buffers are ours, because tungstenite's
//! stream keeps a read buffer and a write buffer (grown to the largest frame sent) for
//! every connection's whole life, which was most of what an idle connection cost.

mod frame;
mod handshake;
mod read;
mod write;

pub use frame::{close, pong, Frame};
pub(crate) use handshake::{Socket, Upgrade};
pub use read::{Incoming, ReadError, Reader};
pub use write::Writer;
