//! Writing encoded frames: the frames of a batch go to the kernel together, straight from
//! their shared buffers (one `writev`, nothing copied), and nothing stays allocated
//! between batches.

use std::io::IoSlice;

use bytes::Bytes;
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::OwnedWriteHalf;

/// The writing half of a connection.
pub struct Writer {
    socket: OwnedWriteHalf,
}

impl Writer {
    pub fn new(socket: OwnedWriteHalf) -> Self {
        Writer { socket }
    }

    /// Writes `frames`, in order and whole.
    pub async fn write(&mut self, frames: &[Bytes]) -> std::io::Result<()> {
        let mut slices: Vec<IoSlice<'_>> = frames.iter().map(|frame| IoSlice::new(frame)).collect();
        let mut unwritten = &mut slices[..];
        while !unwritten.is_empty() {
            let written = self.socket.write_vectored(unwritten).await?;
            if written == 0 {
                return Err(std::io::ErrorKind::WriteZero.into());
            }
            IoSlice::advance_slices(&mut unwritten, written);
        }
        Ok(())
    }

    /// Ends the sending direction (after a close frame).
    pub async fn shutdown(&mut self) -> std::io::Result<()> {
        self.socket.shutdown().await
    }
}
