//! What the attributes do to a function: it compiles in every supported
//! shape and fails with one error at the token at fault (`ui`), returns
//! exactly what it returned without the attribute (`equivalence`), and
//! moves its metrics exactly as specified on every status path (`status`),
//! under label sets keyed exactly and sanitised (`labels`).
//!
//! One binary: its tests share the process-wide registry and read only
//! series of their own label values. What must see a process to itself
//! lives elsewhere: the cardinality limits (`cardinality.rs`), and the
//! domains, sinks and events of `calls/` (its builds use label values
//! `labels` counts, and its domains' families are not `hyperkit_*`, which
//! `labels` checks of every family).

mod equivalence;
mod labels;
mod status;
mod ui;
