//! The systems under test, each a separate process pinned to its own core: the roomstate
//! server, and the floor (a minimal WebSocket fan-out of the same bytes).

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

/// The core the system under test runs on; the load generator takes the other.
pub const SERVER_CORE: usize = 0;
pub const LOAD_CORE: usize = 1;

pub const API_KEY: &str = "benchkey";
pub const API_SECRET: &str = "benchsecret";

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum System {
    Roomstate,
    Floor,
    /// y-websocket with a Y.Map: the peer users would pick instead.
    YWebsocket,
}

impl System {
    pub fn name(self) -> &'static str {
        match self {
            System::Roomstate => "roomstate",
            System::Floor => "floor",
            System::YWebsocket => "y-websocket",
        }
    }
}

pub struct Target {
    pub system: System,
    pub addr: SocketAddr,
    child: Child,
    _dir: PathBuf,
}

impl Target {
    /// Starts `system` on `SERVER_CORE`.
    pub fn start(system: System, roomstate_bin: &std::path::Path) -> Target {
        let dir = std::env::temp_dir().join(format!("roomstate-bench-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut command = Command::new("taskset");
        command.arg("-c").arg(SERVER_CORE.to_string());
        match system {
            System::Roomstate => {
                let config = dir.join("bench.toml");
                // Large queues and limits: the bench measures speed, not protection.
                std::fs::write(
                    &config,
                    format!(
                        "bind = \"127.0.0.1:0\"\noutbound_queue = 65536\nidle_timeout_ms = 600000\n[limits]\nkeys = 100000\nstore_bytes = 1000000000\n[keys]\n{API_KEY} = \"{API_SECRET}\"\n"
                    ),
                )
                .unwrap();
                command
                    .arg(roomstate_bin)
                    .args(["serve", "--log", "warn", "--config"])
                    .arg(&config);
            }
            System::Floor => {
                command
                    .arg(std::env::current_exe().unwrap())
                    .arg("floor-server");
            }
            System::YWebsocket => {
                command.arg("node").arg(peer_dir().join("server.cjs"));
            }
        }
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the target (is taskset installed?)");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let addr = line
            .trim()
            .rsplit("ws://")
            .next()
            .and_then(|addr| addr.parse().ok())
            .unwrap_or_else(|| panic!("{} did not say where it listens: {line:?}", system.name()));
        Target {
            system,
            addr,
            child,
            _dir: dir,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Resident memory of the process, in bytes.
    pub fn rss_bytes(&self) -> u64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|kb| kb.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map_or(0, |kb| kb * 1024)
    }

    /// CPU time the process used so far (user + system), in seconds.
    pub fn cpu_seconds(&self) -> f64 {
        let stat =
            std::fs::read_to_string(format!("/proc/{}/stat", self.pid())).unwrap_or_default();
        let fields: Vec<&str> = stat
            .rsplit(')')
            .next()
            .unwrap_or_default()
            .split_whitespace()
            .collect();
        let ticks: u64 = fields.get(11).and_then(|f| f.parse().ok()).unwrap_or(0)
            + fields.get(12).and_then(|f| f.parse().ok()).unwrap_or(0);
        // SAFETY: sysconf has no preconditions.
        let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1);
        ticks as f64 / per_second as f64
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The y-websocket peer's folder; its packages are installed on first use.
pub fn peer_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("peer")
}

/// Installs y-websocket and yjs (npm ci) when missing; false when that fails.
pub fn ensure_peer_installed() -> bool {
    if peer_dir().join("node_modules/y-websocket").exists() {
        return true;
    }
    eprintln!(
        "installing y-websocket for the peer runs (npm ci in {})",
        peer_dir().display()
    );
    Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
        .current_dir(peer_dir())
        .status()
        .is_ok_and(|status| status.success())
}
