//! The full-screen terminal of `py-spy top`: raw mode, the alternate screen, no cursor.
//!
//! The terminal is given back as it was however `top` ends: [`Screen`] restores it when
//! dropped (a normal return, an error, a signal handled by the run loop, or a panic's
//! unwinding), and a panic hook restores it before the panic message is printed, so that
//! the message lands on the normal screen rather than the alternate one about to vanish.

use std::fs::File;
use std::io::{self, IsTerminal, Stdout, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Once};
use std::time::Duration;

use anyhow::{Context, Result};
use crossterm::cursor::{Hide, MoveTo, Show};
use crossterm::style::Print;
use crossterm::terminal::{self, Clear, ClearType, EnterAlternateScreen, LeaveAlternateScreen};
use crossterm::{execute, queue};

/// Whether the terminal is in our mode now (and must be restored).
static ACTIVE: AtomicBool = AtomicBool::new(false);
static PANIC_HOOK: Once = Once::new();

/// A key that `top` acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Key {
    /// A printable character.
    Char(char),
    /// Ctrl-C.
    Interrupt,
    /// Anything else (closes the help, ends the final view).
    Other,
}

/// What the terminal reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Input {
    /// A key press.
    Key(Key),
    /// The window changed size.
    Resize,
    /// The terminal hung up (its window closed, its tmux session or ssh connection
    /// ended): it reports input ready for ever and gives none, so the caller must stop
    /// asking.
    HungUp,
}

/// The terminal in full-screen mode, until dropped.
pub struct Screen {
    out: Stdout,
    /// Where keys come from: standard input when it is the terminal, else `/dev/tty`
    /// (the same choice crossterm makes for raw mode).
    keys: Keys,
    /// Set by SIGWINCH.
    resized: Arc<AtomicBool>,
    resize_hook: Option<signal_hook::SigId>,
}

enum Keys {
    Stdin,
    Tty(File),
}

impl Keys {
    fn fd(&self) -> RawFd {
        match self {
            Keys::Stdin => libc::STDIN_FILENO,
            Keys::Tty(file) => file.as_raw_fd(),
        }
    }
}

impl Screen {
    /// Enters raw mode and the alternate screen, hides the cursor.
    pub fn enter() -> Result<Screen> {
        PANIC_HOOK.call_once(|| {
            let previous = std::panic::take_hook();
            std::panic::set_hook(Box::new(move |info| {
                restore();
                previous(info);
            }));
        });
        let keys = if io::stdin().is_terminal() {
            Keys::Stdin
        } else {
            Keys::Tty(File::open("/dev/tty").context("cannot open the terminal for keys")?)
        };
        let resized = Arc::new(AtomicBool::new(false));
        let resize_hook = signal_hook::flag::register(libc::SIGWINCH, Arc::clone(&resized)).ok();
        terminal::enable_raw_mode().context("cannot set the terminal to raw mode")?;
        ACTIVE.store(true, Ordering::SeqCst);
        let mut screen = Screen {
            out: io::stdout(),
            keys,
            resized,
            resize_hook,
        };
        // On failure the drop restores what was done.
        execute!(
            screen.out,
            EnterAlternateScreen,
            Hide,
            Clear(ClearType::All)
        )
        .context("cannot switch the terminal to the full-screen view")?;
        Ok(screen)
    }

    /// Columns and rows.
    pub fn size(&self) -> (usize, usize) {
        match terminal::size() {
            Ok((w, h)) if w > 0 && h > 0 => (w as usize, h as usize),
            _ => (80, 24),
        }
    }

    /// Draws `lines` from the top left, clearing what was there.
    pub fn draw(&mut self, lines: &[String]) -> Result<()> {
        for (row, line) in lines.iter().enumerate() {
            queue!(
                self.out,
                MoveTo(0, row as u16),
                Print(line),
                Clear(ClearType::UntilNewLine)
            )?;
        }
        queue!(
            self.out,
            MoveTo(0, lines.len() as u16),
            Clear(ClearType::FromCursorDown)
        )?;
        self.out.flush()?;
        Ok(())
    }

    /// Whether an input is there to be taken ([`Screen::input`] with no wait).
    pub fn ready(&self) -> bool {
        self.resized.load(Ordering::Relaxed) || self.wait(Duration::ZERO)
    }

    /// The next input if one comes within `timeout` (zero: only what is there already).
    /// Keys arrive one read at a time: a read that holds several (typed faster than we
    /// look) counts as its first; an escape sequence (arrows, function keys) as one
    /// [`Key::Other`].
    pub fn input(&mut self, timeout: Duration) -> Result<Option<Input>> {
        if self.resized.swap(false, Ordering::Relaxed) {
            return Ok(Some(Input::Resize));
        }
        if !self.wait(timeout) {
            return Ok(if self.resized.swap(false, Ordering::Relaxed) {
                Some(Input::Resize)
            } else {
                None
            });
        }
        // Read from the descriptor itself: std's stdin would buffer keys out of `poll`'s
        // sight.
        let mut bytes = [0u8; 64];
        // SAFETY: reads into a buffer of the length given.
        let n = unsafe { libc::read(self.keys.fd(), bytes.as_mut_ptr().cast(), bytes.len()) };
        Ok(match usize::try_from(n) {
            Ok(0) => Some(Input::HungUp),
            Ok(n) => Some(Input::Key(key(&bytes[..n]))),
            Err(_) => match io::Error::last_os_error().kind() {
                io::ErrorKind::Interrupted | io::ErrorKind::WouldBlock => None,
                // EIO: the terminal hung up under the read.
                _ => Some(Input::HungUp),
            },
        })
    }

    /// Waits up to `timeout` for the terminal to have bytes, or to have hung up.
    fn wait(&self, timeout: Duration) -> bool {
        let mut fds = [libc::pollfd {
            fd: self.keys.fd(),
            events: libc::POLLIN,
            revents: 0,
        }];
        let ms = libc::c_int::try_from(timeout.as_millis()).unwrap_or(libc::c_int::MAX);
        // SAFETY: one valid pollfd, its count, a timeout.
        let r = unsafe { libc::poll(fds.as_mut_ptr(), 1, ms) };
        r > 0 && fds[0].revents != 0
    }
}

/// The key a read of the terminal in raw mode brought.
fn key(bytes: &[u8]) -> Key {
    match bytes {
        [0x03, ..] => Key::Interrupt,
        [b, ..] if b.is_ascii_graphic() || *b == b' ' => Key::Char(*b as char),
        _ => Key::Other,
    }
}

impl Drop for Screen {
    fn drop(&mut self) {
        if let Some(hook) = self.resize_hook.take() {
            signal_hook::low_level::unregister(hook);
        }
        restore();
    }
}

/// Leaves the alternate screen, shows the cursor, ends raw mode; once.
fn restore() {
    if ACTIVE.swap(false, Ordering::SeqCst) {
        let mut out = io::stdout();
        let _ = execute!(out, Show, LeaveAlternateScreen);
        let _ = terminal::disable_raw_mode();
    }
}
