//! The signals that end a recording (SIGINT, SIGTERM, SIGHUP): caught, so that the output
//! is still written, and noted with where they came from, so that a launched program gets
//! the ones it did not already receive.

use anyhow::{Context, Result};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::exfiltrator::WithOrigin;
use signal_hook::iterator::SignalsInfo;
use signal_hook::low_level::siginfo::Cause;

/// A stop signal that arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StopSignal {
    /// The signal number.
    pub signal: i32,
    /// Raised by the kernel, as for Ctrl-C at a terminal: the terminal's whole foreground
    /// process group, a launched program included, got it too.
    pub from_kernel: bool,
}

/// Catches the stop signals from creation until drop.
pub struct StopSignals {
    signals: SignalsInfo<WithOrigin>,
}

impl StopSignals {
    /// Starts catching SIGINT, SIGTERM and SIGHUP.
    pub fn install() -> Result<StopSignals> {
        let signals = SignalsInfo::<WithOrigin>::new([SIGINT, SIGTERM, SIGHUP])
            .context("installing signal handlers")?;
        Ok(StopSignals { signals })
    }

    /// Signals received since the last call; never blocks.
    pub fn pending(&mut self) -> Vec<StopSignal> {
        self.signals
            .pending()
            .map(|origin| StopSignal {
                signal: origin.signal,
                from_kernel: matches!(origin.cause, Cause::Kernel),
            })
            .collect()
    }
}
