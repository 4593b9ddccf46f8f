//! Where the engine's `log` records go when it runs inside an app: logcat on Android,
//! stderr elsewhere, and the app's own logger when it sets one. Panics are logged before
//! UniFFI turns them into exceptions.

use std::sync::{Arc, OnceLock};

use parking_lot::RwLock;

use super::ListenerError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
pub enum LogLevel {
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

/// Receives the engine's log records. Called on engine threads, possibly while the
/// engine holds a lock: a logger must not call back into the engine.
#[uniffi::export(foreign)]
pub trait Logger: Send + Sync {
    fn log(&self, level: LogLevel, target: String, message: String) -> Result<(), ListenerError>;
}

/// Sets the level and, optionally, a logger of the app's. May be called again to change
/// either.
#[uniffi::export]
pub fn init_logging(level: LogLevel, logger: Option<Arc<dyn Logger>>) {
    let installed = install();
    *installed.app.write() = logger;
    log::set_max_level(level.into());
}

/// Installs the engine's logger at `Info` unless logging is already set up.
pub(crate) fn install_default() {
    if LOGGER.get().is_none() {
        install();
        log::set_max_level(log::LevelFilter::Info);
    }
}

static LOGGER: OnceLock<EngineLogger> = OnceLock::new();

struct EngineLogger {
    app: RwLock<Option<Arc<dyn Logger>>>,
    #[cfg(target_os = "android")]
    logcat: android_logger::AndroidLogger,
}

fn install() -> &'static EngineLogger {
    LOGGER.get_or_init(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            log::error!("panic in the roomstate engine: {info}");
            previous(info);
        }));
        EngineLogger {
            app: RwLock::new(None),
            #[cfg(target_os = "android")]
            logcat: android_logger::AndroidLogger::new(
                android_logger::Config::default()
                    .with_tag("roomstate")
                    .with_max_level(log::LevelFilter::Trace),
            ),
        }
    });
    let logger = LOGGER.get().expect("initialized above");
    // Fails when the host already installed a `log` logger: then records go there.
    let _ = log::set_logger(logger);
    logger
}

impl log::Log for EngineLogger {
    fn enabled(&self, metadata: &log::Metadata) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &log::Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        #[cfg(target_os = "android")]
        log::Log::log(&self.logcat, record);
        #[cfg(not(target_os = "android"))]
        eprintln!(
            "roomstate {} {}: {}",
            record.level(),
            record.target(),
            record.args()
        );
        let app = self.app.read().clone();
        if let Some(app) = app {
            // An app logger that throws has nowhere left to report to.
            let _ = app.log(
                record.level().into(),
                record.target().to_string(),
                record.args().to_string(),
            );
        }
    }

    fn flush(&self) {}
}

impl From<LogLevel> for log::LevelFilter {
    fn from(level: LogLevel) -> Self {
        match level {
            LogLevel::Error => log::LevelFilter::Error,
            LogLevel::Warn => log::LevelFilter::Warn,
            LogLevel::Info => log::LevelFilter::Info,
            LogLevel::Debug => log::LevelFilter::Debug,
            LogLevel::Trace => log::LevelFilter::Trace,
        }
    }
}

impl From<log::Level> for LogLevel {
    fn from(level: log::Level) -> Self {
        match level {
            log::Level::Error => LogLevel::Error,
            log::Level::Warn => LogLevel::Warn,
            log::Level::Info => LogLevel::Info,
            log::Level::Debug => LogLevel::Debug,
            log::Level::Trace => LogLevel::Trace,
        }
    }
}
