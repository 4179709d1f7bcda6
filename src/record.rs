//! `py-spy record`: sample a running or launched program until it exits, the duration
//! ends or a signal arrives, then write the profile and one summary line.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::{Duration, Instant};

use anyhow::Result;
use rustc_hash::FxHashMap;

use crate::launch::{Exit, Launched};
use crate::output::file::OutputFile;
use crate::output::{self, short_filename, Format};
use crate::process::Process;
use crate::profile::{FrameInfo, FrameKind, ProfileBuilder, ThreadInfo, ThreadKey};
use crate::sampler::{Snapshot, SnapshotOptions};
use crate::sampling::{
    keep_thread, not_python_yet, one_line, sample_all, version_string, watch_launch, LaunchWatch,
    RootChange,
};
use crate::schedule::{Schedule, Wake};
use crate::signals::{StopSignal, StopSignals};
use crate::targets::{Event, Target, Targets};
use crate::walker::Frame;

/// Below this share of the asked rate, the summary warns that sampling fell behind.
const BEHIND_RATIO: f64 = 0.95;

/// What to profile.
#[derive(Debug, Clone)]
pub enum RecordTarget {
    /// A running process.
    Pid(i32),
    /// A program to start: the program and its arguments.
    Command(Vec<String>),
}

/// Options of `py-spy record`.
#[derive(Debug, Clone)]
pub struct RecordOptions {
    /// What to profile.
    pub target: RecordTarget,
    /// Output file; by default `<program>-<timestamp>.<ext>` in the current directory.
    pub output: Option<PathBuf>,
    /// Output format.
    pub format: Format,
    /// Samples per second.
    pub rate: f64,
    /// Wall-clock seconds to record for; until the program exits when `None`.
    pub duration: Option<f64>,
    /// Keep idle threads.
    pub idle: bool,
    /// Keep only the thread holding the GIL.
    pub gil: bool,
    /// A root frame per thread.
    pub threads: bool,
    /// Aggregate by function (its first line) instead of by line.
    pub function: bool,
    /// No line numbers.
    pub nolineno: bool,
    /// Full paths instead of short filenames.
    pub full_filenames: bool,
    /// Do not pause the target.
    pub nonblocking: bool,
    /// Also sample child processes, with a root frame per process.
    pub subprocesses: bool,
}

/// Runs `record`; returns the exit code (the launched program's, in launch mode).
pub fn run(options: RecordOptions) -> Result<u8> {
    let mut signals = StopSignals::install()?;
    let (mut targets, mut launched, title, output) = match &options.target {
        RecordTarget::Pid(pid) => {
            // Attach mode checks everything about the target before creating any file.
            let sampler = crate::sampling::attach(*pid)?;
            crate::sampling::check_pausable(&sampler, options.nonblocking)?;
            let args = sampler.process().command_line().unwrap_or_default();
            let output = OutputFile::create(&output_path(&options, &args)?)?;
            let title = args.join(" ");
            crate::note!(
                "py-spy: recording process {pid} ({}), Python {}, at {} samples/s into {}; \
                 Ctrl-C to stop",
                ellipsize(&title, 60),
                version_string(&sampler),
                options.rate,
                output.path().display()
            );
            let targets = Targets::with_root_sampler(sampler, options.subprocesses);
            (targets, None, title, output)
        }
        RecordTarget::Command(argv) => {
            // The file is created before the program starts: a bad -o must not run it.
            let output = OutputFile::create(&output_path(&options, argv)?)?;
            let child = Launched::spawn(argv)?;
            crate::note!(
                "py-spy: recording `{}` (pid {}) at {} samples/s into {}",
                ellipsize(&argv.join(" "), 60),
                child.pid(),
                options.rate,
                output.path().display()
            );
            let targets = Targets::new(child.pid(), options.subprocesses);
            (targets, Some(child), argv.join(" "), output)
        }
    };

    let mut recording = Recording::new(&options, title);
    if let Some((_, sampler)) = targets.sampling().next() {
        // Attach mode: the root was found before the recording existed.
        if sampler.interpreter().layout.version.free_threaded {
            recording.free_threaded(targets.root(), &version_string(sampler));
        }
    }
    let mut ending = recording.sample(&mut targets, launched.as_mut(), &mut signals);
    if let (Ending::Exited(None), Some(child)) = (&ending, launched.as_mut()) {
        // The sampler can find the program gone a moment before its exit status is in;
        // wait for it, so that the summary and our exit code say how it ended.
        ending = Ending::Exited(exit_soon(child));
    }
    // Sampling is over: let the processes go (held threads wait for us at every signal)
    // before the output, which can take a while.
    let root = targets.root();
    drop(targets);
    let elapsed = recording.elapsed();
    let profile = recording.finish(elapsed);
    let stats = recording.stats;
    let samples = profile.total_samples();
    let path = output.path().to_path_buf();
    // The file's own errors already name the path.
    output.commit(|w| output::write_profile(options.format, &profile, w))?;
    stats.report(&path, samples, &options, elapsed, &ending, root);

    match launched {
        Some(mut child) => {
            let exit = wait_for_exit(&mut child, &mut signals, &ending);
            // When its end was not what ended the recording, the summary could not say it.
            if !matches!(ending, Ending::Exited(Some(_))) && exit != Exit::Code(0) {
                crate::note!("py-spy: the program {exit}");
            }
            Ok(exit.exit_code())
        }
        None => Ok(0),
    }
}

