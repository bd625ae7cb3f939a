//! The demo as its users see it: it runs and stops cleanly (`run`), one
//! trace follows a build through its two services (`one_trace`), at a
//! terminal and piped (`terminal`, in tmux), its status page in a real
//! browser (`status_page`), and for minutes at speed (`soak`, ignored).
//!
//! Each test runs the demo in a process of its own. Some status page tests
//! serve this process's own (empty) history instead: nothing else here
//! tracks a call or counts a drop in this process, which they rely on.

mod one_trace;
mod run;
mod soak;
mod status_page;
mod terminal;
mod tmux;
