//! Chrome's Trace Event Format (object form), which Perfetto and chrome://tracing load:
//! each thread's samples become nested `B`/`E` duration events, one per frame, so a frame
//! that stays on the stack over consecutive samples is one long slice.
//!
//! Each sample stands for `[time, time + weight)`. Between two samples of a thread only the
//! frames that changed are closed (innermost first) and opened (outermost first). A thread
//! that was not sampled for a while (it went idle, or the sampler fell behind) would
//! otherwise look busy in its last stack throughout: when the next sample starts more than
//! half an interval after the previous one ended, every open frame is closed at that end.
//! At the end of the thread everything still open is closed at its last sample's end, so
//! every `E` matches a `B` on the same (pid, tid) and timestamps never go backwards.

use std::collections::{HashMap, HashSet};
use std::io::Write;

use anyhow::{Context, Result};
use serde::Serialize;
use serde_json::{json, Value};

use crate::profile::{FrameKind, Profile};

/// Trace viewers keep thread ids in 32-bit signed integers (Perfetto mangles larger ones).
const MAX_TID: i64 = i32::MAX as i64;

#[derive(Serialize)]
struct Event<'a> {
    name: &'a str,
    cat: &'static str,
    ph: &'static str,
    ts: f64,
    pid: i32,
    tid: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    args: Option<&'a Value>,
}

/// A thread's place in the trace and the samples drawn on it.
struct Track {
    pid: i32,
    tid: i64,
    name: String,
    /// (time, weight, stack), in time order.
    samples: Vec<(f64, f64, u32)>,
}

/// Seconds to microseconds, rounded to the nanosecond so the file shows no float noise.
/// Non-finite inputs become 0 (serde_json would write `null`).
fn micros(seconds: f64) -> f64 {
    if seconds.is_finite() {
        (seconds * 1e9).round() / 1e3
    } else {
        0.0
    }
}

/// One track per thread with samples. The tid is the OS thread id when there is one that
/// fits and no earlier thread of the process uses it; otherwise the smallest positive id
/// not taken in that process, which keeps tracks apart and every tid within `i32`.
fn tracks(profile: &Profile) -> Vec<Track> {
    let mut per_thread: Vec<Vec<(f64, f64, u32)>> = vec![Vec::new(); profile.threads.len()];
    for sample in &profile.samples {
        if let Some(samples) = per_thread.get_mut(sample.thread as usize) {
            samples.push((sample.time, sample.weight, sample.stack));
        }
    }
    let fits = |tid: Option<i64>| tid.filter(|&t| (1..=MAX_TID).contains(&t));
    // Real ids first, so a made-up id never takes one a later thread really has.
    let mut used: HashSet<(i32, i64)> = HashSet::new();
    let mut real: Vec<Option<i64>> = Vec::with_capacity(profile.threads.len());
    for thread in &profile.threads {
        real.push(fits(thread.os_thread_id).filter(|&t| used.insert((thread.pid, t))));
    }
    let mut next_free: HashMap<i32, i64> = HashMap::new();
    let mut tracks = Vec::new();
    for ((thread, samples), tid) in profile.threads.iter().zip(per_thread).zip(real) {
        let tid = tid.unwrap_or_else(|| {
            let next = next_free.entry(thread.pid).or_insert(1);
            while used.contains(&(thread.pid, *next)) {
                *next += 1;
            }
            used.insert((thread.pid, *next));
            *next
        });
        if !samples.is_empty() {
            tracks.push(Track {
                pid: thread.pid,
                tid,
                name: thread.label(),
                samples,
            });
        }
    }
    tracks
}

/// Without a time line (the builder did not keep one), the distinct stacks laid end to
/// end on one track, each as long as its count of intervals: the aggregate, not a history.
fn aggregated_track(profile: &Profile) -> Option<Track> {
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
    Some(Track {
        pid: profile.threads.first().map_or(0, |t| t.pid),
        tid: 0,
        name: "all threads (aggregated, no time line)".into(),
        samples,
    })
}

/// Streams events into the `traceEvents` array, comma-separated.
struct EventWriter<'w> {
    out: &'w mut dyn Write,
    first: bool,
}