/// Why sampling ended.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Ending {
    /// The program (the root process) exited.
    Exited(Option<Exit>),
    /// The duration was over.
    Duration,
    /// A signal asked us to stop.
    Signal(i32),
    /// The root process `exec`ed a program that is not Python.
    Exec,
}

/// Counters for the summary.
#[derive(Debug, Default)]
struct Stats {
    passes: u64,
    errors: u64,
    late: u64,
    skipped: u64,
    first_pass: Option<Instant>,
    last_pass: Option<Instant>,
    sample_time: Duration,
    longest_sample: Duration,
}

impl Stats {
    fn report(
        &self,
        path: &Path,
        samples: u64,
        options: &RecordOptions,
        elapsed: f64,
        ending: &Ending,
        root: i32,
    ) {
        let rate = options.rate;
        let active = match (self.first_pass, self.last_pass) {
            (Some(first), Some(last)) => (last - first).as_secs_f64(),
            _ => 0.0,
        };
        // n passes span n - 1 intervals.
        let achieved = if active > 0.0 {
            (self.passes.saturating_sub(1)) as f64 / active
        } else {
            0.0
        };
        crate::note!(
            "py-spy: wrote {}: {samples} samples from {} passes in {elapsed:.2} s \
             ({achieved:.1}/s of {rate}/s asked), {} errors",
            path.display(),
            self.passes,
            self.errors
        );
        match ending {
            Ending::Exited(Some(exit)) if !matches!(exit, Exit::Code(0)) => {
                crate::note!("py-spy: the program {exit}");
            }
            // Attach mode: how it ended is known only to its parent.
            Ending::Exited(None) => {
                crate::note!(
                    "py-spy: process {root} has ended (exited or was killed); recording stopped"
                );
            }
            _ => {}
        }
        if *ending == Ending::Exec {
            crate::note!(
                "py-spy: the program stopped running Python (it exec'd another program); \
                 recording stopped"
            );
        }
        if self.passes == 0 {
            crate::note!(
                "py-spy: warning: no samples were taken (the program ended before its \
                 Python interpreter started?)"
            );
            return;
        }
        let mean = self.sample_time / self.passes as u32;
        // The quality of the recording, always: how close to the schedule it stayed and
        // what a sample cost, the figures a user weighs a profile (and --rate) by.
        crate::note!(
            "py-spy: sampling: {} of {} samples late, {} skipped; {:.2} % errors; a sample \
             took {:.0} µs on average, {:.0} µs at most",
            self.late,
            self.passes,
            self.skipped,
            self.errors as f64 * 100.0 / self.passes as f64,
            mean.as_secs_f64() * 1e6,
            self.longest_sample.as_secs_f64() * 1e6
        );
        let behind = active >= 0.5 && achieved < rate * BEHIND_RATIO;
        if behind || self.skipped * 20 > self.passes + self.skipped {
            // Without pausing the target a sample costs about half; already so, only a
            // lower rate helps.
            let hint = if options.nonblocking {
                "Try a lower --rate"
            } else {
                "Try a lower --rate or --nonblocking"
            };
            crate::note!(
                "py-spy: warning: sampling fell behind: {} of {} samples were late and {} \
                 skipped; a sample took {:.0} µs on average, {:.0} µs at most. {hint}",
                self.late,
                self.passes,
                self.skipped,
                mean.as_secs_f64() * 1e6,
                self.longest_sample.as_secs_f64() * 1e6
            );
        }
    }
}

