//! The linearizability check has teeth: with a bug planted on purpose (`planted_bug:
//! stale-leader-reads`, a manager that believes it leads answers reads from its own store without
//! confirming with a quorum that it still does), a scenario whose leader is cut off fails it, and
//! the fuzzer finds the bug within the budget CI gives it (`sim/tests/fuzz.rs`), shrinks it and
//! writes a regression file that reproduces it. Without the bug, the same scenario passes.
//!
//! Every run happens in its own `shoal-sim child` process, as a user reproduces it.
#![cfg(madsim)]

use std::path::PathBuf;
use std::process::Command;

use shoal_sim::fuzz::{fuzz, FuzzOptions, GenConfig, Sabotage};
use shoal_sim::scenario::parse::PlantedBug;
use shoal_sim::scenario::Scenario;

/// The CI budget of `sim/tests/fuzz.rs`: this many small cases from this seed.
const CI_CASES: u32 = 24;
const CI_SEED: u64 = 1;

fn exe() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_shoal-sim"))
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("shoal-lin-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

fn scenario_file(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scenarios").join(name)
}

/// `shoal-sim run FILE --seed N`: (exit code, stdout).
fn run(file: &std::path::Path, seed: u64) -> (Option<i32>, String) {
    let output = Command::new(exe()).arg("run").arg(file).args(["--seed", &seed.to_string()]).output().expect("run");
    (output.status.code(), String::from_utf8_lossy(&output.stdout).into_owned())
}

#[test]
fn a_deposed_leader_serving_stale_reads_fails_the_check_and_a_sound_one_passes() {
    let sound = scenario_file("t56_linearizable_leader_isolated.yaml");
    let text = std::fs::read_to_string(&sound).expect("t56");
    let dir = scratch("scenario");
    let planted = dir.join("planted.yaml");
    std::fs::write(
        &planted,
        text.replacen("\ncontrol_workload: true\n", "\ncontrol_workload: true\nplanted_bug: stale-leader-reads\n", 1),
    )
    .expect("write");
    assert_eq!(Scenario::load(&planted).expect("parses").planted_bug, Some(PlantedBug::StaleLeaderReads));
    for seed in 1..=3 {
        let (code, stdout) = run(&sound, seed);
        assert_eq!(code, Some(0), "seed {seed}: {stdout}");
        let (code, stdout) = run(&planted, seed);
        assert_eq!(code, Some(3), "seed {seed}: {stdout}");
        assert!(stdout.contains("SAFETY") && stdout.contains(": linearizable: "), "seed {seed}: {stdout}");
        // The evidence names the manager that answered stale, the deposed leader (manager-1 led).
        assert!(
            stdout.contains("then nothing fits, first:\n  - workload -> manager-1:2377: "),
            "seed {seed}: {stdout}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_fuzzer_finds_the_planted_stale_read_within_the_ci_budget() {
    let dir = scratch("fuzz");
    let mut gen = GenConfig::small();
    gen.sabotage = Some(Sabotage::StaleLeaderReads);
    // As `shoal-sim fuzz --sabotage`: no service traffic, so only the planted bug can fail a case.
    gen.traffic = false;
    let options = FuzzOptions {
        max_shrink_iters: 48,
        ..FuzzOptions::new(CI_CASES, CI_SEED, gen, &exe(), &dir, &dir.join("regressions"))
    };
    let report = fuzz(&options, &mut |_| {}).expect("fuzz runs");
    let found = report.found.unwrap_or_else(|| panic!("{} cases passed: the planted bug was not found", report.passed));
    assert!(found.case_index <= CI_CASES);
    assert_eq!((found.run.result.as_str(), found.run.exit_code), ("SAFETY", 3), "{}", found.run.detail);
    assert!(found.run.detail.starts_with("linearizable: "), "{}", found.run.detail);
    assert!(found.reproduced(), "{:?}", found.replay);
    let text = std::fs::read_to_string(&found.file).expect("regression file");
    assert!(text.contains("\ncontrol_workload: true\nplanted_bug: stale-leader-reads\n"), "{text}");
    // The minimal case still cuts a leader off (no stale read without a deposed leader).
    assert!(text.contains("partition "), "{text}");
    let _ = std::fs::remove_dir_all(&dir);
}
