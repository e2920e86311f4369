//! The top-level rooms of `src/` depend on each other without cycles: data flows
//! one way (adapter → request → identity → directory → policy → answer), and a
//! room that needs another's type takes a neutral one instead of reaching back.
//! A room is a directory under `src/` or a top-level file; an edge is any
//! `crate::ROOM` path in its code (comments and tests excluded: a room's tests
//! may use any other room to build fixtures). `main.rs` and `cli/` (the binary)
//! and `lib.rs` (the public surface) are not rooms.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// room → rooms it uses.
fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let room_of = |path: &Path| -> Option<String> {
        let relative = path.strip_prefix(&src).unwrap();
        let first = relative.components().next()?.as_os_str().to_str()?;
        let room = first.strip_suffix(".rs").unwrap_or(first);
        (!matches!(room, "main" | "lib" | "cli")).then(|| room.to_owned())
    };
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in &files {
        let Some(room) = room_of(file) else { continue };
        if file.file_stem().is_some_and(|stem| stem == "tests") {
            continue;
        }
        let text = std::fs::read_to_string(file).unwrap();
        // A file's unit tests sit at its end, after `#[cfg(test)]`.
        let code = text.split("#[cfg(test)]").next().unwrap_or("");
        let uses = graph.entry(room.clone()).or_default();
        for line in code.lines() {
            let code = line.split("//").next().unwrap_or("");
            let mut rest = code;
            while let Some(at) = rest.find("crate::") {
                rest = &rest[at + "crate::".len()..];
                let name: String = rest
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                if !name.is_empty() && name != room {
                    uses.insert(name);
                }
            }
        }
    }
    graph
}

/// A cycle through `start`, if any (depth-first).
fn cycle_from(graph: &BTreeMap<String, BTreeSet<String>>, start: &str) -> Option<Vec<String>> {
    fn visit(
        graph: &BTreeMap<String, BTreeSet<String>>,
        at: &str,
        start: &str,
        path: &mut Vec<String>,
        seen: &mut BTreeSet<String>,
    ) -> bool {
        for next in graph.get(at).into_iter().flatten() {
            if next == start {
                path.push(next.clone());
                return true;
            }
            if seen.insert(next.clone()) {
                path.push(next.clone());
                if visit(graph, next, start, path, seen) {
                    return true;
                }
                path.pop();
            }
        }
        false
    }
    let mut path = vec![start.to_owned()];
    let mut seen = BTreeSet::new();
    visit(graph, start, start, &mut path, &mut seen).then_some(path)
}

#[test]
fn the_rooms_of_src_have_no_import_cycle() {
    let graph = graph();
    for (room, uses) in &graph {
        println!(
            "{room} -> {}",
            uses.iter().cloned().collect::<Vec<_>>().join(", ")
        );
    }
    let cycles: Vec<String> = graph
        .keys()
        .filter_map(|room| cycle_from(&graph, room))
        .map(|cycle| cycle.join(" -> "))
        .collect();
    assert!(
        cycles.is_empty(),
        "import cycles between rooms:\n{}",
        cycles.join("\n")
    );
}
