//! The configuration's specification: defaults, errors that name the
//! variable and show a good value, the file and the environment's
//! precedence, and secrets kept out of every output.

use super::*;

fn from(vars: &[(&str, &str)]) -> Result<MonitoringConfig, ConfigError> {
    MonitoringConfig::from_lookup(crate::config::lookup(vars))
}

#[test]
fn no_variables_give_the_documented_defaults() {
    let c = from(&[]).unwrap();
    assert_eq!(c.max_label_values, 1000);
    assert_eq!(c.metrics_addr.to_string(), "127.0.0.1:9464");
    assert_eq!(c.log_filter, "info");
}

#[test]
fn a_bad_value_names_the_variable_and_shows_a_good_one() {
    let e = from(&[("HYPERKIT_METRICS_ADDR", "localhost")])
        .unwrap_err()
        .to_string();
    assert!(e.contains("HYPERKIT_METRICS_ADDR=\"localhost\""), "{e}");
    assert!(
        e.contains("for example HYPERKIT_METRICS_ADDR=127.0.0.1:9464"),
        "{e}"
    );
    let e = from(&[("HYPERKIT_MAX_LABEL_VALUES", "0")])
        .unwrap_err()
        .to_string();
    assert!(e.contains("between 1 and 1000000"), "{e}");
    let e = from(&[("RUST_LOG", "info,[")]).unwrap_err().to_string();
    assert!(e.starts_with("RUST_LOG="), "{e}");
}

#[test]
fn the_file_is_read_and_the_environment_wins() {
    let dir = std::env::temp_dir().join(format!("hyperkit-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("obs.toml");
    std::fs::write(
        &path,
        "service_name = \"from-file\"\nmax_label_values = 50\n",
    )
    .unwrap();
    let p = path.to_str().unwrap();
    let c = from(&[("HYPERKIT_CONFIG", p), ("HYPERKIT_MAX_LABEL_VALUES", "70")]).unwrap();
    assert_eq!(
        (c.service_name.as_str(), c.max_label_values),
        ("from-file", 70)
    );

    std::fs::write(&path, "servce_name = \"typo\"\n").unwrap();
    let e = from(&[("HYPERKIT_CONFIG", p)]).unwrap_err().to_string();
    assert!(e.contains("servce_name"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn secrets_never_appear_in_debug_errors_or_describe() {
    let c = from(&[
        ("HYPERKIT_METRICS_USERNAME", "prom"),
        ("HYPERKIT_METRICS_PASSWORD", "hunter2"),
    ])
    .unwrap();
    assert!(!format!("{c:?}").contains("hunter2"));
    assert!(!format!("{:?}", c.describe()).contains("hunter2"));
    let e = from(&[
        ("HYPERKIT_METRICS_TOKEN", "s3cret"),
        ("HYPERKIT_METRICS_USERNAME", "x"),
    ])
    .unwrap_err();
    assert!(!e.to_string().contains("s3cret"), "{e}");
    let e = from(&[("HYPERKIT_METRICS_USERNAME", "prom")])
        .unwrap_err()
        .to_string();
    assert!(e.starts_with("HYPERKIT_METRICS_PASSWORD"), "{e}");
}
