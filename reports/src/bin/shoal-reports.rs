//! `shoal-reports TRACE.jsonl... --out DIR`: plots and a Markdown summary for one run or a sweep.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Parser;
use shoal_reports::{analyze, parse_trace, render};

/// Turn shoal run traces (from `shoal-sim run --trace-dir` or a daemon's events.jsonl) into a report.
#[derive(Parser)]
#[command(name = "shoal-reports", version)]
struct Args {
    /// JSONL trace files.
    #[arg(required = true)]
    traces: Vec<PathBuf>,
    /// Where to write index.md and the SVG plots.
    #[arg(long, default_value = "report")]
    out: PathBuf,
}

fn run_name(path: &Path) -> String {
    path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "run".into())
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    std::fs::create_dir_all(&args.out).with_context(|| format!("creating {}", args.out.display()))?;
    let mut runs = Vec::new();
    for path in &args.traces {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let events = parse_trace(&path.display().to_string(), &text)?;
        let analysis = analyze(&events);
        let name = run_name(path);
        let replicas = render::replicas_svg(&analysis, &format!("{name}: running tasks"))?;
        std::fs::write(args.out.join(format!("{name}-replicas.svg")), replicas)?;
        if !analysis.clients.is_empty() {
            let requests = render::requests_svg(&analysis, &format!("{name}: client requests"))?;
            std::fs::write(args.out.join(format!("{name}-requests.svg")), requests)?;
        }
        let leaders = render::leaders_svg(&analysis, &format!("{name}: raft leaders"))?;
        std::fs::write(args.out.join(format!("{name}-leaders.svg")), leaders)?;
        runs.push((name, analysis));
    }
    let index = args.out.join("index.md");
    std::fs::write(&index, render::summary_markdown(&runs))?;
    println!("{}", index.display());
    Ok(())
}
