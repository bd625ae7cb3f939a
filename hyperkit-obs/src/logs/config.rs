//! [`LogsConfig`]: the `HYPERKIT_LOG_*` variables.

use crate::config::{ConfigError, invalid};

/// How log lines are written to stdout.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// JSON lines when stdout is not a terminal, human-readable when it is.
    #[default]
    Auto,
    /// ECS JSON lines.
    Json,
    /// Human-readable lines ([`TextFormat`](super::TextFormat)).
    Text,
}

impl LogFormat {
    /// Whether lines are JSON, given whether stdout is a terminal.
    pub fn is_json(self, stdout_is_terminal: bool) -> bool {
        match self {
            LogFormat::Auto => !stdout_is_terminal,
            LogFormat::Json => true,
            LogFormat::Text => false,
        }
    }
}

/// Log output and the local store.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct LogsConfig {
    /// `HYPERKIT_LOG_FORMAT`: `json`, `text` or `auto` (default: JSON unless
    /// stdout is a terminal).
    pub format: LogFormat,
    /// `HYPERKIT_LOG_STORE`: keep every event in the local store under
    /// `<HYPERKIT_DATA_DIR>/logs`. Default `true` when the `log-store`
    /// feature is on (`HYPERKIT_LOG_STORE=true` without it is an error).
    pub store: bool,
    /// `HYPERKIT_LOG_RETENTION_DAYS`: days the store keeps. Default 7.
    pub retention_days: u32,
    /// `HYPERKIT_LOG_MAX_BYTES`: size the store is kept under by dropping
    /// its oldest days (`1073741824`, `512MiB`, `2GiB`). Default 1 GiB.
    pub max_bytes: u64,
    /// `HYPERKIT_LOG_STORE_CACHE`: memory the store's writer may fill with
    /// events being indexed before it writes them out as a segment
    /// (`64MiB`, `16MiB`, …; under 15 MB counts as 15 MB, tantivy's floor).
    /// Default 64 MiB, a full batch of the writer: a process's resident
    /// memory grows by up to this much while it logs fast.
    pub cache_bytes: u64,
}

impl Default for LogsConfig {
    fn default() -> Self {
        LogsConfig {
            format: LogFormat::Auto,
            store: cfg!(feature = "log-store"),
            retention_days: 7,
            max_bytes: 1 << 30,
            cache_bytes: 64 << 20,
        }
    }
}

impl LogsConfig {
    pub(crate) fn from_lookup(var: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let mut c = LogsConfig::default();
        if let Some(v) = var("HYPERKIT_LOG_FORMAT") {
            c.format = match v.trim().to_ascii_lowercase().as_str() {
                "json" => LogFormat::Json,
                "text" => LogFormat::Text,
                "auto" => LogFormat::Auto,
                _ => {
                    return Err(invalid(
                        "HYPERKIT_LOG_FORMAT",
                        &v,
                        "must be json, text or auto",
                        "json",
                    ));
                }
            };
        }
        if let Some(v) = var("HYPERKIT_LOG_STORE") {
            c.store = match v.trim().to_ascii_lowercase().as_str() {
                "1" | "true" | "yes" | "on" if cfg!(feature = "log-store") => true,
                "1" | "true" | "yes" | "on" => {
                    return Err(ConfigError::FeatureDisabled {
                        variable: "HYPERKIT_LOG_STORE",
                        feature: "log-store",
                    });
                }
                "0" | "false" | "no" | "off" => false,
                _ => {
                    return Err(invalid(
                        "HYPERKIT_LOG_STORE",
                        &v,
                        "must be true or false",
                        "false",
                    ));
                }
            };
        }
        if let Some(v) = var("HYPERKIT_LOG_RETENTION_DAYS") {
            c.retention_days = match v.trim().parse::<u32>() {
                Ok(d) if (1..=3650).contains(&d) => d,
                _ => {
                    return Err(invalid(
                        "HYPERKIT_LOG_RETENTION_DAYS",
                        &v,
                        "must be a whole number of days from 1 to 3650",
                        "7",
                    ));
                }
            };
        }
        if let Some(v) = var("HYPERKIT_LOG_MAX_BYTES") {
            c.max_bytes = parse_bytes(&v).filter(|b| *b >= 1 << 20).ok_or_else(|| {
                invalid(
                    "HYPERKIT_LOG_MAX_BYTES",
                    &v,
                    "must be a size of at least 1MiB, in bytes or with a unit (KiB, MiB, GiB, KB, MB, GB)",
                    "512MiB",
                )
            })?;
        }
        if let Some(v) = var("HYPERKIT_LOG_STORE_CACHE") {
            c.cache_bytes = parse_bytes(&v).filter(|b| *b >= 1 << 20).ok_or_else(|| {
                invalid(
                    "HYPERKIT_LOG_STORE_CACHE",
                    &v,
                    "must be a size of at least 1MiB, in bytes or with a unit (KiB, MiB, GiB, KB, MB, GB)",
                    "8MiB",
                )
            })?;
        }
        Ok(c)
    }

