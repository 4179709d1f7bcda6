//! speedscope's JSON file format (<https://www.speedscope.app/file-format-schema.json>):
//! frames shared by all profiles, and one `sampled` profile per thread whose samples are
//! stacks (frame indices, root first) in time order, weighted by the seconds each stands
//! for. speedscope shows them as a time line, a left-heavy flame graph and a table.

use std::collections::BTreeSet;
use std::io::Write;

use anyhow::{Context, Result};
use serde::Serialize;

use crate::profile::{FrameKind, Profile};

const SCHEMA: &str = "https://www.speedscope.app/file-format-schema.json";

#[derive(Serialize)]
struct File<'a> {
    #[serde(rename = "$schema")]
    schema: &'static str,
    shared: Shared<'a>,
    profiles: Vec<SampledProfile<'a>>,
    name: &'a str,
    #[serde(rename = "activeProfileIndex", skip_serializing_if = "Option::is_none")]
    active_profile_index: Option<usize>,
    exporter: String,
}

#[derive(Serialize)]
struct Shared<'a> {
    frames: Vec<Frame<'a>>,
}

#[derive(Serialize)]
struct Frame<'a> {
    name: std::borrow::Cow<'a, str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    file: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    line: Option<i32>,
}

#[derive(Serialize)]
struct SampledProfile<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    name: String,
    unit: &'static str,
    #[serde(rename = "startValue")]
    start_value: f64,
    #[serde(rename = "endValue")]
    end_value: f64,
    samples: Vec<&'a [u32]>,
    weights: Vec<f64>,
}

/// Seconds as JSON accepts them: serde_json writes NaN and infinities as `null`, which the
/// schema rejects, and speedscope refuses negative weights.
fn seconds(value: f64) -> f64 {
    if value.is_finite() {
        value.max(0.0)
    } else {
        0.0
    }
}

fn frames(profile: &Profile) -> Vec<Frame<'_>> {
    profile
        .frames
        .iter()
        .map(|frame| match frame.kind {
            FrameKind::Python => Frame {
                name: frame.name.as_str().into(),
                file: frame.file.as_deref(),
                line: frame.line,
            },
            FrameKind::Process | FrameKind::Thread | FrameKind::Truncated => Frame {
                name: frame.label().into(),
                file: None,
                line: None,
            },
        })
        .collect()
}

/// One profile per thread that has samples, in `profile.threads` order.
fn thread_profiles(profile: &Profile) -> Vec<SampledProfile<'_>> {
    let pids: BTreeSet<i32> = profile.threads.iter().map(|t| t.pid).collect();
    let mut per_thread: Vec<Vec<(f64, f64, u32)>> = vec![Vec::new(); profile.threads.len()];
    for sample in &profile.samples {
        if let Some(samples) = per_thread.get_mut(sample.thread as usize) {
            samples.push((sample.time, sample.weight, sample.stack));
        }
    }
    profile
        .threads
        .iter()
        .zip(per_thread)
        .filter(|(_, samples)| !samples.is_empty())
        .map(|(thread, samples)| {
            let name = if pids.len() > 1 {
                format!("process {} {}", thread.pid, thread.label())
            } else {
                thread.label()
            };
            sampled(profile, name, &samples)
        })
        .collect()
}

/// `samples` are (time, weight, stack) in time order.
fn sampled<'a>(
    profile: &'a Profile,
    name: String,
    samples: &[(f64, f64, u32)],
) -> SampledProfile<'a> {
    let start = samples.first().map_or(0.0, |s| seconds(s.0));
    let end = samples
        .last()
        .map_or(start, |s| seconds(s.0) + seconds(s.1))
        .max(start);
    SampledProfile {
        kind: "sampled",
        name,
        unit: "seconds",
        start_value: start,
        end_value: end,
        samples: samples
            .iter()
            .map(|s| profile.stacks[s.2 as usize].as_slice())
            .collect(),
        weights: samples.iter().map(|s| seconds(s.1)).collect(),
    }
}

/// Without a time line (the builder did not keep one) there is no telling threads or order
/// apart: one profile holds every distinct stack once, weighted by its count times the
/// interval. That is one entry per stack rather than per sample: speedscope adds up equal
/// neighbouring stacks anyway, so the views are the same and the file much smaller.
fn aggregated_profile(profile: &Profile) -> Option<SampledProfile<'_>> {
    let mut samples = Vec::new();
    let mut time = 0.0;
    for (stack, &count) in profile.counts.iter().enumerate() {
        if count > 0 {
            let weight = count as f64 * profile.interval;
            samples.push((time, weight, stack as u32));
            time += weight;
        }
    }
    if samples.is_empty() {
        return None;
    }
    let name = if profile.title.is_empty() {
        "all threads".to_string()
    } else {
        format!("{} (all threads)", profile.title)
    };
    Some(sampled(profile, name, &samples))
}

