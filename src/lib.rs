//! py-spy: a sampling profiler for Python that reads a running CPython's memory from outside.
//!
//! Dependencies point one way: [`cli`] → [`dump`] (a command) → [`sampler`] →
//! {[`process`], [`interpreter`], [`layout`], [`walker`], [`objects`], [`linetable`]} →
//! [`output`]. ARCHITECTURE.md walks one `dump` through these files.

/// Writes one line to stderr, like `eprintln!`, except that a closed or broken stderr
/// (`py-spy record … 2>&1 | head -1`) is ignored: py-spy's messages are a courtesy, and
/// `eprintln!` would panic and lose the profile being recorded.
#[macro_export]
macro_rules! note {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

pub mod binary;
pub mod cli;
pub mod debug_offsets;
pub mod dump;
pub mod errors;
pub mod interpreter;
pub mod launch;
pub mod layout;
pub mod linetable;
pub mod memory;
pub mod objects;
pub mod output;
pub mod privileges;
pub mod process;
pub mod profile;
pub mod record;
pub mod sampler;
pub mod sampling;
pub mod schedule;
pub mod signals;
pub mod targets;
pub mod threads;
pub mod top;
pub mod walker;
