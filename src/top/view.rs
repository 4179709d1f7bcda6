//! The text of one `py-spy top` screen: header and table as lines no wider than the
//! terminal. Pure, so that the screen and the plain-text output are the same text.

use crate::output::short_filename;

use super::stats::{Grouping, Row, SortBy};

/// What the header says.
#[derive(Debug, Clone, Default)]
pub struct Header {
    /// The program's command line.
    pub title: String,
    /// The root process.
    pub pid: i32,
    /// Python version of the root process, once known.
    pub version: Option<String>,
    /// Sampling passes since the start or the last reset.
    pub samples: u64,
    /// Share of the last interval's passes in which a thread held the GIL.
    pub gil_percent: Option<f64>,
    /// Share of the last interval's passes in which a thread was running.
    pub active_percent: Option<f64>,
    /// Threads seen in the last pass.
    pub threads: usize,
    /// Processes sampled (shown with `--subprocesses`).
    pub processes: Option<usize>,
    /// Passes per second achieved over the last interval.
    pub rate: Option<f64>,
    /// Samples per second asked for.
    pub asked_rate: f64,
    /// Errors since the start or the last reset.
    pub errors: u64,
    /// Slots of the schedule skipped in the last interval because a pass ran late.
    pub late: u64,
    /// Mean and longest time a pass took in the last interval, in µs.
    pub sample_micros: Option<(f64, f64)>,
    /// Set when the sampler fell behind: what to say.
    pub behind: Option<String>,
    /// Other warnings (e.g. `--gil` on a free-threaded interpreter).
    pub warnings: Vec<String>,
    /// Notes (a process attached or skipped), newest last.
    pub notes: Vec<String>,
    /// A status line in place of the key hints (the program exited...).
    pub status: Option<String>,
}

/// How the table is shown.
#[derive(Debug, Clone, Copy)]
pub struct Layout {
    /// Sort column.
    pub sort: SortBy,
    /// By line or by function.
    pub grouping: Grouping,
    /// Full paths instead of short filenames.
    pub full_filenames: bool,
    /// Terminal width; `None` for no limit (plain text).
    pub width: Option<usize>,
    /// Terminal height; `None` for no limit.
    pub height: Option<usize>,
    /// Full-screen view: show key hints, the pause mark and the help.
    pub interactive: bool,
    /// The display is paused.
    pub paused: bool,
    /// Show the help instead of the table.
    pub help: bool,
}

/// Most rows in plain-text output (a terminal is limited by its height).
pub const PLAIN_MAX_ROWS: usize = 100;

/// The title line of the table.
pub fn table_title() -> String {
    format!(
        "{:>7} {:>7} {:>9} {:>10}  Function (file:line)",
        "%Own", "%Total", "OwnTime", "TotalTime"
    )
}

