//! W2's room work in this process: ten writers and ten observers of every key, as in
//! W2, their frames going through the decoder, the room's rules and the fan-out into
//! each connection's queue, and out of the queues as a connection's writer takes them;
//! no socket, no other thread. What that leaves out is the kernel's part of W2's cost
//! (and the framing of reads): what is left is roomstate's own work per write, and the
//! allocations it makes, which unlike CPU time are the same in every run.

use std::time::{Duration, Instant};

use roomstate_protocol::ClientMessage;
use roomstate_server::room::{Outgoing, WRITE_BATCH, WRITE_BATCH_BYTES};
use serde::Serialize;

use crate::allocations::Counted;
use crate::clients::payload;
use crate::rules_fuzz::{join, single_node, Member};

pub const WRITERS: usize = 10;
pub const OBSERVERS: usize = 10;
/// Writes between two turns of the writers, which take what is queued as a connection's
/// writer does (its batch limits): W2's top step sends 40 writes every millisecond.
const BURST: usize = 40;

#[derive(Debug, Serialize)]
pub struct RoomCost {
    pub one_key: bool,
    pub rounds: usize,
    pub writes_per_round: usize,
    /// Heap allocations (`malloc` and `realloc`) per write, its deliveries included.
    pub allocations_per_write: f64,
    /// This thread's CPU time per write over the rounds: p50, p90, lowest, highest.
    pub cpu_ns_per_write: [u64; 4],
}

/// Runs `rounds` rounds of `writes` writes, on ten distinct keys and then on one key.
pub fn run(rounds: usize, writes: usize) -> Result<Vec<RoomCost>, String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    [false, true]
        .into_iter()
        .map(|one_key| runtime.block_on(one_room(one_key, rounds, writes)))
        .collect()
}

async fn one_room(one_key: bool, rounds: usize, writes: usize) -> Result<RoomCost, String> {
    let rooms = single_node("in-process");
    let mut observers = Vec::new();
    for n in 0..OBSERVERS {
        let mut observer = join(&rooms, &format!("o{n}")).await?;
        request(
            &mut observer,
            ClientMessage::Observe {
                id: 0,
                keys: vec!["*".into()],
            },
        )
        .await;
        observers.push(observer);
    }
    let mut writers = Vec::new();
    for n in 0..WRITERS {
        writers.push(join(&rooms, &format!("w{n}")).await?);
    }
    for member in writers.iter_mut().chain(&mut observers) {
        take_all(member);
    }
    let mut cpu = Vec::with_capacity(rounds);
    let mut allocations = 0;
    let mut index = 0u64;
    for _ in 0..rounds {
        // The frames as they arrive, made before the clock starts.
        let frames: Vec<String> = (0..writes)
            .map(|n| {
                index += 1;
                let key = if one_key {
                    "k".to_string()
                } else {
                    format!("k{}", n % WRITERS)
                };
                let value = payload(index, Instant::now());
                format!(
                    "{{\"type\":\"set\",\"id\":{index},\"key\":\"{key}\",\"value\":\"{value}\"}}"
                )
            })
            .collect();
        let started = thread_cpu();
        let counting = Counted::start();
        let taken = writes_round(&frames, &mut writers, &mut observers).await;
        let allocated = counting.stop();
        cpu.push((thread_cpu() - started).as_nanos() as u64 / writes as u64);
        allocations += allocated;
        let (replies, deliveries) = taken;
        if replies != writes || deliveries != writes * OBSERVERS {
            return Err(format!(
                "a round of {writes} writes took {replies} replies and {deliveries} deliveries, not {writes} and {}",
                writes * OBSERVERS
            ));
        }
    }
    cpu.sort_unstable();
    Ok(RoomCost {
        one_key,
        rounds,
        writes_per_round: writes,
        allocations_per_write: allocations as f64 / (rounds * writes) as f64,
        cpu_ns_per_write: [
            cpu[cpu.len() / 2],
            cpu[cpu.len() * 9 / 10],
            cpu[0],
            cpu[cpu.len() - 1],
        ],
    })
}

/// Sends a round's frames in bursts of `BURST`, the writers taking turns within a burst,
/// each burst followed by the connections' writers' turn. Returns the replies and the
/// deliveries taken.
async fn writes_round(
    frames: &[String],
    writers: &mut [Member],
    observers: &mut [Member],
) -> (usize, usize) {
    let (mut replies, mut deliveries) = (0, 0);
    for frames in frames.chunks(BURST) {
        for (n, text) in frames.iter().enumerate() {
            let writer = &mut writers[n % WRITERS];
            let message = serde_json::from_str::<ClientMessage>(text).expect("a valid frame");
            writer
                .room
                .clone()
                .handle(&writer.sid, writer.epoch, message, &writer.connection)
                .await;
        }
        replies += writers.iter_mut().map(take_all).sum::<usize>();
        deliveries += observers.iter_mut().map(take_all).sum::<usize>();
    }
    (replies, deliveries)
}

/// Sends one request outside the measured rounds and waits for nothing: on one node it
/// is applied before `handle` returns.
async fn request(member: &mut Member, mut message: ClientMessage) {
    message.set_request_id(member.next_id);
    member.next_id += 1;
    member
        .room
        .clone()
        .handle(&member.sid, member.epoch, message, &member.connection)
        .await;
}

/// Takes and drops what is queued for `member`, as its writer would in batches; the
/// frames taken.
fn take_all(member: &mut Member) -> usize {
    let mut taken = 0;
    while let Some(outgoing) = member.outbox.take(WRITE_BATCH, WRITE_BATCH_BYTES) {
        match outgoing {
            Outgoing::Frames(frames) => taken += frames.len(),
            Outgoing::Close(_) | Outgoing::End => break,
        }
    }
    taken
}

fn thread_cpu() -> Duration {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec it is given.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut now) };
    Duration::new(now.tv_sec as u64, now.tv_nsec as u32)
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_write_is_answered_and_delivered_to_every_observer() {
        // `run` fails a round whose replies or deliveries fall short.
        let costs = super::run(2, 400).expect("every write answered and delivered");
        assert_eq!(costs.len(), 2);
        for cost in costs {
            assert!(cost.allocations_per_write >= 1.0, "{cost:?}");
            assert!(cost.cpu_ns_per_write[0] > 0, "{cost:?}");
        }
    }
}
