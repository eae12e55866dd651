//! `shoal-sim`: run scenario files in the deterministic simulator.
//!
//! ```text
//! shoal-sim run FILE... [--seed N | --seeds A..B] [--trace-dir DIR] [--json] [--jobs J]
//!     (--seeds includes both ends: 1..20 and 1..=20 both run seeds 1 to 20)
//! shoal-sim check-determinism FILE [--seed N]
//! shoal-sim fuzz [--cases N | --budget 5m] [--seed S] [--jobs J] [--case K] [--keep-going] [--small]
//!                [--max-shrink-iters M] [--out scenarios/regressions] [--case-timeout SECS]
//! shoal-sim soak [--budget 8h] [--seed S] [--jobs J] [--small]
//! ```
//!
//! `fuzz` generates clusters, operations and fault schedules (proptest), plays each as a scenario
//! in a child process (`--jobs` at once, every core by default; the report is the same for any
//! number), prints each case in order with what it exercised, and on a failure shrinks it and
//! writes the minimal case as `OUT/t90_<hash>.yaml` with the command that reproduces it; it exits
//! with the failure's code (3 safety, 4 liveness, 2 crash) after writing the file. A run ends with
//! its coverage (shapes, command and fault kinds) and its cases per minute. `--budget` runs cases
//! until that much wall time is spent; `--case K` reruns case K of a seed alone. `soak` is a
//! keep-going fuzz for a wall budget that reports failures per 10,000 cases.
//!
//! Every (file, seed) run happens in its own child process (this binary re-run with the hidden
//! `child` command): madsim fixes time, the rng and scheduling, but tokio's `select!` fairness rng
//! is seeded from a per-process counter, so only one simulation per process is bit-for-bit
//! reproducible — and the reproduce command a failure prints then replays exactly that run.
//!
//! Exit codes: 0 all runs passed, 1 usage or scenario parse error, 2 a crash/panic in the
//! simulation, 3 a safety (invariant) violation, 4 a liveness failure or expectation timeout,
//! 5 `check-determinism` found two runs of one seed that differ. With several failing runs the
//! most serious decides: safety, then crash, then liveness.
//!
//! Wall-clock time is read only here, in the parent's reporting code, around child processes —
//! never inside a simulation.

#[cfg(not(madsim))]
fn main() {
    eprintln!(
        "shoal-sim must be built with the simulator: cargo sim-run run scenarios/FILE.yaml --seed 1 \
         (the alias builds with --cfg madsim)"
    );
    std::process::exit(1);
}

#[cfg(madsim)]
fn main() {
    std::process::exit(sim::main());
}

#[cfg(madsim)]
mod sim {
    use std::io::Write;
    use std::path::{Path, PathBuf};
    use std::process::Command as Process;
    use std::sync::{Arc, Mutex};
    use std::time::Instant;

    use anyhow::{bail, Context};
    use clap::{Parser, Subcommand};
    use indicatif::{ProgressBar, ProgressStyle};
    use serde::{Deserialize, Serialize};
    use shoal_sim::scenario::run::run_seed;
    use shoal_sim::scenario::seeds::SeedRange;
    use shoal_sim::scenario::{summary, Outcome, Scenario};

    use shoal_sim::fuzz::{FuzzOptions, GenConfig, Progress, Sabotage, RESULT_MARK};

    #[derive(Parser)]
    #[command(name = "shoal-sim", about = "Run shoal scenarios in the deterministic simulator")]
    struct Cli {
        #[command(subcommand)]
        command: Cmd,
    }

