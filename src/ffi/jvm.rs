//! Attaches the engine's threads to the JVM the engine runs in, if any (Android, or the
//! JVM through JNA): once, as named daemon threads, detached when they end.
//!
//! Without this, JNA attaches a thread for each callback and detaches it afterwards: each
//! call pays for it, and the app sees a different `Thread` every time. The JVM comes from
//! `JNI_OnLoad`, which every Android version calls; `JNI_GetCreatedJavaVMs` is only a
//! fallback (Android exports it from API 31, and a warning says so). `jni` 0.21 cannot
//! name the threads it attaches, so the few calls needed are made here by hand.

use std::cell::RefCell;
use std::ffi::{c_char, c_void, CString};
use std::ptr;
use std::sync::OnceLock;

use jni_sys::{jint, jsize, JavaVM, JavaVMAttachArgs, JNI_OK, JNI_VERSION_1_6};

type GetCreatedJavaVms = unsafe extern "system" fn(*mut *mut JavaVM, jsize, *mut jsize) -> jint;

/// The JVM that loaded this library with `System.loadLibrary` (the Kotlin layer's
/// `RoomState` does, before the first call): every Android version calls this.
static LOADED_BY: OnceLock<usize> = OnceLock::new();

/// Called by the JVM when it loads the library.
///
/// # Safety
/// Called by the JVM only, with its own `JavaVM`.
#[no_mangle]
pub unsafe extern "system" fn JNI_OnLoad(vm: *mut JavaVM, _reserved: *mut c_void) -> jint {
    let _ = LOADED_BY.set(vm as usize);
    JNI_VERSION_1_6
}

/// The process's JVM and how it was found. `None` outside a JVM.
fn java_vm() -> Option<(*mut JavaVM, &'static str)> {
    if let Some(vm) = LOADED_BY.get() {
        return Some((*vm as *mut JavaVM, "given to JNI_OnLoad"));
    }
    static FOUND: OnceLock<usize> = OnceLock::new();
    let vm = *FOUND.get_or_init(|| {
        let vm = created_java_vm();
        #[cfg(target_os = "android")]
        if vm == 0 {
            log::warn!(
                "the roomstate library was not loaded with System.loadLibrary (use RoomState \
                 in Kotlin): JNA attaches a new thread for every listener call"
            );
        }
        if vm != 0 {
            log::warn!(
                "the roomstate library was not loaded with System.loadLibrary (use RoomState \
                 in Kotlin); found the JVM with JNI_GetCreatedJavaVMs, which Android only \
                 exports from API 31"
            );
        }
        vm
    });
    (vm != 0).then_some((vm as *mut JavaVM, "found with JNI_GetCreatedJavaVMs"))
}

/// A JVM in this process found with `JNI_GetCreatedJavaVMs`, or 0: the fallback for a
/// library that JNA loaded on its own.
fn created_java_vm() -> usize {
    // SAFETY: dlsym with a NUL-terminated name; the symbol, when present, has the
    // JNI-specified signature.
    unsafe {
        let symbol = libc::dlsym(libc::RTLD_DEFAULT, c"JNI_GetCreatedJavaVMs".as_ptr());
        if symbol.is_null() {
            return 0;
        }
        let get_created: GetCreatedJavaVms = std::mem::transmute(symbol);
        let mut vm: *mut JavaVM = ptr::null_mut();
        let mut count: jsize = 0;
        if get_created(&mut vm, 1, &mut count) != JNI_OK || count < 1 {
            return 0;
        }
        vm as usize
    }
}

/// Detaches the thread from the JVM when the thread ends, as the JNI spec requires.
struct Attached(*mut JavaVM);

impl Drop for Attached {
    fn drop(&mut self) {
        // SAFETY: the VM outlives its attached threads; this thread attached itself.
        unsafe {
            if let Some(detach) = (**self.0).DetachCurrentThread {
                detach(self.0);
            }
        }
    }
}

thread_local! {
    static ATTACHED: RefCell<Option<Attached>> = const { RefCell::new(None) };
}

/// Attaches the current thread to the JVM as a daemon named `name`; a no-op outside a
/// JVM or when already attached.
pub fn attach_current_thread(name: &str) {
    let Some((vm, found)) = java_vm() else {
        return;
    };
    if ATTACHED.with(|attached| attached.borrow().is_some()) {
        return;
    }
    let name = CString::new(name).unwrap_or_default();
    let mut args = JavaVMAttachArgs {
        version: JNI_VERSION_1_6,
        name: name.as_ptr() as *mut c_char,
        group: ptr::null_mut(),
    };
    let mut env: *mut c_void = ptr::null_mut();
    // SAFETY: `vm` came from JNI_GetCreatedJavaVMs; args live across the call.
    let result = unsafe {
        match (**vm).AttachCurrentThreadAsDaemon {
            Some(attach) => attach(
                vm,
                &mut env,
                &mut args as *mut JavaVMAttachArgs as *mut c_void,
            ),
            None => return,
        }
    };
    if result == JNI_OK {
        ATTACHED.with(|attached| *attached.borrow_mut() = Some(Attached(vm)));
        log::debug!("thread {name:?} attached to the JVM {found}");
    } else {
        log::warn!("could not attach thread {:?} to the JVM: {result}", name);
    }
}
