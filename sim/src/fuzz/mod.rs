//! Property-based testing of whole clusters: proptest generates cluster shapes, operation
//! sequences and fault schedules ([`gen`]), each case is played as a scenario in its own
//! simulator process with the safety invariants checked all along and liveness at the end, and a
//! failure is shrunk and written out as a scenario file that reproduces it ([`driver`]).
//!
//! `shoal-sim fuzz [--cases N] [--seed S] [--max-shrink-iters M] [--out scenarios/regressions]`.

pub mod driver;
pub mod gen;

pub use driver::{fuzz, run_file, CaseRun, Found, FuzzError, FuzzOptions, FuzzReport, Progress, RESULT_MARK};
pub use gen::{case_strategy, Case, GenConfig, Op, OpKind, Sabotage};
