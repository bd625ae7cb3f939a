//! Nothing but the trybuild cases in `pass/`, which compile against
//! hyperkit-obs renamed to `obs` (see `Cargo.toml`).
