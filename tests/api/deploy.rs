//! The operator's view stays true: every metric the alert rules
//! (`deploy/prometheus/hostie-rules.yaml`) and the Grafana dashboard
//! (`deploy/grafana/hostie-dashboard.json`) use is exposed, under that name, by a live node's
//! `/metrics` from its first scrape on (a series that appears only after its first event would
//! leave `rate()` empty and an alert blind).
//!
//! This is the only check of that fact: it runs the node exactly as `main` builds it, in
//! process, with no tool to install. `deploy/check` checks the same files' structure (promtool,
//! the dashboard's layout and queries), not their metric names.

use crate::helpers::{spawn_node, test_config};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// The files whose metric names must exist, relative to the crate root.
const USERS: [&str; 2] = [
    "deploy/prometheus/hostie-rules.yaml",
    "deploy/grafana/hostie-dashboard.json",
];

/// Series suffixes of a histogram (or summary) named by its base name in `# TYPE`.
const SERIES_SUFFIXES: [&str; 3] = ["_bucket", "_sum", "_count"];

/// Every `hostie_[a-z0-9_]+` word in `text`.
fn hostie_names(text: &str) -> BTreeSet<String> {
    let is_name = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_';
    let mut names = BTreeSet::new();
    for (at, _) in text.match_indices("hostie_") {
        let starts_word = text[..at]
            .chars()
            .next_back()
            .is_none_or(|c| !(is_name(c) || c.is_ascii_alphanumeric()));
        if !starts_word {
            continue;
        }
        let name: String = text[at..].chars().take_while(|c| is_name(*c)).collect();
        let name = name.trim_end_matches('_');
        if name.len() > "hostie_".len() {
            names.insert(name.to_owned());
        }
    }
    names
}

/// The exposition's metric families (`# TYPE name kind`) and sample names.
fn exposed(body: &str) -> (BTreeMap<String, String>, BTreeSet<String>) {
    let mut families = BTreeMap::new();
    let mut samples = BTreeSet::new();
    for line in body.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split_whitespace();
            if let (Some(name), Some(kind)) = (parts.next(), parts.next()) {
                families.insert(name.to_owned(), kind.to_owned());
            }
        } else if !line.starts_with('#') && !line.is_empty() {
            let end = line.find(['{', ' ']).unwrap_or(line.len());
            samples.insert(line[..end].to_owned());
        }
    }
    (families, samples)
}

/// Whether `name` (a family, a sample name, or a histogram series by its suffixed name) is
/// exposed.
fn is_exposed(name: &str, families: &BTreeMap<String, String>, samples: &BTreeSet<String>) -> bool {
    if families.contains_key(name) || samples.contains(name) {
        return true;
    }
    SERIES_SUFFIXES.iter().any(|suffix| {
        name.strip_suffix(suffix).is_some_and(|base| {
            matches!(
                families.get(base).map(String::as_str),
                Some("histogram" | "summary")
            )
        })
    })
}

#[test]
fn names_are_found_as_whole_words_only() {
    let text = r#"sum(rate(hostie_discoveries_total{job="hostie"}[5m])) / hostie_max_sessions
        # see hostie-rules.test.yaml; not_hostie_x; "hostie_sessions""#;
    let names: Vec<String> = hostie_names(text).into_iter().collect();
    assert_eq!(
        names,
        [
            "hostie_discoveries_total",
            "hostie_max_sessions",
            "hostie_sessions"
        ]
    );
}

#[tokio::test]
async fn every_metric_in_the_alert_rules_and_dashboard_is_exposed() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut used: BTreeMap<String, Vec<&str>> = BTreeMap::new();
    for file in USERS {
        let text = std::fs::read_to_string(root.join(file))
            .unwrap_or_else(|e| panic!("{file} is readable: {e}"));
        let names = hostie_names(&text);
        assert!(!names.is_empty(), "{file} uses no hostie_ metric");
        for name in names {
            used.entry(name).or_default().push(file);
        }
    }

    let node = spawn_node(test_config()).await;
    let (status, body) = node.admin_get("/metrics").await;
    assert_eq!(status, 200, "/metrics answers");
    let (families, samples) = exposed(&body);

    let missing: Vec<String> = used
        .iter()
        .filter(|(name, _)| !is_exposed(name, &families, &samples))
        .map(|(name, files)| format!("{name} (used in {})", files.join(", ")))
        .collect();
    assert!(
        missing.is_empty(),
        "metrics used by the rules or the dashboard but not exposed by a fresh node:\n  {}",
        missing.join("\n  ")
    );
    node.stop().await;
}
