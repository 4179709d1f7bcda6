//! The full-screen terminal of `py-spy top`: raw mode, the alternate screen, no cursor.
//!
//! The terminal is given back as it was however `top` ends: [`Screen`] restores it when
//! dropped (a normal return, an error, a signal handled by the run loop, or a panic's
//! unwinding), and a panic hook restores it before the panic message is printed, so that
//! the message lands on the normal screen rather than the alternate one about to vanish.

use std::io::{self, Stdout, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Once;
use std::time::Duration;

use anyhow::{Context, Result};
use crossterm::cursor::{Hide, MoveTo, Show};
use crossterm::event::{self, Event, KeyCode, KeyEventKind, KeyModifiers};
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
}

/// The terminal in full-screen mode, until dropped.
pub struct Screen {
    out: Stdout,
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
        terminal::enable_raw_mode().context("cannot set the terminal to raw mode")?;
        ACTIVE.store(true, Ordering::SeqCst);
        let mut screen = Screen { out: io::stdout() };
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

    /// The next input if one comes within `timeout` (zero: only what is there already).
    pub fn input(&self, timeout: Duration) -> Result<Option<Input>> {
        if !event::poll(timeout)? {
            return Ok(None);
        }
        Ok(match event::read()? {
            Event::Resize(..) => Some(Input::Resize),
            Event::Key(key) if key.kind != KeyEventKind::Release => {
                let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
                Some(Input::Key(match key.code {
                    KeyCode::Char('c') if ctrl => Key::Interrupt,
                    KeyCode::Char(c) if !ctrl => Key::Char(c),
                    _ => Key::Other,
                }))
            }
            _ => None,
        })
    }
}

impl Drop for Screen {
    fn drop(&mut self) {
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
