//! `hyperkit-obs check`: the effective configuration (secrets redacted)
//! and, for each sink, whether it is configured and whether its server
//! answers. It only reads and connects: it sends nothing to any sink.

use std::net::TcpStream;
#[cfg(feature = "sentry")]
use std::net::ToSocketAddrs;
use std::time::Duration;

use hyperkit_obs::MonitoringConfig;
use hyperkit_obs::logs::LogFormat;

use crate::args::{Operands, Spec};
use crate::{Args, Failure, config_error};

/// How long a sink's server may take to accept a connection.
const CONNECT_WITHIN: Duration = Duration::from_secs(1);

/// `check`.
pub(crate) const CHECK: Spec = Spec {
    words: "check",
    about: "print the effective configuration and the state of each sink",
    operands: Operands::None,
    options: &[],
    notes: "\
The configuration is read as an instrumented program reads it: the environment
(HYPERKIT_*, SENTRY_*, MLFLOW_*, ELASTICSEARCH_*, RUST_LOG) and the TOML file
named by HYPERKIT_CONFIG. Secrets are shown as ***. A configuration that does
not parse is an error naming the variable (exit status 1).",
};

/// `hyperkit-obs check`.
pub(crate) fn check(_: &Args) -> Result<(), Failure> {
    let config = MonitoringConfig::from_env().map_err(config_error)?;
    println!("configuration:");
    for (name, value) in config.describe() {
        println!("  {name:<28} {value}");
    }
    println!("\nsinks:");
    let reachable = TcpStream::connect_timeout(&config.metrics_addr, CONNECT_WITHIN).is_ok();
    println!(
        "  {:<10} each instrumented process's registry, served at http://{}/metrics: {}",
        "metrics",
        config.metrics_addr,
        if reachable {
            "a server is listening"
        } else {
            "nothing listening (is the service running?)"
        }
    );
    println!(
        "  {:<10} stdout ({}), filter `{}`; local store {}",
        "logs",
        match config.logs.format {
            LogFormat::Json => "JSON lines",
            LogFormat::Text => "text",
            _ => "JSON lines, text on a terminal",
        },
        config.log_filter,
        if config.logs.store {
            hyperkit_obs::logs::store_dir(&config.data_dir)
                .display()
                .to_string()
        } else {
            "off".to_owned()
        }
    );
    println!("  {:<10} {}", "sentry", sentry_state(&config));
    Ok(())
}

/// Whether errors go to Sentry, where (keys redacted), and whether its host
/// answers.
#[cfg(not(feature = "sentry"))]
fn sentry_state(_: &MonitoringConfig) -> String {
    "not built in (the \"sentry\" feature is off); errors are logged only".to_owned()
}

/// Whether errors go to Sentry, where (keys redacted), and whether its host
/// answers.
#[cfg(feature = "sentry")]
fn sentry_state(config: &MonitoringConfig) -> String {
    let Some(dsn) = &config.sentry.dsn else {
        return "not configured (set SENTRY_DSN to report errors and panics); errors are logged only"
            .to_owned();
    };
    let reachable = hyperkit_obs::sentry::dsn_address(dsn.expose())
        .and_then(|(host, port)| (host, port).to_socket_addrs().ok()?.next())
        .is_some_and(|addr| TcpStream::connect_timeout(&addr, CONNECT_WITHIN).is_ok());
    format!(
        "errors and panics to {} (sample rate {}, prompts {}): {}",
        config.sentry.redacted_dsn(),
        config.sentry.sample_rate,
        if config.sentry.send_prompts {
            "sent"
        } else {
            "never sent"
        },
        if reachable {
            "the host answers"
        } else {
            "the host does not answer"
        }
    )
}
