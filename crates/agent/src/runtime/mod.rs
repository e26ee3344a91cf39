//! Task runtimes. Only the process runtime exists today; [`cgroup`] enforces
//! its resource limits.

pub mod cgroup;
pub mod process;

pub use process::TaskRunner;
