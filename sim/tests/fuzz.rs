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
        cases,
        seed,
        max_shrink_iters: 128,
        out: dir.join("regressions"),
        gen,
        exe: exe(),
        work_dir: dir,
        wall_limit: Some(WALL_LIMIT),
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
