//! The systems under test, each run as separate processes pinned to the server core: the
//! roomstate server (one node, or two nodes with their Redis), the floor (a minimal
//! WebSocket fan-out of the same bytes), and the peer (y-websocket).

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
    /// Two roomstate nodes sharing rooms through one redis-server, all three processes
    /// on the server core; clients alternate between the nodes.
    RoomstateCluster,
    Floor,
    /// y-websocket with a Y.Map: the peer users would pick instead.
    YWebsocket,
}

impl System {
    /// Whether it speaks roomstate's protocol.
    pub fn is_roomstate(self) -> bool {
        matches!(self, System::Roomstate | System::RoomstateCluster)
    }

    pub fn name(self) -> &'static str {
        match self {
            System::Roomstate => "roomstate",
            System::RoomstateCluster => "rs-2nodes",
            System::Floor => "floor",
            System::YWebsocket => "y-websocket",
        }
    }
}

pub struct Target {
    pub system: System,
    /// The first node's address.
    pub addr: SocketAddr,
    addrs: Vec<SocketAddr>,
    children: Vec<Child>,
    _dir: PathBuf,
}

impl Target {
    /// Starts `system` on `SERVER_CORE`.
    pub fn start(system: System, roomstate_bin: &std::path::Path) -> Target {
        let dir = std::env::temp_dir().join(format!("roomstate-bench-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut children = Vec::new();
        let mut addrs = Vec::new();
        match system {
            System::Roomstate | System::RoomstateCluster => {
                let mut config = format!(
                    // Large queues and limits: the bench measures speed, not protection.
                    "bind = \"127.0.0.1:0\"\noutbound_queue = 65536\nidle_timeout_ms = 600000\nmax_connections_per_address = 1000000\noutbound_queue_bytes = 1000000000\nclient_requests_per_second = 100000000\nclient_bytes_per_second = 1000000000\naddress_requests_per_second = 0\n[limits]\nkeys = 100000\nstore_bytes = 1000000000\n[keys]\n{API_KEY} = \"{API_SECRET}\"\n"
                );
                let nodes = if system == System::RoomstateCluster {
                    let port = free_port();
                    let mut redis = pinned("redis-server");
                    redis
                        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                        .args(["--save", "", "--appendonly", "no"])
                        .arg("--dir")
                        .arg(&dir)
                        .stdout(Stdio::null());
                    children.push(
                        redis
                            .spawn()
                            .expect("start redis-server (apt install redis-server)"),
                    );
                    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
                        std::thread::sleep(std::time::Duration::from_millis(10));
                    }
                    config.push_str(&format!("[redis]\nurl = \"redis://127.0.0.1:{port}/0\"\n"));
                    2
                } else {
                    1
                };
                let path = dir.join("bench.toml");
                std::fs::write(&path, config).unwrap();
                for _ in 0..nodes {
                    let mut command = pinned(roomstate_bin.to_str().unwrap());
                    command
                        .args(["serve", "--log", "warn", "--config"])
                        .arg(&path);
                    let (child, addr) = spawn_listening(command, system.name());
                    children.push(child);
                    addrs.push(addr);
                }
            }
            System::Floor => {
                let mut command = pinned(std::env::current_exe().unwrap().to_str().unwrap());
                command.arg("floor-server");
                let (child, addr) = spawn_listening(command, system.name());
                children.push(child);
                addrs.push(addr);
            }
            System::YWebsocket => {
                let mut command = pinned("node");
                command.arg(peer_dir().join("server.cjs"));
                let (child, addr) = spawn_listening(command, system.name());
                children.push(child);
                addrs.push(addr);
            }
        }
        Target {
            system,
            addr: addrs[0],
            addrs,
            children,
            _dir: dir,
        }
    }

    /// The node client `n` talks to: clients alternate between the nodes.
    pub fn addr_for(&self, n: usize) -> SocketAddr {
        self.addrs[n % self.addrs.len()]
    }

    /// Resident memory of every process of the target, in bytes.
    pub fn rss_bytes(&self) -> u64 {
        self.children
            .iter()
            .map(|child| rss_bytes(child.id()))
            .sum()
    }

    /// CPU time every process of the target used so far (user + system), in seconds.
    pub fn cpu_seconds(&self) -> f64 {
        self.children
            .iter()
            .map(|child| cpu_seconds(child.id()))
            .sum()
    }

    /// Starts counting the system calls of the system's processes (every thread they
    /// have now), with `perf stat` on the kernel's syscall tracepoints, if `run
    /// --syscalls` asked (counting costs the server CPU). `None` where perf cannot (not
    /// installed, no tracepoints, not allowed).
    pub fn count_syscalls(&self) -> Option<SyscallCount> {
        if !COUNT_SYSCALLS.load(std::sync::atomic::Ordering::Relaxed) {
            return None;
        }
        let pids: Vec<String> = self
            .children
            .iter()
            .map(|child| child.id().to_string())
            .collect();
        let events = SYSCALL_EVENTS.join(",");
        let mut perf = Command::new("perf")
            .args(["stat", "-x", ",", "-e", &events, "-p", &pids.join(",")])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .ok()?;
        // perf attaches asynchronously: give it a moment, and make sure it stayed up.
        std::thread::sleep(std::time::Duration::from_millis(200));
        match perf.try_wait() {
            Ok(None) => Some(SyscallCount { perf }),
            _ => None,
        }
    }
}

/// Whether W2 counts the server's system calls (`run --syscalls`).
pub static COUNT_SYSCALLS: std::sync::atomic::AtomicBool =
    std::sync::atomic::AtomicBool::new(false);

/// The tracepoints counted: every system call, and the ones that move a socket's bytes.
const SYSCALL_EVENTS: [&str; 5] = [
    "raw_syscalls:sys_enter",
    "syscalls:sys_enter_sendto",
    "syscalls:sys_enter_writev",
    "syscalls:sys_enter_write",
    "syscalls:sys_enter_recvfrom",
];

/// A running `perf stat` (`Target::count_syscalls`).
pub struct SyscallCount {
    perf: Child,
}

/// System calls counted over some time.
#[derive(Debug, Default, Clone, Copy, serde::Serialize)]
pub struct Syscalls {
    pub all: u64,
    /// `sendto`, `writev` and `write`: how a socket's bytes leave.
    pub writes: u64,
    /// `recvfrom`.
    pub reads: u64,
}

impl SyscallCount {
    /// Stops counting and returns the counts.
    pub fn finish(self) -> Option<Syscalls> {
        // SAFETY: kill has no preconditions; SIGINT makes perf print its counts and exit.
        unsafe { libc::kill(self.perf.id() as i32, libc::SIGINT) };
        let output = self.perf.wait_with_output().ok()?;
        let text = String::from_utf8_lossy(&output.stderr);
        let mut counts = Syscalls::default();
        let mut counted = false;
        // CSV: value,unit,event,...
        for line in text.lines() {
            let mut fields = line.split(',');
            let (Some(Ok(value)), Some(event)) =
                (fields.next().map(str::parse::<u64>), fields.nth(1))
            else {
                continue;
            };
            match event {
                "raw_syscalls:sys_enter" => counts.all = value,
                "syscalls:sys_enter_recvfrom" => counts.reads = value,
                event if SYSCALL_EVENTS.contains(&event) => counts.writes += value,
                _ => continue,
            }
            counted = true;
        }
        counted.then_some(counts)
    }
}

/// `program` under `taskset`, on the server core.
pub fn pinned(program: &str) -> Command {
    let mut command = Command::new("taskset");
    command.arg("-c").arg(SERVER_CORE.to_string()).arg(program);
    command
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Spawns a server that prints `... ws://ADDRESS` when it listens (its stderr goes
/// where `command` says: the bench's own by default).
pub fn spawn_listening(mut command: Command, name: &str) -> (Child, SocketAddr) {
    let mut child = command
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|error| panic!("start {name} (is taskset installed?): {error}"));
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line
        .trim()
        .rsplit("ws://")
        .next()
        .and_then(|addr| addr.parse().ok())
        .unwrap_or_else(|| panic!("{name} did not say where it listens: {line:?}"));
    (child, addr)
}

/// Resident memory of process `pid`, in bytes.
pub fn rss_of(pid: u32) -> u64 {
    rss_bytes(pid)
}

fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|kb| kb.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// CPU time process `pid` used so far (user + system), in seconds.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
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

impl Drop for Target {
    fn drop(&mut self) {
        for child in self.children.iter_mut().rev() {
            let _ = child.kill();
            let _ = child.wait();
        }
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
