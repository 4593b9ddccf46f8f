//! Taking a room's lock from a runtime worker without stalling the worker's other tasks.
//! A room's critical sections are bounded by the limits, so the lock is almost always
//! free or soon free; but a worker that parks on it cannot run anything else meanwhile
//! (the health check, other rooms), so past a short wait the worker's tasks are handed
//! to another thread for as long as this one waits.

use std::time::Duration;

use parking_lot::{Mutex, MutexGuard};
use tokio::runtime::{Handle, RuntimeFlavor};

/// How long a worker may wait on a lock itself: about one short critical section.
const WAIT_ON_WORKER: Duration = Duration::from_micros(50);

/// Locks `mutex`; when it stays held past [`WAIT_ON_WORKER`] and this is a worker of a
/// multi-threaded runtime, waits in `block_in_place`, which moves the worker's other
/// tasks to a new worker thread first.
pub fn lock_without_stalling<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    if let Some(guard) = mutex.try_lock_for(WAIT_ON_WORKER) {
        return guard;
    }
    let on_multi_thread_runtime = Handle::try_current()
        .is_ok_and(|runtime| runtime.runtime_flavor() == RuntimeFlavor::MultiThread);
    if on_multi_thread_runtime {
        tokio::task::block_in_place(|| mutex.lock())
    } else {
        mutex.lock()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    use super::*;

    /// One worker; a room's lock held by another thread for a while; a task waiting on
    /// it. Another task on the same worker must still run before the lock is released.
    #[test]
    fn a_task_waiting_on_a_lock_leaves_the_worker_to_the_others() {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let room = Arc::new(Mutex::new(0u32));
        let released = Arc::new(AtomicBool::new(false));
        let (held_tx, held_rx) = std::sync::mpsc::channel();
        let holder = {
            let room = room.clone();
            let released = released.clone();
            std::thread::spawn(move || {
                let mut guard = room.lock();
                held_tx.send(()).unwrap();
                std::thread::sleep(Duration::from_millis(500));
                released.store(true, Ordering::SeqCst);
                *guard += 1;
            })
        };
        held_rx.recv().unwrap();
        let (locking_tx, locking_rx) = std::sync::mpsc::channel();
        let ran_while_held = runtime.block_on(async {
            let waiter = tokio::spawn({
                let room = room.clone();
                async move {
                    locking_tx.send(()).unwrap();
                    *lock_without_stalling(&room) += 1;
                }
            });
            // This thread is not the worker: it may block until the waiter runs on the
            // worker, which then goes straight to the lock and cannot run `other` before
            // the waiter gets it, unless the worker was handed over.
            locking_rx.recv().unwrap();
            let other = tokio::spawn({
                let released = released.clone();
                async move { !released.load(Ordering::SeqCst) }
            });
            let ran_while_held = other.await.unwrap();
            waiter.await.unwrap();
            ran_while_held
        });
        holder.join().unwrap();
        assert!(
            ran_while_held,
            "the other task waited for the lock's release"
        );
        assert_eq!(*room.lock(), 2);
    }
}