    pub(crate) fn describe(&self) -> Vec<(&'static str, String)> {
        vec![
            (
                "HYPERKIT_LOG_FORMAT",
                match self.format {
                    LogFormat::Auto => "auto",
                    LogFormat::Json => "json",
                    LogFormat::Text => "text",
                }
                .to_owned(),
            ),
            ("HYPERKIT_LOG_STORE", self.store.to_string()),
            (
                "HYPERKIT_LOG_RETENTION_DAYS",
                self.retention_days.to_string(),
            ),
            ("HYPERKIT_LOG_MAX_BYTES", self.max_bytes.to_string()),
            ("HYPERKIT_LOG_STORE_CACHE", self.cache_bytes.to_string()),
        ]
    }
}

fn parse_bytes(v: &str) -> Option<u64> {
    let v = v.trim();
    let split = v.find(|c: char| !c.is_ascii_digit()).unwrap_or(v.len());
    let (n, unit) = v.split_at(split);
    let n: u64 = n.parse().ok()?;
    let scale: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        _ => return None,
    };
    n.checked_mul(scale)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn from(vars: &[(&str, &str)]) -> Result<LogsConfig, ConfigError> {
        LogsConfig::from_lookup(crate::config::lookup(vars))
    }

    #[test]
    fn defaults_are_auto_format_seven_days_and_one_gib() {
        let c = from(&[]).unwrap();
        assert_eq!(
            (c.format, c.store, c.retention_days, c.max_bytes),
            (LogFormat::Auto, true, 7, 1 << 30)
        );
    }

    #[test]
    fn values_parse_and_bad_ones_name_their_variable() {
        let c = from(&[
            ("HYPERKIT_LOG_FORMAT", "JSON"),
            ("HYPERKIT_LOG_RETENTION_DAYS", "30"),
            ("HYPERKIT_LOG_MAX_BYTES", "512MiB"),
            ("HYPERKIT_LOG_STORE", "off"),
            ("HYPERKIT_LOG_STORE_CACHE", "4MiB"),
        ])
        .unwrap();
        assert_eq!(
            (
                c.format,
                c.store,
                c.retention_days,
                c.max_bytes,
                c.cache_bytes
            ),
            (LogFormat::Json, false, 30, 512 << 20, 4 << 20)
        );
        for (var, value) in [
            ("HYPERKIT_LOG_FORMAT", "xml"),
            ("HYPERKIT_LOG_RETENTION_DAYS", "0"),
            ("HYPERKIT_LOG_MAX_BYTES", "10"),
            ("HYPERKIT_LOG_MAX_BYTES", "5 parsecs"),
            ("HYPERKIT_LOG_STORE", "maybe"),
            ("HYPERKIT_LOG_STORE_CACHE", "100KiB"),
        ] {
            let e = from(&[(var, value)]).unwrap_err().to_string();
            assert!(e.starts_with(&format!("{var}=")), "{e}");
            assert!(e.contains(&format!("for example {var}=")), "{e}");
        }
    }

    #[test]
    fn auto_is_json_only_when_stdout_is_not_a_terminal() {
        assert!(LogFormat::Auto.is_json(false));
        assert!(!LogFormat::Auto.is_json(true));
        assert!(LogFormat::Json.is_json(true));
        assert!(!LogFormat::Text.is_json(false));
    }
}
