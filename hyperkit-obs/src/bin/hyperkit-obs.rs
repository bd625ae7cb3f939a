//! `hyperkit-obs`: the command line of hyperkit-obs.
//!
//! `hyperkit-obs check` prints the effective configuration (secrets
//! redacted) and, for each sink, whether it is configured and reachable.

use std::net::TcpStream;
use std::process::ExitCode;
use std::time::Duration;

use hyperkit_obs::MonitoringConfig;

const USAGE: &str = "\
usage: hyperkit-obs <command>

commands:
  check      print the effective configuration and the state of each sink
  help       print this help

The configuration comes from the environment (HYPERKIT_*, RUST_LOG) and the
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
    ExitCode::SUCCESS
}
