//! Task runtimes. Only the process runtime exists today.

pub mod process;

pub use process::TaskRunner;
