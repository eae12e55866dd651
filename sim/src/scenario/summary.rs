//! The summary both scenario runners print after their runs (`shoal-sim run`, `shoal-real run`): a
//! table with a line per run, the pass/fail count, a block per failure with the command that
//! reruns it, and the process's exit code — the worst outcome's.

/// How bad an exit code is: safety (3) over crash (2) over liveness (4) over usage (1) over ok (0).
pub fn severity(code: i32) -> u8 {
    match code {
        3 => 4,
        2 => 3,
        4 => 2,
        0 => 0,
        _ => 1,
    }
}

/// The exit code of a batch of runs: the worst of theirs (0 for none).
pub fn worst(codes: impl IntoIterator<Item = i32>) -> i32 {
    codes.into_iter().max_by_key(|c| severity(*c)).unwrap_or(0)
}

/// One run as the summary shows it.
#[derive(Debug, Clone)]
pub struct Line {
    pub scenario: String,
    pub file: String,
    /// The run's key (the seed, or the run number), shown in its column and the failure block.
    pub key: String,
    /// `ok`, `CRASH`, `SAFETY`, `LIVENESS`.
    pub result: String,
    pub passed: bool,
    /// The runner's own columns, already formatted.
    pub cells: Vec<String>,
    pub detail: String,
    pub trace: Option<String>,
    /// The command that reruns it.
    pub rerun: String,
}

/// A runner's words for its summary.
#[derive(Debug, Clone, Copy)]
pub struct Columns<'a> {
    /// The key column's header (`SEED`, `RUN`).
    pub key_header: &'a str,
    /// The runner's own columns.
    pub headers: &'a [&'a str],
    /// The key in a failure block (`seed`, `run`).
    pub key_word: &'a str,
    /// What the command line of a failure block says (`reproduce`, `rerun`).
    pub rerun_word: &'a str,
}

/// The summary of `lines`; `ran` says what ran (`1 scenario × seeds 1..=20 (20 seeds, …)`), printed
/// as `N runs: …` on a line of its own before the plain `N passed, N failed` line.
pub fn render(columns: Columns<'_>, lines: &[Line], ran: Option<&str>) -> String {
    let Columns { key_header, headers, .. } = columns;
    let width = lines.iter().map(|l| l.scenario.chars().count()).max().unwrap_or(8).clamp(8, 60);
    let mut out = format!("{:<width$}  {key_header:>6}  {:<8}", "SCENARIO", "RESULT");
    for header in headers {
        out.push_str(&format!("  {header:>10}"));
    }
    out.push('\n');
    for line in lines {
        let name: String = line.scenario.chars().take(width).collect();
        out.push_str(&format!("{name:<width$}  {:>6}  {:<8}", line.key, line.result));
        for cell in &line.cells {
            out.push_str(&format!("  {cell:>10}"));
        }
        out.push('\n');
    }
    out.push_str(&counts_and_failures(columns, lines, ran));
    out
}

/// The summary of a large sweep: one table line per scenario (its runs, how many passed and
/// failed, the worst result), then the same counts and failure blocks as [`render`].
pub fn render_by_scenario(columns: Columns<'_>, lines: &[Line], ran: Option<&str>) -> String {
    let mut groups: Vec<(&str, &str, usize, usize, &str)> = Vec::new();
    for line in lines {
        let at = match groups.iter().position(|g| g.1 == line.file) {
            Some(at) => at,
            None => {
                groups.push((&line.scenario, &line.file, 0, 0, "ok"));
                groups.len() - 1
            }
        };
        let group = &mut groups[at];
        group.2 += 1;
        if !line.passed {
            group.3 += 1;
            if group.4 == "ok" {
                group.4 = &line.result;
            }
        }
    }
    let width = groups.iter().map(|g| g.0.chars().count()).max().unwrap_or(8).clamp(8, 60);
    let mut out = format!("{:<width$}  {:>6}  {:>6}  {:>6}  RESULT\n", "SCENARIO", "RUNS", "PASSED", "FAILED");
    for (scenario, _, runs, failed, result) in &groups {
        let name: String = scenario.chars().take(width).collect();
        out.push_str(&format!("{name:<width$}  {runs:>6}  {:>6}  {failed:>6}  {result}\n", runs - failed));
    }
    out.push_str(&counts_and_failures(columns, lines, ran));
    out
}

/// `N runs: …`, `N passed, N failed` and a block per failure with the command that reruns it.
fn counts_and_failures(columns: Columns<'_>, lines: &[Line], ran: Option<&str>) -> String {
    let Columns { key_word, rerun_word, .. } = columns;
    let failed: Vec<&Line> = lines.iter().filter(|l| !l.passed).collect();
    let mut out = String::from("\n");
    if let Some(ran) = ran {
        out.push_str(&format!("{} runs: {ran}\n", lines.len()));
    }
    out.push_str(&format!("{} passed, {} failed\n", lines.len() - failed.len(), failed.len()));
    for line in failed {
        out.push_str(&format!("\n{} {} ({key_word} {}): {}\n", line.result, line.file, line.key, line.detail));
        if let Some(trace) = &line.trace {
            out.push_str(&format!("  trace: {trace}\n"));
        }
        out.push_str(&format!("  {rerun_word}: {}\n", line.rerun));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_worst_outcome_decides_the_exit_code() {
        assert_eq!(worst([0, 4, 2, 0]), 2);
        assert_eq!(worst([4, 3, 2]), 3);
        assert_eq!(worst([0, 1]), 1);
        assert_eq!(worst([]), 0);
    }

    #[test]
    fn failures_say_how_to_rerun_them() {
        let line = |passed: bool| Line {
            scenario: "t43 worker crash".into(),
            file: "t43.yaml".into(),
            key: "3".into(),
            result: if passed { "ok" } else { "LIVENESS" }.into(),
            passed,
            cells: vec!["1.0s".into()],
            detail: "expected x".into(),
            trace: None,
            rerun: "cargo sim-run run t43.yaml --seed 3".into(),
        };
        let columns = Columns { key_header: "SEED", headers: &["VIRTUAL"], key_word: "seed", rerun_word: "reproduce" };
        let text =
            render(columns, &[line(true), line(false)], Some("1 scenario × seeds 1..=2 (2 seeds, both ends included)"));
        assert!(
            text.contains("\n2 runs: 1 scenario × seeds 1..=2 (2 seeds, both ends included)\n1 passed, 1 failed\n"),
            "{text}"
        );
        assert!(text.contains("LIVENESS t43.yaml (seed 3): expected x\n  reproduce: cargo sim-run"), "{text}");

        let text = render_by_scenario(
            columns,
            &[line(true), line(false), line(true)],
            Some("1 scenario × seeds 1..=3 (3 seeds, both ends included)"),
        );
        assert!(
            text.starts_with(
                "SCENARIO            RUNS  PASSED  FAILED  RESULT\nt43 worker crash       3       2       1  LIVENESS\n"
            ),
            "{text}"
        );
        assert!(
            text.contains("\n3 runs: 1 scenario × seeds 1..=3 (3 seeds, both ends included)\n2 passed, 1 failed\n"),
            "{text}"
        );
        assert!(text.contains("LIVENESS t43.yaml (seed 3): expected x\n  reproduce: cargo sim-run"), "{text}");
    }
}
