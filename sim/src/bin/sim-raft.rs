//! `cargo sim-raft [--commits N] [--writers W] [--seed X]`: raft commits per second of a 3-manager
//! cluster in the simulator — in virtual time (what the simulated links, 0.5–3 ms each way, allow)
//! and in wall time (how fast the simulator runs them). Each commit creates and deletes a network
//! through the leader's proposer, as the store benchmark does, so the store stays small.
//! Wall time is read outside the simulation (inside it madsim makes clocks virtual).

#[cfg(madsim)]
fn main() -> anyhow::Result<()> {
    use std::sync::Arc;
    use std::time::Instant;

    use clap::Parser;
    use shoal_core::store::Proposer;
    use shoal_sim::cluster::{ClusterShape, SimCluster};

    #[derive(Parser)]
    struct Args {
        /// Commits per writer.
        #[arg(long, default_value_t = 2000)]
        commits: usize,
        /// Concurrent writers.
        #[arg(long, default_value_t = 1)]
        writers: usize,
        #[arg(long, default_value_t = 1)]
        seed: u64,
    }
    let args = Args::parse();
    let runtime = madsim::runtime::Runtime::with_seed_and_config(args.seed, madsim::Config::default());
    let wall = Instant::now();
    let (virtual_secs, total) = runtime.block_on(async move {
        let cluster = SimCluster::start(ClusterShape { managers: 3, workers: 0 }).await.expect("cluster starts");
        madsim::time::sleep(std::time::Duration::from_secs(2)).await;
        let leader = cluster.leader().expect("a leader");
        let replica = cluster.node(&leader).and_then(|n| n.replica()).expect("the leader's replica");
        let proposer: Arc<dyn Proposer> = Arc::new(replica);
        let start = madsim::time::Instant::now();
        let mut writers = Vec::new();
        for _ in 0..args.writers {
            let proposer = proposer.clone();
            writers.push(madsim::task::spawn(async move {
                for _ in 0..args.commits {
                    let actions = shoal_core::raft::testing::churn_write(shoal_core::env::runtime::random_u64());
                    proposer.propose(actions).await.expect("commit");
                }
            }));
        }
        for writer in writers {
            writer.await.expect("writer");
        }
        (start.elapsed().as_secs_f64(), args.commits * args.writers)
    });
    let wall = wall.elapsed().as_secs_f64();
    println!(
        "3 managers, {} writer(s): {total} commits in {virtual_secs:.2} virtual s = {:.0} commits per virtual s; \
         whole run {wall:.2} wall s (cluster start included)",
        args.writers,
        total as f64 / virtual_secs.max(1e-9),
    );
    Ok(())
}

#[cfg(not(madsim))]
fn main() {
    eprintln!("sim-raft must be built with the simulator: cargo sim-raft");
    std::process::exit(1);
}
