//! What `py-spy top` counts: for every function line (and every function), the samples and
//! seconds it was running itself (own) and on the stack at all (total).
//!
//! Both groupings are kept at once, so that `L` switches between them without losing the
//! counts. A function that recurses is on the stack several times in one sample but counts
//! once in its total: totals are counted over the distinct keys of each stack, per grouping
//! (two lines of a recursive function are two keys by line and one by function).

use std::collections::{HashMap, HashSet};
use std::rc::Rc;

use crate::walker::Frame;

/// A row of the table: a function line, or a whole function (its first line).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Key {
    /// Function name.
    pub name: Rc<str>,
    /// Full filename.
    pub filename: Rc<str>,
    /// The line (by line), or the function's first line (by function).
    pub line: Option<i32>,
}

/// The counts of one key.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Counts {
    /// Samples with the key innermost.
    pub own_samples: u64,
    /// Samples with the key anywhere on the stack.
    pub total_samples: u64,
    /// Seconds the own samples stand for.
    pub own_time: f64,
    /// Seconds the total samples stand for.
    pub total_time: f64,
}

/// One row to show.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// What the row is.
    pub key: Key,
    /// Its counts.
    pub counts: Counts,
    /// `own_samples` as a percentage of the sampling passes.
    pub own_percent: f64,
    /// `total_samples` as a percentage of the sampling passes.
    pub total_percent: f64,
}

/// How rows are grouped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grouping {
    /// One row per line of a function.
    ByLine,
    /// One row per function.
    ByFunction,
}

/// The column rows are sorted by (descending), numbered as the keys `1`–`4` choose them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SortBy {
    /// `%Own` (key 1).
    OwnPercent,
    /// `%Total` (key 2).
    TotalPercent,
    /// `OwnTime` (key 3, the default).
    OwnTime,
    /// `TotalTime` (key 4).
    TotalTime,
}

impl SortBy {
    /// The column of key `1`–`4`.
    pub fn from_key(key: char) -> Option<SortBy> {
        match key {
            '1' => Some(SortBy::OwnPercent),
            '2' => Some(SortBy::TotalPercent),
            '3' => Some(SortBy::OwnTime),
            '4' => Some(SortBy::TotalTime),
            _ => None,
        }
    }

    /// The column's title.
    pub fn title(self) -> &'static str {
        match self {
            SortBy::OwnPercent => "%Own",
            SortBy::TotalPercent => "%Total",
            SortBy::OwnTime => "OwnTime",
            SortBy::TotalTime => "TotalTime",
        }
    }
}

/// Counts since the start or the last reset.
#[derive(Debug, Clone, Default)]
pub struct Stats {
    by_line: HashMap<Key, Counts>,
    by_function: HashMap<Key, Counts>,
    /// Sampling passes (the denominator of the percentages).
    passes: u64,
    /// Scratch sets for the distinct keys of one stack.
    seen_lines: HashSet<Key>,
    seen_functions: HashSet<Key>,
}

impl Stats {
    /// Empty counts.
    pub fn new() -> Stats {
        Stats::default()
    }

    /// Sampling passes counted.
    pub fn passes(&self) -> u64 {
        self.passes
    }

    /// Counts one sampling pass (of every process); its stacks are added with
    /// [`Stats::add_stack`].
    pub fn add_pass(&mut self) {
        self.passes += 1;
    }

    /// Adds one thread's stack (innermost frame first) that stands for `weight` seconds.
    pub fn add_stack(&mut self, frames: &[Frame], weight: f64) {
        let Some(innermost) = frames.first() else {
            return;
        };
        let line_key = |f: &Frame| Key {
            name: f.name.clone(),
            filename: f.filename.clone(),
            line: f.line,
        };
        let function_key = |f: &Frame| Key {
            name: f.name.clone(),
            filename: f.filename.clone(),
            line: Some(f.first_line),
        };
        for (map, key) in [
            (&mut self.by_line, line_key(innermost)),
            (&mut self.by_function, function_key(innermost)),
        ] {
            let counts = map.entry(key).or_default();
            counts.own_samples += 1;
            counts.own_time += weight;
        }
        self.seen_lines.clear();
        self.seen_functions.clear();
        for frame in frames {
            let key = line_key(frame);
            if !self.seen_lines.contains(&key) {
                let counts = self.by_line.entry(key.clone()).or_default();
                counts.total_samples += 1;
                counts.total_time += weight;
                self.seen_lines.insert(key);
            }
            let key = function_key(frame);
            if !self.seen_functions.contains(&key) {
                let counts = self.by_function.entry(key.clone()).or_default();
                counts.total_samples += 1;
                counts.total_time += weight;
                self.seen_functions.insert(key);
            }
        }
    }

    /// Forgets everything.
    pub fn reset(&mut self) {
        *self = Stats::default();
    }

