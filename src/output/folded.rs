//! Folded stacks (`--format raw`): one line per distinct stack, `root;...;leaf count`,
//! the input format of flamegraph.pl, inferno and speedscope's importer.
//!
//! Those tools split a line at the last space (the count) and the stack at every `;`, so
//! a label must contain neither a line break nor a `;`, and must not end in something that
//! looks like a second count (inferno reads `stack 10 12` as a differential flame graph):
//!
//! - control characters (newlines, tabs) become spaces;
//! - `;` becomes `:` (it shows up in `python -c "a; b"` command lines of root frames;
//!   `:` reads about the same and splits nothing);
//! - a label whose last word is a number (a root frame like `thread 1234`) gets a no-break
//!   space (U+00A0) before that word, which looks the same but is not a field separator.
//!
//! The same frame gets the same text wherever it appears in a stack, so the tools still
//! merge it.

use std::io::Write;

use anyhow::{Context, Result};

use crate::profile::Profile;

/// The folded text of every frame label, by frame index.
pub fn frame_labels(profile: &Profile) -> Vec<String> {
    profile
        .frames
        .iter()
        .map(|frame| sanitize_label(&frame.label()))
        .collect()
}

/// Makes `label` safe to put between the `;`s of a folded line (see the module docs).
pub fn sanitize_label(label: &str) -> String {
    let mut text: String = label
        .chars()
        .map(|c| match c {
            ';' => ':',
            c if c.is_control() => ' ',
            c => c,
        })
        .collect();
    if let Some(space) = text.rfind(' ') {
        let last = &text[space + 1..];
        if !last.is_empty() && last.chars().all(|c| c.is_ascii_digit() || c == '.') {
            text.replace_range(space..space + 1, "\u{a0}");
        }
    }
    if text.is_empty() {
        // An empty frame would make `a;;b`, which the tools read as a missing frame.
        text.push('?');
    }
    text
}

/// The folded lines (`root;...;leaf count`, no line terminator), one per distinct stack
/// text with a count above zero, sorted by stack text so that the output is deterministic
/// and ready for inferno. The counts add up to [`Profile::total_samples`].
pub fn lines(profile: &Profile) -> Vec<String> {
    let labels = frame_labels(profile);
    let mut stacks: Vec<(String, u64)> = profile
        .stacks
        .iter()
        .zip(&profile.counts)
        .filter(|(_, &count)| count > 0)
        .map(|(stack, &count)| {
            let mut text = String::new();
            for (i, &frame) in stack.iter().enumerate() {
                if i > 0 {
                    text.push(';');
                }
                text.push_str(labels.get(frame as usize).map_or("?", String::as_str));
            }
            (text, count)
        })
        .collect();
    stacks.sort_unstable();
    // Two stacks can fold to the same text (labels that differ only in what sanitizing
    // replaced); one line each keeps the format's "one line per stack".
    let mut merged: Vec<(String, u64)> = Vec::with_capacity(stacks.len());
    for (text, count) in stacks {
        match merged.last_mut() {
            Some((last, total)) if *last == text => *total += count,
            _ => merged.push((text, count)),
        }
    }
    merged
        .into_iter()
        .map(|(text, count)| format!("{text} {count}"))
        .collect()
}