/// The lines of one screen.
pub fn render(header: &Header, rows: &[Row], layout: &Layout) -> Vec<String> {
    let mut lines = Vec::new();
    let version = match &header.version {
        Some(v) => format!("Python {v}"),
        None => "Python not found yet".to_owned(),
    };
    lines.push(format!(
        "Collecting samples from '{}' (pid {}, {version})",
        header.title, header.pid
    ));
    let percent = |p: Option<f64>| match p {
        Some(p) => format!("{p:.2}%"),
        None => "-".to_owned(),
    };
    let mut counts = format!(
        "Total samples: {}  GIL: {}  Active: {}  Threads: {}",
        header.samples,
        percent(header.gil_percent),
        percent(header.active_percent),
        header.threads
    );
    if let Some(processes) = header.processes {
        counts.push_str(&format!("  Processes: {processes}"));
    }
    lines.push(counts);
    let rate = match header.rate {
        Some(r) => format!("{r:.1}/s"),
        None => "-".to_owned(),
    };
    let mut sampling = format!(
        "Sampling rate: {rate} of {}/s  Errors: {}",
        header.asked_rate, header.errors
    );
    if let Some((mean, longest)) = header.sample_micros {
        sampling.push_str(&format!(
            "  Skipped: {}  Sample: {mean:.0} µs (max {longest:.0} µs)",
            header.late
        ));
    }
    lines.push(sampling);
    if let Some(behind) = &header.behind {
        lines.push(format!("WARNING: {behind}"));
    }
    for warning in &header.warnings {
        lines.push(format!("WARNING: {warning}"));
    }
    // Plain text prints notes on stderr as they come.
    if let Some(note) = header.notes.last().filter(|_| layout.interactive) {
        lines.push(note.clone());
    }
    if let Some(status) = &header.status {
        lines.push(status.clone());
    } else if layout.interactive {
        let grouping = match layout.grouping {
            Grouping::ByLine => "by line",
            Grouping::ByFunction => "by function",
        };
        let paused = if layout.paused { "PAUSED  " } else { "" };
        lines.push(format!(
            "{paused}Sort: {} [1-4]  {grouping} [L]  reset [R]  pause [Space]  help [?]  quit [q]",
            layout.sort.title()
        ));
    }
    lines.push(String::new());
    if layout.help && layout.interactive {
        lines.extend(HELP.iter().map(|l| l.to_string()));
    } else {
        lines.push(table_title());
        let room = match layout.height {
            Some(h) => h.saturating_sub(lines.len()),
            None => PLAIN_MAX_ROWS,
        };
        let width = layout.width.unwrap_or(usize::MAX);
        // The fixed columns take 38 characters: 7+1+7+1+9+1+10+2.
        let function_width = width.saturating_sub(38);
        for row in rows.iter().take(room) {
            let file = if layout.full_filenames {
                &*row.key.filename
            } else {
                short_filename(&row.key.filename)
            };
            let location = match row.key.line {
                Some(line) => format!("({file}:{line})"),
                None => format!("({file})"),
            };
            lines.push(format!(
                "{:>6.2}% {:>6.2}% {:>8.2}s {:>9.2}s  {}",
                row.own_percent,
                row.total_percent,
                row.counts.own_time,
                row.counts.total_time,
                shorten(&row.key.name, &location, function_width)
            ));
        }
        if layout.height.is_none() && rows.len() > room {
            lines.push(format!("({} more rows)", rows.len() - room));
        }
    }
    if let Some(height) = layout.height {
        lines.truncate(height);
    }
    if let Some(width) = layout.width {
        for line in &mut lines {
            *line = cut(line, width);
        }
    }
    lines
}

const HELP: &[&str] = &[
    "Keys:",
    "  1 2 3 4   sort by %Own, %Total, OwnTime (default), TotalTime",
    "  L         by line / by function",
    "  R         reset the counts",
    "  Space     pause / resume the display (sampling goes on)",
    "  ?         this help (any key closes it)",
    "  q Ctrl-C  quit",
    "",
    "%Own, OwnTime: samples / seconds the function (line) was running itself.",
    "%Total, TotalTime: samples / seconds it was on the stack (a recursive function counts",
    "once per sample). Percentages are of the sampling passes: threads running in parallel",
    "can add up to more than 100%.",
];

/// `name location` in at most `width` characters: the name is shortened first (with an
/// ellipsis), the location only when it does not fit on its own.
fn shorten(name: &str, location: &str, width: usize) -> String {
    let name_len = name.chars().count();
    let location_len = location.chars().count();
    if name_len + 1 + location_len <= width {
        return format!("{name} {location}");
    }
    if location_len + 3 <= width {
        let keep = width - location_len - 2;
        let short: String = name.chars().take(keep).collect();
        return format!("{short}… {location}");
    }
    cut(&format!("{name} {location}"), width)
}

