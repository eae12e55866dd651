//! What a fuzz run exercised, summed over its cases: how many cases had each cluster shape, and
//! for each command and fault kind how many operations of it ran and in how many cases. Kinds
//! never exercised are listed too (with 0), so a generator change that loses one shows.

use std::collections::BTreeMap;

use super::gen::{Exercised, COMMAND_KINDS, FAULT_KINDS};

/// Operations of one kind, and the cases that had at least one.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Count {
    pub ops: u64,
    pub cases: u64,
}

/// A run's coverage.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Coverage {
    pub cases: u64,
    /// Cases with at least one fault.
    pub with_faults: u64,
    /// Cases per (managers, workers).
    pub shapes: BTreeMap<(usize, usize), u64>,
    pub commands: BTreeMap<&'static str, Count>,
    pub faults: BTreeMap<&'static str, Count>,
}

fn add(counts: &mut BTreeMap<&'static str, Count>, labels: &[&'static str]) {
    let mut seen: Vec<&str> = Vec::new();
    for label in labels {
        let count = counts.entry(label).or_default();
        count.ops += 1;
        if !seen.contains(label) {
            seen.push(label);
            count.cases += 1;
        }
    }
}

/// `label ops/cases` items, wrapped at about 100 characters, under `title`.
fn block(title: &str, kinds: &[&'static str], counts: &BTreeMap<&'static str, Count>) -> String {
    let mut items: Vec<String> = Vec::new();
    for kind in kinds {
        let count = counts.get(kind).copied().unwrap_or_default();
        items.push(format!("{kind} {}/{}", count.ops, count.cases));
    }
    for (kind, count) in counts {
        if !kinds.contains(kind) {
            items.push(format!("{kind} {}/{}", count.ops, count.cases));
        }
    }
    wrap(title, &items)
}

fn wrap(title: &str, items: &[String]) -> String {
    let mut out = format!("  {title}:");
    let mut width = out.len();
    for (i, item) in items.iter().enumerate() {
        let sep = if i == 0 { " " } else { ", " };
        if width + sep.len() + item.len() > 100 && i > 0 {
            out.push_str(",\n     ");
            width = 5;
            out.push_str(item);
        } else {
            out.push_str(sep);
            out.push_str(item);
        }
        width += sep.len() + item.len();
    }
    out.push('\n');
    out
}

impl Coverage {
    /// Count one case.
    pub fn add(&mut self, exercised: &Exercised) {
        self.cases += 1;
        if !exercised.faults.is_empty() {
            self.with_faults += 1;
        }
        *self.shapes.entry((exercised.managers, exercised.workers)).or_default() += 1;
        add(&mut self.commands, &exercised.commands);
        add(&mut self.faults, &exercised.faults);
    }

    /// Operations of a command or fault kind (0 if never exercised).
    pub fn ops(&self, kind: &str) -> u64 {
        self.commands.get(kind).or_else(|| self.faults.get(kind)).map_or(0, |c| c.ops)
    }

    /// The kinds no case exercised.
    pub fn never(&self) -> Vec<&'static str> {
        COMMAND_KINDS.iter().chain(FAULT_KINDS.iter()).copied().filter(|k| self.ops(k) == 0).collect()
    }

    /// The summary: shapes (cases), then commands and faults (`ops/cases`), then what never ran.
    pub fn render(&self) -> String {
        let mut out = format!("coverage of {} cases ({} with faults):\n", self.cases, self.with_faults);
        let shapes: Vec<String> = self.shapes.iter().map(|((m, w), n)| format!("M={m} W={w} {n}")).collect();
        out.push_str(&wrap("shapes (cases)", &shapes));
        out.push_str(&block("commands (ops/cases)", &COMMAND_KINDS, &self.commands));
        out.push_str(&block("faults (ops/cases)", &FAULT_KINDS, &self.faults));
        let never = self.never();
        if self.cases > 0 && !never.is_empty() {
            let never: Vec<String> = never.iter().map(|k| k.to_string()).collect();
            out.push_str(&wrap("never exercised", &never));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_ops_and_cases_per_kind_and_lists_what_never_ran() {
        let mut coverage = Coverage::default();
        coverage.add(&Exercised {
            managers: 3,
            workers: 2,
            commands: vec!["service create", "service create", "node drain"],
            faults: vec!["crash leader"],
            waits: 0,
        });
        coverage.add(&Exercised { managers: 3, workers: 2, commands: vec!["service create"], ..Default::default() });
        coverage.add(&Exercised { managers: 1, workers: 0, ..Default::default() });
        assert_eq!((coverage.cases, coverage.with_faults), (3, 1));
        assert_eq!(coverage.commands["service create"], Count { ops: 3, cases: 2 });
        assert_eq!(coverage.ops("crash leader"), 1);
        assert_eq!(coverage.shapes[&(3, 2)], 2);
        let text = coverage.render();
        assert!(
            text.starts_with("coverage of 3 cases (1 with faults):\n  shapes (cases): M=1 W=0 1, M=3 W=2 2\n"),
            "{text}"
        );
        assert!(text.contains("service create 3/2, "), "{text}");
        assert!(text.contains("crash 0/0, crash leader 1/1, "), "{text}");
        assert!(text.contains("  never exercised: service create global, "), "{text}");
        assert!(text.lines().all(|l| l.len() <= 110), "{text}");
    }
}
