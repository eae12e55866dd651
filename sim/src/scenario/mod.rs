//! Scenarios: YAML files that read like a terminal session (`run:` CLI words, `fault:`s, waits and
//! `expect:`ations), the parser that turns them into steps, and — under the simulator — the runner
//! that plays them against a [`crate::cluster::SimCluster`] while the safety invariants are polled on
//! virtual time, then heals the cluster and checks liveness.
//!
//! - [`parse`] — the file format and its errors (`file:line: message`);
//! - [`cli`] — `run:` words → control requests;
//! - [`fault`] — `fault:` words;
//! - [`expect`] — `expect:` statements and how they are checked on the leader's store;
//! - [`render`] — a scenario back to YAML (for generated scenarios, e.g. shrunk fuzz failures);
//! - [`seeds`] — `--seeds A..B`, both ends included;
//! - [`stack`] — `stack deploy` steps' compose files (read relative to the scenario file);
//! - [`summary`] — the table both runners print after their runs, and their exit code;
//! - [`drive`] — what both runners (this one and the real-cluster harness) do with a `run:` step;
//! - `run` (madsim only) — playing a scenario with one seed, and the outcome with its exit code.

pub mod cli;
pub mod converge;
pub mod drive;
pub mod expect;
pub mod fault;
pub mod parse;
pub mod render;
#[cfg(madsim)]
pub mod run;
pub mod seeds;
pub mod stack;
pub mod summary;

pub use parse::{Scenario, ScenarioError};

/// How a run ended, from best to worst; each has its own process exit code.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "result", content = "detail", rename_all = "snake_case")]
pub enum Outcome {
    Pass,
    /// The simulation panicked or the cluster could not be built.
    Crash(String),
    /// A safety invariant was broken.
    Safety(String),
    /// An expectation did not hold in time, a step failed, or the cluster did not converge.
    Liveness(String),
}

impl Outcome {
    /// 0 ok, 2 crash, 3 safety, 4 liveness (1 is usage/parse errors, decided before any run).
    pub fn exit_code(&self) -> i32 {
        match self {
            Outcome::Pass => 0,
            Outcome::Crash(_) => 2,
            Outcome::Safety(_) => 3,
            Outcome::Liveness(_) => 4,
        }
    }

    pub fn label(&self) -> &'static str {
        match self {
            Outcome::Pass => "ok",
            Outcome::Crash(_) => "CRASH",
            Outcome::Safety(_) => "SAFETY",
            Outcome::Liveness(_) => "LIVENESS",
        }
    }

    pub fn is_pass(&self) -> bool {
        *self == Outcome::Pass
    }
}
