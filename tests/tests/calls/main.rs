//! What a tracked call gives besides the built-in families' counts: a
//! team's own domain gets everything a built-in macro gives (`domains`), a
//! sink of the user's own, registered through `hyperkit_obs::calls`, sees
//! every call that finishes (`sinks`), quality scores recorded after a call
//! (`scores`), and a `tracing` subscriber sees each
//! call's span and closing event (`events`).
//!
//! Apart from `macros/`: these calls build `ethereum`, whose series
//! `macros/labels.rs` counts, and the domains' families are not
//! `hyperkit_*`, which `macros/labels.rs` checks of every family in its
//! process.

mod domains;
mod events;
mod scores;
mod sinks;
mod streams;
