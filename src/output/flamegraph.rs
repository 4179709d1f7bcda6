//! The default format: an interactive SVG flame graph drawn by inferno from the folded
//! stacks, with its tooltips, click-to-zoom and search (Ctrl-F) scripts embedded.

use std::io::Write;

use anyhow::{Context, Result};
use inferno::flamegraph::color::{MultiPalette, Palette};
use inferno::flamegraph::{self, Options};

use super::folded;
use crate::profile::Profile;

/// Width of the no-samples image; matches inferno's default so both look alike.
const EMPTY_WIDTH: usize = 1200;

/// Writes `profile` to `out` as an SVG flame graph. A profile without samples still gives
/// a valid SVG, one that says so.
pub fn write(profile: &Profile, out: &mut dyn Write) -> Result<()> {
    let title = title(profile);
    let lines = folded::lines(profile);
    if lines.is_empty() {
        // inferno refuses empty input (and its error picture says "ERROR").
        return write_empty(&title, out).context("cannot write the flame graph");
    }
    let mut options = Options::default();
    options.title = title;
    options.subtitle = Some(subtitle(profile));
    options.count_name = "samples".into();
    // Colours derived from the name: the same function keeps its colour from one run to
    // the next, and the file is reproducible.
    options.colors = Palette::Multi(MultiPalette::Python);
    options.deterministic = true;
    flamegraph::from_lines(&mut options, lines.iter().map(String::as_str), out)
        .context("cannot write the flame graph")
}

fn title(profile: &Profile) -> String {
    if profile.title.is_empty() {
        "py-spy record".into()
    } else {
        format!("py-spy record: {}", profile.title)
    }
}

/// `1,234 samples, 12.3 s at 100 samples/s`.
pub fn subtitle(profile: &Profile) -> String {
    let total = profile.total_samples();
    let noun = if total == 1 { "sample" } else { "samples" };
    let mut text = format!("{} {noun}, {:.1} s", thousands(total), profile.duration);
    if profile.interval > 0.0 && profile.interval.is_finite() {
        let rate = 1.0 / profile.interval;
        if (rate - rate.round()).abs() < 0.05 {
            text.push_str(&format!(" at {} samples/s", rate.round()));
        } else {
            text.push_str(&format!(" at {rate:.1} samples/s"));
        }
    }
    text
}

fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut text = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            text.push(',');
        }
        text.push(c);
    }
    text
}

fn write_empty(title: &str, out: &mut dyn Write) -> std::io::Result<()> {
    let height = 100;
    write!(
        out,
        concat!(
            "<?xml version=\"1.0\" standalone=\"no\"?>\n",
            "<svg version=\"1.1\" width=\"{w}\" height=\"{h}\" viewBox=\"0 0 {w} {h}\" ",
            "xmlns=\"http://www.w3.org/2000/svg\">\n",
            "<rect x=\"0\" y=\"0\" width=\"100%\" height=\"100%\" fill=\"#eeeeee\"/>\n",
            "<text x=\"50%\" y=\"34\" text-anchor=\"middle\" font-family=\"Verdana\" ",
            "font-size=\"17\">{title}</text>\n",
            "<text x=\"50%\" y=\"70\" text-anchor=\"middle\" font-family=\"Verdana\" ",
            "font-size=\"14\">No samples were collected</text>\n",
            "</svg>\n"
        ),
        w = EMPTY_WIDTH,
        h = height,
        title = xml_escape(title),
    )
}

fn xml_escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => escaped.push_str("&amp;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '"' => escaped.push_str("&quot;"),
            '\'' => escaped.push_str("&apos;"),
            // XML 1.0 allows no other control characters, not even as references.
            c if c.is_control() && !matches!(c, '\t' | '\n' | '\r') => escaped.push(' '),
            c => escaped.push(c),
        }
    }
    escaped
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::folded::tests::sample_profile;
    use crate::profile::ProfileBuilder;

    fn render(profile: &Profile) -> String {
        let mut out = Vec::new();
        write(profile, &mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn interactive_svg() {
        let svg = render(&sample_profile());
        assert!(svg.starts_with("<?xml"));
        assert!(svg.contains("<svg"));
        assert!(svg.trim_end().ends_with("</svg>"));
        // Labels are XML-escaped.
        assert!(svg.contains("&lt;module&gt; (app.py:10)"));
        assert!(svg.contains("work (app.py:2)"));
        assert!(svg.contains("py-spy record: python app.py"));
        assert!(svg.contains("6 samples, 0.0 s at 100 samples/s"));
        assert!(svg.contains("function search"));
        assert!(svg.contains("function zoom"));
        // Deterministic colours: the same profile renders to the same bytes.
        assert_eq!(svg, render(&sample_profile()));
    }

    #[test]
    fn empty_profile_is_a_valid_svg() {
        let profile = ProfileBuilder::new(true, 0.01, "python <&> app.py".into()).finish(2.0);
        let svg = render(&profile);
        assert!(svg.contains("<svg"));
        assert!(svg.contains("No samples were collected"));
        assert!(svg.contains("py-spy record: python &lt;&amp;&gt; app.py"));
        assert!(svg.trim_end().ends_with("</svg>"));
    }

    #[test]
    fn subtitles() {
        let mut profile = sample_profile();
        profile.duration = 12.34;
        profile.counts = vec![1234];
        profile.interval = 0.01;
        assert_eq!(subtitle(&profile), "1,234 samples, 12.3 s at 100 samples/s");
        profile.interval = 1.0 / 33.3;
        profile.counts = vec![1];
        assert_eq!(subtitle(&profile), "1 sample, 12.3 s at 33.3 samples/s");
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1_000_000), "1,000,000");
    }
}
