//! The one thread that calls the app's listeners.
//!
//! The engine queues calls while it holds its state lock, so they run in the order the
//! state changed; the thread runs them with no engine lock held, so a listener may call
//! back into the engine.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::{self, ThreadId};

use parking_lot::Mutex;

use crate::listener::KeyChangeListener;
use crate::types::{StoreEntry, ThreadStartHook};

type Call = Box<dyn FnOnce() + Send>;

enum Job {
    Call(Call),
    Stop,
}

pub(crate) struct Dispatcher {
    queue: Mutex<Option<mpsc::Sender<Job>>>,
    thread_id: ThreadId,
}

impl Dispatcher {
    pub const THREAD_NAME: &str = "roomstate-listeners";

    pub fn start(on_start: Option<ThreadStartHook>) -> std::io::Result<Self> {
        let (queue, jobs) = mpsc::channel::<Job>();
        let thread = thread::Builder::new()
            .name(Self::THREAD_NAME.into())
            .spawn(move || {
                if let Some(on_start) = on_start {
                    on_start(Self::THREAD_NAME);
                }
                for job in jobs {
                    let Job::Call(call) = job else { break };
                    if catch_unwind(AssertUnwindSafe(call)).is_err() {
                        log::error!("a roomstate listener panicked; the panic was caught and the engine goes on");
                    }
                }
            })?;
        Ok(Dispatcher {
            queue: Mutex::new(Some(queue)),
            thread_id: thread.thread().id(),
        })
    }

    /// Queues a call. After `stop`, calls are dropped.
    pub fn run(&self, call: impl FnOnce() + Send + 'static) {
        if let Some(queue) = self.queue.lock().as_ref() {
            let _ = queue.send(Job::Call(Box::new(call)));
        }
    }

    /// Queues a call, or makes it here and now once the thread has stopped: for the
    /// engine's own bookkeeping, which must happen either way.
    pub fn run_or_call(&self, call: impl FnOnce() + Send + 'static) {
        let queue = self.queue.lock();
        match queue.as_ref() {
            Some(queue) => {
                let _ = queue.send(Job::Call(Box::new(call)));
            }
            None => {
                drop(queue);
                call();
            }
        }
    }

    pub fn is_current_thread(&self) -> bool {
        thread::current().id() == self.thread_id
    }

    /// Lets the calls already queued run, then ends the thread. Does not wait: the
    /// caller may be the engine's runtime, which a listener may be waiting on.
    pub fn stop(&self) {
        if let Some(queue) = self.queue.lock().take() {
            let _ = queue.send(Job::Stop);
        }
    }

    pub fn key_changed(&self, slot: &Arc<ListenerSlot>, key: String, entry: Option<StoreEntry>) {
        let slot = Arc::clone(slot);
        self.run(move || slot.call(key, entry));
    }
}

/// A registered key change listener, with what it takes to guarantee that no call
/// starts after it is removed.
pub(crate) struct ListenerSlot {
    listener: Arc<dyn KeyChangeListener>,
    active: AtomicBool,
    /// Held while the listener runs, so that removal from another thread can wait for a
    /// running call to finish.
    running: Mutex<()>,
}

impl ListenerSlot {
    pub fn new(listener: Arc<dyn KeyChangeListener>) -> Arc<Self> {
        Arc::new(ListenerSlot {
            listener,
            active: AtomicBool::new(true),
            running: Mutex::new(()),
        })
    }

    fn call(&self, key: String, entry: Option<StoreEntry>) {
        let _running = self.running.lock();
        if self.active.load(Ordering::Acquire) {
            self.listener.on_key_changed(key, entry);
        }
    }

    /// After this returns the listener is not running and will not be called again.
    /// From the dispatch thread itself (a listener removing itself or another), there is
    /// nothing to wait for.
    pub fn deactivate(&self, dispatcher: &Dispatcher) {
        self.active.store(false, Ordering::Release);
        if !dispatcher.is_current_thread() {
            drop(self.running.lock());
        }
    }
}
