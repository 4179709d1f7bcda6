//! The signals that end a recording (SIGINT, SIGTERM, SIGHUP): caught, so that the output
//! is still written, and noted with where they came from, so that a launched program gets
//! the ones it did not already receive.

use anyhow::{Context, Result};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::exfiltrator::WithOrigin;
use signal_hook::iterator::SignalsInfo;
use signal_hook::low_level::siginfo::Cause;
use signal_hook::SigId;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

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
    /// Set by the handlers after they queued the signal: the sampling loop asks on every
    /// sample, and a load of this flag spares it a system call on the queue each time.
    arrived: Arc<AtomicBool>,
    /// The registrations of `arrived`, removed on drop.
    flag_ids: Vec<SigId>,
}

impl StopSignals {
    /// Starts catching SIGINT, SIGTERM and SIGHUP.
    pub fn install() -> Result<StopSignals> {
        let stop = [SIGINT, SIGTERM, SIGHUP];
        let signals = SignalsInfo::<WithOrigin>::new(stop).context("installing signal handlers")?;
        // Registered after the queue, so a handler queues the signal before it sets the
        // flag (signal-hook runs a signal's actions in registration order): a set flag
        // means the queue has it.
        let arrived = Arc::new(AtomicBool::new(false));
        let flag_ids = stop
            .iter()
            .map(|&signal| signal_hook::flag::register(signal, arrived.clone()))
            .collect::<std::io::Result<Vec<_>>>()
            .context("installing signal handlers")?;
        Ok(StopSignals {
            signals,
            arrived,
            flag_ids,
        })
    }

    /// Signals received since the last call; never blocks.
    pub fn pending(&mut self) -> Vec<StopSignal> {
        // Cleared before the queue is read: a signal that comes in between sets it again
        // and is read on the next call.
        if !self.arrived.swap(false, Ordering::SeqCst) {
            return Vec::new();
        }
        self.signals
            .pending()
            .map(|origin| StopSignal {
                signal: origin.signal,
                from_kernel: matches!(origin.cause, Cause::Kernel),
            })
            .collect()
    }
}

impl Drop for StopSignals {
    fn drop(&mut self) {
        for id in self.flag_ids.drain(..) {
            signal_hook::low_level::unregister(id);
        }
    }
}
