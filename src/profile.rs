//! What a recording collects: distinct frames and stacks, interned once, with a count per
//! stack and, for the formats that show time, every sample in order.
//!
//! The output formats read a finished [`Profile`]; the sampler feeds a [`ProfileBuilder`].

use std::collections::HashMap;

use rustc_hash::FxHashMap;

/// What a frame stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FrameKind {
    /// A Python function.
    Python,
    /// The root frame naming a process (`--subprocesses`).
    Process,
    /// The root frame naming a thread (`--threads`).
    Thread,
    /// Stands in for the outermost frames of a stack deeper than the walker follows.
    Truncated,
}

/// One distinct frame as shown to the user.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FrameInfo {
    /// Function name (qualified on 3.11+), or the whole label of a root frame.
    pub name: String,
    /// Filename as displayed (short unless `--full-filenames`); `None` for root frames.
    pub file: Option<String>,
    /// The line (or the function's first line with `--function`); `None` with
    /// `--nolineno`, when unknown, and for root frames.
    pub line: Option<i32>,
    /// What the frame stands for.
    pub kind: FrameKind,
}

impl FrameInfo {
    /// The label used by every format: `function (file:line)`, `function (file)` without a
    /// line, or just the name for root frames.
    pub fn label(&self) -> String {
        match (&self.file, self.line) {
            (Some(file), Some(line)) => format!("{} ({file}:{line})", self.name),
            (Some(file), None) => format!("{} ({file})", self.name),
            (None, _) => self.name.clone(),
        }
    }
}

/// One sampled thread.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThreadInfo {
    /// The process it belongs to.
    pub pid: i32,
    /// The process's command line, joined by spaces.
    pub command_line: String,
    /// The OS thread id, when known.
    pub os_thread_id: Option<i64>,
    /// `threading.get_ident()`.
    pub python_thread_id: u64,
    /// The name `threading` gave it, as last seen.
    pub name: Option<String>,
}

impl ThreadInfo {
    /// A short human description: `thread 1234 "MainThread"`.
    pub fn label(&self) -> String {
        let id = match self.os_thread_id {
            Some(tid) => tid.to_string(),
            None => format!("{:#x}", self.python_thread_id),
        };
        match &self.name {
            Some(name) => format!("thread {id} \"{name}\""),
            None => format!("thread {id}"),
        }
    }
}

/// One stack of one thread at one sampling pass.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    /// Seconds since the recording started.
    pub time: f64,
    /// Seconds of run time this sample stands for (the time since the previous pass).
    pub weight: f64,
    /// Index into [`Profile::threads`].
    pub thread: u32,
    /// Index into [`Profile::stacks`].
    pub stack: u32,
}

/// A finished recording.
#[derive(Debug, Clone, Default)]
pub struct Profile {
    /// Distinct frames; stacks refer to them by index.
    pub frames: Vec<FrameInfo>,
    /// Distinct stacks, root first, as indices into `frames`. Never empty.
    pub stacks: Vec<Vec<u32>>,
    /// Samples per stack, parallel to `stacks`.
    pub counts: Vec<u64>,
    /// Every thread that has at least one sample.
    pub threads: Vec<ThreadInfo>,
    /// Every sample in time order; empty unless the builder kept the timeline.
    pub samples: Vec<Sample>,
    /// Wall-clock seconds from the start of the recording to its end.
    pub duration: f64,
    /// The asked sampling interval in seconds (1 / rate).
    pub interval: f64,
    /// What was profiled (the command line), for titles.
    pub title: String,
}

impl Profile {
    /// Total samples (the sum of `counts`).
    pub fn total_samples(&self) -> u64 {
        self.counts.iter().sum()
    }
}

/// Identifies a thread across passes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ThreadKey {
    /// Process id.
    pub pid: i32,
    /// `threading.get_ident()`; unique among the live threads of a process.
    pub python_thread_id: u64,
    /// The OS thread id, when known: tells apart two threads that reused one ident.
    pub os_thread_id: Option<i64>,
}

/// Accumulates samples into a [`Profile`], interning frames and stacks as they come.
#[derive(Debug, Default)]
pub struct ProfileBuilder {
    profile: Profile,
    keep_timeline: bool,
    frame_ids: HashMap<FrameInfo, u32>,
    /// Hashed once per sample (a whole stack of ids): the fast hash matters here.
    stack_ids: FxHashMap<Vec<u32>, u32>,
    thread_ids: HashMap<ThreadKey, u32>,
    scratch: Vec<u32>,
}

