//! Rendering results: `dump`'s snapshot (text, JSON) and `record`'s profile (flamegraph,
//! speedscope, folded stacks, Chrome trace), and writing output files safely.

pub mod chrometrace;
pub mod dump;
pub mod file;
pub mod flamegraph;
pub mod folded;
pub mod speedscope;

use std::io::Write;

use anyhow::Result;

pub use dump::{to_json, write_text, ProcessInfo, RenderOptions};

use crate::profile::Profile;

/// The file formats `record` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Interactive SVG flame graph (inferno).
    Flamegraph,
    /// speedscope's JSON file format.
    Speedscope,
    /// Folded stacks, `root;...;leaf count`, one line per distinct stack.
    Raw,
    /// Chrome's Trace Event Format JSON (Perfetto, chrome://tracing).
    ChromeTrace,
}

impl Format {
    /// The file extension used for default output names.
    pub fn extension(self) -> &'static str {
        match self {
            Format::Flamegraph => "svg",
            Format::Speedscope | Format::ChromeTrace => "json",
            Format::Raw => "txt",
        }
    }

    /// Whether the format shows samples in time order (the builder must keep them).
    pub fn needs_timeline(self) -> bool {
        matches!(self, Format::Speedscope | Format::ChromeTrace)
    }
}

/// Renders `profile` as `format` into `out`.
pub fn write_profile(format: Format, profile: &Profile, out: &mut dyn Write) -> Result<()> {
    match format {
        Format::Flamegraph => flamegraph::write(profile, out),
        Format::Speedscope => speedscope::write(profile, out),
        Format::Raw => folded::write(profile, out),
        Format::ChromeTrace => chrometrace::write(profile, out),
    }
}

/// The part of a path people recognise: what follows the last `site-packages/`,
/// `dist-packages/` or `lib/pythonX.Y/` directory, or else the file name. Pseudo-filenames
/// like `<string>` or `<made-up/file.py>` are not paths and stay whole.
pub fn short_filename(path: &str) -> &str {
    if path.starts_with('<') && path.ends_with('>') {
        return path;
    }
    let mut best: Option<usize> = None;
    for marker in ["/site-packages/", "/dist-packages/"] {
        if let Some(at) = path.rfind(marker) {
            best = best.max(Some(at + marker.len()));
        }
    }
    if best.is_none() {
        // ".../lib/python3.12/..." (also "python3.13t", "python2.7").
        let mut search = path;
        let mut base = 0;
        while let Some(at) = search.find("/lib/python") {
            let rest = &search[at + "/lib/python".len()..];
            if let Some(slash) = rest.find('/') {
                let version = &rest[..slash];
                if !version.is_empty()
                    && version
                        .chars()
                        .all(|c| c.is_ascii_digit() || c == '.' || c == 't')
                {
                    best = Some(base + at + "/lib/python".len() + slash + 1);
                }
            }
            base += at + 1;
            search = &search[at + 1..];
        }
    }
    match best {
        Some(at) if at < path.len() => &path[at..],
        _ => path.rsplit('/').next().unwrap_or(path),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_filenames() {
        assert_eq!(short_filename("/home/me/app.py"), "app.py");
        assert_eq!(
            short_filename("/root/.pyenv/versions/3.12.1/lib/python3.12/threading.py"),
            "threading.py"
        );
        assert_eq!(
            short_filename("/usr/lib/python3.11/concurrent/futures/thread.py"),
            "concurrent/futures/thread.py"
        );
        assert_eq!(
            short_filename("/v/lib/python3.13t/site-packages/requests/api.py"),
            "requests/api.py"
        );
        assert_eq!(
            short_filename("/usr/lib/python3/dist-packages/apt/cache.py"),
            "apt/cache.py"
        );
        assert_eq!(short_filename("<made-up/фантом.py>"), "<made-up/фантом.py>");
        assert_eq!(short_filename("<string>"), "<string>");
    }
}