/// A recording in progress: the schedule, the profile being built, and the counters.
struct Recording<'o> {
    options: &'o RecordOptions,
    builder: ProfileBuilder,
    frames: FxHashMap<CodeLine, u32>,
    process_frames: HashMap<i32, u32>,
    /// Root frame of each thread (`--threads`), labelled when the recording ends, with the
    /// name the thread had last: names are read now and then, and a new thread may be
    /// sampled before its name is known.
    thread_frames: HashMap<ThreadKey, (u32, u32)>,
    truncated_frame: Option<u32>,
    /// Processes whose interpreter has no GIL (free-threaded).
    no_gil: Vec<i32>,
    stats: Stats,
    start: Instant,
}

impl<'o> Recording<'o> {
    fn new(options: &'o RecordOptions, title: String) -> Self {
        Recording {
            options,
            builder: ProfileBuilder::new(
                options.format.needs_timeline(),
                1.0 / options.rate,
                title,
            ),
            frames: FxHashMap::default(),
            process_frames: HashMap::new(),
            thread_frames: HashMap::new(),
            truncated_frame: None,
            no_gil: Vec::new(),
            stats: Stats::default(),
            start: Instant::now(),
        }
    }

    fn elapsed(&self) -> f64 {
        self.start.elapsed().as_secs_f64()
    }

    /// The profile so far (the builder is left empty).
    fn finish(&mut self, elapsed: f64) -> crate::profile::Profile {
        let builder = std::mem::take(&mut self.builder);
        let mut profile = builder.finish(elapsed);
        for (frame, thread) in self.thread_frames.values() {
            if let (Some(f), Some(t)) = (
                profile.frames.get_mut(*frame as usize),
                profile.threads.get(*thread as usize),
            ) {
                f.name = t.label();
            }
        }
        profile
    }

