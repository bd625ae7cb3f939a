//! Property tests as fuzzers: whatever the environment or the file holds,
//! reading the configuration gives a value or a typed error naming the
//! variable, never a panic. 100 times more by hand: `PROPTEST_CASES=25600
//! cargo test -p hyperkit-obs --lib init::config`.

use super::*;
use proptest::prelude::*;
use std::collections::HashMap;

const VARIABLES: &[&str] = &[
    "HYPERKIT_SERVICE_NAME",
    "HYPERKIT_ENVIRONMENT",
    "HYPERKIT_MAX_LABEL_VALUES",
    "HYPERKIT_MAX_LABEL_SETS",
    "HYPERKIT_METRICS_ADDR",
    "HYPERKIT_DATA_DIR",
    "RUST_LOG",
    "HYPERKIT_HEALTH_TIMEOUT_MS",
    "HYPERKIT_HEALTH_CACHE_MS",
    "HYPERKIT_METRICS_TOKEN",
    "HYPERKIT_METRICS_USERNAME",
    "HYPERKIT_METRICS_PASSWORD",
    "HYPERKIT_LOG_FORMAT",
    "HYPERKIT_LOG_STORE",
    "HYPERKIT_LOG_RETENTION_DAYS",
    "HYPERKIT_LOG_MAX_BYTES",
    "SENTRY_DSN",
    "HYPERKIT_SENTRY_SAMPLE_RATE",
    "MLFLOW_TRACKING_URI",
    "MLFLOW_TRACKING_TOKEN",
    "MLFLOW_HTTP_REQUEST_TIMEOUT",
    "HYPERKIT_MLFLOW_CONCURRENCY",
    "ELASTICSEARCH_URL",
    "HYPERKIT_ES_INDEX",
    "HYPERKIT_ES_BATCH_BYTES",
    "LOGSTASH_URL",
];

fn value() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[0-9]{0,25}",
        "-?[0-9]+\\.[0-9]+e[0-9]{1,4}",
        "(http|https|tcp|file|ftp)://[a-z@:%.0-9/]{0,40}",
        "[a-z_=,.:\\[\\]{}]{0,60}",
    ]
}

proptest! {
    #[test]
    fn any_environment_reads_or_fails_naming_a_variable(
        vars in proptest::collection::hash_map(proptest::sample::select(VARIABLES), value(), 0..8)
    ) {
        let vars: HashMap<&str, String> = vars.into_iter().collect();
        match MonitoringConfig::from_lookup(|k| vars.get(k).cloned()) {
            Ok(_) => {}
            Err(e) => {
                let text = e.to_string();
                prop_assert!(
                    VARIABLES.iter().any(|v| text.starts_with(v)),
                    "the error names no variable: {text}"
                );
            }
        }
    }
}

#[cfg(feature = "config-file")]
proptest! {
    #[test]
    fn any_config_file_reads_or_fails_naming_the_file(
        bytes in proptest::collection::vec(any::<u8>(), 0..4096)
    ) {
        let path = std::env::temp_dir().join(format!(
            "hyperkit-config-fuzz-{}-{}.toml",
            std::process::id(),
            crate::util::random_u64()
        ));
        std::fs::write(&path, &bytes).unwrap();
        let p = path.to_string_lossy().into_owned();
        let result = MonitoringConfig::from_lookup(|k| (k == "HYPERKIT_CONFIG").then(|| p.clone()));
        let _ = std::fs::remove_file(&path);
        if let Err(e) = result {
            prop_assert!(e.to_string().starts_with("HYPERKIT_CONFIG=") || e.to_string().contains('='), "{e}");
        }
    }
}

#[test]
#[cfg(feature = "config-file")]
fn a_config_file_nested_a_hundred_thousand_deep_is_an_error_not_a_crash() {
    let dir = std::env::temp_dir().join(format!("hyperkit-config-deep-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for text in [
        format!(
            "service_name = {}{}",
            "[".repeat(100_000),
            "]".repeat(100_000)
        ),
        format!("service_name = {}", "{ a = ".repeat(50_000)),
        "a.".repeat(100_000) + "b = 1",
    ] {
        let path = dir.join("deep.toml");
        std::fs::write(&path, text).unwrap();
        let p = path.to_string_lossy().into_owned();
        let e = MonitoringConfig::from_lookup(|k| (k == "HYPERKIT_CONFIG").then(|| p.clone()))
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("HYPERKIT_CONFIG="), "{e}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
