//! The module graph stays layered (the table at the top of `src/lib.rs`): every `crate::…` path
//! in a module's code (comments and `#[cfg(test)]` code aside) names a module of a lower rank,
//! so that there is no cycle and no upward edge. Seams of one rank (hub, registry, bus) never
//! import one another.

use std::collections::BTreeMap;
use std::path::Path;

/// Each top-level module's rank: a module may use only modules of a lower rank.
const RANKS: [(&str, u8); 18] = [
    ("protocol", 0),
    ("model", 1),
    ("config", 2),
    ("tls", 2),
    ("shutdown", 2),
    ("fd_limit", 2),
    ("telemetry", 3),
    ("metrics", 3),
    ("redis_common", 4),
    ("memory_broker", 4),
    ("hub", 5),
    ("registry", 5),
    ("bus", 5),
    ("node", 6),
    ("session", 7),
    ("http", 8),
    ("startup", 9),
    ("main", 10),
];

/// The top-level modules a file's code names with `crate::`.
fn uses(code: &str) -> Vec<String> {
    let code = code.split("#[cfg(test)]").next().unwrap_or_default();
    let mut found = Vec::new();
    for line in code.lines() {
        if line.trim_start().starts_with("//") {
            continue;
        }
        for (at, _) in line.match_indices("crate::") {
            let name: String = line[at + "crate::".len()..]
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                .collect();
            found.push(name);
        }
    }
    found
}

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn every_module_uses_only_lower_layers() {
    let ranks: BTreeMap<&str, u8> = RANKS.into_iter().collect();
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut checked = 0;
    let mut upward = Vec::new();
    for file in files {
        let relative = file.strip_prefix(&src).unwrap();
        let first = relative.components().next().unwrap().as_os_str();
        // A module's test file beside it (`config_proptests.rs`, included by `#[path]`) is part
        // of that module.
        let module = first
            .to_str()
            .unwrap()
            .trim_end_matches(".rs")
            .trim_end_matches("_proptests");
        if module == "lib" {
            continue;
        }
        let rank = *ranks
            .get(module)
            .unwrap_or_else(|| panic!("src/{module} has no rank: add it to RANKS and lib.rs"));
        for used in uses(&std::fs::read_to_string(&file).unwrap()) {
            if used == module {
                continue;
            }
            let target = *ranks
                .get(used.as_str())
                .unwrap_or_else(|| panic!("{}: crate::{used} has no rank", file.display()));
            checked += 1;
            if target >= rank {
                upward.push(format!("{} uses crate::{used}", relative.display()));
            }
        }
    }
    assert!(checked > 50, "the scan found only {checked} crate paths");
    assert!(
        upward.is_empty(),
        "edges that are not downward: {upward:#?}"
    );
}

#[test]
fn the_scan_sees_paths_and_skips_comments_and_tests() {
    let code = "use crate::model::X;\n// crate::node in a comment\nfn f() { crate::hub::g() }\n\
                #[cfg(test)]\nmod tests { use crate::startup; }";
    assert_eq!(uses(code), ["model", "hub"]);
}