    /// Samples until something ends the recording, and says what.
    fn sample(
        &mut self,
        targets: &mut Targets,
        mut launched: Option<&mut Launched>,
        signals: &mut StopSignals,
    ) -> Ending {
        let mut received: Option<StopSignal> = None;
        let mut exited: Option<Exit> = None;
        // A launched program is watched closely until its interpreter is up, so that the
        // first samples see its first Python code.
        if let Some(child) = launched.as_deref_mut() {
            match watch_launch(targets, child, signals) {
                LaunchWatch::Continue(event) => {
                    if let Some(event) = event {
                        self.note(event);
                    }
                }
                LaunchWatch::Signal(signal) => {
                    forward(child, signal);
                    return Ending::Signal(signal.signal);
                }
                LaunchWatch::Exited(exit) => return Ending::Exited(Some(exit)),
            }
            if let Some(note) = not_python_yet(targets, self.options.subprocesses) {
                crate::note!("py-spy: {note}");
            }
        }
        self.start = Instant::now();
        let duration = self.options.duration.map(Duration::from_secs_f64);
        let mut schedule = Schedule::new(self.options.rate, duration);
        self.start = schedule.start();
        let period = schedule.period().as_secs_f64();
        let ending = loop {
            let wake = schedule.wait(|| {
                if let Some(signal) = signals.pending().into_iter().next() {
                    received = Some(signal);
                    return true;
                }
                if let Some(child) = launched.as_deref_mut() {
                    exited = child.poll();
                    return exited.is_some();
                }
                false
            });
            let ticks = match wake {
                Wake::Sample { ticks } => ticks,
                Wake::Finished => break Ending::Duration,
                Wake::Stopped => {
                    if let Some(signal) = received {
                        if let Some(child) = launched.as_deref_mut() {
                            forward(child, signal);
                        }
                        break Ending::Signal(signal.signal);
                    }
                    break Ending::Exited(exited);
                }
            };
            for event in targets.refresh() {
                self.note(event);
            }
            if !targets.any_sampling() {
                continue;
            }
            let began = Instant::now();
            let time = (began - self.start).as_secs_f64();
            let weight = ticks as f64 * period;
            let options = SnapshotOptions {
                locals: false,
                nonblocking: self.options.nonblocking,
                thread_names: self.options.threads || self.options.format.needs_timeline(),
                gil: self.options.gil,
                skip_idle: !self.options.idle && !self.options.gil,
                hold: true,
            };
            let mut errors = 0;
            let change = sample_all(
                targets,
                options,
                self.options.subprocesses,
                &mut errors,
                |target, snapshot| self.add(target, snapshot, time, weight),
            );
            self.stats.errors += errors;
            let took = began.elapsed();
            self.stats.passes += 1;
            self.stats.sample_time += took;
            self.stats.longest_sample = self.stats.longest_sample.max(took);
            self.stats.first_pass.get_or_insert(began);
            self.stats.last_pass = Some(began);
            match change {
                Some(RootChange::Exited) => break Ending::Exited(None),
                Some(RootChange::Exec) => break Ending::Exec,
                None => {}
            }
        };
        self.stats.late = schedule.late();
        self.stats.skipped = schedule.skipped();
        ending
    }

    /// Reports a process found or skipped.
    fn note(&mut self, event: Event) {
        match event {
            Event::Attached {
                pid,
                version,
                free_threaded,
            } => {
                crate::note!("py-spy: sampling process {pid} (Python {version})");
                if free_threaded {
                    self.free_threaded(pid, &version);
                }
            }
            Event::Skipped { pid, why } => {
                crate::note!("py-spy: not sampling process {pid}: {why}");
            }
        }
    }

    /// Notes that `pid` has no GIL: `--gil` cannot apply to it, and says so.
    fn free_threaded(&mut self, pid: i32, version: &str) {
        if self.options.gil {
            crate::note!(
                "py-spy: warning: --gil: process {pid} runs free-threaded Python {version}, \
                 which has no GIL; recording all its active threads instead"
            );
            self.no_gil.push(pid);
        }
    }

    /// Adds the kept threads of one process's snapshot to the profile.
    fn add(&mut self, target: &Target, snapshot: &Snapshot, time: f64, weight: f64) {
        let use_gil = self.options.gil && !self.no_gil.contains(&target.pid);
        let mut stack = self.builder.take_scratch();
        for thread in &snapshot.threads {
            if thread.error.is_some() {
                self.stats.errors += 1;
                continue;
            }
            if !keep_thread(thread, use_gil, self.options.idle) || thread.frames.is_empty() {
                continue;
            }
            let key = ThreadKey {
                pid: target.pid,
                python_thread_id: thread.python_thread_id,
                os_thread_id: thread.os_thread_id,
            };
            let index = self.builder.thread_id(key, || ThreadInfo {
                pid: target.pid,
                command_line: target.command_line.clone(),
                os_thread_id: thread.os_thread_id,
                python_thread_id: thread.python_thread_id,
                name: thread.name.clone(),
            });
            self.builder.set_thread_name(index, thread.name.as_deref());
            stack.clear();
            if self.options.subprocesses {
                stack.push(self.process_frame(target));
            }
            if self.options.threads {
                stack.push(self.thread_frame(key, index));
            }
            if thread.truncated {
                let id = self.truncated_frame();
                stack.push(id);
            }
            for frame in thread.frames.iter().rev() {
                stack.push(self.python_frame(frame));
            }
            self.builder.add(time, weight, index, &stack);
        }
        self.builder.give_scratch(stack);
    }

