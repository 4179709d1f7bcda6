//! `py-spy top`: a live view of the functions taking the most time, refreshed every
//! `--delay` seconds: full-screen when stdout is a terminal, else the same table as plain
//! text, one block per refresh.
//!
//! The loop samples on the [`Schedule`] and, between samples, looks at the stop signals,
//! the launched program, the keys and the refresh deadline. [`stats`] counts, [`view`]
//! turns the counts into lines, [`terminal`] owns the screen.

pub mod stats;
pub mod terminal;
pub mod view;

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use anyhow::Result;

use crate::launch::{Exit, Launched};
use crate::process::{LinuxProcess, Process};
use crate::record::RecordTarget;
use crate::sampler::{Sampler, Snapshot, SnapshotOptions};
use crate::sampling::{
    keep_thread, not_python_yet, one_line, sample_all, version_string, watch_launch, LaunchWatch,
    RootChange,
};
use crate::schedule::{Schedule, Wake};
use crate::signals::{StopSignal, StopSignals};
use crate::targets::{Event, Targets};

use stats::{Grouping, SortBy, Stats};
use terminal::{Input, Key, Screen};
use view::{Header, Layout};

/// How long a launched program gets to exit after `top` asks it to (when quitting).
const EXIT_GRACE: Duration = Duration::from_secs(2);
/// Below this share of the asked rate, the header warns that sampling fell behind.
const BEHIND_RATIO: f64 = 0.95;

/// Options of `py-spy top`.
#[derive(Debug, Clone)]
pub struct TopOptions {
    /// What to watch.
    pub target: RecordTarget,
    /// Samples per second.
    pub rate: f64,
    /// Seconds between refreshes.
    pub delay: f64,
    /// Keep idle threads.
    pub idle: bool,
    /// Keep only the thread holding the GIL.
    pub gil: bool,
    /// Also sample child processes.
    pub subprocesses: bool,
    /// Do not pause the target.
    pub nonblocking: bool,
    /// Full paths instead of short filenames.
    pub full_filenames: bool,
}

/// Why sampling ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ending {
    /// The root process exited (with this status, when it is our child).
    Exited(Option<Exit>),
    /// The root process `exec`ed a program that is not Python.
    Exec,
    /// A stop signal.
    Signal(StopSignal),
    /// `q` or Ctrl-C in the view.
    Quit,
}

