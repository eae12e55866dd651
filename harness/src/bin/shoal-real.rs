//! `shoal-real`: scenario files against real clusters on this machine (`cargo real-run …`).
//!
//! - `shoal-real run FILE… [--runs N] [--executor docker|process] [--trace-dir D] [--net 127.0.88]`
//!   plays each file N times, each on a fresh cluster, prints the simulator's summary table and
//!   exits as `shoal-sim run` does: 0 ok, 1 usage/scenario-file error, 2 crash, 3 safety, 4 liveness.
//!   `--cluster SOCKETS|FILE` plays them on a cluster that is already running instead (no daemon is
//!   started or stopped; faults that need to stop its daemons or root on its addresses are skipped;
//!   only what the steps created is removed afterwards).
//! - `shoal-real compare FILE [--seed N]` runs the file in the simulator and for real and prints the
//!   time to converge after each fault in both worlds.
//!
//! Ctrl-C or SIGTERM stops the run and removes everything it made (daemons, containers, bridges,
//! iptables rules, image tags, temp dir) before exiting with 130.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use shoal_harness::cleanup::{clean_all, Ledger, Ledgers};
use shoal_harness::cluster::{parse_cluster_arg, Attached, ClusterOptions, Executor};
use shoal_harness::compare;
use shoal_harness::runner::{self, RealReport};
use shoal_sim::scenario::{summary, Scenario};

#[derive(Parser)]
#[command(name = "shoal-real", about = "Run shoal scenario files against real clusters on this machine")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Clone, Copy, ValueEnum)]
enum ExecutorArg {
    Docker,
    Process,
}

#[derive(clap::Args, Clone)]
struct RealArgs {
    /// How the daemons run tasks.
    #[arg(long, value_enum, default_value = "docker")]
    executor: ExecutorArg,
    /// The nodes' loopback addresses: three octets (node n gets .n), or an address the nodes
    /// follow (`127.0.89.100`: .101, .102, …).
    #[arg(long, default_value = "127.0.88")]
    net: String,
    /// The `shoal` binary (default: next to this one).
    #[arg(long)]
    shoal_bin: Option<PathBuf>,
    /// Keep each run's temp dir (daemon logs, data dirs).
    #[arg(long)]
    keep: bool,
    /// `swarm init --dispatcher-heartbeat` (the simulator's clusters use 1s).
    #[arg(long, default_value = "1s")]
    heartbeat: String,
    /// Play on a cluster that is already running (`run` only): its daemons' sockets,
    /// comma-separated, or a file with one `SOCKET [DATA_DIR]` per line. Its nodes' host names
    /// must be the scenario's (manager-1, worker-1, …).
    #[arg(long)]
    cluster: Option<String>,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run scenario files against fresh real clusters.
    Run {
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Runs of each file, each on a fresh cluster.
        #[arg(long, default_value_t = 1)]
        runs: u32,
        /// Write each run's merged trace as DIR/<scenario>-run<N>.jsonl (for shoal-reports).
        #[arg(long)]
        trace_dir: Option<PathBuf>,
        /// One JSON object per run on stdout instead of the table.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        real: RealArgs,
    },
    /// Run one scenario in the simulator and for real; print both timelines.
    Compare {
        file: PathBuf,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// The simulator's runner binary (`cargo sim-run` builds it).
        #[arg(long, default_value = "target/sim/debug/shoal-sim")]
        sim_bin: PathBuf,
        /// Keep both traces here.
        #[arg(long)]
        trace_dir: Option<PathBuf>,
        #[command(flatten)]
        real: RealArgs,
    },
}

fn options(real: &RealArgs) -> anyhow::Result<ClusterOptions> {
    let shoal_bin = match &real.shoal_bin {
        Some(bin) => bin.clone(),
        None => std::env::current_exe().context("own executable")?.with_file_name("shoal"),
    };
    if !shoal_bin.exists() {
        anyhow::bail!(
            "no shoal binary at {}: build it (`cargo build -p shoal`) or pass --shoal-bin",
            shoal_bin.display()
        );
    }
    Ok(ClusterOptions {
        shoal_bin,
        executor: match real.executor {
            ExecutorArg::Docker => Executor::Docker,
            ExecutorArg::Process => Executor::Process,
        },
        net: real.net.clone(),
        tmp: std::env::temp_dir(),
        heartbeat: real.heartbeat.clone(),
        raft_tmpfs: false,
    })
}