    #[derive(Subcommand)]
    enum Cmd {
        /// Run scenario files, once per seed.
        Run {
            #[arg(required = true)]
            files: Vec<PathBuf>,
            /// One seed (default 1).
            #[arg(long, conflicts_with = "seeds")]
            seed: Option<u64>,
            /// A range of seeds, both ends included: `1..20` (or `1..=20`) runs the 20 seeds 1 to 20.
            #[arg(long, value_name = "A..B")]
            seeds: Option<String>,
            /// Write each run's trace as DIR/<scenario>-seed<N>.jsonl.
            #[arg(long)]
            trace_dir: Option<PathBuf>,
            /// One JSON object per run on stdout instead of the table.
            #[arg(long)]
            json: bool,
            /// Runs at once, each in its own process (default, or 0: every core).
            #[arg(long)]
            jobs: Option<usize>,
            /// One summary line per scenario (runs, passed, failed) instead of one per run: for
            /// sweeps of many seeds. Failures are listed in full either way.
            #[arg(long, conflicts_with = "json")]
            by_scenario: bool,
        },
        /// Run a scenario twice with one seed and compare the trace hashes.
        CheckDeterminism {
            file: PathBuf,
            #[arg(long, default_value_t = 1)]
            seed: u64,
        },
        /// Property-based testing: generate cases, run each in its own process, shrink a failure
        /// and write it out as a scenario file.
        Fuzz {
            /// Passing cases to run (with --budget: at most this many).
            #[arg(long)]
            cases: Option<u32>,
            /// Run cases until this much wall-clock time is spent (`90s`, `5m`, `8h`, `1h30m`),
            /// finishing the cases in progress, instead of a fixed --cases.
            #[arg(long, visible_alias = "for", value_parser = parse_budget, value_name = "DURATION")]
            budget: Option<std::time::Duration>,
            #[command(flatten)]
            common: FuzzArgs,
            /// Play only case K of the seed's sequence (shrinking it if it fails): how any case of a
            /// run is rerun alone.
            #[arg(long, value_name = "K", value_parser = clap::value_parser!(u32).range(1..))]
            case: Option<u32>,
            /// Do not stop at a failure: list every failing case and go on (no shrinking).
            #[arg(long)]
            keep_going: bool,
        },
        /// A nightly-sized soak: fuzz for a wall budget (default 8h) on every core without stopping
        /// at failures, then report failures per 10,000 cases and the command that reruns (and
        /// shrinks) each failing case.
        Soak {
            /// Wall-clock time to spend (`8h`, `30m`, …).
            #[arg(long, visible_alias = "for", value_parser = parse_budget, default_value = "8h", value_name = "DURATION")]
            budget: std::time::Duration,
            /// Stop after this many cases even if time is left.
            #[arg(long)]
            cases: Option<u32>,
            #[command(flatten)]
            common: FuzzArgs,
        },
        /// One run in this process (used by `run`; prints a result line).
        #[command(hide = true)]
        Child {
            file: PathBuf,
            #[arg(long)]
            seed: u64,
            #[arg(long)]
            trace_dir: Option<PathBuf>,
            /// Give up after this many seconds of wall-clock time and report a crash (a livelock:
            /// tasks running without letting virtual time pass). Used by `fuzz`.
            #[arg(long)]
            wall_limit: Option<u64>,
        },
    }

    /// What `fuzz` and `soak` share.
    #[derive(clap::Args)]
    struct FuzzArgs {
        /// Decides every generated case.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Cases played at once, each in its own process (default, or 0: every core). The report
        /// is the same whatever the number.
        #[arg(long)]
        jobs: Option<usize>,
        /// Runs spent shrinking a failure at most.
        #[arg(long, default_value_t = 256)]
        max_shrink_iters: u32,
        /// Where the regression file is written.
        #[arg(long, default_value = "scenarios/regressions")]
        out: PathBuf,
        /// Small clusters and short sequences (1 or 3 managers, up to 3 workers, 10 operations).
        #[arg(long)]
        small: bool,
        /// Wall-clock seconds a case may take before it counts as a hang (a crash).
        #[arg(long, default_value_t = 60)]
        case_timeout: u64,
        /// Test the fuzzer itself: `drain-is-fatal` makes every drain fail its case;
        /// `stale-leader-reads` plants a bug the linearizability check must find.
        #[arg(long, hide = true)]
        sabotage: Option<String>,
    }

