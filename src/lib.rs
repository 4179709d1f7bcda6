//! py-spy: a sampling profiler for Python that reads a running CPython's memory from outside.
//!
//! Dependencies point one way: `cli` → `dump` (the command) → {`process`, `interpreter`,
//! `layout`, `walker`, `objects`, `linetable`} → `output`. ARCHITECTURE.md walks one `dump`
//! through these files.

pub mod linetable;
pub mod memory;
pub mod process;