    fn python_frame(&mut self, frame: &Frame) -> u32 {
        let line = if self.options.nolineno {
            None
        } else if self.options.function {
            Some(frame.first_line)
        } else {
            frame.line
        };
        let key = CodeLine {
            name: frame.name.clone(),
            filename: frame.filename.clone(),
            line,
        };
        if let Some(id) = self.frames.get(&key) {
            return *id;
        }
        let file = if self.options.full_filenames {
            frame.filename.to_string()
        } else {
            short_filename(&frame.filename).to_owned()
        };
        let id = self.builder.frame_id(&FrameInfo {
            name: frame.name.to_string(),
            file: Some(file),
            line,
            kind: FrameKind::Python,
        });
        self.frames.insert(key, id);
        id
    }

    fn process_frame(&mut self, target: &Target) -> u32 {
        if let Some(id) = self.process_frames.get(&target.pid) {
            return *id;
        }
        let id = self.builder.frame_id(&FrameInfo {
            name: format!(
                "process {}: \"{}\"",
                target.pid,
                one_line(&target.command_line)
            ),
            file: None,
            line: None,
            kind: FrameKind::Process,
        });
        self.process_frames.insert(target.pid, id);
        id
    }

    fn thread_frame(&mut self, key: ThreadKey, index: u32) -> u32 {
        if let Some((frame, _)) = self.thread_frames.get(&key) {
            return *frame;
        }
        // A placeholder unique to the thread; `finish` puts the real label in.
        let frame = self.builder.frame_id(&FrameInfo {
            name: format!("thread {key:?}"),
            file: None,
            line: None,
            kind: FrameKind::Thread,
        });
        self.thread_frames.insert(key, (frame, index));
        frame
    }

    fn truncated_frame(&mut self) -> u32 {
        if let Some(id) = self.truncated_frame {
            return id;
        }
        let id = self.builder.frame_id(&FrameInfo {
            name: format!(
                "(stack truncated: more than {} frames)",
                crate::walker::MAX_FRAMES
            ),
            file: None,
            line: None,
            kind: FrameKind::Truncated,
        });
        self.truncated_frame = Some(id);
        id
    }
}

/// A Python frame as the walker's caches hold it: the same code object's strings are the
/// same `Rc`s, so hashing and comparing pointers is exact and cheap. The key keeps the
/// strings alive, so a pointer is never reused for another string while it is a key.
#[derive(Debug, Clone)]
struct CodeLine {
    name: Rc<str>,
    filename: Rc<str>,
    line: Option<i32>,
}

impl PartialEq for CodeLine {
    fn eq(&self, other: &Self) -> bool {
        Rc::ptr_eq(&self.name, &other.name)
            && Rc::ptr_eq(&self.filename, &other.filename)
            && self.line == other.line
    }
}

impl Eq for CodeLine {}

impl Hash for CodeLine {
    fn hash<H: Hasher>(&self, state: &mut H) {
        (Rc::as_ptr(&self.name) as *const u8 as usize).hash(state);
        (Rc::as_ptr(&self.filename) as *const u8 as usize).hash(state);
        self.line.hash(state);
    }
}

/// Passes a stop signal on to the launched program, unless the terminal already sent it
/// to the whole foreground process group (Ctrl-C).
fn forward(child: &Launched, signal: StopSignal) {
    if !signal.from_kernel {
        child.signal(signal.signal);
    }
}

