//! Plots (SVG, by plotters) and the Markdown summary that links them.

use plotters::coord::types::{RangedCoordf64, RangedCoordu64};
use plotters::coord::Shift;
use plotters::prelude::*;

use crate::analysis::Analysis;

/// Why a plot could not be drawn.
#[derive(Debug, thiserror::Error)]
#[error("drawing {what}: {reason}")]
pub struct RenderError {
    pub what: String,
    pub reason: String,
}

fn draw_err(what: &str) -> impl Fn(String) -> RenderError + '_ {
    move |reason| RenderError { what: what.to_string(), reason }
}

const COLORS: [RGBColor; 6] = [BLUE, RED, GREEN, MAGENTA, CYAN, BLACK];

type TimeChart<'a, 'b> = ChartContext<'a, SVGBackend<'b>, Cartesian2d<RangedCoordf64, RangedCoordu64>>;

/// A chart of a count over the run's virtual seconds (`0..end` by `0..=y_max`), captioned `title`,
/// its axes described and drawn.
fn time_chart<'a, 'b>(
    root: &'a DrawingArea<SVGBackend<'b>, Shift>,
    title: &str,
    end: f64,
    y_max: u64,
    y_desc: &str,
    err: &impl Fn(String) -> RenderError,
) -> Result<TimeChart<'a, 'b>, RenderError> {
    let mut chart = ChartBuilder::on(root)
        .caption(title, ("sans-serif", 18))
        .margin(10)
        .x_label_area_size(35)
        .y_label_area_size(45)
        .build_cartesian_2d(0f64..end, 0u64..y_max + 1)
        .map_err(|e| err(e.to_string()))?;
    chart.configure_mesh().x_desc("virtual seconds").y_desc(y_desc).draw().map_err(|e| err(e.to_string()))?;
    Ok(chart)
}

