//! `hyperkit-obs`: the command line of hyperkit-obs.
//!
//! `hyperkit-obs check` prints the effective configuration (secrets
//! redacted) and, for each sink, whether it is configured and reachable.

use std::net::{TcpStream, ToSocketAddrs};
use std::process::ExitCode;
use std::time::Duration;

use hyperkit_obs::MonitoringConfig;

const USAGE: &str = "\
usage: hyperkit-obs <command>

commands:
  check      print the effective configuration and the state of each sink
  help       print this help

The configuration comes from the environment (HYPERKIT_*, SENTRY_*, RUST_LOG) and the
TOML file named by HYPERKIT_CONFIG.";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("check") if args.len() == 1 => check(),
        Some("help" | "--help" | "-h") => {
            println!("{USAGE}");
            ExitCode::SUCCESS
        }
        Some("--version" | "-V") => {
            println!("hyperkit-obs {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        Some(other) => {
            eprintln!("hyperkit-obs: unknown command or argument `{other}`\n\n{USAGE}");
            ExitCode::from(2)
        }
        None => {
            eprintln!("{USAGE}");
            ExitCode::from(2)
        }
    }
}

fn check() -> ExitCode {
    let config = match MonitoringConfig::from_env() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("configuration error: {e}");
            return ExitCode::from(1);
        }
    };
    println!("configuration:");
    for (name, value) in config.describe() {
        println!("  {name:<28} {value}");
    }
    println!("\nsinks:");
    let reachable =
        TcpStream::connect_timeout(&config.metrics_addr, Duration::from_secs(1)).is_ok();
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
    println!("  {:<10} stdout, filter `{}`", "logs", config.log_filter);
    println!("  {:<10} {}", "sentry", sentry_state(&config));
    ExitCode::SUCCESS
}

/// Whether errors go to Sentry, where (keys redacted), and whether its host
/// answers.
fn sentry_state(config: &MonitoringConfig) -> String {
    let Some(dsn) = &config.sentry.dsn else {
        return "not configured (set SENTRY_DSN to report errors and panics); errors are logged only"
            .to_owned();
    };
    let reachable = dsn
        .expose()
        .parse::<sentry::types::Dsn>()
        .ok()
        .and_then(|d| (d.host(), d.port()).to_socket_addrs().ok()?.next())
        .is_some_and(|addr| TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_ok());
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
