//! One scenario in both worlds: the simulator's run (the `shoal-sim` binary of the `cargo sim`
//! build, with a seed) and a real run, each trace reduced by `shoal-reports` to the time the cluster
//! took to be whole again after each fault, printed side by side.

use std::path::Path;
use std::process::{Command, Stdio};

use shoal_reports::analysis::{analyze, parse_trace, Recovery};

/// The faults of a trace and the seconds to converge after each.
pub fn recoveries(name: &str, jsonl: &str) -> Result<Vec<Recovery>, String> {
    let events = parse_trace(name, jsonl).map_err(|e| e.to_string())?;
    Ok(analyze(&events).recoveries)
}

/// Run the simulator on `file` with `seed`; its exit code and trace.
pub fn simulate(sim_bin: &Path, file: &str, seed: u64, dir: &Path) -> Result<(i32, String), String> {
    if !sim_bin.exists() {
        return Err(format!(
            "no simulator binary at {}: build it with `cargo sim-run --help` (or pass --sim-bin)",
            sim_bin.display()
        ));
    }
    let status = Command::new(sim_bin)
        .args(["run", file, "--seed", &seed.to_string(), "--trace-dir"])
        .arg(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .status()
        .map_err(|e| format!("cannot run {}: {e}", sim_bin.display()))?;
    let trace = std::fs::read_dir(dir)
        .map_err(|e| format!("cannot read {}: {e}", dir.display()))?
        .filter_map(|e| e.ok())
        .find(|e| e.path().extension().is_some_and(|x| x == "jsonl"))
        .ok_or("the simulator wrote no trace")?;
    let text = std::fs::read_to_string(trace.path()).map_err(|e| format!("cannot read the simulator's trace: {e}"))?;
    Ok((status.code().unwrap_or(2), text))
}

fn seconds(r: Option<&Recovery>) -> String {
    match r {
        None => "-".into(),
        Some(r) => match r.converged_after_s {
            Some(s) => format!("{s:.1}s"),
            None => "never".into(),
        },
    }
}

/// The side-by-side table: one line per fault, in the order they happened.
pub fn table(sim: &[Recovery], real: &[Recovery]) -> String {
    let mut out = format!("{:<4} {:<28} {:>10} {:>10} {:>10}\n", "#", "FAULT", "AT (SIM)", "SIM", "REAL");
    for i in 0..sim.len().max(real.len()) {
        let (s, r) = (sim.get(i), real.get(i));
        let fault = s.or(r).map(|x| x.fault.clone()).unwrap_or_default();
        let fault = match (s, r) {
            (Some(s), Some(r)) if s.fault != r.fault => format!("{} / {}", s.fault, r.fault),
            _ => fault,
        };
        let at = s.map(|s| format!("{:.1}s", s.at_s)).unwrap_or_else(|| "-".into());
        out.push_str(&format!("{:<4} {:<28} {:>10} {:>10} {:>10}\n", i + 1, fault, at, seconds(s), seconds(r)));
    }
    out
}

/// How long each `expect:` step took to hold, from the supervisor's notes: `(place, expectation,
/// seconds)` — the time from the step before it to the expectation holding.
pub fn expect_times(name: &str, jsonl: &str) -> Result<Vec<(String, String, Option<f64>)>, String> {
    let events = parse_trace(name, jsonl).map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    let mut previous = None;
    for event in events.iter().filter(|e| e.node == "supervisor") {
        let text = |key: &str| event.fields.get(key).and_then(|v| v.as_str()).unwrap_or_default().to_string();
        if event.kind == "step.expect" {
            let held = event.fields.get("ok").and_then(|v| v.as_bool()).unwrap_or(false);
            let took = previous.map(|p: u64| event.time_ms.saturating_sub(p) as f64 / 1000.0);
            out.push((text("at"), text("expect"), if held { took } else { None }));
        }
        if event.kind.starts_with("step.") || event.kind.starts_with("phase.") || event.kind == "scenario.start" {
            previous = Some(event.time_ms);
        }
    }
    Ok(out)
}

/// The side-by-side table of `expect:` steps.
pub fn expect_table(sim: &[(String, String, Option<f64>)], real: &[(String, String, Option<f64>)]) -> String {
    let width = sim.iter().chain(real).map(|(_, e, _)| e.len()).max().unwrap_or(10).clamp(10, 60);
    let mut out = format!("{:<6} {:<width$} {:>8} {:>8}\n", "LINE", "EXPECT", "SIM", "REAL");
    let shown = |x: Option<&(String, String, Option<f64>)>| match x {
        None => "-".to_string(),
        Some((_, _, Some(s))) => format!("{s:.1}s"),
        Some((_, _, None)) => "missed".to_string(),
    };
    for i in 0..sim.len().max(real.len()) {
        let (s, r) = (sim.get(i), real.get(i));
        let (at, expect) = s.or(r).map(|(a, e, _)| (a.clone(), e.clone())).unwrap_or_default();
        let line = match at.rsplit_once(':') {
            Some((_, l)) if l.chars().all(|c| c.is_ascii_digit()) => l.to_string(),
            _ => "final".to_string(),
        };
        let expect: String = expect.chars().take(width).collect();
        out.push_str(&format!("{:<6} {:<width$} {:>8} {:>8}\n", line, expect, shown(s), shown(r)));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const TRACE: &str = r#"{"time_ms":1000,"node":"supervisor","kind":"scenario.start","fields":{}}
{"time_ms":1000,"node":"m","kind":"task.created","fields":{"task":"t1","service":"web"}}
{"time_ms":1200,"node":"m","kind":"task.state","fields":{"task_id":"t1","state":"running"}}
{"time_ms":1300,"node":"supervisor","kind":"step.expect","fields":{"at":"x.yaml:5","expect":"service web running 1","ok":true}}
{"time_ms":2000,"node":"supervisor","kind":"fault.crash","fields":{"host":"worker-1"}}
{"time_ms":2000,"node":"m","kind":"task.state","fields":{"task_id":"t1","state":"failed"}}
{"time_ms":2000,"node":"m","kind":"task.created","fields":{"task":"t2","service":"web"}}
{"time_ms":5500,"node":"m","kind":"task.state","fields":{"task_id":"t2","state":"running"}}
{"time_ms":9000,"node":"supervisor","kind":"step.expect","fields":{"at":"x.yaml (eventually)","expect":"service web running 2","seen":"1 running"}}
"#;

    #[test]
    fn recoveries_and_expect_times_from_a_trace() {
        let recoveries = recoveries("t", TRACE).unwrap();
        assert_eq!(recoveries.len(), 1);
        assert_eq!(recoveries[0].fault, "crash worker-1");
        assert_eq!(recoveries[0].converged_after_s, Some(3.5));
        let expects = expect_times("t", TRACE).unwrap();
        assert_eq!(expects[0], ("x.yaml:5".to_string(), "service web running 1".to_string(), Some(0.3)));
        assert_eq!(expects[1].2, None, "a missed expectation has no time");
        let table = expect_table(&expects, &expects[..1]);
        assert!(table.contains("5      service web running 1"), "{table}");
        assert!(table.lines().any(|l| l.starts_with("final") && l.contains("missed") && l.ends_with('-')), "{table}");
        let faults = super::table(&recoveries, &[]);
        assert!(faults.contains("crash worker-1") && faults.contains("3.5s"), "{faults}");
    }
}