/// Running replicas per service over time, with a vertical line at every fault.
pub fn replicas_svg(analysis: &Analysis, title: &str) -> Result<String, RenderError> {
    let mut svg = String::new();
    {
        let err = draw_err("the replicas plot");
        let root = SVGBackend::with_string(&mut svg, (900, 420)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| err(e.to_string()))?;
        let max_count = analysis.replicas.values().flat_map(|s| s.iter().map(|(_, c)| *c)).max().unwrap_or(1);
        let end = analysis.duration_s.max(1.0);
        let mut chart = time_chart(&root, title, end, max_count, "running tasks", &err)?;
        for (at, _) in &analysis.faults {
            chart
                .draw_series(LineSeries::new([(*at, 0), (*at, max_count + 1)], RED.mix(0.35)))
                .map_err(|e| err(e.to_string()))?;
        }
        for (index, (service, series)) in analysis.replicas.iter().enumerate() {
            let color = COLORS[index % COLORS.len()];
            // A step line: hold each count until the next change, then to the end of the run.
            let mut points = Vec::new();
            for window in series.windows(2) {
                points.push(window[0]);
                points.push((window[1].0, window[0].1));
            }
            if let Some(last) = series.last() {
                points.push(*last);
                points.push((end, last.1));
            }
            chart
                .draw_series(LineSeries::new(points, color.stroke_width(2)))
                .map_err(|e| err(e.to_string()))?
                .label(service.clone())
                .legend(move |(x, y)| PathElement::new([(x, y), (x + 18, y)], color));
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(|e| err(e.to_string()))?;
        root.present().map_err(|e| err(e.to_string()))?;
    }
    Ok(svg)
}

/// Requests per second of virtual time, per simulated client: a line of those that succeeded and red
/// marks where some failed, with a vertical line at every fault (drawn to sit beside the replicas).
pub fn requests_svg(analysis: &Analysis, title: &str) -> Result<String, RenderError> {
    let mut svg = String::new();
    {
        let err = draw_err("the requests plot");
        let root = SVGBackend::with_string(&mut svg, (900, 420)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| err(e.to_string()))?;
        let per_second = analysis.requests_per_second();
        let max_count =
            per_second.values().flat_map(|s| s.iter().map(|(_, ok, failed)| ok + failed)).max().unwrap_or(1);
        let end = analysis.duration_s.max(1.0);
        let mut chart = time_chart(&root, title, end, max_count, "requests sent per second", &err)?;
        for (at, _) in &analysis.faults {
            chart
                .draw_series(LineSeries::new([(*at, 0), (*at, max_count + 1)], RED.mix(0.35)))
                .map_err(|e| err(e.to_string()))?;
        }
        for (index, (client, series)) in per_second.iter().enumerate() {
            let color = COLORS[index % COLORS.len()];
            chart
                .draw_series(LineSeries::new(series.iter().map(|(s, ok, _)| (*s, *ok)), color.stroke_width(2)))
                .map_err(|e| err(e.to_string()))?
                .label(format!("{client}: succeeded"))
                .legend(move |(x, y)| PathElement::new([(x, y), (x + 18, y)], color));
            let failures = series.iter().filter(|(_, _, failed)| *failed > 0);
            chart
                .draw_series(failures.map(|(s, _, failed)| Cross::new((*s, *failed), 5, RED.stroke_width(2))))
                .map_err(|e| err(e.to_string()))?
                .label(format!("{client}: failed"))
                .legend(|(x, y)| Cross::new((x + 9, y), 4, RED.stroke_width(2)));
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(|e| err(e.to_string()))?;
        root.present().map_err(|e| err(e.to_string()))?;
    }
    Ok(svg)
}

/// The raft term over time, one point per new leader.
pub fn leaders_svg(analysis: &Analysis, title: &str) -> Result<String, RenderError> {
    let mut svg = String::new();
    {
        let err = draw_err("the leader plot");
        let root = SVGBackend::with_string(&mut svg, (900, 300)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| err(e.to_string()))?;
        let max_term = analysis.leaders.iter().map(|(_, term, _)| *term).max().unwrap_or(1);
        let end = analysis.duration_s.max(1.0);
        let mut chart = time_chart(&root, title, end, max_term, "term", &err)?;
        chart
            .draw_series(analysis.leaders.iter().map(|(t, term, _)| Circle::new((*t, *term), 4, BLUE.filled())))
            .map_err(|e| err(e.to_string()))?;
        chart
            .draw_series(
                analysis.leaders.iter().map(|(t, term, node)| Text::new(node.clone(), (*t, *term), ("sans-serif", 12))),
            )
            .map_err(|e| err(e.to_string()))?;
        root.present().map_err(|e| err(e.to_string()))?;
    }
    Ok(svg)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

/// The Markdown page for one or more runs: per run, its faults and recoveries and links to its
/// plots; across runs, the distribution of convergence times.
pub fn summary_markdown(runs: &[(String, Analysis)]) -> String {
    let mut out = String::from("# shoal run report\n\n");
    let mut all_recoveries: Vec<f64> = Vec::new();
    let mut never = 0usize;
    for (name, analysis) in runs {
        out.push_str(&format!("## {name}\n\n"));
        out.push_str(&format!(
            "{:.1} virtual seconds, {} leader changes, {} faults.\n\n",
            analysis.duration_s,
            analysis.leaders.len(),
            analysis.faults.len()
        ));
        out.push_str(&format!("![replicas]({name}-replicas.svg)\n\n"));
        if !analysis.clients.is_empty() {
            out.push_str(&format!("![requests]({name}-requests.svg)\n\n"));
            out.push_str("| client | requests | failed | p50 latency (ms) | p99 latency (ms) | max latency (ms) |\n");
            out.push_str("|---|---:|---:|---:|---:|---:|\n");
            for (client, requests) in &analysis.clients {
                let failed = requests.iter().filter(|r| !r.ok).count();
                let mut latencies: Vec<f64> = requests.iter().filter(|r| r.ok).map(|r| r.latency_ms as f64).collect();
                latencies.sort_by(f64::total_cmp);
                out.push_str(&format!(
                    "| {client} | {} | {failed} | {:.0} | {:.0} | {:.0} |\n",
                    requests.len(),
                    percentile(&latencies, 0.5),
                    percentile(&latencies, 0.99),
                    percentile(&latencies, 1.0),
                ));
            }
            out.push('\n');
        }
        out.push_str(&format!("![leaders]({name}-leaders.svg)\n\n"));
        if !analysis.recoveries.is_empty() {
            out.push_str("| at (s) | fault | converged after (s) |\n|---:|---|---:|\n");
            for recovery in &analysis.recoveries {
                let after = match recovery.converged_after_s {
                    Some(s) => {
                        all_recoveries.push(s);
                        format!("{s:.2}")
                    }
                    None => {
                        never += 1;
                        "never".to_string()
                    }
                };
                out.push_str(&format!("| {:.2} | {} | {} |\n", recovery.at_s, recovery.fault, after));
            }
            out.push('\n');
        }
        if !analysis.tasks_per_node.is_empty() {
            out.push_str("| node | running tasks at the end |\n|---|---:|\n");
            for (node, count) in &analysis.tasks_per_node {
                out.push_str(&format!("| {node} | {count} |\n"));
            }
            out.push('\n');
        }
    }
    if runs.len() > 1 {
        all_recoveries.sort_by(f64::total_cmp);
        out.push_str(&format!(
            "## Across {} runs\n\nTime to converge after a fault (s): min {:.2}, median {:.2}, p90 {:.2}, max {:.2} \
             over {} faults; {} never converged within their run.\n",
            runs.len(),
            percentile(&all_recoveries, 0.0),
            percentile(&all_recoveries, 0.5),
            percentile(&all_recoveries, 0.9),
            percentile(&all_recoveries, 1.0),
            all_recoveries.len(),
            never
        ));
    }
    out
}