impl EventWriter<'_> {
    fn event(&mut self, event: &impl Serialize) -> Result<()> {
        if !self.first {
            self.out.write_all(b",\n")?;
        }
        self.first = false;
        serde_json::to_writer(&mut *self.out, event)?;
        Ok(())
    }
}

/// Emits the `B`/`E` events of one track (see the module docs for the rules).
fn write_track(
    profile: &Profile,
    track: &Track,
    names: &[&str],
    args: &[Option<Value>],
    events: &mut EventWriter<'_>,
) -> Result<()> {
    let gap = if profile.interval.is_finite() {
        profile.interval.max(0.0) / 2.0
    } else {
        0.0
    };
    let mut open: Vec<u32> = Vec::new();
    // Last timestamp written, in microseconds: samples out of order are drawn at the
    // current time rather than letting the clock run backwards.
    let mut now = f64::NEG_INFINITY;
    let mut prev_end: Option<f64> = None;
    let mut emit = |frame: u32, ph: &'static str, ts: f64| -> Result<()> {
        let frame = frame as usize;
        events.event(&Event {
            name: names[frame],
            cat: "python",
            ph,
            ts,
            pid: track.pid,
            tid: track.tid,
            args: if ph == "B" {
                args[frame].as_ref()
            } else {
                None
            },
        })
    };
    for &(time, weight, stack) in &track.samples {
        let start = if time.is_finite() { time } else { 0.0 };
        let weight = if weight.is_finite() {
            weight.max(0.0)
        } else {
            0.0
        };
        if let Some(end) = prev_end {
            if start > end + gap {
                let ts = micros(end).max(now);
                while let Some(frame) = open.pop() {
                    emit(frame, "E", ts)?;
                }
                now = ts;
            }
        }
        let ts = micros(start).max(now);
        let stack = &profile.stacks[stack as usize];
        let common = open.iter().zip(stack).take_while(|(a, b)| a == b).count();
        while open.len() > common {
            let frame = open.pop().expect("longer than common");
            emit(frame, "E", ts)?;
        }
        for &frame in &stack[common..] {
            emit(frame, "B", ts)?;
            open.push(frame);
        }
        now = ts;
        prev_end = Some(start + weight);
    }
    if let Some(end) = prev_end {
        let ts = micros(end).max(now);
        while let Some(frame) = open.pop() {
            emit(frame, "E", ts)?;
        }
    }
    Ok(())
}

/// Writes `profile` to `out` as a Chrome trace.
pub fn write(profile: &Profile, out: &mut dyn Write) -> Result<()> {
    write_trace(profile, out).context("cannot write the Chrome trace")
}

