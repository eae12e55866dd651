//! The fuzzer: a fixed budget of generated cases passes; a deliberately broken property is found,
//! shrunk to its minimal case and written as a scenario file that reproduces the failure; and
//! every regression file under `scenarios/regressions/` passes with its seed.
//!
//! Every case runs in its own `shoal-sim child` process (one simulation per process, as a user
//! reproduces it).
#![cfg(madsim)]

use std::path::{Path, PathBuf};
use std::process::Command;

use shoal_sim::fuzz::{fuzz, run_file, FuzzOptions, GenConfig, OpKind, Sabotage};
use shoal_sim::scenario::parse::Action;
use shoal_sim::scenario::Scenario;

/// The CI budget: this many small cases from this seed must pass.
const CI_CASES: u32 = 24;
const CI_SEED: u64 = 1;
/// Wall-clock seconds a run may take before it counts as a hang.
const WALL_LIMIT: u64 = 60;

/// Regression files that fail because of a known core bug not fixed yet, with the text their
/// failure must contain (when fixed, the test says to remove the entry).
const KNOWN_CORE_BUGS: &[(&str, &str)] = &[];

fn exe() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_shoal-sim"))
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("shoal-fuzz-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn options(name: &str, cases: u32, seed: u64, gen: GenConfig) -> FuzzOptions {
    let dir = scratch(name);
    FuzzOptions {
        max_shrink_iters: 128,
        wall_limit: Some(WALL_LIMIT),
        ..FuzzOptions::new(cases, seed, gen, &exe(), &dir, &dir.join("regressions"))
    }
}

#[test]
fn a_fixed_budget_of_small_cases_passes() {
    let options = options("budget", CI_CASES, CI_SEED, GenConfig::small());
    let report = fuzz(&options, &mut |_| {}).expect("fuzz runs");
    if let Some(found) = &report.found {
        let text = std::fs::read_to_string(&found.file).unwrap_or_default();
        panic!(
            "case {} failed: {} {}\nminimal case ({}):\n{text}\nreproduce: {}",
            found.case_index,
            found.run.result,
            found.run.detail,
            found.file.display(),
            found.reproduce_command()
        );
    }
    assert_eq!(report.passed, CI_CASES);
}

#[test]
fn a_failing_property_shrinks_to_a_regression_file_that_reproduces_it() {
    let mut gen = GenConfig::small();
    gen.sabotage = Some(Sabotage::DrainIsFatal);
    gen.traffic = false;
    let options = options("sabotage", 64, 5, gen.clone());
    let mut shrinks = 0;
    let report = fuzz(&options, &mut |event| {
        if let shoal_sim::fuzz::Progress::Shrink { .. } = event {
            shrinks += 1;
        }
    })
    .expect("fuzz runs");
    let found = report.found.expect("a case with a drain fails");
    assert!(shrinks > 0 && found.shrink_runs == shrinks, "{shrinks} shrink runs, report says {}", found.shrink_runs);
    assert_eq!((found.run.result.as_str(), found.run.exit_code), ("LIVENESS", 4), "{}", found.run.detail);
    assert!(found.first.0.ops.len() >= found.case.ops.len());

    // Shrunk to the minimum: one manager, one worker (a drain needs another active node), one drain.
    assert_eq!((found.case.managers, found.case.workers), (1, 1), "{:?}", found.case);
    assert_eq!(found.case.ops.len(), 1, "{:?}", found.case);
    assert!(matches!(found.case.ops[0].kind, OpKind::Drain { .. }), "{:?}", found.case);

    // The file: named by its hash, a header with seed, failure and command, the one drain.
    let name = found.file.file_name().unwrap_or_default().to_string_lossy().to_string();
    assert!(name.starts_with("t90_") && name.ends_with(".yaml") && name.len() == "t90_12345678.yaml".len(), "{name}");
    let text = std::fs::read_to_string(&found.file).expect("regression file written");
    let seed = found.case.seed;
    assert!(text.contains(&format!("# Seed: {seed}\n")), "{text}");
    assert!(text.contains("# Failure: LIVENESS (exit 4): "), "{text}");
    assert!(text.contains("availability"), "{text}");
    let repro = format!("# Reproduce: cargo sim-run run {} --seed {seed}\n", found.file.display());
    assert!(text.contains(&repro), "{text}");
    assert!(text.contains("Replayed from this file: it fails as above."), "{text}");
    assert!(found.reproduced(), "{:?}", found.replay);
    let scenario = Scenario::load(&found.file).expect("the file parses");
    let drains = scenario
        .steps
        .iter()
        .filter(|s| matches!(&s.action, Action::Run { text, .. } if text.contains("--availability drain")))
        .count();
    assert_eq!(drains, 1, "{text}");

    // Running the file as the header says fails the same way, in a fresh process.
    let output = Command::new(exe())
        .arg("run")
        .arg(&found.file)
        .arg("--seed")
        .arg(seed.to_string())
        .output()
        .expect("run the regression file");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(4), "{stdout}");
    assert!(stdout.contains("expected `node manager-1 availability active` within 1 s"), "{stdout}");
}