fn repro(report: &RealReport, real: &RealArgs) -> String {
    let executor = match real.executor {
        ExecutorArg::Docker => "",
        ExecutorArg::Process => " --executor process",
    };
    match &real.cluster {
        Some(cluster) => format!("cargo real-run run {}{executor} --cluster {cluster}", report.file),
        None => format!("cargo real-run run {}{executor} --net {}", report.file, real.net),
    }
}

fn print_table(reports: &[RealReport], real: &RealArgs, traces: &[Option<PathBuf>]) {
    let lines: Vec<summary::Line> = reports
        .iter()
        .zip(traces)
        .map(|(r, trace)| summary::Line {
            scenario: r.scenario.clone(),
            file: r.file.clone(),
            key: r.run.to_string(),
            result: r.outcome.label().to_string(),
            passed: r.outcome.is_pass(),
            cells: vec![
                format!("{:.1}s", r.wall_ms as f64 / 1000.0),
                r.trace_events.to_string(),
                r.skipped.len().to_string(),
            ],
            detail: serde_json::to_value(&r.outcome)
                .ok()
                .and_then(|v| v.get("detail").and_then(|d| d.as_str().map(str::to_string)))
                .unwrap_or_default(),
            trace: trace.as_ref().map(|t| t.display().to_string()),
            rerun: repro(r, real),
        })
        .collect();
    let columns = summary::Columns {
        key_header: "RUN",
        headers: &["WALL", "EVENTS", "SKIPPED"],
        key_word: "run",
        rerun_word: "rerun",
    };
    print!("{}", summary::render(columns, &lines, None));
    for r in reports.iter().filter(|r| !r.skipped.is_empty()) {
        println!("\nskipped in {} (run {}):", r.file, r.run);
        for s in &r.skipped {
            println!("  {s}");
        }
    }
}

async fn play_registered(
    scenario: &Scenario,
    options: &ClusterOptions,
    target: Option<&[Attached]>,
    run: u32,
    ledgers: &Ledgers,
) -> RealReport {
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    ledgers.lock().expect("ledgers").push(ledger.clone());
    let report = runner::play(scenario, options, target, run, ledger.clone()).await;
    ledgers.lock().expect("ledgers").retain(|l| !Arc::ptr_eq(l, &ledger));
    report
}

fn write_trace(dir: &Path, report: &RealReport) -> anyhow::Result<PathBuf> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot make {}", dir.display()))?;
    let path = runner::trace_path(dir, &report.file, report.run);
    std::fs::write(&path, &report.trace_jsonl).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(path)
}

async fn run(
    files: &[PathBuf],
    runs: u32,
    trace_dir: Option<&Path>,
    json: bool,
    real: &RealArgs,
    ledgers: &Ledgers,
) -> anyhow::Result<i32> {
    let options = options(real)?;
    let target = real.cluster.as_deref().map(parse_cluster_arg).transpose().map_err(anyhow::Error::msg)?;
    let mut scenarios = Vec::new();
    for file in files {
        let scenario = Scenario::load(file)?;
        runner::preflight(&scenario, options.executor, target.is_some()).map_err(anyhow::Error::msg)?;
        scenarios.push(scenario);
    }
    let mut reports = Vec::new();
    let mut traces = Vec::new();
    for scenario in &scenarios {
        for run in 1..=runs.max(1) {
            if !json {
                eprintln!("running {} (run {run}) …", scenario.file);
            }
            let report = play_registered(scenario, &options, target.as_deref(), run, ledgers).await;
            let trace = match trace_dir {
                Some(dir) => Some(write_trace(dir, &report)?),
                None => None,
            };
            if json {
                let mut value = serde_json::to_value(&report)?;
                if !report.outcome.is_pass() {
                    value["rerun"] = serde_json::json!(repro(&report, real));
                }
                println!("{value}");
            }
            traces.push(trace);
            reports.push(report);
        }
    }
    if !json {
        print_table(&reports, real, &traces);
    }
    Ok(summary::worst(reports.iter().map(|r| r.outcome.exit_code())))
}

