//! shoal-reports: reads run traces — JSONL events `{time_ms, node, kind, fields}` written by the
//! simulator's runner (`shoal-sim run --trace-dir`) and by the daemon (`<data-dir>/events.jsonl`) —
//! and turns them into what a person looks at after a run: running replicas per service over time
//! with fault bands, the raft leader and term over time, time to converge after each fault, the
//! simulated clients' requests (succeeded and failed per second, latencies) beside the replicas, and
//! for a sweep the distribution of convergence times across seeds.
//!
//! It reads traces only (it does not depend on the simulator), so real and simulated runs are
//! reported the same way.

pub mod analysis;
pub mod render;

pub use analysis::{analyze, parse_trace, Analysis, Event, Recovery, Request, TraceError};