    /// `90s`, `5m`, `8h`, `1h30m`, or plain seconds.
    fn parse_budget(text: &str) -> Result<std::time::Duration, String> {
        let bad = || format!("{text:?}: expected a duration such as 90s, 5m, 8h or 1h30m");
        if let Ok(secs) = text.parse::<u64>() {
            return Ok(std::time::Duration::from_secs(secs));
        }
        let (mut total, mut number) = (0u64, String::new());
        for c in text.chars() {
            if c.is_ascii_digit() {
                number.push(c);
                continue;
            }
            let unit = match c {
                's' => 1,
                'm' => 60,
                'h' => 3600,
                'd' => 86_400,
                _ => return Err(bad()),
            };
            let n: u64 = number.parse().map_err(|_| bad())?;
            total = total.saturating_add(n.saturating_mul(unit));
            number.clear();
        }
        if !number.is_empty() || total == 0 {
            return Err(bad());
        }
        Ok(std::time::Duration::from_secs(total))
    }

    /// `--jobs`: the number given, or every core for none or 0.
    fn jobs_or_cores(jobs: Option<usize>) -> usize {
        match jobs {
            Some(n) if n > 0 => n,
            _ => std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2),
        }
    }

    /// What a child reports about its run.
    #[derive(Debug, Clone, Serialize, Deserialize)]
    struct RunResult {
        scenario: String,
        file: String,
        seed: u64,
        result: String,
        exit_code: i32,
        detail: String,
        virtual_ms: u64,
        trace_hash: String,
        trace_events: usize,
        #[serde(default)]
        wall_ms: u64,
        #[serde(default)]
        trace_file: Option<String>,
    }

    impl RunResult {
        fn repro(&self) -> String {
            format!("cargo sim-run run {} --seed {}", self.file, self.seed)
        }
    }

    fn parse_seeds(seed: Option<u64>, seeds: Option<&str>) -> anyhow::Result<SeedRange> {
        Ok(match seeds {
            Some(range) => SeedRange::parse(range)?,
            None => SeedRange::single(seed.unwrap_or(1)),
        })
    }

    fn stem(file: &str) -> String {
        Path::new(file).file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "scenario".into())
    }

    /// The `child` command: one run in this process.
    fn child(file: &Path, seed: u64, trace_dir: Option<&Path>, wall_limit: Option<u64>) -> i32 {
        let scenario = match Scenario::load(file) {
            Ok(s) => s,
            Err(err) => {
                eprintln!("{err}");
                return 1;
            }
        };
        if let Some(secs) = wall_limit {
            // A watchdog on wall-clock time, outside the simulation: a run whose tasks loop without
            // letting virtual time pass never reaches the runner's virtual-time bound.
            let (name, file) = (scenario.name.clone(), file.display().to_string());
            std::thread::spawn(move || {
                std::thread::sleep(std::time::Duration::from_secs(secs));
                let result = RunResult {
                    scenario: name,
                    file,
                    seed,
                    result: Outcome::Crash(String::new()).label().to_string(),
                    exit_code: 2,
                    detail: format!(
                        "the run did not finish within {secs} s of wall-clock time: a livelock (tasks running \
                         without letting virtual time pass) or a very slow run"
                    ),
                    virtual_ms: 0,
                    trace_hash: String::new(),
                    trace_events: 0,
                    wall_ms: secs * 1000,
                    trace_file: None,
                };
                println!("{RESULT_MARK}{}", serde_json::to_string(&result).expect("result serialises"));
                let _ = std::io::stdout().flush();
                std::process::exit(2);
            });
        }
        // The run's own wall time, read outside the simulation (before and after it), for the
        // fuzzer's per-case lines (the `run` command measures around the child instead).
        let started = Instant::now();
        let report = run_seed(&scenario, seed);
        let wall_ms = started.elapsed().as_millis() as u64;
        let mut trace_file = None;
        if let Some(dir) = trace_dir {
            let path = dir.join(format!("{}-seed{seed}.jsonl", stem(&report.file)));
            let written = std::fs::create_dir_all(dir).and_then(|_| std::fs::write(&path, &report.trace_jsonl));
            match written {
                Ok(()) => trace_file = Some(path.display().to_string()),
                Err(err) => eprintln!("cannot write trace {}: {err}", path.display()),
            }
        }
        let detail = match &report.outcome {
            Outcome::Pass => String::new(),
            Outcome::Crash(d) | Outcome::Safety(d) | Outcome::Liveness(d) => d.clone(),
        };
        let result = RunResult {
            scenario: report.scenario,
            file: report.file,
            seed,
            result: report.outcome.label().to_string(),
            exit_code: report.outcome.exit_code(),
            detail,
            virtual_ms: report.virtual_ms,
            trace_hash: format!("{:016x}", report.trace_hash),
            trace_events: report.trace_events,
            wall_ms,
            trace_file,
        };
        println!("{RESULT_MARK}{}", serde_json::to_string(&result).expect("result serialises"));
        let _ = std::io::stdout().flush();
        result.exit_code
    }

    /// Run one (file, seed) in a child process; wall time measured here, outside the simulation.
    fn spawn_run(file: &Path, seed: u64, trace_dir: Option<&Path>, name: &str) -> RunResult {
        let started = Instant::now();
        let mut process = Process::new(std::env::current_exe().expect("own executable"));
        process.arg("child").arg(file).arg("--seed").arg(seed.to_string());
        if let Some(dir) = trace_dir {
            process.arg("--trace-dir").arg(dir);
        }
        let output = process.output();
        let wall_ms = started.elapsed().as_millis() as u64;
        let failed = |detail: String| RunResult {
            scenario: name.to_string(),
            file: file.display().to_string(),
            seed,
            result: Outcome::Crash(String::new()).label().to_string(),
            exit_code: 2,
            detail,
            virtual_ms: 0,
            trace_hash: String::new(),
            trace_events: 0,
            wall_ms,
            trace_file: None,
        };
        let output = match output {
            Ok(output) => output,
            Err(err) => return failed(format!("could not start the run: {err}")),
        };
        let stdout = String::from_utf8_lossy(&output.stdout);
        let line = stdout.lines().find_map(|l| l.strip_prefix(RESULT_MARK));
        match line.map(serde_json::from_str::<RunResult>) {
            Some(Ok(mut result)) => {
                result.wall_ms = wall_ms;
                result
            }
            _ => {
                let stderr = String::from_utf8_lossy(&output.stderr);
                let tail: Vec<&str> = stderr.lines().rev().take(15).collect();
                let tail: Vec<&str> = tail.into_iter().rev().collect();
                failed(format!("the run died ({}) without a result:\n{}", output.status, tail.join("\n")))
            }
        }
    }

    fn print_table(results: &[RunResult], files: usize, seeds: SeedRange, by_scenario: bool) {
        let lines: Vec<summary::Line> = results
            .iter()
            .map(|r| summary::Line {
                scenario: r.scenario.clone(),
                file: r.file.clone(),
                key: r.seed.to_string(),
                result: r.result.clone(),
                passed: r.exit_code == 0,
                cells: vec![
                    format!("{:.1}s", r.virtual_ms as f64 / 1000.0),
                    format!("{:.2}s", r.wall_ms as f64 / 1000.0),
                    r.trace_hash.clone(),
                ],
                detail: r.detail.clone(),
                trace: r.trace_file.clone(),
                rerun: r.repro(),
            })
            .collect();
        let columns = summary::Columns {
            key_header: "SEED",
            headers: &["VIRTUAL", "WALL", "TRACE HASH"],
            key_word: "seed",
            rerun_word: "reproduce",
        };
        let scenarios = if files == 1 { "1 scenario".to_string() } else { format!("{files} scenarios") };
        let ran = format!("{scenarios} × {seeds}");
        if by_scenario {
            print!("{}", summary::render_by_scenario(columns, &lines, Some(&ran)));
        } else {
            print!("{}", summary::render(columns, &lines, Some(&ran)));
        }
    }

    fn run(
        files: &[PathBuf],
        seed: Option<u64>,
        seeds: Option<&str>,
        trace_dir: Option<&Path>,
        json: bool,
        jobs: Option<usize>,
        by_scenario: bool,
    ) -> anyhow::Result<i32> {
        let seeds = parse_seeds(seed, seeds)?;
        let mut scenarios = Vec::new();
        for file in files {
            scenarios.push((file.clone(), Scenario::load(file)?));
        }
        let mut work: Vec<(usize, PathBuf, String, u64)> = Vec::new();
        for (file, scenario) in &scenarios {
            for seed in seeds.iter() {
                work.push((work.len(), file.clone(), scenario.name.clone(), seed));
            }
        }
        let total = work.len();
        let jobs = jobs_or_cores(jobs).min(total.max(1));
        let progress = if total > 1 && !json {
            let bar = ProgressBar::new(total as u64);
            bar.set_style(
                ProgressStyle::with_template("{bar:40} {pos}/{len} runs, {elapsed} [{msg}]")
                    .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            Some(bar)
        } else {
            None
        };
        let queue = Arc::new(Mutex::new(work.into_iter().rev().collect::<Vec<_>>()));
        let results: Arc<Mutex<Vec<(usize, RunResult)>>> = Arc::new(Mutex::new(Vec::with_capacity(total)));
        let failures = Arc::new(Mutex::new(0usize));
        std::thread::scope(|scope| {
            for _ in 0..jobs {
                let (queue, results, failures, progress) =
                    (queue.clone(), results.clone(), failures.clone(), progress.clone());
                scope.spawn(move || loop {
                    let next = queue.lock().expect("queue").pop();
                    let Some((index, file, name, seed)) = next else { break };
                    let result = spawn_run(&file, seed, trace_dir, &name);
                    if let Some(bar) = &progress {
                        if result.exit_code != 0 {
                            let mut failed = failures.lock().expect("failures");
                            *failed += 1;
                            bar.set_message(format!("{failed} failed"));
                        }
                        bar.inc(1);
                    }
                    results.lock().expect("results").push((index, result));
                });
            }
        });
        if let Some(bar) = progress {
            bar.finish_and_clear();
        }
        let mut results = std::mem::take(&mut *results.lock().expect("results"));
        results.sort_by_key(|(index, _)| *index);
        let results: Vec<RunResult> = results.into_iter().map(|(_, r)| r).collect();
        if json {
            for r in &results {
                let mut value = serde_json::to_value(r)?;
                if r.exit_code != 0 {
                    value["reproduce"] = serde_json::json!(r.repro());
                }
                println!("{value}");
            }
        } else {
            print_table(&results, scenarios.len(), seeds, by_scenario);
        }
        let worst = summary::worst(results.iter().map(|r| r.exit_code));
        Ok(worst)
    }

    fn check_determinism(file: &Path, seed: u64) -> anyhow::Result<i32> {
        let scenario = Scenario::load(file)?;
        let first = spawn_run(file, seed, None, &scenario.name);
        let second = spawn_run(file, seed, None, &scenario.name);
        println!(
            "{} seed {}: run 1 {} hash {} ({} events), run 2 {} hash {} ({} events)",
            file.display(),
            seed,
            first.result,
            first.trace_hash,
            first.trace_events,
            second.result,
            second.trace_hash,
            second.trace_events
        );
        if first.trace_hash.is_empty() || first.trace_hash != second.trace_hash || first.result != second.result {
            println!("NOT DETERMINISTIC: the two runs of seed {seed} differ");
            return Ok(5);
        }
        println!("deterministic");
        Ok(0)
    }

    /// How a fuzz run is bounded and what it does at a failure.
    struct FuzzPlan {
        cases: Option<u32>,
        budget: Option<std::time::Duration>,
        only: Option<u32>,
        keep_going: bool,
        /// `soak`: the report counts failures per 10,000 cases.
        soak: bool,
    }

    fn per_minute(cases: u32, secs: f64) -> f64 {
        if secs > 0.0 {
            cases as f64 * 60.0 / secs
        } else {
            0.0
        }
    }

    fn fuzz(args: &FuzzArgs, plan: FuzzPlan) -> anyhow::Result<i32> {
        let mut gen = if args.small { GenConfig::small() } else { GenConfig::default() };
        gen.sabotage = match args.sabotage.as_deref() {
            None => None,
            Some("drain-is-fatal") => Some(Sabotage::DrainIsFatal),
            Some("stale-leader-reads") => Some(Sabotage::StaleLeaderReads),
            Some(other) => bail!("--sabotage {other:?}: expected drain-is-fatal or stale-leader-reads"),
        };
        // A sabotaged run tests the fuzzer itself: only the sabotaged property should fail.
        gen.traffic = gen.sabotage.is_none();
        // The flags that decide the cases, for the commands that rerun one.
        let mut flags = format!("--seed {}", args.seed);
        if args.small {
            flags.push_str(" --small");
        }
        if let Some(sabotage) = &args.sabotage {
            flags.push_str(&format!(" --sabotage {sabotage}"));
        }
        let rerun = |k: u32| format!("cargo sim-run fuzz {flags} --case {k}");
        let cases = match (plan.cases, plan.budget) {
            _ if plan.only.is_some() => 1,
            (Some(n), _) => n,
            (None, Some(_)) => u32::MAX,
            (None, None) => 100,
        };
        let jobs = jobs_or_cores(args.jobs).min(cases.max(1) as usize);
        let work_dir = std::env::temp_dir().join(format!("shoal-fuzz-{}", std::process::id()));
        let options = FuzzOptions {
            cases,
            seed: args.seed,
            max_shrink_iters: args.max_shrink_iters,
            out: args.out.clone(),
            gen,
            exe: std::env::current_exe().context("own executable")?,
            work_dir: work_dir.clone(),
            wall_limit: Some(args.case_timeout),
            jobs,
            only: plan.only,
            keep_going: plan.keep_going,
        };
        let what = match (plan.only, plan.budget) {
            (Some(k), _) => format!("case {k}"),
            (None, Some(budget)) if cases == u32::MAX => format!("cases for {}s", budget.as_secs()),
            (None, Some(budget)) => format!("up to {cases} cases for {}s", budget.as_secs()),
            (None, None) => format!("{cases} cases"),
        };
        eprintln!(
            "fuzz: {what} from seed {} with {jobs} job{}{}, failures to {}",
            args.seed,
            if jobs == 1 { "" } else { "s" },
            if plan.keep_going { " (going on past failures)" } else { "" },
            args.out.display()
        );
        let started = Instant::now();
        let mut last = Instant::now();
        let total = if cases == u32::MAX || plan.only.is_some() { String::new() } else { format!("/{cases}") };
        let mut more = || plan.budget.is_none_or(|budget| started.elapsed() < budget);
        let report = shoal_sim::fuzz::fuzz_while(
            &options,
            &mut |event| {
                let wall = last.elapsed().as_secs_f64();
                last = Instant::now();
                match event {
                    // In case order whatever order the processes finish in; the wall time is
                    // the case's own (measured by its process).
                    Progress::Case { index, case, exercised, run } => eprintln!(
                        "case {index:>5}{total}  {:<8}  {:<34}  {:>7.1}s virtual  {:>6.2}s  {:<16}  {}{}",
                        run.result,
                        case.summary(),
                        run.virtual_ms as f64 / 1000.0,
                        run.wall_ms as f64 / 1000.0,
                        run.trace_hash,
                        exercised.describe(),
                        if run.passed() { String::new() } else { format!("\n  {}", run.detail) }
                    ),
                    Progress::Shrink { iteration, case, run } => eprintln!(
                        "shrink {iteration:>4}  {:<8}  {:<34}  {wall:>5.2}s",
                        if run.passed() { "passes" } else { "fails" },
                        case.summary()
                    ),
                    Progress::Verify { file, run } => {
                        eprintln!("replay {}: {} {}", file.display(), run.result, run.detail)
                    }
                }
            },
            &mut more,
        );
        let _ = std::fs::remove_dir_all(&work_dir);
        let report = report?;
        let elapsed = started.elapsed().as_secs_f64();
        let first = plan.only.unwrap_or(1);
        let range = match report.ran {
            0 => "no case".to_string(),
            1 => format!("case {first}"),
            n => format!("cases {first}..={}", first + n - 1),
        };
        print!("{}", report.coverage.render());
        // The only line (with the per-case wall times) that --jobs and the machine change.
        println!(
            "rate: {} case{} in {elapsed:.1}s: {:.1} cases/min with {jobs} job{}",
            report.ran,
            if report.ran == 1 { "" } else { "s" },
            per_minute(report.ran, elapsed),
            if jobs == 1 { "" } else { "s" }
        );
        if plan.keep_going {
            let failed = report.failures.len();
            let word = if plan.soak { "soak" } else { "fuzz" };
            println!("{word}: {} cases ({range} of {flags}): {} passed, {failed} failed", report.ran, report.passed);
            if plan.soak || failed > 0 {
                let per_10k = if report.ran > 0 { failed as f64 * 10_000.0 / report.ran as f64 } else { 0.0 };
                println!("failures per 10,000 cases: {per_10k:.1} ({failed} of {})", report.ran);
            }
            for failure in &report.failures {
                println!(
                    "  case {} {} {}: {}",
                    failure.index,
                    failure.run.result,
                    failure.case.summary(),
                    failure.run.detail.lines().next().unwrap_or_default()
                );
                println!("    rerun and shrink: {}", rerun(failure.index));
            }
            if report.ran > 1 {
                println!("rerun any case K alone: {}", rerun(0).replace("--case 0", "--case K"));
            }
            return Ok(summary::worst(report.failures.iter().map(|f| f.run.exit_code)));
        }
        let Some(found) = report.found else {
            let passed = if report.passed == 1 { "1 case".to_string() } else { format!("{} cases", report.passed) };
            println!("fuzz: {passed} passed ({range} of {flags})");
            if report.ran > 1 {
                println!("rerun any case K alone: {}", rerun(0).replace("--case 0", "--case K"));
            }
            return Ok(0);
        };
        println!(
            "fuzz: case {} failed after {} passed ({flags}); shrunk in {} runs",
            found.case_index, report.passed, found.shrink_runs
        );
        println!("  first:   {} {}: {}", found.first.1.result, found.first.0.summary(), found.first.1.detail);
        println!("  minimal: {} {}: {}", found.run.result, found.case.summary(), found.run.detail);
        println!("  written: {}", found.file.display());
        if found.reproduced() {
            println!("  replayed from the file: {} (reproduces)", found.replay.result);
        } else {
            println!("  replayed from the file: {} — does NOT reproduce: {}", found.replay.result, found.replay.detail);
        }
        println!("  reproduce: {}", found.reproduce_command());
        println!("  rerun the case: {}", rerun(found.case_index));
        Ok(found.run.exit_code.max(2))
    }

    pub fn main() -> i32 {
        let cli = match Cli::try_parse() {
            Ok(cli) => cli,
            Err(err) => {
                let _ = err.print();
                return if err.use_stderr() { 1 } else { 0 };
            }
        };
        let result = match &cli.command {
            Cmd::Child { file, seed, trace_dir, wall_limit } => {
                return child(file, *seed, trace_dir.as_deref(), *wall_limit)
            }
            Cmd::Run { files, seed, seeds, trace_dir, json, jobs, by_scenario } => {
                run(files, *seed, seeds.as_deref(), trace_dir.as_deref(), *json, *jobs, *by_scenario)
            }
            Cmd::CheckDeterminism { file, seed } => check_determinism(file, *seed),
            Cmd::Fuzz { cases, budget, common, case, keep_going } => fuzz(
                common,
                FuzzPlan { cases: *cases, budget: *budget, only: *case, keep_going: *keep_going, soak: false },
            ),
            Cmd::Soak { budget, cases, common } => fuzz(
                common,
                FuzzPlan { cases: *cases, budget: Some(*budget), only: None, keep_going: true, soak: true },
            ),
        };
        match result {
            Ok(code) => code,
            Err(err) => {
                eprintln!("shoal-sim: {err:#}");
                1
            }
        }
    }
}
