//! roomstate-bench: fixed workloads against a real roomstate server, side by side with
//! the floor (a minimal WebSocket fan-out of the same bytes). The server and the load
//! generator run on separate cores; sends are open-loop and timed from their intended
//! send time; percentiles come from HdrHistogram. See docs/benchmarks.md.

mod allocations;
mod clients;
mod floor;
mod fuzz;
mod hostile;
mod in_process;
mod lifecycle;
mod rules_fuzz;
mod stats;
mod target;
mod workloads;

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use serde::Serialize;

use stats::human;
use target::{System, Target, LOAD_CORE};

#[global_allocator]
static ALLOCATOR: allocations::Counting = allocations::Counting;

#[derive(Parser)]
#[command(about = "Benchmarks roomstate against the floor with fixed workloads")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run workloads and print (and save) their results.
    Run {
        /// Which workloads: w1 (propagation), w2 (throughput), w3 (many rooms),
        /// w4 (idle connections), w5 (join).
        #[arg(long, value_delimiter = ',', default_value = "w1,w2,w3,w4,w5")]
        workloads: Vec<String>,
        /// Shorter runs and smaller N, for a smoke test.
        #[arg(long)]
        quick: bool,
        /// W4's connection counts. 50000 needs a file-descriptor limit above 50k for
        /// both processes (`ulimit -Hn`).
        #[arg(long, value_delimiter = ',', default_value = "10000,18000")]
        w4_connections: Vec<usize>,
        /// Which systems: floor, roomstate, rs-2nodes, y-websocket. Two runs with
        /// `--systems roomstate,rs-2nodes` and two `--roomstate-bin`s compare a change.
        #[arg(
            long,
            value_delimiter = ',',
            default_value = "floor,roomstate,rs-2nodes,y-websocket"
        )]
        systems: Vec<String>,
        /// Count the server's system calls per delivery in W2 (`perf stat` on the
        /// syscall tracepoints; it costs the server CPU, so CPU figures of such a run are
        /// not comparable with others).
        #[arg(long)]
        syscalls: bool,
        /// The roomstate binary to test.
        #[arg(long, default_value = "target/release/roomstate")]
        roomstate_bin: PathBuf,
        /// Where to write results.json.
        #[arg(long, default_value = "bench-results")]
        out: PathBuf,
    },
    /// W2's room work without sockets, in this process: roomstate's own CPU and
    /// allocations per write, on distinct keys and on one key.
    InProcess {
        #[arg(long, default_value_t = 40)]
        rounds: usize,
        #[arg(long, default_value_t = 10_000)]
        writes: usize,
    },
    /// Serve the floor (used by `run`).
    FloorServer,
    /// Fuzz a real server with mutated frames and API bodies (docs/benchmarks.md).
    Fuzz {
        /// Frames and API calls to send.
        #[arg(long, default_value_t = 100_000)]
        iterations: u64,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        #[arg(long, default_value = "target/release/roomstate")]
        roomstate_bin: PathBuf,
    },
    /// Rooms joined, observed and left one after another by the engine, in this
    /// process: how long a cycle takes, and this process's threads and memory.
    Lifecycle {
        #[arg(long, default_value_t = 1000)]
        cycles: u64,
        #[arg(long, default_value = "target/release/roomstate")]
        roomstate_bin: PathBuf,
    },
    /// One hostile participant at the default limits: the server's memory and /healthz
    /// latency while it attacks.
    Hostile {
        #[arg(long, default_value_t = 30)]
        seconds: u64,
        #[arg(long, default_value = "target/release/roomstate")]
        roomstate_bin: PathBuf,
    },
}

#[derive(Serialize, Default)]
struct Results {
    machine: String,
    propagation: Vec<workloads::Propagation>,
    throughput: Vec<workloads::Throughput>,
    many_rooms: Vec<workloads::ManyRooms>,
    idle_connections: Vec<workloads::IdleConnections>,
    join: Vec<workloads::Join>,
    resume: Vec<workloads::Resume>,
}