#[test]
fn the_fuzz_command_writes_the_file_and_exits_with_the_failure_code() {
    let dir = scratch("cli");
    let out = dir.join("regressions");
    let output = Command::new(exe())
        .args(["fuzz", "--small", "--cases", "64", "--seed", "5", "--max-shrink-iters", "64", "--sabotage"])
        .arg("drain-is-fatal")
        .arg("--out")
        .arg(&out)
        .output()
        .expect("run shoal-sim fuzz");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(4), "{stdout}\n{stderr}");
    assert!(stderr.contains("case     1/64"), "progress per case: {stderr}");
    assert!(stderr.contains("shrink "), "progress while shrinking: {stderr}");
    let files: Vec<PathBuf> = std::fs::read_dir(&out).expect("out dir").map(|e| e.expect("entry").path()).collect();
    assert_eq!(files.len(), 1, "{files:?}");
    assert!(stdout.contains(&format!("written: {}", files[0].display())), "{stdout}");
    assert!(stdout.contains("(reproduces)"), "{stdout}");
    assert!(stdout.contains(&format!("reproduce: cargo sim-run run {} --seed ", files[0].display())), "{stdout}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Runs `shoal-sim ARGS`: its exit code, the per-case lines of its stderr without their wall-time
/// column (with the `rate:` line, the only thing `--jobs` and the machine may change), and its
/// stdout without the `rate:` line.
fn fuzz_cli(args: &[&str]) -> (Option<i32>, Vec<String>, Vec<String>) {
    let output = Command::new(exe()).args(args).output().expect("run shoal-sim");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let cases = stderr
        .lines()
        .filter(|l| l.starts_with("case "))
        .map(|l| {
            let words: Vec<&str> = l.split_whitespace().collect();
            let wall = words.iter().position(|w| *w == "virtual").expect("a virtual-time column") + 1;
            assert!(words[wall].ends_with('s'), "the wall time follows the virtual time: {l}");
            words.iter().enumerate().filter(|(i, _)| *i != wall).map(|(_, w)| *w).collect::<Vec<_>>().join(" ")
        })
        .collect();
    let rest = stdout.lines().filter(|l| !l.starts_with("rate: ")).map(str::to_string).collect();
    assert!(stdout.lines().any(|l| l.starts_with("rate: ") && l.contains(" cases/min with ")), "{stdout}");
    (output.status.code(), cases, rest)
}

/// `--jobs` changes how fast a run goes, not what it reports: the same cases, results, virtual
/// times, trace hashes and coverage, in the same order, for a passing run and for one that fails
/// (the same first failing case, shrunk to the same file, with the same rerun commands).
#[test]
fn two_jobs_report_what_one_job_reports() {
    let dir = scratch("jobs");
    let out = dir.join("regressions").display().to_string();
    let passing =
        |jobs: &str| fuzz_cli(&["fuzz", "--small", "--cases", "6", "--seed", "2", "--out", &out, "--jobs", jobs]);
    let (code, cases, stdout) = passing("1");
    assert_eq!(code, Some(0), "{stdout:?}");
    assert_eq!(cases.len(), 6, "{cases:?}");
    for (i, line) in cases.iter().enumerate() {
        assert!(line.starts_with(&format!("case {}/6 ok M=", i + 1)), "{line}");
        let hash = line.split_whitespace().find(|w| w.len() == 16 && w.chars().all(|c| c.is_ascii_hexdigit()));
        assert!(hash.is_some(), "a trace hash: {line}");
        assert!(line.contains(" commands: ") && line.contains("; faults: "), "what the case exercised: {line}");
    }
    assert!(stdout.iter().any(|l| l.starts_with("coverage of 6 cases (")), "{stdout:?}");
    assert!(stdout.contains(&"fuzz: 6 cases passed (cases 1..=6 of --seed 2 --small)".to_string()), "{stdout:?}");
    assert_eq!(passing("2"), (code, cases, stdout));

    let failing = |jobs: &str| {
        fuzz_cli(&[
            "fuzz",
            "--small",
            "--cases",
            "64",
            "--seed",
            "5",
            "--max-shrink-iters",
            "8",
            "--sabotage",
            "drain-is-fatal",
            "--out",
            &out,
            "--jobs",
            jobs,
        ])
    };
    let (code, cases, stdout) = failing("1");
    assert_eq!(code, Some(4), "{stdout:?}");
    let last = cases.last().expect("cases ran");
    assert!(last.contains(" LIVENESS ") && last.contains("node drain"), "{cases:?}");
    let index = cases.len();
    let rerun =
        format!("  rerun the case: cargo sim-run fuzz --seed 5 --small --sabotage drain-is-fatal --case {index}");
    assert!(stdout.contains(&rerun), "{stdout:?}");
    assert!(stdout.iter().any(|l| l.starts_with("  reproduce: cargo sim-run run ")), "{stdout:?}");
    assert_eq!(failing("3"), (code, cases, stdout), "three jobs");
    let _ = std::fs::remove_dir_all(&dir);
}

/// `--budget` runs cases until the wall time is spent (finishing the ones running), reports cases
/// per minute and names every case; `--case K` replays case K alone, to the same trace hash.
#[test]
fn a_wall_budget_runs_cases_until_spent_and_any_case_reruns_alone() {
    let dir = scratch("budget-cli");
    let out = dir.join("regressions").display().to_string();
    let (code, cases, stdout) =
        fuzz_cli(&["fuzz", "--small", "--budget", "1s", "--jobs", "2", "--seed", "4", "--out", &out]);
    assert_eq!(code, Some(0), "{stdout:?}");
    // Two cases start at once, before the budget is spent.
    assert!(cases.len() >= 2, "{cases:?}");
    let n = cases.len();
    assert!(cases.iter().enumerate().all(|(i, l)| l.starts_with(&format!("case {} ok ", i + 1))), "{cases:?}");
    assert!(stdout.contains(&format!("fuzz: {n} cases passed (cases 1..={n} of --seed 4 --small)")), "{stdout:?}");
    assert!(stdout.contains(&"rerun any case K alone: cargo sim-run fuzz --seed 4 --small --case K".to_string()));
    let (code, alone, _) = fuzz_cli(&["fuzz", "--small", "--seed", "4", "--case", &n.to_string(), "--out", &out]);
    assert_eq!(code, Some(0));
    assert_eq!(alone, vec![cases[n - 1].clone()]);

    let output = Command::new(exe()).args(["fuzz", "--budget", "5 minutes"]).output().expect("run shoal-sim");
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("expected a duration such as 90s, 5m, 8h or 1h30m"));
    let _ = std::fs::remove_dir_all(&dir);
}

