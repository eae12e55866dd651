//! `cargo sim-speed [--workers N] [--virtual-secs S] [--heartbeat-ms H] [--seed X]`: how fast the
//! simulator runs a whole cluster — 3 managers and N workers heartbeating, one task per worker —
//! in virtual seconds per wall second. Wall time is read outside the simulation (madsim makes the
//! clock virtual inside it).

#[cfg(madsim)]
fn main() -> anyhow::Result<()> {
    use std::time::{Duration, Instant};

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
    }
    let args = Args::parse();
    let runtime = madsim::runtime::Runtime::with_seed_and_config(args.seed, madsim::Config::default());
    let wall = Instant::now();
    let (setup_virtual, running, events, messages) = runtime.block_on(async move {
        let mut config = settings_for_sim();
        config.cluster_spec.heartbeat_period_ms = args.heartbeat_ms;
        let start = madsim::time::Instant::now();
        let shape = ClusterShape { managers: 3, workers: args.workers };
        let cluster = SimCluster::start_with(shape, config).await.expect("cluster starts");
        let mut spec = ServiceSpec::new("web", "nginx:1.25");
        spec.mode = ServiceMode::Replicated { replicas: args.workers as u64 };
        cluster.control(ControlRequest::ServiceCreate { spec }).await.expect("service create");
        let setup = start.elapsed();
        madsim::time::sleep(Duration::from_secs(args.virtual_secs)).await;
        let running = cluster
            .store_of_leader()
            .map(|s| s.tasks.values().filter(|t| t.status.state == TaskState::Running).count())
            .unwrap_or(0);
        (setup, running, cluster.trace().len(), cluster.net().stats().0)
    });
    let wall = wall.elapsed();
    let total_virtual = setup_virtual.as_secs_f64() + args.virtual_secs as f64;
    println!(
        "3 managers + {} workers, heartbeat {} ms: {:.1} virtual s (setup {:.1} s) in {:.2} wall s = {:.0}x real time; \
         {running} tasks running, {events} trace events, {messages} messages",
        args.workers,
        args.heartbeat_ms,
        total_virtual,
        setup_virtual.as_secs_f64(),
        wall.as_secs_f64(),
        total_virtual / wall.as_secs_f64()
    );
    Ok(())
}

#[cfg(not(madsim))]
fn main() {
    eprintln!("sim-speed must be built with the simulator: cargo sim-speed");
    std::process::exit(1);
}