/// After the output is written in launch mode: waits for the program, passing on further
/// signals, and returns how it ended.
fn wait_for_exit(child: &mut Launched, signals: &mut StopSignals, ending: &Ending) -> Exit {
    if let Ending::Exited(Some(exit)) = ending {
        return *exit;
    }
    if let Some(exit) = child.poll() {
        return exit;
    }
    if matches!(ending, Ending::Duration | Ending::Exec) {
        crate::note!(
            "py-spy: recording finished; waiting for process {} to exit (Ctrl-C to interrupt it)",
            child.pid()
        );
    }
    loop {
        for signal in signals.pending() {
            forward(child, signal);
        }
        if let Some(exit) = child.poll() {
            return exit;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// How a launched program that the sampler found gone ended: its status arrives within
/// moments (the last of its threads are still exiting), but is not waited for forever.
fn exit_soon(child: &mut Launched) -> Option<Exit> {
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        if let Some(exit) = child.poll() {
            return Some(exit);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// `text` on one line, cut to `max` characters with an ellipsis.
fn ellipsize(text: &str, max: usize) -> String {
    let line = one_line(text);
    if line.chars().count() <= max {
        return line;
    }
    let mut out: String = line.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// The output path: `-o`, or `<program>-<timestamp>.<ext>` in the current directory,
/// with a counter added when that name is taken.
fn output_path(options: &RecordOptions, args: &[String]) -> Result<PathBuf> {
    if let Some(path) = &options.output {
        return Ok(path.clone());
    }
    let stem = format!("{}-{}", program_name(args), timestamp());
    let ext = options.format.extension();
    let mut path = PathBuf::from(format!("{stem}.{ext}"));
    let mut n = 2;
    while path.exists() {
        path = PathBuf::from(format!("{stem}-{n}.{ext}"));
        n += 1;
    }
    Ok(path)
}

/// What to call a profile of `args`: the script or module for `python app.py` and
/// `python -m pkg`, else the program's file name.
fn program_name(args: &[String]) -> String {
    let base = |s: &str| -> String {
        Path::new(s)
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_else(|| "python".to_owned())
    };
    let Some(program) = args.first() else {
        return "python".to_owned();
    };
    let program_base = base(program);
    let mut name = program_base.clone();
    if program_base.starts_with("python") {
        let mut rest = args[1..].iter();
        while let Some(arg) = rest.next() {
            if arg == "-m" {
                if let Some(module) = rest.next() {
                    name = module.clone();
                }
                break;
            }
            if arg == "-c" {
                break;
            }
            if !arg.starts_with('-') {
                name = Path::new(arg)
                    .file_stem()
                    .map(|f| f.to_string_lossy().into_owned())
                    .unwrap_or(name);
                break;
            }
        }
    }
    // Keep names portable: no separators or odd characters from a module path.
    let clean: String = name
        .chars()
        .map(|c| {
            if c.is_alphanumeric() || "._-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    if clean.is_empty() || clean.starts_with('.') {
        format!("py-spy{clean}")
    } else {
        clean
    }
}

/// Local time as `YYYYmmddTHHMMSS`.
fn timestamp() -> String {
    // SAFETY: time(NULL) and localtime_r into a zeroed struct we own.
    unsafe {
        let now = libc::time(std::ptr::null_mut());
        let mut tm: libc::tm = std::mem::zeroed();
        if libc::localtime_r(&now, &mut tm).is_null() {
            return now.to_string();
        }
        format!(
            "{:04}{:02}{:02}T{:02}{:02}{:02}",
            tm.tm_year + 1900,
            tm.tm_mon + 1,
            tm.tm_mday,
            tm.tm_hour,
            tm.tm_min,
            tm.tm_sec
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn program_names() {
        assert_eq!(program_name(&args("python app.py")), "app");
        assert_eq!(
            program_name(&args("/usr/bin/python3.12 -u /srv/x/app.py -v")),
            "app"
        );
        assert_eq!(
            program_name(&args("python3 -m http.server 8000")),
            "http.server"
        );
        assert_eq!(program_name(&args("python -c pass")), "python");
        assert_eq!(
            program_name(&args("/usr/local/bin/gunicorn app:wsgi")),
            "gunicorn"
        );
        assert_eq!(program_name(&[]), "python");
    }

    #[test]
    fn timestamps_have_a_fixed_shape() {
        let t = timestamp();
        assert_eq!(t.len(), 15, "{t}");
        assert_eq!(&t[8..9], "T");
    }

    #[test]
    fn code_lines_compare_by_pointer() {
        let name: Rc<str> = Rc::from("f");
        let file: Rc<str> = Rc::from("a.py");
        let a = CodeLine {
            name: name.clone(),
            filename: file.clone(),
            line: Some(1),
        };
        let b = CodeLine {
            name: Rc::from("f"),
            filename: file,
            line: Some(1),
        };
        assert_ne!(a, b);
        assert_eq!(a.clone(), a);
    }
}