/// `text` cut to `width` characters, the last one an ellipsis when something was cut.
fn cut(text: &str, width: usize) -> String {
    if text.chars().count() <= width {
        return text.to_owned();
    }
    if width == 0 {
        return String::new();
    }
    let mut out: String = text.chars().take(width - 1).collect();
    out.push('…');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::top::stats::{Counts, Key};
    use std::rc::Rc;

    fn row(name: &str, line: i32, own: f64, total: f64) -> Row {
        Row {
            key: Key {
                name: Rc::from(name),
                filename: Rc::from("/usr/lib/python3.12/site-packages/pkg/mod.py"),
                line: Some(line),
            },
            counts: Counts {
                own_samples: (own * 100.0) as u64,
                total_samples: (total * 100.0) as u64,
                own_time: own,
                total_time: total,
            },
            own_percent: own * 10.0,
            total_percent: total * 10.0,
        }
    }

    fn header() -> Header {
        Header {
            title: "python app.py".into(),
            pid: 42,
            version: Some("3.12.1".into()),
            samples: 1000,
            gil_percent: Some(99.0),
            active_percent: Some(100.0),
            threads: 2,
            rate: Some(99.5),
            asked_rate: 100.0,
            ..Header::default()
        }
    }

    fn layout(width: Option<usize>, height: Option<usize>) -> Layout {
        Layout {
            sort: SortBy::OwnTime,
            grouping: Grouping::ByLine,
            full_filenames: false,
            width,
            height,
            interactive: false,
            paused: false,
            help: false,
        }
    }

    #[test]
    fn plain_text() {
        let rows = [row("hot", 12, 8.5, 9.0), row("main", 30, 0.0, 10.0)];
        let lines = render(&header(), &rows, &layout(None, None));
        let expected = [
            "Collecting samples from 'python app.py' (pid 42, Python 3.12.1)",
            "Total samples: 1000  GIL: 99.00%  Active: 100.00%  Threads: 2",
            "Sampling rate: 99.5/s of 100/s  Errors: 0",
            "",
            "   %Own  %Total   OwnTime  TotalTime  Function (file:line)",
            " 85.00%  90.00%     8.50s      9.00s  hot (pkg/mod.py:12)",
            "  0.00% 100.00%     0.00s     10.00s  main (pkg/mod.py:30)",
        ];
        assert_eq!(lines, expected);
    }

    #[test]
    fn rows_fit_the_terminal() {
        let long = "a_function_with_a_name_far_too_long_for_a_narrow_terminal";
        let rows: Vec<Row> = (0..50).map(|i| row(long, i, 1.0, 1.0)).collect();
        let mut l = layout(Some(70), Some(12));
        l.interactive = true;
        let lines = render(&header(), &rows, &l);
        assert_eq!(lines.len(), 12);
        for line in &lines {
            assert!(line.chars().count() <= 70, "{line:?}");
        }
        // The location stays; the name is shortened.
        assert!(lines[11].ends_with("… (pkg/mod.py:5)"), "{}", lines[11]);
        assert!(lines[3].starts_with("Sort: OwnTime [1-4]"), "{}", lines[3]);
        // Very narrow: everything is cut, nothing wraps.
        let lines = render(&header(), &rows, &layout(Some(20), Some(10)));
        assert!(lines.iter().all(|l| l.chars().count() <= 20));
    }

    #[test]
    fn warnings_status_and_help() {
        let mut h = header();
        h.behind = Some("sampling fell behind".into());
        h.processes = Some(3);
        h.status = Some("process 42 exited with status 0; press any key to quit".into());
        let mut l = layout(Some(100), Some(40));
        l.interactive = true;
        let lines = render(&h, &[], &l);
        assert!(lines[1].ends_with("Processes: 3"));
        assert_eq!(lines[3], "WARNING: sampling fell behind");
        assert!(lines[4].starts_with("process 42 exited"));
        l.help = true;
        h.status = None;
        let lines = render(&h, &[], &l);
        assert!(lines.iter().any(|l| l.starts_with("  L ")));
        assert!(!lines.contains(&table_title()));
    }

    #[test]
    fn cuts() {
        assert_eq!(cut("abcdef", 4), "abc…");
        assert_eq!(cut("abc", 4), "abc");
        assert_eq!(cut("abc", 0), "");
        assert_eq!(shorten("function", "(f.py:1)", 30), "function (f.py:1)");
        assert_eq!(shorten("function", "(f.py:1)", 14), "func… (f.py:1)");
        assert_eq!(shorten("function", "(f.py:1)", 6), "funct…");
    }
}
