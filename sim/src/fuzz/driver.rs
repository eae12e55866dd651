//! Running cases: proptest's strategy generates them from the fuzz seed, in the order proptest's
//! own runner would (case K is the same case whatever else runs), each is rendered to a scenario
//! file and played by a child process of the `shoal-sim` binary (`shoal-sim child FILE --seed N`,
//! the runner's own mechanism), up to `jobs` at once ([`super::pool`]). Every run is alone in its
//! process — tokio's `select!` fairness rng is seeded per process, and only then is a run
//! bit-for-bit what `cargo sim-run run FILE --seed N` replays.
//!
//! Results are reported in case order whatever order the children finish in, and the run stops
//! at the first failing case as a serial run would: later cases still running are stopped and
//! never reported, earlier ones finish (and the earliest failure is the one kept). The failing
//! case is then shrunk one run at a time with proptest's algorithm (simplify while it fails,
//! complicate back when it passes), the minimal case written as `t90_<hash>.yaml` (the hash of
//! its YAML) with a header saying the seed, the failure and the command that reproduces it, and
//! the file replayed once more, as written, to confirm it reproduces. `--jobs N` changes how fast
//! this goes, never what it reports.
//!
//! No wall-clock time here: the caller (the binary) decides through `more` whether another case
//! may start (a wall budget), and each child reports its own wall time.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command as Process;

use proptest::strategy::{Strategy, ValueTree};
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};

use super::coverage::Coverage;
use super::gen::{case_strategy, Case, Exercised, GenConfig};
use super::pool::{parse_output, Pool};
use crate::scenario::render::render;

/// The prefix of the line a `shoal-sim child` run prints its result on.
pub const RESULT_MARK: &str = "SHOAL-SIM-RESULT ";

/// What one run of a case reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaseRun {
    /// `ok`, `CRASH`, `SAFETY`, `LIVENESS` (or `ERROR` when the child gave no result).
    pub result: String,
    /// The child's exit code: 0 ok, 1 the scenario did not parse, 2 crash, 3 safety, 4 liveness.
    pub exit_code: i32,
    pub detail: String,
    pub virtual_ms: u64,
    /// The run's trace hash (hex; empty when the run gave no result).
    pub trace_hash: String,
    /// Wall-clock milliseconds the child spent on the run (measured by the child).
    pub wall_ms: u64,
}

impl CaseRun {
    pub fn passed(&self) -> bool {
        self.exit_code == 0
    }

    /// A run that gave no result.
    pub fn error(detail: String) -> CaseRun {
        CaseRun { result: "ERROR".into(), exit_code: 2, detail, virtual_ms: 0, trace_hash: String::new(), wall_ms: 0 }
    }
}

/// Play `file` with `seed` in a child process of `exe` (the `shoal-sim` binary); with
/// `wall_limit`, the child gives up after that many seconds of wall-clock time (a hang).
pub fn run_file(exe: &Path, file: &Path, seed: u64, wall_limit: Option<u64>) -> CaseRun {
    let mut process = Process::new(exe);
    process.arg("child").arg(file).arg("--seed").arg(seed.to_string());
    if let Some(secs) = wall_limit {
        process.arg("--wall-limit").arg(secs.to_string());
    }
    match process.output() {
        Ok(output) => parse_output(
            &String::from_utf8_lossy(&output.stdout),
            &String::from_utf8_lossy(&output.stderr),
            output.status,
        ),
        Err(err) => CaseRun::error(format!("could not start {}: {err}", exe.display())),
    }
}

/// What to fuzz, and where.
#[derive(Debug, Clone)]
pub struct FuzzOptions {
    /// Cases to run: this many must pass (with a wall budget, at most this many run).
    pub cases: u32,
    /// Decides every generated case.
    pub seed: u64,
    pub max_shrink_iters: u32,
    /// Where the regression file goes (`scenarios/regressions`).
    pub out: PathBuf,
    pub gen: GenConfig,
    /// The `shoal-sim` binary that plays each case.
    pub exe: PathBuf,
    /// Scratch directory for the case files.
    pub work_dir: PathBuf,
    /// Wall-clock seconds a run may take before it counts as a hang (enforced by the child).
    pub wall_limit: Option<u64>,
    /// Cases played at once, each in its own process (at least 1).
    pub jobs: usize,
    /// Play only case K (from 1) of the sequence the seed generates: the rerun of one case.
    pub only: Option<u32>,
    /// Do not stop at a failing case: count it, list it and go on (no shrinking); a soak.
    pub keep_going: bool,
}

