//! `nstrace explain` and `nstrace tree` read files nobody vouches for. This
//! property test feeds them recorded traces of real runs (tests/fixtures),
//! mutated: values swapped for random JSON, keys dropped, lines cut and
//! shuffled, and plain random bytes. Whatever the input, both must finish
//! without a panic, name each bad line, and still explain the good ones.
//! It needs no root and runs in CI for a bounded number of cases
//! (NSTRACE_FUZZ_CASES, default 2000: about two seconds).

use nstrace::cli::{Format, TreeFormat};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use serde_json::Value;

const FIXTURES: [&str; 2] = [
    include_str!("fixtures/docker-classic.ndjson"),
    include_str!("fixtures/pivot-shared.ndjson"),
];

/// Runs every reader on `input`; panics propagate (the property).
fn read_everything(input: &[u8]) -> u64 {
    let mut bad = 0;
    for format in [Format::Text, Format::Ndjson] {
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let stats = nstrace::commands::explain(input, "fuzz", format, &mut out, &mut err)
            .expect("writing to memory cannot fail");
        bad = stats.exit_code() as u64;
        if format == Format::Ndjson {
            for line in out.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
                serde_json::from_slice::<Value>(line).expect("explain --format ndjson writes JSON");
            }
        }
    }
    for format in [TreeFormat::Text, TreeFormat::Dot] {
        let (mut out, mut err) = (Vec::new(), Vec::new());
        nstrace::commands::tree(input, "fuzz", format, &mut out, &mut err)
            .expect("writing to memory cannot fail");
    }
    bad
}

fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        ".{0,12}".prop_map(Value::from),
        Just(Value::from("EPERM")),
        Just(Value::from("syscall")),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map("[a-z_]{1,8}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// One edit of a parsed line: replace the value at a path of keys, or drop it.
#[derive(Debug, Clone)]
enum Edit {
    Replace(Vec<prop::sample::Index>, Value),
    Remove(Vec<prop::sample::Index>),
}

fn arb_edit() -> impl Strategy<Value = Edit> {
    let path = prop::collection::vec(any::<prop::sample::Index>(), 1..4);
    prop_oneof![
        (path.clone(), arb_json()).prop_map(|(p, v)| Edit::Replace(p, v)),
        path.prop_map(Edit::Remove),
    ]
}

fn apply(
    v: &mut Value,
    path: &[prop::sample::Index],
    f: &mut dyn FnMut(&mut serde_json::Map<String, Value>, String),
) {
    let Value::Object(m) = v else { return };
    if m.is_empty() {
        return;
    }
    let key = m
        .keys()
        .nth(path[0].index(m.len()))
        .cloned()
        .unwrap_or_default();
    if path.len() == 1 || !m[&key].is_object() {
        f(m, key);
    } else if let Some(child) = m.get_mut(&key) {
        apply(child, &path[1..], f);
    }
}

fn mutate(line: &str, edits: &[Edit]) -> String {
    let Ok(mut v) = serde_json::from_str::<Value>(line) else {
        return line.to_string();
    };
    for e in edits {
        match e {
            Edit::Replace(path, new) => apply(&mut v, path, &mut |m, k| {
                m.insert(k, new.clone());
            }),
            Edit::Remove(path) => apply(&mut v, path, &mut |m, k| {
                m.remove(&k);
            }),
        }
    }
    v.to_string()
}

fn cases() -> u32 {
    std::env::var("NSTRACE_FUZZ_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(2000)
}

#[test]
fn recorded_traces_are_read_whole_and_explained() {
    for fixture in FIXTURES {
        assert_eq!(
            read_everything(fixture.as_bytes()),
            0,
            "a recorded trace has no bad line"
        );
    }
    // The docker trace explains the container's mount as on the live run.
    let (mut out, mut err) = (Vec::new(), Vec::new());
    nstrace::commands::explain(
        FIXTURES[0].as_bytes(),
        "f",
        Format::Ndjson,
        &mut out,
        &mut err,
    )
    .unwrap();
    assert!(String::from_utf8_lossy(&out).contains("\"cause\":\"mount_too_revealing\""));
}

#[test]
fn recorded_traces_match_the_schema() {
    // Real lines with the newer fields: container, adopted (docker run),
    // targets and chrooted (pivot_root), the container line type.
    let schema: Value =
        serde_json::from_str(include_str!("../../docs/ndjson.schema.json")).unwrap();
    let validator = jsonschema::validator_for(&schema).expect("valid schema");
    let mut seen = std::collections::BTreeSet::new();
    for line in FIXTURES.iter().flat_map(|f| f.lines()) {
        let v: Value = serde_json::from_str(line).unwrap();
        let errors: Vec<String> = validator.iter_errors(&v).map(|e| e.to_string()).collect();
        assert!(errors.is_empty(), "{line}\n{errors:?}");
        for key in ["container", "adopted", "targets"] {
            if v.get(key).is_some() {
                seen.insert(key.to_string());
            }
        }
        seen.insert(format!("type {}", v["type"].as_str().unwrap()));
    }
    for what in ["container", "adopted", "targets", "type container"] {
        assert!(seen.contains(what), "no {what} in the fixtures to check");
    }
}

#[test]
fn mutated_traces_never_panic() {
    let lines: Vec<&str> = FIXTURES.iter().flat_map(|f| f.lines()).collect();
    let strategy = (
        prop::collection::vec(
            (
                any::<prop::sample::Index>(),
                prop::collection::vec(arb_edit(), 0..3),
            ),
            1..40,
        ),
        any::<prop::sample::Index>(),
        any::<bool>(),
    );
    let mut runner = TestRunner::new(Config {
        cases: cases(),
        failure_persistence: None,
        ..Config::default()
    });
    runner
        .run(&strategy, |(picks, cut, truncate)| {
            let mut text = String::new();
            for (pick, edits) in &picks {
                text.push_str(&mutate(lines[pick.index(lines.len())], edits));
                text.push('\n');
            }
            if truncate {
                // A trace cut anywhere, even inside a character.
                let mut bytes = text.into_bytes();
                bytes.truncate(cut.index(bytes.len() + 1));
                read_everything(&bytes);
            } else {
                read_everything(text.as_bytes());
            }
            Ok(())
        })
        .unwrap();
}

#[test]
fn random_bytes_never_panic() {
    let mut runner = TestRunner::new(Config {
        cases: cases(),
        failure_persistence: None,
        ..Config::default()
    });
    runner
        .run(&prop::collection::vec(any::<u8>(), 0..2048), |bytes| {
            read_everything(&bytes);
            Ok(())
        })
        .unwrap();
}
