//! Property tests as fuzzers: whatever bytes a meta.yaml or a metric file
//! holds, reading it gives a value or a Store error, never a panic. Run 100
//! times more by hand with `PROPTEST_CASES=25600 cargo test -p hyperkit-obs
//! --lib mlflow::file_store`.

use super::super::read::parse_metric_line;
use super::super::yaml::Yaml;
use proptest::prelude::*;

fn yamlish() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just("run_id: abc\n".to_owned()),
        Just("status: 3\n".to_owned()),
        Just("  continued\n".to_owned()),
        Just("- item\n".to_owned()),
        Just("key: 'it''s'\n".to_owned()),
        Just("key: \"a\\x41\\u263A\\\n  b\"\n".to_owned()),
        Just("key: \"unterminated\n".to_owned()),
        Just("key: [1, 2\n".to_owned()),
        Just("---\n".to_owned()),
        Just("#comment\n".to_owned()),
        "[ -~]{0,20}\n",
        any::<String>(),
    ];
    proptest::collection::vec(piece, 0..40).prop_map(|v| v.concat())
}

proptest! {
    #[test]
    fn any_meta_yaml_text_parses_or_is_refused(text in yamlish()) {
        let _ = Yaml::parse(&text);
    }

    #[test]
    fn arbitrary_bytes_as_meta_yaml_parse_or_are_refused(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let _ = Yaml::parse(&String::from_utf8_lossy(&bytes));
    }

    #[test]
    fn any_metric_line_parses_or_is_refused(line in "[0-9 .eE+\\-naif]{0,64}|\\PC{0,64}") {
        if let Some(m) = parse_metric_line(&line, "k") {
            prop_assert_eq!(m.key, "k");
        }
    }
}
