//! How fast the server reads a client: a token bucket of frames and one of bytes per
//! connection, and the same pair shared by every connection from one IP address, so
//! that a client which reconnects (or opens many sockets) does not refill its budget.
//! Past a budget the server just reads later: TCP pushes back on the client.

use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::time::Instant;

/// Frames and bytes per second; each bucket holds one second's worth.
#[derive(Clone, Copy, Debug)]
pub struct Rate {
    pub frames_per_second: usize,
    pub bytes_per_second: usize,
}

struct Bucket {
    per_second: f64,
    capacity: f64,
    available: f64,
}

impl Bucket {
    fn new(per_second: usize) -> Self {
        let per_second = per_second.max(1) as f64;
        Bucket {
            per_second,
            capacity: per_second,
            available: per_second,
        }
    }

    fn refill(&mut self, elapsed: Duration) {
        self.available =
            (self.available + elapsed.as_secs_f64() * self.per_second).min(self.capacity);
    }

    /// How long until `amount` is available (none: now). More than the capacity
    /// counts as the capacity, so one frame larger than a second's worth still passes.
    fn wait_for(&self, amount: f64) -> Option<Duration> {
        let missing = amount.min(self.capacity) - self.available;
        (missing > 0.0).then(|| Duration::from_secs_f64(missing / self.per_second))
    }

    fn take(&mut self, amount: f64) {
        self.available -= amount.min(self.capacity);
    }
}

/// A pair of buckets: frames and bytes.
pub struct InboundBudget {
    frames: Bucket,
    bytes: Bucket,
    last: Instant,
}

impl InboundBudget {
    pub fn new(rate: Rate) -> Self {
        InboundBudget {
            frames: Bucket::new(rate.frames_per_second),
            bytes: Bucket::new(rate.bytes_per_second),
            last: Instant::now(),
        }
    }

    /// Takes `frames` frames of `len` bytes in all if both buckets hold them; otherwise
    /// says how long until they will.
    fn try_take(&mut self, frames: f64, len: usize) -> Result<(), Duration> {
        let now = Instant::now();
        let elapsed = now - self.last;
        self.last = now;
        self.frames.refill(elapsed);
        self.bytes.refill(elapsed);
        let len = len as f64;
        match self.frames.wait_for(frames).max(self.bytes.wait_for(len)) {
            Some(wait) => Err(wait),
            None => {
                self.frames.take(frames);
                self.bytes.take(len);
                Ok(())
            }
        }
    }

    /// Takes one frame of `len` bytes, first waiting until the buckets hold it.
    pub async fn spend(&mut self, len: usize) {
        take_when_available(|| self.try_take(1.0, len)).await
    }

    /// Takes `len` bytes that are no frame (read to be dropped), first waiting until the
    /// bytes bucket holds them.
    pub async fn spend_bytes(&mut self, len: usize) {
        take_when_available(|| self.try_take(0.0, len)).await
    }
}

/// The budget of every connection from one IP address.
#[derive(Clone)]
pub struct AddressBudget(Arc<Mutex<InboundBudget>>);

impl AddressBudget {
    pub fn new(rate: Rate) -> Self {
        AddressBudget(Arc::new(Mutex::new(InboundBudget::new(rate))))
    }

    /// As [`InboundBudget::spend`]; connections of the address that wait take turns in
    /// the order their waits end.
    pub async fn spend(&self, len: usize) {
        // The lock is held for the arithmetic only, never across the sleep.
        take_when_available(|| self.0.lock().try_take(1.0, len)).await
    }

    /// As [`InboundBudget::spend_bytes`].
    pub async fn spend_bytes(&self, len: usize) {
        take_when_available(|| self.0.lock().try_take(0.0, len)).await
    }
}

/// Retries `try_take` after each wait it asks for, until it takes.
async fn take_when_available(mut try_take: impl FnMut() -> Result<(), Duration>) {
    while let Err(wait) = try_take() {
        tokio::time::sleep(wait).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_budget_passes_a_second_s_worth_at_once_then_paces() {
        let mut budget = InboundBudget::new(Rate {
            frames_per_second: 10,
            bytes_per_second: 1000,
        });
        let start = Instant::now();
        for _ in 0..10 {
            budget.spend(1).await;
        }
        assert_eq!(
            start.elapsed(),
            Duration::ZERO,
            "a full bucket waits for nothing"
        );
        budget.spend(1).await;
        let paced = start.elapsed();
        assert!(
            paced >= Duration::from_millis(100) && paced < Duration::from_millis(101),
            "one frame waits for its refill: {paced:?}"
        );
        // A frame larger than a second's bytes passes (once the frame bucket allows).
        budget.spend(5000).await;
        let large = start.elapsed();
        assert!(
            large >= Duration::from_millis(200) && large < Duration::from_millis(201),
            "{large:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn bytes_dropped_draw_on_the_bytes_alone() {
        let mut budget = InboundBudget::new(Rate {
            frames_per_second: 10,
            bytes_per_second: 1000,
        });
        let start = Instant::now();
        budget.spend_bytes(500).await;
        budget.spend_bytes(500).await;
        // No frame was taken: a second's worth of empty frames still passes at once.
        for _ in 0..10 {
            budget.spend(0).await;
        }
        assert_eq!(
            start.elapsed(),
            Duration::ZERO,
            "a second's bytes and frames"
        );
        budget.spend_bytes(500).await;
        let paced = start.elapsed();
        assert!(
            paced >= Duration::from_millis(500) && paced < Duration::from_millis(501),
            "then the bytes are paced: {paced:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn connections_of_one_address_share_its_budget() {
        let address = AddressBudget::new(Rate {
            frames_per_second: 10,
            bytes_per_second: 1_000_000,
        });
        let start = Instant::now();
        // Two connections, ten frames each: the second ten wait for a second's refill,
        // whichever connection sends them.
        let first = address.clone();
        let one = tokio::spawn(async move {
            for _ in 0..10 {
                first.spend(1).await;
            }
        });
        let second = address.clone();
        let two = tokio::spawn(async move {
            for _ in 0..10 {
                second.spend(1).await;
            }
        });
        one.await.unwrap();
        two.await.unwrap();
        let elapsed = start.elapsed();
        assert!(
            elapsed >= Duration::from_millis(1000) && elapsed < Duration::from_millis(1100),
            "{elapsed:?}"
        );
    }
}
