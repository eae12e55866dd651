//! Every scenario in `scenarios/` passes with a fixed seed, and plays the same way twice (equal
//! trace hashes); the runner's exit codes and the parser's `file:line` errors.
//!
//! Runs go through the `shoal-sim` binary, one process per run, as a user reproduces them: tokio's
//! `select!` fairness rng is seeded per process, so only one simulation per process is
//! bit-for-bit reproducible.
#![cfg(madsim)]

use std::path::{Path, PathBuf};
use std::process::Command;

use shoal_sim::scenario::Scenario;

const SEED: u64 = 1;

/// Scenarios that fail because of a known bug in the core, with the text their failure must
/// contain. The scenario is kept as it is; when the bug is fixed the test says to remove the entry.
const KNOWN_CORE_BUGS: &[(&str, &str)] = &[];

fn scenario_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join("scenarios")
}

fn scenario_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(scenario_dir())
        .expect("scenarios/ exists")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
}

/// What one run reported: (result label, detail, trace hash, exit code).
type Ran = (String, String, String, i32);

/// One run in its own process.
fn run_child(file: &Path, seed: u64) -> Ran {
    let output = Command::new(env!("CARGO_BIN_EXE_shoal-sim"))
        .arg("child")
        .arg(file)
        .arg("--seed")
        .arg(seed.to_string())
        .output()
        .expect("run shoal-sim");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout.lines().find_map(|l| l.strip_prefix("SHOAL-SIM-RESULT ")).unwrap_or_else(|| {
        panic!("{}: no result line; stderr:\n{}", file.display(), String::from_utf8_lossy(&output.stderr))
    });
    let value: serde_json::Value = serde_json::from_str(line).expect("result line is JSON");
    let text = |key: &str| value[key].as_str().unwrap_or_default().to_string();
    (text("result"), text("detail"), text("trace_hash"), output.status.code().unwrap_or(-1))
}

#[test]
fn every_scenario_parses() {
    let files = scenario_files();
    assert!(files.len() >= 15, "at least 15 scenarios, found {}", files.len());
    for file in files {
        Scenario::load(&file).unwrap_or_else(|err| panic!("{err}"));
    }
}

