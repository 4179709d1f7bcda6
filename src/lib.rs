//! py-spy: a sampling profiler for Python that reads a running CPython's memory from outside.
//!
//! Dependencies point one way: [`cli`] → [`dump`] (a command) → [`sampler`] →
//! {[`process`], [`interpreter`], [`layout`], [`walker`], [`objects`], [`linetable`]} →
//! [`output`]. ARCHITECTURE.md walks one `dump` through these files.

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