/// Runs `top`; returns the exit code (the launched program's, in launch mode).
pub fn run(options: TopOptions) -> Result<u8> {
    let mut signals = StopSignals::install()?;
    let interactive = std::io::stdout().is_terminal();
    let mut session = Session::new(&options);
    let (mut targets, mut launched) = match &options.target {
        RecordTarget::Pid(pid) => {
            let sampler = crate::sampling::attach(*pid)?;
            crate::sampling::check_pausable(&sampler, options.nonblocking)?;
            session.header.title = sampler
                .process()
                .command_line()
                .unwrap_or_default()
                .join(" ");
            session.attached(*pid, &version_string(&sampler), free_threaded(&sampler));
            (
                Targets::with_root_sampler(sampler, options.subprocesses),
                None,
            )
        }
        RecordTarget::Command(argv) => {
            let child = if interactive {
                Launched::spawn_detached_io(argv)?
            } else {
                Launched::spawn(argv)?
            };
            session.header.title = argv.join(" ");
            (Targets::new(child.pid(), options.subprocesses), Some(child))
        }
    };
    session.header.title = one_line(&session.header.title);
    session.header.pid = targets.root();

    // A launched program is watched closely until its interpreter is up, so that the
    // first samples see its first Python code. Before the screen: notes go to stderr.
    let mut early = None;
    if let Some(child) = launched.as_mut() {
        early = session.watch_launch(&mut targets, child, &mut signals);
    }
    session.flush_notes(interactive);

    let (ending, screen) = match early {
        Some(ending) => (ending, None),
        None if interactive => {
            let mut screen = Screen::enter()?;
            let ending = session.run(
                &mut targets,
                launched.as_mut(),
                &mut signals,
                Some(&mut screen),
            )?;
            (ending, Some(screen))
        }
        None => (
            session.run(&mut targets, launched.as_mut(), &mut signals, None)?,
            None,
        ),
    };
    // Sampling is over: let the processes go (held threads wait for us at every signal)
    // before waiting for a key.
    let root = targets.root();
    drop(targets);
    if let Some(mut screen) = screen {
        if let Ending::Exited(_) | Ending::Exec = ending {
            // Keep the last view until a key (or a stop signal).
            session.header.status = Some(format!(
                "{}; press any key to quit",
                describe(&ending, root)
            ));
            session.draw(Some(&mut screen))?;
            loop {
                if !signals.pending().is_empty() {
                    break;
                }
                match screen.input(Duration::from_millis(50))? {
                    Some(Input::Key(_) | Input::HungUp) => break,
                    Some(Input::Resize) => session.draw(Some(&mut screen))?,
                    None => {}
                }
            }
        }
        drop(screen);
    } else if matches!(ending, Ending::Exited(_) | Ending::Exec) {
        session.header.status = Some(describe(&ending, root));
        session.draw(None)?;
    }
    if matches!(ending, Ending::Exited(_) | Ending::Exec) {
        crate::note!("py-spy: {}", describe(&ending, root));
    }

    let Some(mut child) = launched else {
        return Ok(0);
    };
    if let Ending::Exited(Some(exit)) = ending {
        return Ok(exit.exit_code());
    }
    Ok(stop_child(&mut child, &ending, &mut signals).exit_code())
}

