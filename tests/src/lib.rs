//! Workspace tests: see `tests/`.