fn main() {
    let cli = Cli::parse();
    match cli.command {
        Command::FloorServer => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(floor::serve()),
        Command::InProcess { rounds, writes } => match in_process::run(rounds, writes) {
            Ok(costs) => {
                println!(
                    "W2 in process: {} writers, {} observers of every key, {rounds} rounds of {writes} writes",
                    in_process::WRITERS,
                    in_process::OBSERVERS,
                );
                for cost in costs {
                    let [p50, p90, low, high] = cost.cpu_ns_per_write;
                    println!(
                        "  {:<8} allocations/write {:>6.2}   CPU/write p50 {p50} ns  p90 {p90} ns  (lowest {low}, highest {high})",
                        if cost.one_key { "one key" } else { "distinct" },
                        cost.allocations_per_write,
                    );
                }
            }
            Err(failure) => {
                eprintln!("W2 in process failed: {failure}");
                std::process::exit(1);
            }
        },
        Command::Fuzz {
            iterations,
            seed,
            roomstate_bin,
        } => {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            let started = std::time::Instant::now();
            let report = runtime.block_on(fuzz::run(&roomstate_bin, iterations, seed));
            println!(
                "fuzz (seed {seed}): {} frames ({} replies, {} rejected, {} goodbyes), {} API calls, {} decoder inputs accepted, in {:.1} s",
                report.frames, report.replies, report.rejected, report.goodbyes, report.api_calls, report.decoded,
                started.elapsed().as_secs_f64()
            );
            // The rules in this process, as many frames.
            let started = std::time::Instant::now();
            let mut rules = fuzz::Report::default();
            runtime.block_on(rules_fuzz::fuzz_rules(iterations, seed, &mut rules));
            println!(
                "room rules in process (seed {seed}): {} frames, {} decoded ({} replies, {} rejected), in {:.1} s",
                rules.frames, rules.decoded, rules.replies, rules.rejected,
                started.elapsed().as_secs_f64()
            );
            let failures: Vec<&String> = report.failures.iter().chain(&rules.failures).collect();
            if !failures.is_empty() {
                for failure in failures {
                    println!("FAILURE: {failure}");
                }
                std::process::exit(1);
            }
            println!("no failures");
        }
        Command::Lifecycle {
            cycles,
            roomstate_bin,
        } => {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .unwrap();
            let result = runtime.block_on(lifecycle::run(&roomstate_bin, cycles));
            let mb = |bytes: u64| bytes as f64 / 1_048_576.0;
            println!(
                "engine lifecycle, {} cycles of connect, observe one key, disconnect:",
                result.cycles
            );
            println!(
                "cycle: p50 {}  p99 {}  max {}",
                human(result.cycle.p50_us),
                human(result.cycle.p99_us),
                human(result.cycle.max_us)
            );
            println!(
                "threads: {} before, {} after; resident memory: {:.1} MiB before, {:.1} MiB after",
                result.threads_before,
                result.threads_after,
                mb(result.rss_before),
                mb(result.rss_after)
            );
        }
        Command::Hostile {
            seconds,
            roomstate_bin,
        } => {
            if let Some(core) = core_affinity::get_core_ids()
                .unwrap_or_default()
                .get(LOAD_CORE)
            {
                core_affinity::set_for_current(*core);
            }
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            let result = runtime.block_on(hostile::run(&roomstate_bin, seconds));
            let mb = |bytes: u64| bytes as f64 / 1_048_576.0;
            println!("hostile participant, default limits, {seconds} s: {} frames sent, {} connections cut", result.frames_sent, result.connections_cut);
            println!(
                "/healthz ({} probes): p50 {}  p99 {}  max {}",
                result.healthz.count,
                human(result.healthz.p50_us),
                human(result.healthz.p99_us),
                human(result.healthz.max_us)
            );
            println!(
                "server RSS: before {:.1} MiB, max {:.1} MiB, 16 s after {:.1} MiB",
                mb(result.rss_before_bytes),
                mb(result.rss_max_bytes),
                mb(result.rss_after_bytes)
            );
            println!("{}", serde_json::to_string(&result).unwrap());
        }
        Command::Run {
            workloads,
            quick,
            w4_connections,
            systems,
            syscalls,
            roomstate_bin,
            out,
        } => {
            target::COUNT_SYSCALLS.store(syscalls, std::sync::atomic::Ordering::Relaxed);
            let fds = clients::raise_fd_limit();
            let machine = machine();
            let cores = core_affinity::get_core_ids().unwrap_or_default();
            if let Some(core) = cores.get(LOAD_CORE) {
                core_affinity::set_for_current(*core);
            }
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            let results = runtime.block_on(run(
                machine,
                &workloads,
                quick,
                &w4_connections,
                &systems,
                &roomstate_bin,
                fds,
            ));
            std::fs::create_dir_all(&out).unwrap();
            let path = out.join("results.json");
            std::fs::write(&path, serde_json::to_string_pretty(&results).unwrap()).unwrap();
            println!("\nresults written to {}", path.display());
            plot(&path, &out);
        }
    }
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find_map(|line| {
            line.strip_prefix("model name")
                .map(|rest| rest.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_default();
    // Counted from /proc: this process is pinned, so it sees one core.
    let cores = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .filter(|line| line.starts_with("processor"))
        .count();
    let memory = std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .nth(1)
        .and_then(|kb| kb.parse::<u64>().ok())
        .map_or(0, |kb| kb / 1024 / 1024);
    format!(
        "{cpu}, {cores} cores, {memory} GiB; server on core {}, load generator on core {LOAD_CORE}",
        target::SERVER_CORE
    )
}

async fn run(
    machine: String,
    which: &[String],
    quick: bool,
    w4_connections: &[usize],
    wanted_systems: &[String],
    roomstate_bin: &std::path::Path,
    fds: u64,
) -> Results {
    let mut results = Results {
        machine,
        ..Default::default()
    };
    println!("{}", results.machine);
    let wants = |name: &str| which.iter().any(|w| w == name);
    let wanted = |system: System| wanted_systems.iter().any(|name| name == system.name());
    if wants("w1") {
        let sizes: &[usize] = if quick {
            &[1, 10, 100]
        } else {
            &[1, 10, 100, 1000]
        };
        let seconds = if quick { 3 } else { 10 };
        println!("\nW1 propagation: 1 writer, 64-byte value at 20 Hz for {seconds} s, N observers");
        println!(
            "{:<10} {:>5} | {:>10} {:>10} {:>10} | {:>10} {:>10} {:>10} | {:>7}",
            "system", "N", "p50", "p99", "p99.9", "all p50", "all p99", "all p99.9", "missing"
        );
        let peer = wanted(System::YWebsocket) && target::ensure_peer_installed();
        if wanted(System::YWebsocket) && !peer {
            println!("(y-websocket could not be installed: the peer is left out)");
        }
        for &n in sizes {
            for system in systems(peer).filter(|system| wanted(*system)) {
                let target = Target::start(system, roomstate_bin);
                let result = if system == System::YWebsocket {
                    workloads::propagation_peer(&target, n, seconds)
                } else {
                    workloads::propagation(&target, n, seconds).await
                };
                let (d, a) = (&result.per_delivery, &result.until_all);
                println!(
                    "{:<11} {:>5} | {:>10} {:>10} {:>10} | {:>10} {:>10} {:>10} | {:>7}",
                    system.name(),
                    n,
                    human(d.p50_us),
                    human(d.p99_us),
                    human(d.p999_us),
                    human(a.p50_us),
                    human(a.p99_us),
                    human(a.p999_us),
                    result.missing
                );
                results.propagation.push(result);
            }
        }
    }
    if wants("w2") {
        let rates: &[u64] = if quick {
            &[1_000, 5_000]
        } else {
            &[1_000, 2_000, 5_000, 10_000, 20_000, 40_000]
        };
        let step = if quick { 2 } else { 3 };
        println!(
            "\nW2 throughput: 10 writers, 10 observers of every key, rising rates ({step} s each)"
        );
        println!(
            "{:<10} {:<9} | {:>9} {:>11} {:>13} {:>10} {:>10} {:>10} | {:>7} {:>7} {:>7}",
            "system",
            "keys",
            "offered/s",
            "updates/s",
            "deliveries/s",
            "p50",
            "p99",
            "server CPU",
            "sys/d",
            "send/d",
            "recv/d"
        );
        let peer = wanted(System::YWebsocket) && target::ensure_peer_installed();
        for one_key in [false, true] {
            for system in systems(peer).filter(|system| wanted(*system)) {
                let target = Target::start(system, roomstate_bin);
                let result = if system == System::YWebsocket {
                    workloads::throughput_peer(&target, one_key, rates, step)
                } else {
                    workloads::throughput(&target, one_key, rates, step).await
                };
                for s in &result.steps {
                    let syscalls = s.syscalls_per_delivery.as_ref().map_or_else(
                        || format!("{:>7} {:>7} {:>7}", "-", "-", "-"),
                        |per| format!("{:>7.3} {:>7.3} {:>7.3}", per.all, per.writes, per.reads),
                    );
                    println!(
                        "{:<10} {:<9} | {:>9} {:>11.0} {:>13.0} {:>10} {:>10} {:>9.0}% | {syscalls}",
                        system.name(),
                        if one_key { "one" } else { "distinct" },
                        s.offered_updates_per_second,
                        s.updates_per_second,
                        s.deliveries_per_second,
                        human(s.per_delivery.p50_us),
                        human(s.per_delivery.p99_us),
                        s.server_cpu_percent
                    );
                }
                if let Some(mismatches) = result.final_state_mismatches {
                    println!("{:<10} {:<9} | observers whose final state differs from the others: {mismatches}", system.name(), if one_key { "one" } else { "distinct" });
                }
                results.throughput.push(result);
            }
        }
    }
    if wants("w3") {
        let rooms = if quick { 50 } else { 400 };
        println!(
            "\nW3 many rooms: {rooms} rooms of 5, an attribute change per participant every 2 s"
        );
        for system in [System::Roomstate, System::RoomstateCluster]
            .into_iter()
            .filter(|system| wanted(*system))
        {
            let target = Target::start(system, roomstate_bin);
            let result = workloads::many_rooms(&target, rooms, if quick { 4 } else { 10 }).await;
            println!(
                "{:<10} {:.0} updates/s, server CPU {:.1}% ({:.2}% per 1000 updates/s)",
                system.name(),
                result.updates_per_second,
                result.server_cpu_percent,
                result.cpu_percent_per_1000_updates
            );
            results.many_rooms.push(result);
        }
    }
    if wants("w4") {
        let sizes: Vec<usize> = if quick {
            vec![2_000]
        } else {
            w4_connections.to_vec()
        };
        println!(
            "\nW4 idle connections (rooms of 50, each client observing one key; fd limit {fds})"
        );
        println!(
            "{:<10} {:>7} | {:>12} {:>10} {:>12}",
            "system", "conns", "bytes/conn", "idle CPU", "connect"
        );
        let peer = wanted(System::YWebsocket) && target::ensure_peer_installed();
        for connections in sizes {
            for system in systems(peer).filter(|system| wanted(*system)) {
                let target = Target::start(system, roomstate_bin);
                let result = workloads::idle_connections(&target, connections, 50).await;
                println!(
                    "{:<10} {:>7} | {:>12} {:>9.2}% {:>11.1}s",
                    system.name(),
                    connections,
                    result.bytes_per_connection,
                    result.idle_cpu_percent,
                    result.connect_seconds
                );
                results.idle_connections.push(result);
            }
        }
    }
    if wants("w5") {
        let joins = if quick { 50 } else { 200 };
        let clients = if quick { 200 } else { 1000 };
        println!("\nW5 join ({joins} joins, each until it holds a 100-key store) and resume ({clients} clients dropped at once)");
        for system in [System::Roomstate, System::RoomstateCluster] {
            let target = Target::start(system, roomstate_bin);
            let result = workloads::join_full_store(&target, 100, joins).await;
            let p = &result.until_full_store;
            println!(
                "{:<10} join: p50 {}, p99 {}, p99.9 {}",
                system.name(),
                human(p.p50_us),
                human(p.p99_us),
                human(p.p999_us)
            );
            results.join.push(result);
            let result = workloads::resume_after_drop(&target, clients).await;
            let p = &result.until_resumed;
            println!(
                "{:<10} resume: p50 {}, p99 {}, all {} ({} not resumed)",
                system.name(),
                human(p.p50_us),
                human(p.p99_us),
                human(p.max_us),
                result.not_resumed
            );
            results.resume.push(result);
        }
    }
    results
}

/// Every system, the peer only if it could be installed.
fn systems(peer: bool) -> impl Iterator<Item = System> {
    [
        System::Floor,
        System::Roomstate,
        System::RoomstateCluster,
        System::YWebsocket,
    ]
    .into_iter()
    .filter(move |system| peer || *system != System::YWebsocket)
}

/// Draws the PNG plots with crates/bench/plot.py (matplotlib, installed when missing).
fn plot(results: &std::path::Path, out: &std::path::Path) {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("plot.py");
    let has_matplotlib = || {
        std::process::Command::new("python3")
            .args(["-c", "import matplotlib"])
            .status()
            .is_ok_and(|status| status.success())
    };
    if !has_matplotlib() {
        eprintln!("installing matplotlib for the plots");
        let _ = std::process::Command::new("python3")
            .args(["-m", "pip", "install", "--quiet", "matplotlib"])
            .status();
    }
    match std::process::Command::new("python3")
        .arg(&script)
        .arg(results)
        .arg(out)
        .status()
    {
        Ok(status) if status.success() => {}
        _ => eprintln!(
            "no plots: python3 with matplotlib is needed ({})",
            script.display()
        ),
    }
}
