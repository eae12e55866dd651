//! Property-based testing of whole clusters: proptest generates cluster shapes, operation
//! sequences and fault schedules ([`gen`]), each case is played as a scenario in its own
//! simulator process ([`pool`], several at once with `--jobs`) with the safety invariants checked
//! all along and liveness at the end, and a failure is shrunk and written out as a scenario file
//! that reproduces it ([`driver`]). Every case states what it exercised and a run sums it up
//! ([`coverage`]).
//!
//! `shoal-sim fuzz [--cases N | --budget 5m] [--seed S] [--jobs J] [--case K] [--keep-going]
//! [--max-shrink-iters M] [--out scenarios/regressions]`; `shoal-sim soak` is the nightly-sized
//! keep-going run.

pub mod coverage;
pub mod driver;
pub mod gen;
pub mod pool;

pub use coverage::Coverage;
pub use driver::{
    fuzz, fuzz_while, run_file, CaseRun, Failed, Found, FuzzError, FuzzOptions, FuzzReport, Progress, RESULT_MARK,
};
pub use gen::{case_strategy, Area, Case, Exercised, GenConfig, Op, OpKind, Sabotage};