impl ProfileBuilder {
    /// A builder; `keep_timeline` keeps every sample in order (speedscope, Chrome trace).
    pub fn new(keep_timeline: bool, interval: f64, title: String) -> Self {
        ProfileBuilder {
            profile: Profile {
                interval,
                title,
                ..Profile::default()
            },
            keep_timeline,
            ..ProfileBuilder::default()
        }
    }

    /// The id of `frame`, interning it on first sight.
    pub fn frame_id(&mut self, frame: &FrameInfo) -> u32 {
        if let Some(id) = self.frame_ids.get(frame) {
            return *id;
        }
        let id = self.profile.frames.len() as u32;
        self.profile.frames.push(frame.clone());
        self.frame_ids.insert(frame.clone(), id);
        id
    }

    /// The index of the thread `key`, recording or refreshing what we know of it.
    pub fn thread_id(&mut self, key: ThreadKey, info: impl FnOnce() -> ThreadInfo) -> u32 {
        if let Some(id) = self.thread_ids.get(&key) {
            return *id;
        }
        let id = self.profile.threads.len() as u32;
        self.profile.threads.push(info());
        self.thread_ids.insert(key, id);
        id
    }

    /// Renames a known thread (threads may be renamed while they run).
    pub fn set_thread_name(&mut self, thread: u32, name: Option<&str>) {
        if let Some(t) = self.profile.threads.get_mut(thread as usize) {
            if name.is_some() && t.name.as_deref() != name {
                t.name = name.map(str::to_owned);
            }
        }
    }

    /// Adds one sample of `thread` whose stack is `frames` (frame ids, root first).
    /// Empty stacks are not samples and are ignored.
    pub fn add(&mut self, time: f64, weight: f64, thread: u32, frames: &[u32]) {
        if frames.is_empty() {
            return;
        }
        let stack = match self.stack_ids.get(frames) {
            Some(id) => *id,
            None => {
                let id = self.profile.stacks.len() as u32;
                self.profile.stacks.push(frames.to_vec());
                self.profile.counts.push(0);
                self.stack_ids.insert(frames.to_vec(), id);
                id
            }
        };
        self.profile.counts[stack as usize] += 1;
        if self.keep_timeline {
            self.profile.samples.push(Sample {
                time,
                weight,
                thread,
                stack,
            });
        }
    }

    /// A reusable buffer for building a stack of frame ids without allocating.
    pub fn take_scratch(&mut self) -> Vec<u32> {
        let mut v = std::mem::take(&mut self.scratch);
        v.clear();
        v
    }

    /// Returns the buffer from [`ProfileBuilder::take_scratch`].
    pub fn give_scratch(&mut self, v: Vec<u32>) {
        self.scratch = v;
    }

    /// Samples so far.
    pub fn total_samples(&self) -> u64 {
        self.profile.total_samples()
    }

    /// The finished profile, `duration` seconds long.
    pub fn finish(mut self, duration: f64) -> Profile {
        self.profile.duration = duration;
        self.profile
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn py(name: &str, line: Option<i32>) -> FrameInfo {
        FrameInfo {
            name: name.into(),
            file: Some("app.py".into()),
            line,
            kind: FrameKind::Python,
        }
    }

    #[test]
    fn labels() {
        assert_eq!(py("main", Some(3)).label(), "main (app.py:3)");
        assert_eq!(py("main", None).label(), "main (app.py)");
        let root = FrameInfo {
            name: "process 7: \"python app.py\"".into(),
            file: None,
            line: None,
            kind: FrameKind::Process,
        };
        assert_eq!(root.label(), "process 7: \"python app.py\"");
    }

    #[test]
    fn interns_frames_and_stacks() {
        let mut b = ProfileBuilder::new(true, 0.01, "t".into());
        let main = b.frame_id(&py("main", Some(3)));
        let work = b.frame_id(&py("work", Some(9)));
        assert_eq!(b.frame_id(&py("main", Some(3))), main);
        let key = ThreadKey {
            pid: 1,
            python_thread_id: 5,
            os_thread_id: Some(1),
        };
        let t = b.thread_id(key, || ThreadInfo {
            pid: 1,
            command_line: "python app.py".into(),
            os_thread_id: Some(1),
            python_thread_id: 5,
            name: None,
        });
        b.add(0.0, 0.01, t, &[main, work]);
        b.add(0.01, 0.01, t, &[main, work]);
        b.add(0.02, 0.01, t, &[main]);
        b.add(0.03, 0.01, t, &[]);
        let p = b.finish(0.04);
        assert_eq!(p.stacks, vec![vec![main, work], vec![main]]);
        assert_eq!(p.counts, vec![2, 1]);
        assert_eq!(p.total_samples(), 3);
        assert_eq!(p.samples.len(), 3);
        assert_eq!(p.samples[2].stack, 1);
    }
}