/// `soak` does not stop at a failure: it counts failing cases, reports failures per 10,000 cases
/// with the command that reruns (and shrinks) each, and exits with the worst failure's code.
#[test]
fn a_soak_goes_past_failures_and_counts_them_per_10000_cases() {
    let dir = scratch("soak");
    let out = dir.join("regressions").display().to_string();
    let (code, cases, stdout) = fuzz_cli(&[
        "soak",
        "--small",
        "--cases",
        "8",
        "--budget",
        "10m",
        "--seed",
        "7",
        "--jobs",
        "2",
        "--sabotage",
        "drain-is-fatal",
        "--out",
        &out,
    ]);
    assert_eq!(cases.len(), 8, "{cases:?}");
    let failed: Vec<usize> =
        cases.iter().enumerate().filter(|(_, l)| l.contains(" LIVENESS ")).map(|(i, _)| i + 1).collect();
    assert!(!failed.is_empty() && failed.len() < 8, "{cases:?}");
    assert_eq!(code, Some(4), "{stdout:?}");
    let f = failed.len();
    let summary = format!(
        "soak: 8 cases (cases 1..=8 of --seed 7 --small --sabotage drain-is-fatal): {} passed, {f} failed",
        8 - f
    );
    assert!(stdout.contains(&summary), "{stdout:?}");
    let rate = format!("failures per 10,000 cases: {:.1} ({f} of 8)", f as f64 * 10_000.0 / 8.0);
    assert!(stdout.contains(&rate), "{stdout:?}");
    for k in failed {
        let rerun =
            format!("    rerun and shrink: cargo sim-run fuzz --seed 7 --small --sabotage drain-is-fatal --case {k}");
        assert!(stdout.contains(&rerun), "{stdout:?}");
    }
    // Nothing is shrunk or written during a soak.
    assert!(!Path::new(&out).exists());
    let _ = std::fs::remove_dir_all(&dir);
}

