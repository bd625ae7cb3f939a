//! The YAML of `meta.yaml`: what this store writes PyYAML reads back, and
//! what PyYAML writes this store reads.

use super::super::yaml::{Yaml, yaml_str};
use super::*;

#[test]
fn awkward_strings_are_quoted_and_read_back() {
    let awkward = [
        "hyperkit: model calls",
        "it's",
        "'quoted'",
        "a #b",
        "a#b",
        "- x",
        "-",
        "yes",
        "No",
        "null",
        "~",
        "123",
        "0x1F",
        "1.5e3",
        ".inf",
        "2024-01-01",
        "",
        " lead",
        "trail ",
        "tab\there",
        "line\nbreak",
        "a\n\nb",
        "\n",
        "crlf\r\n",
        "é ünï ☃ 日本",
        "back\\slash",
        "trailing backslash\\",
        "nul\0x",
        "bell\u{7}",
        "dq\"x",
        "\"",
        "@at",
        "%pc",
        "&anchor",
        "*alias",
        "!tag",
        "|block",
        ">fold",
        "[list]",
        "{map}",
        "a, b",
        "key: value: more",
        "ends with colon:",
        "e\u{2028}x",
        "bom\u{FEFF}",
        "nbsp\u{A0}",
        "<<",
        "=",
        "?",
        "🦀 crab",
        &"x ".repeat(100),
    ];
    for s in awkward {
        let written = format!("name: {}\nnext: 1\n", yaml_str(s));
        assert!(!yaml_str(s).contains('\n'), "{s:?} → {written:?}");
        let yaml = Yaml::parse(&written).unwrap_or_else(|e| panic!("{s:?} → {written:?}: {e}"));
        let path = Path::new("meta.yaml");
        assert_eq!(
            yaml.opt_string(path, "name").unwrap().unwrap_or_default(),
            s,
            "{written:?}"
        );
        assert_eq!(yaml.opt_int(path, "next").unwrap(), Some(1));
    }
    // Exactly what PyYAML writes, where it quotes.
    assert_eq!(yaml_str("hyperkit: model calls"), "'hyperkit: model calls'");
    assert_eq!(yaml_str("run: o'ne"), "'run: o''ne'");
    assert_eq!(yaml_str("it's"), "it's");
    assert_eq!(yaml_str("Default"), "Default");
    assert_eq!(yaml_str("0"), "'0'");
    assert_eq!(yaml_str(""), "''");
    assert_eq!(yaml_str("tab\there"), "\"tab\\there\"");
    assert_eq!(yaml_str("nul\0x"), "\"nul\\0x\"");
    assert_eq!(yaml_str("é ünï ☃"), "é ünï ☃");
}

#[test]
fn what_pyyaml_writes_is_read() {
    // `yaml.safe_dump({"name": s}, default_flow_style=False,
    // allow_unicode=True)` for awkward names, long ones folded.
    let cases = [
        ("name: 'line\n\n  break'\n", "line\nbreak"),
        ("name: 'a\n\n\n  b'\n", "a\n\nb"),
        (
            "name: xxxxxxxxxxxxxxxxxxxxxxxxxxxxxx yyyyyyyyyyyyyyyyyyyyyyyyyyyyyy zzzzzzzzzzzzzzzzzzzzzzzzzzzzzz\n  wwwwwwwwww\n",
            "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxx yyyyyyyyyyyyyyyyyyyyyyyyyyyyyy zzzzzzzzzzzzzzzzzzzzzzzzzzzzzz wwwwwwwwww",
        ),
        (
            "name: 'long\\ x x x x x x x x x x x x x x x x x x x x x x x x x x x x x x x x x x x\n  x x x x x x x x x x x x x x x x x x x x x x x x x '\n",
            "long\\ x x x x x x x x x x x x x x x x x x x x x x x x x x x x x x x x x x x x x x x x x x x x x x x x x x x x x x x x x x x x ",
        ),
        ("name: \"tab\\there\"\n", "tab\there"),
        ("name: \"nul\\0x\"\n", "nul\0x"),
        ("name: \"a\\\n  \\ b\"\n", "a b"),
        ("name: back\\slash\n", "back\\slash"),
        ("name: dq\"x\n", "dq\"x"),
        ("name: 'it''s'\n", "it's"),
    ];
    for (text, expected) in cases {
        let yaml = Yaml::parse(text).unwrap_or_else(|e| panic!("{text:?}: {e}"));
        assert_eq!(
            yaml.string(Path::new("m"), "name").unwrap(),
            expected,
            "{text:?}"
        );
    }
    // MLflow 3's experiment meta.yaml, extra keys and nulls included.
    let yaml = Yaml::parse(
        "artifact_location: file:///tmp/x/mlruns/0\ncreation_time: 1795754986068\neffective_trace_archival_retention: null\nexperiment_id: '0'\nlifecycle_stage: active\nname: Default\ntrace_location: null\ntags:\n- a\n- b\n",
    )
    .unwrap();
    let path = Path::new("m");
    assert_eq!(yaml.id(path, "experiment_id").unwrap(), "0");
    assert_eq!(yaml.opt_string(path, "trace_location").unwrap(), None);
    assert_eq!(
        yaml.opt_int(path, "creation_time").unwrap(),
        Some(1_795_754_986_068)
    );
}