/// Writes `profile` to `out` as folded stacks, one line each, `\n`-terminated.
pub fn write(profile: &Profile, out: &mut dyn Write) -> Result<()> {
    for line in lines(profile) {
        writeln!(out, "{line}").context("cannot write folded stacks")?;
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::profile::{FrameInfo, FrameKind, ProfileBuilder, ThreadInfo, ThreadKey};

    pub(crate) fn py(name: &str, line: i32) -> FrameInfo {
        FrameInfo {
            name: name.into(),
            file: Some("app.py".into()),
            line: Some(line),
            kind: FrameKind::Python,
        }
    }

    pub(crate) fn root(name: &str, kind: FrameKind) -> FrameInfo {
        FrameInfo {
            name: name.into(),
            file: None,
            line: None,
            kind,
        }
    }

    /// Registers a thread of process `pid` with OS id `tid`.
    pub(crate) fn thread(
        b: &mut ProfileBuilder,
        pid: i32,
        tid: Option<i64>,
        ident: u64,
        name: &str,
    ) -> u32 {
        let key = ThreadKey {
            pid,
            python_thread_id: ident,
            os_thread_id: tid,
        };
        b.thread_id(key, || ThreadInfo {
            pid,
            command_line: "python app.py".into(),
            os_thread_id: tid,
            python_thread_id: ident,
            name: Some(name.into()),
        })
    }

    /// Two threads: main spends 3 samples in `work` and 1 in `main`; a worker 2 in `wait`.
    /// What a JSON writer (`speedscope::write`, `chrometrace::write`) makes of `profile`.
    pub(crate) fn render_json(
        write: fn(&Profile, &mut dyn std::io::Write) -> anyhow::Result<()>,
        profile: &Profile,
    ) -> serde_json::Value {
        let mut out = Vec::new();
        write(profile, &mut out).unwrap();
        serde_json::from_slice(&out).unwrap()
    }

    pub(crate) fn sample_profile() -> Profile {
        let mut b = ProfileBuilder::new(true, 0.01, "python app.py".into());
        let module = b.frame_id(&py("<module>", 10));
        let main = b.frame_id(&py("main", 5));
        let work = b.frame_id(&py("work", 2));
        let run = b.frame_id(&py("run", 20));
        let wait = b.frame_id(&py("wait", 30));
        let t0 = thread(&mut b, 100, Some(100), 1, "MainThread");
        let t1 = thread(&mut b, 100, Some(101), 2, "worker");
        b.add(0.00, 0.01, t0, &[module, main, work]);
        b.add(0.00, 0.01, t1, &[run, wait]);
        b.add(0.01, 0.01, t0, &[module, main, work]);
        b.add(0.01, 0.01, t1, &[run, wait]);
        b.add(0.02, 0.01, t0, &[module, main]);
        b.add(0.03, 0.01, t0, &[module, main, work]);
        b.finish(0.04)
    }

    #[test]
    fn exact_text() {
        let mut out = Vec::new();
        write(&sample_profile(), &mut out).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "<module> (app.py:10);main (app.py:5) 1\n\
             <module> (app.py:10);main (app.py:5);work (app.py:2) 3\n\
             run (app.py:20);wait (app.py:30) 2\n"
        );
    }

    #[test]
    fn counts_add_up() {
        let profile = sample_profile();
        let sum: u64 = lines(&profile)
            .iter()
            .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
            .sum();
        assert_eq!(sum, profile.total_samples());
    }

    #[test]
    fn awkward_labels() {
        assert_eq!(sanitize_label("a\nb\tc"), "a b c");
        assert_eq!(
            sanitize_label("process 7: \"python -c 'a; b'\""),
            "process 7: \"python -c 'a: b'\""
        );
        assert_eq!(sanitize_label("thread 1234"), "thread\u{a0}1234");
        assert_eq!(sanitize_label("main (app.py:3)"), "main (app.py:3)");
        assert_eq!(sanitize_label(""), "?");

        let mut b = ProfileBuilder::new(false, 0.01, "t".into());
        let t = thread(&mut b, 1, Some(1), 1, "MainThread");
        let thread_root = b.frame_id(&root("thread 1234", FrameKind::Thread));
        let a = b.frame_id(&py("a;b", 1));
        let c = b.frame_id(&py("a:b", 1));
        b.add(0.0, 0.01, t, &[thread_root]);
        b.add(0.0, 0.01, t, &[thread_root, a]);
        b.add(0.0, 0.01, t, &[thread_root, c]);
        let lines = lines(&b.finish(0.01));
        // `a;b` and `a:b` fold to the same text: one line with both counts.
        assert_eq!(
            lines,
            vec![
                "thread\u{a0}1234 1".to_string(),
                "thread\u{a0}1234;a:b (app.py:1) 2".to_string(),
            ]
        );
    }

    #[test]
    fn empty_profile() {
        let profile = ProfileBuilder::new(false, 0.01, "t".into()).finish(1.0);
        let mut out = Vec::new();
        write(&profile, &mut out).unwrap();
        assert!(out.is_empty());
    }
}