#[test]
fn every_scenario_passes_and_is_deterministic() {
    let files = scenario_files();
    let results: Vec<(PathBuf, Ran, Ran)> = std::thread::scope(|scope| {
        let handles: Vec<_> = files
            .iter()
            .map(|file| {
                scope.spawn(move || {
                    let first = run_child(file, SEED);
                    let second = run_child(file, SEED);
                    (file.clone(), first, second)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("run thread")).collect()
    });
    let mut problems = Vec::new();
    for (file, first, second) in &results {
        let stem = file.file_stem().unwrap_or_default().to_string_lossy().to_string();
        let repro = format!("cargo sim-run run scenarios/{stem}.yaml --seed {SEED}");
        if first.2 != second.2 || first.0 != second.0 {
            problems.push(format!("{stem}: not deterministic: {} {} vs {} {}", first.0, first.2, second.0, second.2));
        }
        match KNOWN_CORE_BUGS.iter().find(|(name, _)| *name == stem) {
            Some((_, symptom)) => {
                if first.0 == "ok" {
                    problems.push(format!("{stem} passes now: remove it from KNOWN_CORE_BUGS"));
                } else if !first.1.contains(symptom) {
                    problems.push(format!("{stem}: known core bug, but it failed differently: {} ({repro})", first.1));
                }
            }
            None if first.0 != "ok" => problems.push(format!("{stem}: {} {} ({repro})", first.0, first.1)),
            None => assert_eq!(first.3, 0, "{stem}: passed but exited {}", first.3),
        }
    }
    assert!(problems.is_empty(), "{} problem(s):\n{}", problems.len(), problems.join("\n"));
}

fn temp_scenario(name: &str, text: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("shoal-sim-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write scenario");
    path
}

#[test]
fn an_unmet_expectation_exits_4_with_a_reproduce_command() {
    let path = temp_scenario(
        "unmet.yaml",
        "name: unmet\ncluster: { managers: 1, workers: 1 }\nsteps:\n  - run: service create --name web --replicas 2 nginx:1\n  - expect: service web running 3 within 5s\n",
    );
    let output = Command::new(env!("CARGO_BIN_EXE_shoal-sim"))
        .arg("run")
        .arg(&path)
        .arg("--seed")
        .arg("3")
        .output()
        .expect("run");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(4), "{stdout}");
    assert!(stdout.contains("unmet.yaml:5: expected `service web running 3` within 5 s"), "{stdout}");
    assert!(stdout.contains(&format!("reproduce: cargo sim-run run {} --seed 3", path.display())), "{stdout}");
}

#[test]
fn a_failing_step_and_an_unexpected_success_are_reported() {
    let path = temp_scenario(
        "step.yaml",
        "name: step\ncluster: { managers: 1 }\nsteps:\n  - run: service rm ghost\n    expect_error: \"no such\"\n",
    );
    let (result, detail, _, code) = run_child(&path, 1);
    assert_eq!((result.as_str(), code), ("LIVENESS", 4));
    assert!(
        detail.contains(
            "step.yaml:4: `service rm ghost` should fail with \"no such\", but failed with: service ghost not found"
        ),
        "{detail}"
    );
}

#[test]
fn a_bad_fault_word_is_a_parse_error_with_file_and_line() {
    let text = "name: bad\ncluster: { managers: 1 }\nsteps:\n  - run: info\n  - after: 2s\n    fault: crsh leader\n";
    let err = Scenario::parse(text, "scenarios/x.yaml").unwrap_err().to_string();
    assert_eq!(
        err,
        "scenarios/x.yaml:6: unknown fault \"crsh\": expected crash, restart, leave, partition, heal, link, container, image, disk, second daemon"
    );
    let path = temp_scenario("bad.yaml", text);
    let output = Command::new(env!("CARGO_BIN_EXE_shoal-sim")).arg("run").arg(&path).output().expect("run");
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("bad.yaml:6: unknown fault \"crsh\""), "{stderr}");
}

#[test]
fn other_parse_errors_point_at_their_line() {
    let cases = [
        (
            "name: x\ncluster: { managers: 1 }\nsteps:\n  - run: service frob web\n",
            4,
            "unknown service command \"frob\"",
        ),
        ("name: x\ncluster: { managers: 1 }\nsteps:\n  - expect: service web running 3\n", 4, "needs a bound"),
        ("name: x\ncluster: { managers: 1 }\nsteps:\n  - wait: 5 parsecs\n", 4, "invalid duration"),
        ("name: x\ncluster: { managers: 1 }\nsteps:\n  - run: info\n    fault: heal\n", 4, "a step does one thing"),
        ("name: x\ncluster: { managers: 1 }\nsteps:\n  - walk: 5s\n", 4, "unknown field `walk`"),
        ("name: x\ncluster: { managers: 1 }\nexpect:\n  - always: nothing-bad\n", 4, "unknown invariant"),
        ("name: x\ncluster: { managers: 0 }\n", 2, "at least one manager"),
    ];
    for (text, line, message) in cases {
        let err = Scenario::parse(text, "f.yaml").unwrap_err().to_string();
        assert!(
            err.starts_with(&format!("f.yaml:{line}: ")) && err.contains(message),
            "{err:?} (want line {line}, {message:?})"
        );
    }
}

#[test]
fn check_determinism_agrees_on_a_scenario() {
    let file = scenario_dir().join("t21_replicas_heal_container_removed.yaml");
    let output = Command::new(env!("CARGO_BIN_EXE_shoal-sim"))
        .arg("check-determinism")
        .arg(&file)
        .arg("--seed")
        .arg("2")
        .output()
        .expect("run");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(0), "{stdout}");
    assert!(stdout.contains("deterministic"), "{stdout}");
}

/// The client-requests invariant has teeth: the rolling update of processes that die on SIGTERM
/// drops no request with draining (t69 passes above) and fails the invariant without it.
#[test]
fn without_draining_a_rolling_update_drops_requests() {
    let text = std::fs::read_to_string(scenario_dir().join("t69_mesh_drain_saves_requests.yaml")).expect("t69");
    let path = temp_scenario("no-drain.yaml", &text.replacen("\ncluster:", "\nmesh_drain: false\ncluster:", 1));
    let (result, detail, _, code) = run_child(&path, SEED);
    assert_eq!((result.as_str(), code), ("SAFETY", 3), "{detail}");
    assert!(
        detail.contains("client-requests: load1 request") && detail.contains("with no fault to explain it"),
        "{detail}"
    );
}

/// `--seeds A..B` includes B (so does `A..=B`), and the summary line says which seeds ran.
#[test]
fn a_seed_range_includes_both_ends_and_the_summary_says_so() {
    let path = temp_scenario(
        "seeds.yaml",
        "name: seeds\ncluster: { managers: 1 }\nsteps:\n  - run: service create --name web --replicas 1 nginx:1\n",
    );
    for range in ["2..4", "2..=4"] {
        let output = Command::new(env!("CARGO_BIN_EXE_shoal-sim"))
            .arg("run")
            .arg(&path)
            .args(["--seeds", range, "--jobs", "1"])
            .output()
            .expect("run");
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert_eq!(output.status.code(), Some(0), "{stdout}");
        let seeds: Vec<&str> =
            stdout.lines().filter(|l| l.starts_with("seeds ")).filter_map(|l| l.split_whitespace().nth(1)).collect();
        assert_eq!(seeds, ["2", "3", "4"], "{range}: {stdout}");
        assert!(
            stdout.contains("\n3 runs: 1 scenario × seeds 2..=4 (3 seeds, both ends included)\n3 passed, 0 failed\n"),
            "{range}: {stdout}"
        );
    }
}