/// Ends the launched program when `top` ends first: the stop signal it did not already
/// get (SIGINT for `q`), then SIGKILL if it is still running after a grace period.
fn stop_child(child: &mut Launched, ending: &Ending, signals: &mut StopSignals) -> Exit {
    match ending {
        Ending::Signal(signal) if !signal.from_kernel => child.signal(signal.signal),
        Ending::Signal(_) => {}
        _ => child.signal(libc::SIGINT),
    }
    let deadline = Instant::now() + EXIT_GRACE;
    loop {
        for signal in signals.pending() {
            if !signal.from_kernel {
                child.signal(signal.signal);
            }
        }
        if let Some(exit) = child.poll() {
            return exit;
        }
        if Instant::now() >= deadline {
            child.signal(libc::SIGKILL);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn describe(ending: &Ending, pid: i32) -> String {
    match ending {
        Ending::Exited(Some(exit)) => format!("process {pid} {exit}"),
        Ending::Exited(None) => format!("process {pid} exited"),
        Ending::Exec => format!("process {pid} stopped running Python (it exec'd another program)"),
        Ending::Signal(_) | Ending::Quit => "stopped".to_owned(),
    }
}

/// One `top` run: the counts, the header, the display state.
struct Session<'o> {
    options: &'o TopOptions,
    stats: Stats,
    /// The counts shown while paused.
    frozen: Option<Stats>,
    header: Header,
    sort: SortBy,
    grouping: Grouping,
    help: bool,
    /// Processes whose interpreter has no GIL (free-threaded).
    no_gil: Vec<i32>,
    /// Notes not yet shown (plain mode prints them on stderr).
    pending_notes: Vec<String>,
    window: Window,
    errors: u64,
}

/// What happened since the last refresh, for the header's rates and shares.
#[derive(Debug, Clone, Copy)]
struct Window {
    start: Instant,
    passes: u64,
    gil: u64,
    active: u64,
    /// The schedule's skipped slots when the interval began.
    skipped_before: u64,
    /// Time spent taking the passes, and the longest one.
    sample_time: Duration,
    longest_sample: Duration,
}

impl Window {
    fn new(skipped_before: u64) -> Window {
        Window {
            start: Instant::now(),
            passes: 0,
            gil: 0,
            active: 0,
            skipped_before,
            sample_time: Duration::ZERO,
            longest_sample: Duration::ZERO,
        }
    }
}

impl<'o> Session<'o> {
    fn new(options: &'o TopOptions) -> Session<'o> {
        Session {
            options,
            stats: Stats::new(),
            frozen: None,
            header: Header {
                asked_rate: options.rate,
                ..Header::default()
            },
            sort: SortBy::OwnTime,
            grouping: Grouping::ByLine,
            help: false,
            no_gil: Vec::new(),
            pending_notes: Vec::new(),
            window: Window::new(0),
            errors: 0,
        }
    }

    fn note(&mut self, text: String) {
        self.header.notes.push(text.clone());
        if self.header.notes.len() > 4 {
            self.header.notes.remove(0);
        }
        self.pending_notes.push(text);
    }

    /// In plain mode notes go to stderr as they come; on the screen the header shows the
    /// newest.
    fn flush_notes(&mut self, interactive: bool) {
        let notes = std::mem::take(&mut self.pending_notes);
        if !interactive {
            for note in notes {
                crate::note!("py-spy: {note}");
            }
        }
    }

    fn attached(&mut self, pid: i32, version: &str, free_threaded: bool) {
        if pid == self.header.pid || self.header.version.is_none() {
            self.header.version = Some(version.to_owned());
        }
        if free_threaded && self.options.gil {
            self.no_gil.push(pid);
            self.header.warnings.push(format!(
                "--gil: process {pid} runs free-threaded Python {version}, which has no GIL; \
                 showing all its active threads"
            ));
        }
    }

    fn event(&mut self, event: Event) {
        match event {
            Event::Attached {
                pid,
                version,
                free_threaded,
            } => {
                self.note(format!("sampling process {pid} (Python {version})"));
                self.attached(pid, &version, free_threaded);
            }
            Event::Skipped { pid, why } => self.note(format!("not sampling process {pid}: {why}")),
        }
    }

    /// Watches a launched program every millisecond for up to a second, until its
    /// interpreter is found. Returns an ending if the program ended or a signal came.
    fn watch_launch(
        &mut self,
        targets: &mut Targets,
        child: &mut Launched,
        signals: &mut StopSignals,
    ) -> Option<Ending> {
        match watch_launch(targets, child, signals) {
            LaunchWatch::Continue(event) => {
                if let Some(event) = event {
                    self.event(event);
                }
            }
            LaunchWatch::Signal(signal) => return Some(Ending::Signal(signal)),
            LaunchWatch::Exited(exit) => return Some(Ending::Exited(Some(exit))),
        }
        if let Some(note) = not_python_yet(targets, self.options.subprocesses) {
            self.note(note);
        }
        None
    }

    /// Samples and shows until something ends it.
    fn run(
        &mut self,
        targets: &mut Targets,
        mut launched: Option<&mut Launched>,
        signals: &mut StopSignals,
        mut screen: Option<&mut Screen>,
    ) -> Result<Ending> {
        let delay = Duration::from_secs_f64(self.options.delay);
        let mut schedule = Schedule::new(self.options.rate, None);
        let period = schedule.period().as_secs_f64();
        let mut next_refresh = schedule.start() + delay;
        self.window = Window::new(0);
        if screen.is_some() {
            self.draw(screen.as_deref_mut())?;
        }
        loop {
            let mut received = None;
            let mut exited = None;
            let mut input = false;
            let wake = schedule.wait(|| {
                if let Some(signal) = signals.pending().into_iter().next() {
                    received = Some(signal);
                    return true;
                }
                if let Some(child) = launched.as_deref_mut() {
                    exited = child.poll();
                    if exited.is_some() {
                        return true;
                    }
                }
                if screen.as_deref().is_some_and(Screen::ready) {
                    input = true;
                    return true;
                }
                Instant::now() >= next_refresh
            });
            if let Wake::Stopped = wake {
                // Woken early (input, a refresh) the wait may not have slept at all, and it
                // is while it sleeps that the held threads' reports are taken: a stream of
                // wakeups would hold the program's signals up.
                crate::process::service();
            }
            match wake {
                Wake::Sample { ticks } => {
                    if let Some(ending) = self.sample(targets, ticks as f64 * period) {
                        self.refresh_header(targets, schedule.skipped());
                        return Ok(ending);
                    }
                    continue;
                }
                Wake::Finished => unreachable!("top samples without a duration"),
                Wake::Stopped => {}
            }
            if let Some(signal) = received {
                return Ok(Ending::Signal(signal));
            }
            if let Some(exit) = exited {
                self.refresh_header(targets, schedule.skipped());
                return Ok(Ending::Exited(Some(exit)));
            }
            let mut redraw = false;
            if input {
                if let Some(screen) = screen.as_deref_mut() {
                    while let Some(input) = screen.input(Duration::ZERO)? {
                        match input {
                            Input::Resize => redraw = true,
                            // As if the kernel had sent SIGHUP: the program got it (or
                            // will); we stop, and let it go.
                            Input::HungUp => {
                                return Ok(Ending::Signal(StopSignal {
                                    signal: libc::SIGHUP,
                                    from_kernel: true,
                                }))
                            }
                            Input::Key(key) => {
                                if self.key(key) {
                                    return Ok(Ending::Quit);
                                }
                                redraw = true;
                            }
                        }
                    }
                }
            }
            let now = Instant::now();
            if now >= next_refresh {
                self.refresh_header(targets, schedule.skipped());
                next_refresh += delay;
                if next_refresh <= now {
                    next_refresh = now + delay;
                }
                redraw = true;
            }
            if redraw {
                self.draw(screen.as_deref_mut())?;
            }
        }
    }

    /// Acts on a key; true to quit.
    fn key(&mut self, key: Key) -> bool {
        if self.help {
            // Any key closes the help (q still quits).
            self.help = false;
            return matches!(key, Key::Char('q' | 'Q') | Key::Interrupt);
        }
        match key {
            Key::Interrupt | Key::Char('q' | 'Q') => return true,
            Key::Char(c @ '1'..='4') => {
                if let Some(sort) = SortBy::from_key(c) {
                    self.sort = sort;
                }
            }
            Key::Char('l' | 'L') => {
                self.grouping = match self.grouping {
                    Grouping::ByLine => Grouping::ByFunction,
                    Grouping::ByFunction => Grouping::ByLine,
                }
            }
            Key::Char('r' | 'R') => {
                self.stats.reset();
                self.errors = 0;
                self.header.samples = 0;
                if self.frozen.is_some() {
                    self.frozen = Some(Stats::new());
                }
            }
            Key::Char(' ') => {
                self.frozen = match self.frozen {
                    Some(_) => None,
                    None => Some(self.stats.clone()),
                }
            }
            Key::Char('?') => self.help = true,
            _ => {}
        }
        false
    }

    /// Takes one sample of every process; returns an ending if the root went away.
    fn sample(&mut self, targets: &mut Targets, weight: f64) -> Option<Ending> {
        for event in targets.refresh() {
            self.event(event);
        }
        if !targets.any_sampling() {
            return None;
        }
        let mut gil = false;
        let mut active = false;
        let mut threads = 0;
        self.stats.add_pass();
        let options = SnapshotOptions {
            locals: false,
            nonblocking: self.options.nonblocking,
            thread_names: false,
            gil: true,
            skip_idle: !self.options.idle && !self.options.gil,
            hold: true,
        };
        let mut errors = 0;
        let started = Instant::now();
        let change = sample_all(
            targets,
            options,
            self.options.subprocesses,
            &mut errors,
            |target, snapshot| {
                threads += snapshot.threads.len();
                gil |= snapshot.threads.iter().any(|t| t.owns_gil);
                active |= snapshot.threads.iter().any(|t| t.active);
                self.add(target.pid, snapshot, weight);
            },
        );
        self.errors += errors;
        let took = started.elapsed();
        self.window.sample_time += took;
        self.window.longest_sample = self.window.longest_sample.max(took);
        self.window.passes += 1;
        self.window.gil += u64::from(gil);
        self.window.active += u64::from(active);
        self.header.threads = threads;
        match change {
            Some(RootChange::Exited) => Some(Ending::Exited(None)),
            Some(RootChange::Exec) => Some(Ending::Exec),
            None => None,
        }
    }

    /// Counts the kept threads of one process's snapshot.
    fn add(&mut self, pid: i32, snapshot: &Snapshot, weight: f64) {
        let use_gil = self.options.gil && !self.no_gil.contains(&pid);
        for thread in &snapshot.threads {
            if thread.error.is_some() {
                self.errors += 1;
                continue;
            }
            if keep_thread(thread, use_gil, self.options.idle) {
                self.stats.add_stack(&thread.frames, weight);
            }
        }
    }

    /// Updates the header from the last interval and starts the next one.
    fn refresh_header(&mut self, targets: &Targets, skipped: u64) {
        let window = self.window;
        let elapsed = window.start.elapsed().as_secs_f64();
        let percent = |n: u64| (window.passes > 0).then(|| n as f64 * 100.0 / window.passes as f64);
        self.header.gil_percent = percent(window.gil);
        self.header.active_percent = percent(window.active);
        let rate = (elapsed > 0.0).then(|| window.passes as f64 / elapsed);
        self.header.rate = rate;
        self.header.samples = self.stats.passes();
        self.header.errors = self.errors;
        self.header.sample_micros = (window.passes > 0).then(|| {
            (
                window.sample_time.as_secs_f64() * 1e6 / window.passes as f64,
                window.longest_sample.as_secs_f64() * 1e6,
            )
        });
        self.header.late = skipped.saturating_sub(window.skipped_before);
        if self.options.subprocesses {
            self.header.processes = Some(targets.sampling().count());
        }
        let skipped_now = skipped.saturating_sub(window.skipped_before);
        let slow = rate.is_some_and(|r| elapsed >= 0.5 && r < self.options.rate * BEHIND_RATIO);
        self.header.behind = (window.passes > 0
            && targets.any_sampling()
            && (slow || skipped_now * 20 > window.passes + skipped_now))
            .then(|| {
                format!(
                    "sampling fell behind: {:.1} of {} samples/s; try a lower --rate or \
                     --nonblocking",
                    rate.unwrap_or(0.0),
                    self.options.rate
                )
            });
        self.window = Window::new(skipped);
    }

    /// Draws the current view on the screen, or prints it as a block of plain text.
    fn draw(&mut self, screen: Option<&mut Screen>) -> Result<()> {
        let stats = self.frozen.as_ref().unwrap_or(&self.stats);
        let rows = stats.rows(self.grouping, self.sort);
        let mut layout = Layout {
            sort: self.sort,
            grouping: self.grouping,
            full_filenames: self.options.full_filenames,
            width: None,
            height: None,
            interactive: screen.is_some(),
            paused: self.frozen.is_some(),
            help: self.help,
        };
        match screen {
            Some(screen) => {
                self.pending_notes.clear();
                let (width, height) = screen.size();
                layout.width = Some(width);
                layout.height = Some(height);
                screen.draw(&view::render(&self.header, &rows, &layout))
            }
            None => {
                self.flush_notes(false);
                let mut text = view::render(&self.header, &rows, &layout).join("\n");
                text.push_str("\n\n");
                let mut out = std::io::stdout().lock();
                out.write_all(text.as_bytes())?;
                out.flush()?;
                Ok(())
            }
        }
    }
}

fn free_threaded(sampler: &Sampler<LinuxProcess>) -> bool {
    sampler.interpreter().layout.version.free_threaded
}
