//! `cargo sim-speed [--workers N] [--virtual-secs S] [--heartbeat-ms H] [--seed X]`: how fast the
//! simulator runs a whole cluster — 3 managers and N workers heartbeating, one task per worker —
//! in virtual seconds per wall second, for two phases: setup (N joins, then a service of N replicas
//! until every task runs) and the steady run (S virtual seconds of heartbeats and long polls).
//!
//! Wall and CPU time are read from `/proc` (this process's clock ticks, the host's uptime): madsim
//! makes every clock call virtual inside the simulation, and these readings happen inside it. CPU
//! seconds are quoted beside wall seconds because a shared machine stretches wall time.

#[cfg(madsim)]
fn main() -> anyhow::Result<()> {
    use std::time::Duration;

    use clap::Parser;
    use shoal_core::api::{ServiceMode, ServiceSpec, TaskState};
    use shoal_core::control::ControlRequest;
    use shoal_sim::cluster::{settings_for_sim, ClusterShape, SimCluster};

    #[derive(Parser)]
    struct Args {
        #[arg(long, default_value_t = 1000)]
        workers: usize,
        #[arg(long, default_value_t = 600)]
        virtual_secs: u64,
        /// Swarm's default heartbeat period is 5 s.
        #[arg(long, default_value_t = 5000)]
        heartbeat_ms: u64,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Also print how many trace events of each kind the run recorded.
        #[arg(long)]
        trace_kinds: bool,
    }

    /// One phase's figures.
    struct Phase {
        virtual_secs: f64,
        wall_secs: f64,
        cpu_secs: f64,
        messages: u64,
        /// The process's resident memory at the phase's end, in bytes.
        rss: u64,
    }

    impl Phase {
        fn line(&self, name: &str) -> String {
            format!(
                "{name}: {:.1} virtual s in {:.2} wall s ({:.2} CPU s) = {:.0}x real time ({:.0}x per CPU s); \
                 {} messages, {:.1} µs CPU per message; {:.0} MB resident at the end",
                self.virtual_secs,
                self.wall_secs,
                self.cpu_secs,
                self.virtual_secs / self.wall_secs.max(1e-9),
                self.virtual_secs / self.cpu_secs.max(1e-9),
                self.messages,
                self.cpu_secs * 1e6 / self.messages.max(1) as f64,
                self.rss as f64 / 1e6
            )
        }
    }

    let args = Args::parse();
    let runtime = madsim::runtime::Runtime::with_seed_and_config(args.seed, madsim::Config::default());
    let (setup, steady, running, events) = runtime.block_on(async move {
        let mut config = settings_for_sim();
        config.cluster_spec.heartbeat_period_ms = args.heartbeat_ms;
        let (wall0, cpu0) = host_clocks();
        let start = madsim::time::Instant::now();
        let shape = ClusterShape { managers: 3, workers: args.workers };
        let cluster = SimCluster::start_with(shape, config).await.expect("cluster starts");
        let mut spec = ServiceSpec::new("web", "nginx:1.25");
        spec.mode = ServiceMode::Replicated { replicas: args.workers as u64 };
        cluster.control(ControlRequest::ServiceCreate { spec }).await.expect("service create");
        let running = |cluster: &SimCluster| {
            cluster
                .store_of_leader()
                .map(|s| s.tasks.values().filter(|t| t.status.state == TaskState::Running).count())
                .unwrap_or(0)
        };
        // Setup ends when every task runs (or after 10 virtual minutes, reported as it stands).
        for _ in 0..6000 {
            if running(&cluster) >= args.workers {
                break;
            }
            madsim::time::sleep(Duration::from_millis(100)).await;
        }
        let (wall1, cpu1) = host_clocks();
        let messages1 = cluster.net().stats().0;
        let setup = Phase {
            virtual_secs: start.elapsed().as_secs_f64(),
            wall_secs: wall1 - wall0,
            cpu_secs: cpu1 - cpu0,
            messages: messages1,
            rss: resident_bytes(),
        };
        madsim::time::sleep(Duration::from_secs(args.virtual_secs)).await;
        let (wall2, cpu2) = host_clocks();
        let steady = Phase {
            virtual_secs: args.virtual_secs as f64,
            wall_secs: wall2 - wall1,
            cpu_secs: cpu2 - cpu1,
            messages: cluster.net().stats().0 - messages1,
            rss: resident_bytes(),
        };
        let mut kinds = std::collections::BTreeMap::<String, usize>::new();
        let trace = cluster.trace();
        for event in &trace {
            *kinds.entry(event.kind.clone()).or_default() += 1;
        }
        (setup, steady, running(&cluster), (trace.len(), kinds))
    });
    let (events, kinds) = events;
    println!(
        "3 managers + {} workers, heartbeat {} ms, seed {}: {running} tasks running, {events} trace events",
        args.workers, args.heartbeat_ms, args.seed
    );
    println!("{}", setup.line("setup (joins, then every task running)"));
    println!("{}", steady.line("steady"));
    let total = Phase {
        virtual_secs: setup.virtual_secs + steady.virtual_secs,
        wall_secs: setup.wall_secs + steady.wall_secs,
        cpu_secs: setup.cpu_secs + steady.cpu_secs,
        messages: setup.messages + steady.messages,
        rss: steady.rss,
    };
    println!("{}", total.line("total"));
    println!(
        "memory: {:.0} KB per worker after setup, {:.0} KB at the end; {:+.1}% over the steady run",
        setup.rss as f64 / 1e3 / args.workers.max(1) as f64,
        steady.rss as f64 / 1e3 / args.workers.max(1) as f64,
        (steady.rss as f64 / setup.rss.max(1) as f64 - 1.0) * 100.0
    );
    if args.trace_kinds {
        for (kind, count) in kinds {
            println!("  {count:>7} {kind}");
        }
    }
    Ok(())
}

/// (wall seconds since boot, CPU seconds this process used), at clock-tick resolution, read from
/// `/proc` — the one wall clock that madsim's interception does not turn virtual.
#[cfg(madsim)]
fn host_clocks() -> (f64, f64) {
    let uptime = std::fs::read_to_string("/proc/uptime").unwrap_or_default();
    let wall = uptime.split_whitespace().next().and_then(|s| s.parse::<f64>().ok()).unwrap_or(0.0);
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which is in parentheses and may hold spaces): utime and stime
    // are the 14th and 15th fields of the whole line, i.e. the 12th and 13th after ')'.
    let after = stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or("");
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|s| s.parse::<f64>().ok()).unwrap_or(0.0);
    // Linux reports both in USER_HZ, which is 100 on every Linux ABI.
    (wall, (ticks(11) + ticks(12)) / 100.0)
}

/// This process's resident memory (`VmRSS` in `/proc/self/status`), in bytes; 0 if unreadable.
#[cfg(madsim)]
fn resident_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

#[cfg(not(madsim))]
fn main() {
    eprintln!("sim-speed must be built with the simulator: cargo sim-speed");
    std::process::exit(1);
}
