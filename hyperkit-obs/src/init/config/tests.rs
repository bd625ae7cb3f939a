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

#[test]
#[cfg(feature = "config-file")]
fn the_price_table_comes_from_its_variable_or_the_file_and_a_bad_one_names_file_line_and_model() {
    let dir = std::env::temp_dir().join(format!("hyperkit-prices-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (config, prices) = (dir.join("obs.toml"), dir.join("prices.toml"));
    std::fs::write(
        &config,
        "service_name = \"svc\"\n\n[model_prices.small-1]\ninput = 0.15\noutput = 0.6\n",
    )
    .unwrap();
    std::fs::write(
        &prices,
        "[model_prices.\"large-2\"]\ninput = 2.5\noutput = 10\ncached_input = 1.25\n",
    )
    .unwrap();
    let (c, p) = (config.to_str().unwrap(), prices.to_str().unwrap());

    let from_file = from(&[("HYPERKIT_CONFIG", c)])
        .unwrap()
        .model_prices
        .unwrap();
    assert_eq!(from_file.get("small-1").unwrap().output_per_million(), 0.6);
    // The variable wins over the file, whole.
    let both = from(&[("HYPERKIT_CONFIG", c), ("HYPERKIT_MODEL_PRICES", p)])
        .unwrap()
        .model_prices
        .unwrap();
    assert!(both.get("small-1").is_none());
    assert_eq!(
        both.get("large-2").unwrap().cached_input_per_million(),
        Some(1.25)
    );
    assert!(from(&[]).unwrap().model_prices.is_none());

    std::fs::write(
        &prices,
        "[model_prices.\"large-2\"]\ninput = 2.5\noutput = \"ten\"\n",
    )
    .unwrap();
    let e = from(&[("HYPERKIT_MODEL_PRICES", p)])
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with(&format!(
            "HYPERKIT_MODEL_PRICES={p:?} is invalid at line 3, model \"large-2\": output must be a number"
        )),
        "{e}"
    );
    std::fs::write(&config, "[model_prices.small-1]\ninput = 0.15\n").unwrap();
    let e = from(&[("HYPERKIT_CONFIG", c)]).unwrap_err().to_string();
    assert!(
        e.starts_with(&format!(
            "HYPERKIT_CONFIG={c:?} is invalid at line 1, model \"small-1\": output is missing"
        )),
        "{e}"
    );
    let e = from(&[("HYPERKIT_MODEL_PRICES", "/nonexistent/prices.toml")])
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with(
            "HYPERKIT_MODEL_PRICES=\"/nonexistent/prices.toml\" is invalid: the file cannot be read"
        ),
        "{e}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
#[cfg(not(feature = "config-file"))]
fn without_the_config_file_feature_a_price_table_names_the_variable_and_the_feature() {
    let e = from(&[("HYPERKIT_MODEL_PRICES", "prices.toml")])
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("HYPERKIT_MODEL_PRICES is set but hyperkit-obs was built without the \"config-file\" feature"),
        "{e}"
    );
}