fn write_trace(profile: &Profile, out: &mut dyn Write) -> Result<()> {
    let tracks = if profile.samples.is_empty() {
        aggregated_track(profile).into_iter().collect()
    } else {
        tracks(profile)
    };
    let labels: Vec<String> = profile.frames.iter().map(|f| f.label()).collect();
    let names: Vec<&str> = profile
        .frames
        .iter()
        .zip(&labels)
        .map(|(frame, label)| match frame.kind {
            FrameKind::Python => frame.name.as_str(),
            FrameKind::Process | FrameKind::Thread | FrameKind::Truncated => label.as_str(),
        })
        .collect();
    let args: Vec<Option<Value>> = profile
        .frames
        .iter()
        .map(|frame| match (frame.kind, &frame.file) {
            (FrameKind::Python, Some(file)) => Some(match frame.line {
                Some(line) => json!({"file": file, "line": line}),
                None => json!({"file": file}),
            }),
            _ => None,
        })
        .collect();

    out.write_all(b"{\"traceEvents\":[\n")?;
    let mut events = EventWriter {
        out: &mut *out,
        first: true,
    };
    let mut named_processes = HashSet::new();
    for (index, track) in tracks.iter().enumerate() {
        if named_processes.insert(track.pid) {
            let command_line = profile
                .threads
                .iter()
                .find(|t| t.pid == track.pid)
                .map_or(profile.title.as_str(), |t| t.command_line.as_str());
            events.event(&json!({
                "ph": "M", "name": "process_name", "pid": track.pid, "tid": track.tid,
                "args": {"name": command_line},
            }))?;
        }
        events.event(&json!({
            "ph": "M", "name": "thread_name", "pid": track.pid, "tid": track.tid,
            "args": {"name": track.name},
        }))?;
        // Keeps the tracks in the order py-spy saw the threads rather than by tid.
        events.event(&json!({
            "ph": "M", "name": "thread_sort_index", "pid": track.pid, "tid": track.tid,
            "args": {"sort_index": index},
        }))?;
    }
    for track in &tracks {
        write_track(profile, track, &names, &args, &mut events)?;
    }
    out.write_all(b"\n],\n\"displayTimeUnit\":\"ms\",\n\"otherData\":")?;
    serde_json::to_writer(
        &mut *out,
        &json!({
            "exporter": format!("py-spy {}", env!("CARGO_PKG_VERSION")),
            "title": profile.title,
            "samples": profile.total_samples(),
            "duration_seconds": micros(profile.duration) / 1e6,
            "interval_seconds": profile.interval,
        }),
    )?;
    out.write_all(b"}\n")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::folded::tests::{py, render_json, root, sample_profile, thread};
    use crate::profile::ProfileBuilder;

    fn render(profile: &Profile) -> Value {
        render_json(write, profile)
    }

    fn events(json: &Value) -> &Vec<Value> {
        json["traceEvents"].as_array().unwrap()
    }

    /// Every (pid, tid): `E` closes the innermost open `B` of the same name, everything is
    /// closed at the end, timestamps never decrease, and tids fit in an i32.
    fn check_balanced(json: &Value) {
        let mut stacks: HashMap<(i64, i64), (Vec<String>, f64)> = HashMap::new();
        for event in events(json) {
            let tid = event["tid"].as_i64().unwrap();
            assert!((0..=MAX_TID).contains(&tid), "tid {tid}");
            let ph = event["ph"].as_str().unwrap();
            if ph == "M" {
                continue;
            }
            let key = (event["pid"].as_i64().unwrap(), tid);
            let name = event["name"].as_str().unwrap().to_string();
            let ts = event["ts"].as_f64().unwrap();
            let (open, last) = stacks.entry(key).or_insert((Vec::new(), f64::MIN));
            assert!(ts >= *last, "time went backwards on {key:?}: {ts} < {last}");
            *last = ts;
            match ph {
                "B" => open.push(name),
                "E" => assert_eq!(open.pop().as_deref(), Some(name.as_str()), "{key:?}"),
                other => panic!("unexpected phase {other}"),
            }
        }
        for (key, (open, _)) in stacks {
            assert!(open.is_empty(), "{key:?} left open: {open:?}");
        }
    }

    fn slices(json: &Value, tid: i64) -> Vec<(String, String, f64)> {
        events(json)
            .iter()
            .filter(|e| e["ph"] != "M" && e["tid"] == tid)
            .map(|e| {
                (
                    e["ph"].as_str().unwrap().to_string(),
                    e["name"].as_str().unwrap().to_string(),
                    e["ts"].as_f64().unwrap(),
                )
            })
            .collect()
    }

    #[test]
    fn nested_slices() {
        let json = render(&sample_profile());
        check_balanced(&json);
        let e = |ph: &str, name: &str, ts: f64| (ph.to_string(), name.to_string(), ts);
        assert_eq!(
            slices(&json, 100),
            vec![
                e("B", "<module>", 0.0),
                e("B", "main", 0.0),
                e("B", "work", 0.0),
                e("E", "work", 20000.0),
                e("B", "work", 30000.0),
                e("E", "work", 40000.0),
                e("E", "main", 40000.0),
                e("E", "<module>", 40000.0),
            ]
        );
        assert_eq!(
            slices(&json, 101),
            vec![
                e("B", "run", 0.0),
                e("B", "wait", 0.0),
                e("E", "wait", 20000.0),
                e("E", "run", 20000.0),
            ]
        );
        let first = events(&json)
            .iter()
            .find(|e| e["ph"] == "B" && e["name"] == "work")
            .unwrap();
        assert_eq!(first["args"], json!({"file": "app.py", "line": 2}));
        assert_eq!(first["cat"], "python");
        assert_eq!(json["displayTimeUnit"], "ms");
        let meta: Vec<&Value> = events(&json).iter().filter(|e| e["ph"] == "M").collect();
        assert!(meta.iter().any(|m| m["name"] == "process_name"
            && m["pid"] == 100
            && m["args"]["name"] == "python app.py"));
        assert!(meta.iter().any(|m| m["name"] == "thread_name"
            && m["tid"] == 101
            && m["args"]["name"] == "thread 101 \"worker\""));
    }

    #[test]
    fn gaps_close_everything() {
        let mut b = ProfileBuilder::new(true, 0.01, "t".into());
        let f = b.frame_id(&py("f", 1));
        let g = b.frame_id(&py("g", 2));
        let t = thread(&mut b, 5, Some(5), 1, "MainThread");
        b.add(0.00, 0.01, t, &[f, g]);
        b.add(0.01, 0.01, t, &[f, g]);
        // Idle (unsampled) from 0.02 to 0.05.
        b.add(0.05, 0.01, t, &[f, g]);
        let json = render(&b.finish(0.06));
        check_balanced(&json);
        let ts: Vec<(String, f64)> = slices(&json, 5)
            .into_iter()
            .map(|(ph, _, ts)| (ph, ts))
            .collect();
        let p = |ph: &str, ts: f64| (ph.to_string(), ts);
        assert_eq!(
            ts,
            vec![
                p("B", 0.0),
                p("B", 0.0),
                p("E", 20000.0),
                p("E", 20000.0),
                p("B", 50000.0),
                p("B", 50000.0),
                p("E", 60000.0),
                p("E", 60000.0),
            ]
        );
    }

    #[test]
    fn tids_always_fit() {
        let mut b = ProfileBuilder::new(true, 0.01, "t".into());
        let proc_root = b.frame_id(&root("process 9: \"python\"", FrameKind::Process));
        let f = b.frame_id(&py("f", 1));
        let g = b.frame_id(&py("g", 2));
        let huge = thread(&mut b, 9, Some(1 << 40), 0x7f00_0000_1000, "huge");
        let none = thread(&mut b, 9, None, 0x7f00_0000_2000, "none");
        let real_one = thread(&mut b, 9, Some(1), 3, "tid one");
        // The same OS id again (a thread that reused it): must not share a track.
        let reused = thread(&mut b, 9, Some(1), 4, "reused");
        let negative = thread(&mut b, 9, Some(-5), 5, "negative");
        for (i, t) in [huge, none, real_one, reused, negative]
            .into_iter()
            .enumerate()
        {
            let time = i as f64 * 0.001;
            b.add(time, 0.01, t, &[proc_root, f]);
            b.add(time + 0.01, 0.01, t, &[proc_root, f, g]);
            b.add(time + 0.02, 0.01, t, &[proc_root, g]);
        }
        let json = render(&b.finish(0.05));
        check_balanced(&json);
        let names: HashMap<i64, String> = events(&json)
            .iter()
            .filter(|e| e["name"] == "thread_name")
            .map(|e| {
                (
                    e["tid"].as_i64().unwrap(),
                    e["args"]["name"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        assert_eq!(names.len(), 5, "{names:?}");
        assert_eq!(names[&1], "thread 1 \"tid one\"");
        assert!(names.keys().all(|&tid| (1..=MAX_TID).contains(&tid)));
        // The root frame is named by its label.
        assert!(events(&json)
            .iter()
            .any(|e| e["ph"] == "B" && e["name"] == "process 9: \"python\""));
    }

    #[test]
    fn out_of_order_and_odd_weights() {
        let mut b = ProfileBuilder::new(true, 0.01, "t".into());
        let f = b.frame_id(&py("f", 1));
        let g = b.frame_id(&py("g", 2));
        let t = thread(&mut b, 5, Some(5), 1, "MainThread");
        b.add(0.02, 0.05, t, &[f]);
        b.add(0.01, -1.0, t, &[f, g]);
        b.add(f64::NAN, f64::INFINITY, t, &[g]);
        b.add(0.03, 0.01, t, &[g]);
        check_balanced(&render(&b.finish(0.06)));
    }

    #[test]
    fn without_a_time_line_and_empty() {
        let mut profile = sample_profile();
        profile.samples.clear();
        let json = render(&profile);
        check_balanced(&json);
        assert!(events(&json).iter().any(|e| e["ph"] == "B"));

        let json = render(&ProfileBuilder::new(true, 0.01, "t".into()).finish(1.0));
        assert_eq!(json["traceEvents"], json!([]));
    }
}