impl FuzzOptions {
    /// `cases` cases from `seed`, one at a time, stopping and shrinking (up to 256 runs) at the
    /// first failure; scratch files in `work_dir`, regressions to `out`.
    pub fn new(cases: u32, seed: u64, gen: GenConfig, exe: &Path, work_dir: &Path, out: &Path) -> FuzzOptions {
        FuzzOptions {
            cases,
            seed,
            max_shrink_iters: 256,
            out: out.to_path_buf(),
            gen,
            exe: exe.to_path_buf(),
            work_dir: work_dir.to_path_buf(),
            wall_limit: Some(60),
            jobs: 1,
            only: None,
            keep_going: false,
        }
    }
}

/// What the fuzzer is doing, for progress output.
#[derive(Debug)]
pub enum Progress<'a> {
    /// A new case ran (`index` from 1); reported in case order.
    Case { index: u32, case: &'a Case, exercised: &'a Exercised, run: &'a CaseRun },
    /// A shrink candidate ran (`iteration` from 1).
    Shrink { iteration: u32, case: &'a Case, run: &'a CaseRun },
    /// The regression file was written and replayed.
    Verify { file: &'a Path, run: &'a CaseRun },
}

/// A failure, shrunk and written out.
#[derive(Debug, Clone)]
pub struct Found {
    /// The regression file.
    pub file: PathBuf,
    /// The minimal case (its seed is the run's seed).
    pub case: Case,
    /// How the minimal case failed while shrinking.
    pub run: CaseRun,
    /// The case that failed first, and how.
    pub first: (Case, CaseRun),
    /// Which case (from 1) failed first.
    pub case_index: u32,
    /// Runs spent shrinking.
    pub shrink_runs: u32,
    /// Replaying the written file.
    pub replay: CaseRun,
}

impl Found {
    /// The replay failed the same way (same result kind) as the minimal case.
    pub fn reproduced(&self) -> bool {
        self.replay.exit_code == self.run.exit_code
    }

    pub fn reproduce_command(&self) -> String {
        format!("cargo sim-run run {} --seed {}", self.file.display(), self.case.seed)
    }
}

/// A failing case a `keep_going` run counted and went past.
#[derive(Debug, Clone)]
pub struct Failed {
    pub index: u32,
    pub case: Case,
    pub run: CaseRun,
}

#[derive(Debug, Clone)]
pub struct FuzzReport {
    /// Cases that ran and were reported (passed or failed), in order from the first.
    pub ran: u32,
    /// Cases that passed before a failure (or all of them).
    pub passed: u32,
    /// The first failure, shrunk (not with `keep_going`).
    pub found: Option<Found>,
    /// With `keep_going`: every failing case.
    pub failures: Vec<Failed>,
    /// What the reported cases exercised.
    pub coverage: Coverage,
}

#[derive(Debug, thiserror::Error)]
pub enum FuzzError {
    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("proptest gave up: {0}")]
    Aborted(String),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> FuzzError + '_ {
    move |source| FuzzError::Io { path: path.display().to_string(), source }
}

/// FNV-1a, 64 bits: a stable name for a regression file from its contents.
fn fnv1a(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |hash, b| (hash ^ b as u64).wrapping_mul(0x0100_0000_01b3))
}

/// One line, at most `max` characters.
fn one_line(text: &str, max: usize) -> String {
    let flat = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if flat.chars().count() <= max {
        flat
    } else {
        format!("{}…", flat.chars().take(max).collect::<String>())
    }
}

/// The proptest configuration cases are generated and shrunk with.
fn config(options: &FuzzOptions) -> Config {
    Config {
        cases: options.cases,
        max_shrink_iters: options.max_shrink_iters,
        failure_persistence: None,
        ..Config::default()
    }
}

/// The cases a seed generates, in order: exactly those `TestRunner::run` would give its test (a
/// fresh rng derived from the runner's before each case), so a case's number names it.
struct Cases<S> {
    strategy: S,
    runner: TestRunner,
    next: u32,
}

impl<S: Strategy<Value = Case>> Cases<S> {
    fn new(strategy: S, config: Config, seed: u64) -> Cases<S> {
        let mut bytes = [0u8; 32];
        bytes[..8].copy_from_slice(&seed.to_le_bytes());
        let runner = TestRunner::new_with_rng(config, TestRng::from_seed(RngAlgorithm::ChaCha, &bytes));
        Cases { strategy, runner, next: 0 }
    }

    /// The next case's number (from 1) and value tree.
    fn next(&mut self) -> Result<(u32, S::Tree), FuzzError> {
        let rng = self.runner.new_rng();
        *self.runner.rng() = rng;
        let tree = self.strategy.new_tree(&mut self.runner).map_err(|reason| FuzzError::Aborted(reason.to_string()))?;
        self.next += 1;
        Ok((self.next, tree))
    }
}