/// The seed a regression file's header names.
fn header_seed(path: &Path) -> u64 {
    let text = std::fs::read_to_string(path).expect("read");
    text.lines()
        .find_map(|l| l.strip_prefix("# Seed: "))
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or_else(|| panic!("{}: no `# Seed: N` header", path.display()))
}

#[test]
fn every_regression_file_passes() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios/regressions");
    let mut files: Vec<PathBuf> = match std::fs::read_dir(&dir) {
        Ok(entries) => {
            entries.map(|e| e.expect("entry").path()).filter(|p| p.extension().is_some_and(|e| e == "yaml")).collect()
        }
        Err(_) => Vec::new(),
    };
    files.sort();
    let mut problems = Vec::new();
    for file in &files {
        Scenario::load(file).unwrap_or_else(|err| panic!("{err}"));
        let seed = header_seed(file);
        let run = run_file(&exe(), file, seed, Some(WALL_LIMIT));
        let stem = file.file_stem().unwrap_or_default().to_string_lossy().to_string();
        let repro = format!("cargo sim-run run scenarios/regressions/{stem}.yaml --seed {seed}");
        match KNOWN_CORE_BUGS.iter().find(|(name, _)| *name == stem) {
            Some(_) if run.passed() => problems.push(format!("{stem} passes now: remove it from KNOWN_CORE_BUGS")),
            Some((_, symptom)) if !run.detail.contains(symptom) => {
                problems.push(format!("{stem}: known core bug, but it failed differently: {} ({repro})", run.detail))
            }
            Some(_) => {}
            None if !run.passed() => problems.push(format!("{stem}: {} {} ({repro})", run.result, run.detail)),
            None => {}
        }
    }
    assert!(problems.is_empty(), "{} problem(s):\n{}", problems.len(), problems.join("\n"));
}
