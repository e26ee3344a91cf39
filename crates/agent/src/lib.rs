//! Node agent: dispatcher session, task state machine, process runtime, logs