    /// The rows of a grouping, sorted by `sort` (descending), ties by total time, then by
    /// name, file and line so that the order is stable between refreshes.
    pub fn rows(&self, grouping: Grouping, sort: SortBy) -> Vec<Row> {
        let map = match grouping {
            Grouping::ByLine => &self.by_line,
            Grouping::ByFunction => &self.by_function,
        };
        let percent = |n: u64| {
            if self.passes == 0 {
                0.0
            } else {
                n as f64 * 100.0 / self.passes as f64
            }
        };
        let mut rows: Vec<Row> = map
            .iter()
            .map(|(key, counts)| Row {
                key: key.clone(),
                counts: *counts,
                own_percent: percent(counts.own_samples),
                total_percent: percent(counts.total_samples),
            })
            .collect();
        let value = |row: &Row| match sort {
            SortBy::OwnPercent => row.own_percent,
            SortBy::TotalPercent => row.total_percent,
            SortBy::OwnTime => row.counts.own_time,
            SortBy::TotalTime => row.counts.total_time,
        };
        rows.sort_by(|a, b| {
            value(b)
                .total_cmp(&value(a))
                .then(b.counts.total_time.total_cmp(&a.counts.total_time))
                .then_with(|| a.key.name.cmp(&b.key.name))
                .then_with(|| a.key.filename.cmp(&b.key.filename))
                .then(a.key.line.cmp(&b.key.line))
        });
        rows
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(name: &str, line: i32, first_line: i32) -> Frame {
        Frame {
            name: Rc::from(name),
            filename: Rc::from("/srv/app.py"),
            line: Some(line),
            first_line,
            locals: None,
        }
    }

    fn find<'r>(rows: &'r [Row], name: &str, line: i32) -> &'r Row {
        rows.iter()
            .find(|r| &*r.key.name == name && r.key.line == Some(line))
            .unwrap_or_else(|| panic!("no row {name}:{line} in {rows:?}"))
    }

    #[test]
    fn own_and_total_by_line_and_by_function() {
        let mut stats = Stats::new();
        // Three passes: hot twice, light once, all under main.
        for inner in [frame("hot", 5, 4), frame("hot", 6, 4), frame("light", 9, 8)] {
            stats.add_pass();
            stats.add_stack(&[inner, frame("main", 12, 11)], 0.01);
        }
        let rows = stats.rows(Grouping::ByLine, SortBy::OwnTime);
        assert_eq!(rows.len(), 4);
        let main = find(&rows, "main", 12);
        assert_eq!(main.counts.own_samples, 0);
        assert_eq!(main.counts.total_samples, 3);
        assert!((main.total_percent - 100.0).abs() < 1e-9);
        assert!((main.counts.total_time - 0.03).abs() < 1e-9);
        let rows = stats.rows(Grouping::ByFunction, SortBy::OwnTime);
        assert_eq!(rows.len(), 3);
        assert_eq!(&*rows[0].key.name, "hot");
        assert_eq!(rows[0].key.line, Some(4));
        assert_eq!(rows[0].counts.own_samples, 2);
        assert!((rows[0].own_percent - 200.0 / 3.0).abs() < 1e-9);
        // By total time, main leads.
        let rows = stats.rows(Grouping::ByFunction, SortBy::TotalTime);
        assert_eq!(&*rows[0].key.name, "main");
    }

    #[test]
    fn recursion_counts_once_per_sample_in_totals() {
        let mut stats = Stats::new();
        stats.add_pass();
        // f calls itself from line 3 twice; its innermost frame is at line 2.
        let stack = [
            frame("f", 2, 1),
            frame("f", 3, 1),
            frame("f", 3, 1),
            frame("main", 9, 8),
        ];
        stats.add_stack(&stack, 0.5);
        let by_function = stats.rows(Grouping::ByFunction, SortBy::TotalTime);
        let f = find(&by_function, "f", 1);
        assert_eq!((f.counts.own_samples, f.counts.total_samples), (1, 1));
        assert!((f.total_percent - 100.0).abs() < 1e-9);
        let by_line = stats.rows(Grouping::ByLine, SortBy::TotalTime);
        assert_eq!(find(&by_line, "f", 3).counts.total_samples, 1);
        assert_eq!(find(&by_line, "f", 2).counts.total_samples, 1);
        assert_eq!(find(&by_line, "f", 3).counts.own_samples, 0);
    }

    #[test]
    fn reset_forgets_everything() {
        let mut stats = Stats::new();
        stats.add_pass();
        stats.add_stack(&[frame("a", 1, 1)], 0.01);
        stats.reset();
        assert_eq!(stats.passes(), 0);
        assert!(stats.rows(Grouping::ByLine, SortBy::OwnTime).is_empty());
    }

    #[test]
    fn sort_keys() {
        assert_eq!(SortBy::from_key('1'), Some(SortBy::OwnPercent));
        assert_eq!(SortBy::from_key('4'), Some(SortBy::TotalTime));
        assert_eq!(SortBy::from_key('5'), None);
    }
}