/// Generate and run cases until one fails (then shrink it, write it, replay it) or `cases` pass.
pub fn fuzz(options: &FuzzOptions, progress: &mut dyn FnMut(Progress<'_>)) -> Result<FuzzReport, FuzzError> {
    fuzz_while(options, progress, &mut || true)
}

/// As [`fuzz`], asking `more` before starting each case whether there is time for it (a wall
/// budget: the cases already running finish, and are reported, whatever `more` says).
pub fn fuzz_while(
    options: &FuzzOptions,
    progress: &mut dyn FnMut(Progress<'_>),
    more: &mut dyn FnMut() -> bool,
) -> Result<FuzzReport, FuzzError> {
    std::fs::create_dir_all(&options.work_dir).map_err(io(&options.work_dir))?;
    let config = config(options);
    let mut cases = Cases::new(case_strategy(&options.gen), config, options.seed);
    let mut pool = Pool::new(&options.exe, &options.work_dir, options.jobs, options.wall_limit);
    let limit = if options.only.is_some() { 1 } else { options.cases };
    let mut report = FuzzReport { ran: 0, passed: 0, found: None, failures: Vec::new(), coverage: Coverage::default() };
    // Runs started but not reported yet (their tree kept for shrinking), and finished ones
    // waiting for an earlier case to be reported.
    let mut running = BTreeMap::new();
    let mut finished = BTreeMap::new();
    let mut started = 0u32;
    // The last case reported, and the earliest failing case seen (a serial run stops there).
    let mut reported = options.only.map_or(0, |k| k.saturating_sub(1));
    let mut stop: Option<u32> = None;
    let mut failing = None;
    while failing.is_none() {
        while !pool.is_full() && stop.is_none() && started < limit && more() {
            let (index, tree) = cases.next()?;
            if options.only.is_some_and(|k| index < k) {
                continue;
            }
            let case = tree.current();
            let name = format!("case-{index}.yaml");
            let file = options.work_dir.join(&name);
            std::fs::write(&file, render(&case.scenario(&options.gen), &[case.summary()])).map_err(io(&file))?;
            pool.start(index, &name, case.seed).map_err(io(&options.exe))?;
            running.insert(index, (tree, case));
            started += 1;
        }
        let Some((index, run)) = pool.wait_any() else { break };
        let _ = std::fs::remove_file(options.work_dir.join(format!("case-{index}.yaml")));
        let Some((tree, case)) = running.remove(&index) else { continue };
        if !run.passed() && !options.keep_going && stop.is_none_or(|s| index < s) {
            // Cases after it would not have run in a serial run: stop them, forget them.
            stop = Some(index);
            pool.cancel(|k| k < index);
            running.retain(|k, _| *k < index);
            finished.retain(|k, _| *k < index);
        }
        finished.insert(index, (tree, case, run));
        while let Some((tree, case, run)) = finished.remove(&(reported + 1)) {
            reported += 1;
            let exercised = case.exercised(&options.gen);
            report.coverage.add(&exercised);
            report.ran += 1;
            progress(Progress::Case { index: reported, case: &case, exercised: &exercised, run: &run });
            if run.passed() {
                report.passed += 1;
            } else if options.keep_going {
                report.failures.push(Failed { index: reported, case, run });
            } else {
                failing = Some((reported, tree, case, run));
                break;
            }
        }
    }
    drop(pool);
    let Some((case_index, tree, first_case, first_run)) = failing else { return Ok(report) };
    let (minimal, run, shrink_runs) = shrink(options, tree, &first_run, progress)?;
    let found = write_regression(options, minimal, run, (first_case, first_run), case_index, shrink_runs, progress)?;
    report.found = Some(found);
    Ok(report)
}

/// Shrink a failing case one run at a time, as proptest's runner does: simplify while it fails,
/// complicate back when it passes, at most `max_shrink_iters` runs (then back to the last
/// failing case). Returns the minimal case, how it failed and the runs spent.
fn shrink<T: ValueTree<Value = Case>>(
    options: &FuzzOptions,
    mut tree: T,
    first_run: &CaseRun,
    progress: &mut dyn FnMut(Progress<'_>),
) -> Result<(Case, CaseRun, u32), FuzzError> {
    let max = config(options).max_shrink_iters();
    // One run at a time, in the work directory like the cases (a failure's `file:line` then
    // names `shrink.yaml`, whatever the directory).
    let mut pool = Pool::new(&options.exe, &options.work_dir, 1, options.wall_limit);
    let file = options.work_dir.join("shrink.yaml");
    let mut last_failure: Option<(Case, CaseRun)> = None;
    let mut iterations = 0u32;
    if max > 0 && tree.simplify() {
        loop {
            if iterations >= max {
                while tree.complicate() {}
                break;
            }
            iterations += 1;
            let case = tree.current();
            std::fs::write(&file, render(&case.scenario(&options.gen), &[case.summary()])).map_err(io(&file))?;
            pool.start(iterations, "shrink.yaml", case.seed).map_err(io(&options.exe))?;
            let Some((_, run)) = pool.wait_any() else { unreachable!("a run was started") };
            progress(Progress::Shrink { iteration: iterations, case: &case, run: &run });
            if run.passed() {
                if !tree.complicate() {
                    break;
                }
            } else {
                last_failure = Some((case, run));
                if !tree.simplify() {
                    break;
                }
            }
        }
    }
    let _ = std::fs::remove_file(&file);
    let minimal = tree.current();
    // The verdict of the minimal case: proptest ends on the last failing case, but after a
    // complicate that could not go back it may sit on one never played; the first failure then.
    let run = match last_failure {
        Some((case, run)) if case == minimal => run,
        _ => first_run.clone(),
    };
    Ok((minimal, run, iterations))
}

/// Write the minimal case as `t90_<hash>.yaml`, replay it, and put the replay's verdict in its
/// header (the header keeps its line count, so the replay's `file:line`s stay right).
fn write_regression(
    options: &FuzzOptions,
    case: Case,
    run: CaseRun,
    first: (Case, CaseRun),
    case_index: u32,
    shrink_runs: u32,
    progress: &mut dyn FnMut(Progress<'_>),
) -> Result<Found, FuzzError> {
    let scenario = case.scenario(&options.gen);
    let body = render(&scenario, &[]);
    let file = options.out.join(format!("t90_{:08x}.yaml", fnv1a(&body) as u32));
    std::fs::create_dir_all(&options.out).map_err(io(&options.out))?;
    let header = |verdict: &CaseRun, replayed: Option<&CaseRun>| {
        let mut lines = vec![
            format!(
                "Regression found by `shoal-sim fuzz --seed {}` (case {case_index}, {}), shrunk in {shrink_runs} runs.",
                options.seed,
                first.0.summary()
            ),
            format!("Case: {}", case.summary()),
            format!("Seed: {}", case.seed),
            format!("Failure: {} (exit {}): {}", verdict.result, verdict.exit_code, one_line(&verdict.detail, 600)),
            format!("Reproduce: cargo sim-run run {} --seed {}", file.display(), case.seed),
        ];
        lines.push(match replayed {
            Some(replay) if replay.exit_code == run.exit_code => "Replayed from this file: it fails as above.".into(),
            Some(replay) => format!(
                "Replayed from this file it gave {} (exit {}), not {}: the failure is not reproducible.",
                replay.result, replay.exit_code, run.result
            ),
            None => "Not replayed yet.".into(),
        });
        lines
    };
    let write = |lines: Vec<String>| std::fs::write(&file, render(&scenario, &lines)).map_err(io(&file));
    write(header(&run, None))?;
    let replay = run_file(&options.exe, &file, case.seed, options.wall_limit);
    progress(Progress::Verify { file: &file, run: &replay });
    let verdict = if replay.exit_code == run.exit_code { &replay } else { &run };
    write(header(verdict, Some(&replay)))?;
    Ok(Found { file, case, run, first, case_index, shrink_runs, replay })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Case K is the case proptest's own runner gives its test K-th: numbers from earlier runs of
    /// the fuzzer (and the README) still name the same cases.
    #[test]
    fn cases_come_in_the_order_proptests_runner_generates_them() {
        let options = FuzzOptions::new(40, 3, GenConfig::small(), Path::new("x"), Path::new("w"), Path::new("o"));
        let seen = std::cell::RefCell::new(Vec::new());
        let mut bytes = [0u8; 32];
        bytes[..8].copy_from_slice(&options.seed.to_le_bytes());
        let mut runner = TestRunner::new_with_rng(config(&options), TestRng::from_seed(RngAlgorithm::ChaCha, &bytes));
        runner
            .run(&case_strategy(&options.gen), |case| {
                seen.borrow_mut().push(case);
                Ok(())
            })
            .expect("all pass");
        let mut cases = Cases::new(case_strategy(&options.gen), config(&options), options.seed);
        let ours: Vec<Case> = (0..40).map(|_| cases.next().expect("a case").1.current()).collect();
        assert_eq!(seen.into_inner(), ours);
        assert_eq!(cases.next, 40);
    }

    #[test]
    fn file_names_are_stable() {
        assert_eq!(fnv1a(""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a("a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(one_line("a\n  b\tc", 10), "a b c");
        assert_eq!(one_line("abcdef", 3), "abc…");
    }
}
