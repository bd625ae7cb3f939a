//! Running the built `hyperkit-obs` and reading what it did.

use std::path::Path;
use std::process::Command;

/// The binary Cargo built for these tests.
pub(crate) const BIN: &str = env!("CARGO_BIN_EXE_hyperkit-obs");

/// What the binary did.
#[derive(Debug)]
pub(crate) struct Output {
    pub(crate) code: i32,
    pub(crate) stdout: String,
    pub(crate) stderr: String,
}

/// Runs the binary in `cwd` with `args`, with none of the developer's
/// `MLFLOW_*`, `HYPERKIT_*` or `SENTRY_*` variables, plus `env`. Requests to
/// a server are bounded by `MLFLOW_HTTP_REQUEST_TIMEOUT` (set by the
/// callers), so the command always ends.
pub(crate) fn cli(cwd: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.args(args).current_dir(cwd);
    for (key, _) in std::env::vars_os() {
        let key_text = key.to_string_lossy();
        if ["MLFLOW_", "HYPERKIT_", "SENTRY_", "ELASTICSEARCH_"]
            .iter()
            .any(|p| key_text.starts_with(p))
        {
            cmd.env_remove(&key);
        }
    }
    cmd.envs(env.iter().copied());
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {BIN}: {e}"));
    Output {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Asserts that `out` is a usage error: exit status 2, nothing on stdout,
/// and on stderr one line `hyperkit-obs: …` containing `message`, without
/// the usage text.
#[track_caller]
pub(crate) fn assert_usage_error(out: &Output, message: &str) {
    assert_eq!(out.code, 2, "{out:?}");
    assert_eq!(out.stdout, "", "{out:?}");
    assert_eq!(out.stderr.lines().count(), 1, "one line: {out:?}");
    assert!(out.stderr.starts_with("hyperkit-obs: "), "{out:?}");
    assert!(out.stderr.contains(message), "no `{message}` in {out:?}");
    assert!(!out.stderr.contains("usage:"), "{out:?}");
}
