//! The TOML file named by `HYPERKIT_CONFIG`: at most a mebibyte, only the
//! keys of `FileConfig` (a typo is an error naming it), each value checked
//! by the same parser as its variable. A file that cannot be read or
//! parsed is a [`ConfigError`] naming the file, never a panic.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::MonitoringConfig;
use crate::config::{ConfigError, parse_addr, parse_filter, parse_limit, parse_service_name};

/// The most bytes of a configuration file read: it is a handful of
/// keys, and a larger file is a mistake (or an attack).
pub(super) const MAX_FILE_BYTES: u64 = 1 << 20;

/// The keys a configuration file may hold: the variable names without
/// the `HYPERKIT_` prefix, in lower case.
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    service_name: Option<String>,
    environment: Option<String>,
    max_label_values: Option<toml::Value>,
    metrics_addr: Option<String>,
    data_dir: Option<String>,
    log_filter: Option<String>,
    /// Read with their spans by `crate::prices::file`.
    #[allow(dead_code)]
    model_prices: Option<toml::Value>,
    #[allow(dead_code)]
    currency_rates: Option<toml::Value>,
}

pub(super) fn apply(config: &mut MonitoringConfig, path: &Path) -> Result<(), ConfigError> {
    let read = |source| ConfigError::Read {
        path: path.to_owned(),
        source,
    };
    let size = std::fs::metadata(path).map_err(read)?.len();
    if size > MAX_FILE_BYTES {
        return Err(ConfigError::File {
            path: path.to_owned(),
            message: format!(
                "the file is {size} bytes; a configuration file holds at most {MAX_FILE_BYTES}"
            ),
        });
    }
    let text = std::fs::read_to_string(path).map_err(read)?;
    let file: FileConfig = toml::from_str(&text).map_err(|e| ConfigError::File {
        path: path.to_owned(),
        message: e.to_string().trim().replace('\n', " "),
    })?;
    if let Some(v) = file.service_name {
        config.service_name = parse_service_name("service_name", &v)?;
    }
    if let Some(v) = file.environment {
        config.environment = Some(parse_service_name("environment", &v)?);
    }
    if let Some(v) = file.max_label_values {
        let text = match &v {
            toml::Value::String(s) => s.clone(),
            toml::Value::Integer(i) => i.to_string(),
            other => format!("{other:?}"),
        };
        config.max_label_values = parse_limit("max_label_values", &text)?;
    }
    if let Some(v) = file.metrics_addr {
        config.metrics_addr = parse_addr("metrics_addr", &v)?;
    }
    if let Some(v) = file.data_dir {
        config.data_dir = PathBuf::from(v);
    }
    if let Some(v) = file.log_filter {
        config.log_filter = parse_filter("log_filter", &v)?;
    }
    if let Some(table) = crate::prices::file::read("HYPERKIT_CONFIG", path, &text)? {
        config.model_prices = Some(table);
    }
    Ok(())
}