/// Writes `profile` to `out` as a speedscope JSON file.
pub fn write(profile: &Profile, out: &mut dyn Write) -> Result<()> {
    let profiles = if profile.samples.is_empty() {
        aggregated_profile(profile).into_iter().collect()
    } else {
        thread_profiles(profile)
    };
    let file = File {
        schema: SCHEMA,
        shared: Shared {
            frames: frames(profile),
        },
        active_profile_index: (!profiles.is_empty()).then_some(0),
        profiles,
        name: &profile.title,
        exporter: format!("py-spy {}", env!("CARGO_PKG_VERSION")),
    };
    serde_json::to_writer(&mut *out, &file).context("cannot write the speedscope file")?;
    out.write_all(b"\n")
        .context("cannot write the speedscope file")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::folded::tests::{py, render_json, root, sample_profile, thread};
    use crate::profile::ProfileBuilder;
    use serde_json::Value;

    fn render(profile: &Profile) -> Value {
        render_json(write, profile)
    }

    fn weight_sum(profile: &Value) -> f64 {
        profile["weights"]
            .as_array()
            .unwrap()
            .iter()
            .map(|w| w.as_f64().unwrap())
            .sum()
    }

    #[test]
    fn structure() {
        let profile = sample_profile();
        let json = render(&profile);
        assert_eq!(json["$schema"], SCHEMA);
        assert_eq!(json["name"], "python app.py");
        assert!(json["exporter"].as_str().unwrap().starts_with("py-spy "));
        let frames = json["shared"]["frames"].as_array().unwrap();
        assert_eq!(frames.len(), profile.frames.len());
        assert_eq!(
            frames[0],
            serde_json::json!({"name": "<module>", "file": "app.py", "line": 10})
        );

        let profiles = json["profiles"].as_array().unwrap();
        assert_eq!(profiles.len(), 2);
        let main = &profiles[0];
        assert_eq!(main["type"], "sampled");
        assert_eq!(main["unit"], "seconds");
        assert_eq!(main["name"], "thread 100 \"MainThread\"");
        assert_eq!(
            main["samples"],
            serde_json::json!([[0, 1, 2], [0, 1, 2], [0, 1], [0, 1, 2]])
        );
        assert!((weight_sum(main) - 0.04).abs() < 1e-9);
        assert_eq!(main["startValue"], 0.0);
        assert!((main["endValue"].as_f64().unwrap() - 0.04).abs() < 1e-9);
        let worker = &profiles[1];
        assert_eq!(worker["name"], "thread 101 \"worker\"");
        assert_eq!(worker["samples"], serde_json::json!([[3, 4], [3, 4]]));
        assert_eq!(worker["weights"].as_array().unwrap().len(), 2);
        let samples: usize = profiles
            .iter()
            .map(|p| p["samples"].as_array().unwrap().len())
            .sum();
        assert_eq!(samples as u64, profile.total_samples());
    }

    #[test]
    fn processes_and_root_frames() {
        let mut b = ProfileBuilder::new(true, 0.01, "t".into());
        let p1 = b.frame_id(&root("process 1: \"python a.py\"", FrameKind::Process));
        let p2 = b.frame_id(&root("process 2: \"python b.py\"", FrameKind::Process));
        let f = b.frame_id(&py("f", 1));
        let t1 = thread(&mut b, 1, Some(1), 7, "MainThread");
        let t2 = thread(&mut b, 2, None, 8, "MainThread");
        let idle = thread(&mut b, 2, Some(3), 9, "idle");
        let _ = idle;
        b.add(0.0, 0.01, t1, &[p1, f]);
        b.add(0.0, f64::NAN, t2, &[p2, f]);
        let json = render(&b.finish(0.01));
        assert_eq!(
            json["shared"]["frames"][0],
            serde_json::json!({"name": "process 1: \"python a.py\""})
        );
        let profiles = json["profiles"].as_array().unwrap();
        // The thread without samples has no profile.
        assert_eq!(profiles.len(), 2);
        assert_eq!(profiles[0]["name"], "process 1 thread 1 \"MainThread\"");
        assert_eq!(profiles[1]["name"], "process 2 thread 0x8 \"MainThread\"");
        assert_eq!(profiles[1]["weights"], serde_json::json!([0.0]));
    }

    #[test]
    fn without_a_time_line() {
        let mut profile = sample_profile();
        profile.samples.clear();
        let json = render(&profile);
        let profiles = json["profiles"].as_array().unwrap();
        assert_eq!(profiles.len(), 1);
        assert!((weight_sum(&profiles[0]) - 0.06).abs() < 1e-9);
        assert_eq!(profiles[0]["samples"].as_array().unwrap().len(), 3);
    }

    #[test]
    fn empty_profile() {
        let json = render(&ProfileBuilder::new(true, 0.01, "t".into()).finish(1.0));
        assert_eq!(json["profiles"], serde_json::json!([]));
        assert_eq!(json["shared"]["frames"], serde_json::json!([]));
    }
}