async fn compare_worlds(
    file: &Path,
    seed: u64,
    sim_bin: &Path,
    trace_dir: Option<&Path>,
    real: &RealArgs,
    ledgers: &Ledgers,
) -> anyhow::Result<i32> {
    let options = options(real)?;
    if real.cluster.is_some() {
        anyhow::bail!("compare starts its own cluster: --cluster is for `run`");
    }
    let scenario = Scenario::load(file)?;
    runner::preflight(&scenario, options.executor, false).map_err(anyhow::Error::msg)?;
    let sim_dir = std::env::temp_dir().join(format!("shoal-compare-{}", runner::run_id()));
    std::fs::create_dir_all(&sim_dir)?;
    let file_text = file.display().to_string();
    let simulated = compare::simulate(sim_bin, &file_text, seed, &sim_dir);
    let _ = std::fs::remove_dir_all(&sim_dir);
    let (sim_code, sim_trace) = simulated.map_err(anyhow::Error::msg)?;
    eprintln!("simulated (seed {seed}): exit {sim_code}; now for real …");
    let report = play_registered(&scenario, &options, None, 1, ledgers).await;
    if let Some(dir) = trace_dir {
        std::fs::create_dir_all(dir)?;
        let stem = file.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        std::fs::write(dir.join(format!("{stem}-sim-seed{seed}.jsonl")), &sim_trace)?;
        write_trace(dir, &report)?;
    }
    let sim = compare::recoveries("simulated", &sim_trace).map_err(anyhow::Error::msg)?;
    let real_recoveries = compare::recoveries("real", &report.trace_jsonl).map_err(anyhow::Error::msg)?;
    println!("{} — time to converge after each fault", scenario.name);
    print!("{}", compare::table(&sim, &real_recoveries));
    let sim_expects = compare::expect_times("simulated", &sim_trace).map_err(anyhow::Error::msg)?;
    let real_expects = compare::expect_times("real", &report.trace_jsonl).map_err(anyhow::Error::msg)?;
    println!("\ntime for each `expect:` to hold after the step before it");
    print!("{}", compare::expect_table(&sim_expects, &real_expects));
    println!(
        "\nsimulated: exit {sim_code} (cargo sim-run run {file_text} --seed {seed}); real: {} in {:.1} s wall",
        report.outcome.label(),
        report.wall_ms as f64 / 1000.0
    );
    for s in &report.skipped {
        println!("  real: {s}");
    }
    if !report.outcome.is_pass() {
        let detail =
            serde_json::to_value(&report.outcome).ok().and_then(|v| v.get("detail").cloned()).unwrap_or_default();
        println!("  real: {}", detail.as_str().unwrap_or_default());
        println!("  rerun: {}", repro(&report, real));
    }
    Ok(report.outcome.exit_code().max(sim_code))
}

fn main() {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => {
            let _ = err.print();
            std::process::exit(if err.use_stderr() { 1 } else { 0 });
        }
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("shoal-real: cannot start the runtime: {err}");
            std::process::exit(2);
        }
    };
    let ledgers: Ledgers = Arc::default();
    let code = runtime.block_on(async {
        let signals = {
            let ledgers = ledgers.clone();
            async move {
                let mut term =
                    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
                tokio::select! {
                    biased;
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
                eprintln!("shoal-real: interrupted; removing what the run made …");
                clean_all(&ledgers);
                130
            }
        };
        let work = async {
            let result = match &cli.command {
                Cmd::Run { files, runs, trace_dir, json, real } => {
                    run(files, *runs, trace_dir.as_deref(), *json, real, &ledgers).await
                }
                Cmd::Compare { file, seed, sim_bin, trace_dir, real } => {
                    compare_worlds(file, *seed, sim_bin, trace_dir.as_deref(), real, &ledgers).await
                }
            };
            result.unwrap_or_else(|err| {
                eprintln!("shoal-real: {err:#}");
                1
            })
        };
        tokio::select! {
            biased;
            code = signals => code,
            code = work => code,
        }
    });
    clean_all(&ledgers);
    std::process::exit(code);
}
