//! Running cases under proptest: each case is rendered to a scenario file and played by a child
//! process of the `shoal-sim` binary (`shoal-sim child FILE --seed N`, the runner's own
//! mechanism), so every run is alone in its process — tokio's `select!` fairness rng is seeded
//! per process, and only then is a run bit-for-bit what `cargo sim-run run FILE --seed N` replays.
//!
//! proptest's runner generates the cases from the fuzz seed and, on a failure, shrinks it. The
//! minimal case is written as `t90_<hash>.yaml` (the hash of its YAML) with a header saying the
//! seed, the failure and the command that reproduces it; the file is then replayed once more, as
//! written, to confirm it reproduces.
//!
//! No wall-clock time here: the caller (the binary) times runs through the progress callback.

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::process::Command as Process;

use proptest::test_runner::{Config, RngAlgorithm, TestCaseError, TestError, TestRng, TestRunner};

use super::gen::{case_strategy, Case, GenConfig};
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
}

impl CaseRun {
    pub fn passed(&self) -> bool {
        self.exit_code == 0
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
    let output = process.output();
    let error = |detail: String| CaseRun { result: "ERROR".into(), exit_code: 2, detail, virtual_ms: 0 };
    let output = match output {
        Ok(output) => output,
        Err(err) => return error(format!("could not start {}: {err}", exe.display())),
    };
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout.lines().find_map(|l| l.strip_prefix(RESULT_MARK));
    match line.map(serde_json::from_str::<serde_json::Value>) {
        Some(Ok(value)) => CaseRun {
            result: value["result"].as_str().unwrap_or("ERROR").to_string(),
            exit_code: value["exit_code"].as_i64().unwrap_or(2) as i32,
            detail: value["detail"].as_str().unwrap_or_default().to_string(),
            virtual_ms: value["virtual_ms"].as_u64().unwrap_or(0),
        },
        _ => {
            let stderr = String::from_utf8_lossy(&output.stderr);
            let tail: Vec<&str> = stderr.lines().rev().take(10).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            let code = output.status.code().filter(|c| *c == 1).unwrap_or(2);
            CaseRun {
                exit_code: code,
                ..error(format!("the run died ({}) without a result: {}", output.status, tail.join(" / ")))
            }
        }
    }
}

/// What to fuzz, and where.
#[derive(Debug, Clone)]
pub struct FuzzOptions {
    /// Passing cases to run (proptest's `cases`).
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
}

/// What the fuzzer is doing, for progress output.
#[derive(Debug)]
pub enum Progress<'a> {
    /// A new case ran (`index` from 1).
    Case { index: u32, case: &'a Case, run: &'a CaseRun },
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

#[derive(Debug, Clone)]
pub struct FuzzReport {
    /// Cases that passed before a failure (or all of them).
    pub passed: u32,
    pub found: Option<Found>,
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

#[derive(Default)]
struct State {
    runs: u32,
    first: Option<(u32, Case, CaseRun)>,
    last_failure: Option<(Case, CaseRun)>,
    shrink_runs: u32,
    passed: u32,
}

/// Generate and run cases until one fails (then shrink it, write it, replay it) or `cases` pass.
pub fn fuzz(options: &FuzzOptions, progress: &mut dyn FnMut(Progress<'_>)) -> Result<FuzzReport, FuzzError> {
    std::fs::create_dir_all(&options.work_dir).map_err(io(&options.work_dir))?;
    let config = Config {
        cases: options.cases,
        max_shrink_iters: options.max_shrink_iters,
        failure_persistence: None,
        ..Config::default()
    };
    let mut seed = [0u8; 32];
    seed[..8].copy_from_slice(&options.seed.to_le_bytes());
    let mut runner = TestRunner::new_with_rng(config, TestRng::from_seed(RngAlgorithm::ChaCha, &seed));
    let state = RefCell::new(State::default());
    let progress = RefCell::new(progress);
    let case_file = options.work_dir.join("case.yaml");
    let write_error: RefCell<Option<FuzzError>> = RefCell::new(None);
    let result = runner.run(&case_strategy(&options.gen), |case| {
        let scenario = case.scenario(&options.gen);
        let text = render(&scenario, &[case.summary()]);
        if let Err(err) = std::fs::write(&case_file, text) {
            *write_error.borrow_mut() = Some(io(&case_file)(err));
            return Err(TestCaseError::fail("cannot write the case file"));
        }
        let run = run_file(&options.exe, &case_file, case.seed, options.wall_limit);
        let mut state = state.borrow_mut();
        state.runs += 1;
        if state.first.is_none() {
            let index = state.passed + 1;
            (progress.borrow_mut())(Progress::Case { index, case: &case, run: &run });
            if run.passed() {
                state.passed += 1;
            } else {
                state.first = Some((index, case.clone(), run.clone()));
            }
        } else {
            state.shrink_runs += 1;
            let iteration = state.shrink_runs;
            (progress.borrow_mut())(Progress::Shrink { iteration, case: &case, run: &run });
        }
        if run.passed() {
            return Ok(());
        }
        let reason = format!("{} (exit {}): {}", run.result, run.exit_code, one_line(&run.detail, 300));
        state.last_failure = Some((case, run));
        Err(TestCaseError::fail(reason))
    });
    if let Some(err) = write_error.into_inner() {
        return Err(err);
    }
    let state = state.into_inner();
    let minimal = match result {
        Ok(()) => return Ok(FuzzReport { passed: state.passed, found: None }),
        Err(TestError::Abort(reason)) => return Err(FuzzError::Aborted(reason.to_string())),
        Err(TestError::Fail(_, minimal)) => minimal,
    };
    let (case_index, first_case, first_run) = state.first.clone().expect("a failure has a first failing case");
    let run = match &state.last_failure {
        Some((case, run)) if *case == minimal => run.clone(),
        _ => first_run.clone(),
    };
    let progress = progress.into_inner();
    let found =
        write_regression(options, minimal, run, (first_case, first_run), case_index, state.shrink_runs, progress)?;
    Ok(FuzzReport { passed: state.passed, found: Some(found) })
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

    #[test]
    fn file_names_are_stable() {
        assert_eq!(fnv1a(""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a("a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(one_line("a\n  b\tc", 10), "a b c");
        assert_eq!(one_line("abcdef", 3), "abc…");
    }
}
