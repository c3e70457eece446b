//! The architecture, checked from the source files: the gRPC layer names nothing outside itself,
//! the chat client never imports the server, and no two files import each other, directly or
//! round a longer loop.
//!
//! The checks read `src/` as text: every path that starts at `crate::`, `super::`, `self::` or a
//! child module a file declares is resolved to the file that defines the module it names.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

/// One source file and the module path it defines (`["grpc", "server", "call"]`).
struct SourceFile {
    rel: String,
    module: Vec<String>,
    text: String,
}

fn src_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Every library file under `src/` (the binaries in `src/bin/` are crates of their own).
fn library_files() -> Vec<SourceFile> {
    let mut out = Vec::new();
    let mut dirs = vec![src_dir()];
    while let Some(dir) = dirs.pop() {
        for entry in fs::read_dir(&dir).expect("read src/") {
            let path = entry.expect("dir entry").path();
            if path.is_dir() {
                if path.file_name().is_some_and(|n| n != "bin") {
                    dirs.push(path);
                }
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let rel = path
                .strip_prefix(src_dir())
                .expect("under src/")
                .to_string_lossy()
                .into_owned();
            let mut module: Vec<String> = rel
                .trim_end_matches(".rs")
                .split('/')
                .map(str::to_owned)
                .collect();
            if matches!(module.last().map(String::as_str), Some("mod" | "lib")) {
                module.pop();
            }
            let text = fs::read_to_string(&path).expect("read a source file");
            out.push(SourceFile { rel, module, text });
        }
    }
    out.sort_by(|a, b| a.rel.cmp(&b.rel));
    out
}

/// The text without `//` comments (doc comments included), string literals and the paths of
/// `pub(in path)` visibilities (which name a scope, not something used).
fn code_only(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for line in text.lines() {
        let stripped;
        let line = match (line.find("pub(in "), line.find(')')) {
            (Some(at), Some(end)) if end > at => {
                stripped = format!("{}pub{}", &line[..at], &line[end + 1..]);
                stripped.as_str()
            }
            _ => line,
        };
        let mut in_str = false;
        let mut prev = ' ';
        let mut chars = line.chars().peekable();
        while let Some(c) = chars.next() {
            if !in_str && c == '/' && chars.peek() == Some(&'/') {
                break;
            }
            if c == '"' && prev != '\\' && prev != '\'' {
                in_str = !in_str;
                prev = c;
                continue;
            }
            if !in_str {
                out.push(c);
            }
            prev = c;
        }
        out.push('\n');
    }
    out
}

/// Every path of two or more segments in `code`, with the line it is on (`super::{a, b}` and
/// `super::*` count as the path `super`).
fn paths(code: &str) -> Vec<(usize, Vec<String>)> {
    let mut out = Vec::new();
    for (n, line) in code.lines().enumerate() {
        let bytes: Vec<char> = line.chars().collect();
        let mut i = 0;
        while i < bytes.len() {
            let starts_ident = (bytes[i].is_alphabetic() || bytes[i] == '_')
                && (i == 0 || !(bytes[i - 1].is_alphanumeric() || bytes[i - 1] == '_'));
            if !starts_ident {
                i += 1;
                continue;
            }
            let mut segments = Vec::new();
            let mut j = i;
            loop {
                let start = j;
                while j < bytes.len() && (bytes[j].is_alphanumeric() || bytes[j] == '_') {
                    j += 1;
                }
                segments.push(bytes[start..j].iter().collect::<String>());
                let more = j + 2 < bytes.len()
                    && bytes[j] == ':'
                    && bytes[j + 1] == ':'
                    && (bytes[j + 2].is_alphabetic() || bytes[j + 2] == '_');
                let group = j + 2 < bytes.len()
                    && bytes[j] == ':'
                    && bytes[j + 1] == ':'
                    && (bytes[j + 2] == '{' || bytes[j + 2] == '*');
                if more {
                    j += 2;
                    continue;
                }
                if group {
                    segments.push(String::new());
                }
                break;
            }
            if segments.len() >= 2 {
                segments.retain(|s| !s.is_empty());
                out.push((n + 1, segments));
            }
            i = j.max(i + 1);
        }
    }
    out
}

/// The child modules a file declares (`mod x;` / `pub mod x;`), not inline ones.
fn declared_children(code: &str) -> BTreeSet<String> {
    code.lines()
        .filter_map(|l| {
            let l = l.trim();
            let l = l
                .strip_prefix("pub ")
                .or_else(|| l.strip_prefix("pub(crate) "))
                .unwrap_or(l);
            l.strip_prefix("mod ")?.strip_suffix(';').map(str::to_owned)
        })
        .collect()
}

/// Line numbers at which an inline `mod tests {` (or other inline module) opens, so `super::`
/// below it starts one level deeper.
fn inline_module_start(code: &str) -> Option<usize> {
    code.lines()
        .position(|l| {
            let l = l.trim();
            l.starts_with("mod ") && l.ends_with('{')
        })
        .map(|i| i + 1)
}

/// Resolves a path used in `file` to an absolute module path (crate root = empty), or `None` for
/// paths into other crates or items the file defines itself.
fn resolve(
    file: &SourceFile,
    line: usize,
    path: &[String],
    children: &BTreeSet<String>,
) -> Option<Vec<String>> {
    let inline_depth = match inline_module_start(&code_only(&file.text)) {
        Some(start) if line > start => 1,
        _ => 0,
    };
    let mut here: Vec<String> = file.module.clone();
    let mut rest = path;
    match rest.first().map(String::as_str) {
        Some("crate") => {
            here.clear();
            rest = &rest[1..];
        }
        Some("super") => {
            let mut ups = 0;
            while rest.first().is_some_and(|s| s == "super") {
                ups += 1;
                rest = &rest[1..];
            }
            // Inside an inline module the first `super` only leaves that module.
            let ups = ups - inline_depth.min(ups);
            if ups > here.len() {
                return Some(vec!["<above the crate>".to_owned()]);
            }
            here.truncate(here.len() - ups);
        }
        Some("self") => rest = &rest[1..],
        Some(first) if children.contains(first) => {}
        _ => return None,
    }
    here.extend(rest.iter().cloned());
    Some(here)
}

/// The file that defines the longest prefix of `module`.
fn owner<'a>(files: &'a [SourceFile], module: &[String]) -> Option<&'a SourceFile> {
    (0..=module.len())
        .rev()
        .find_map(|n| files.iter().find(|f| f.module == module[..n]))
}

/// Every resolved reference of every file: (file, line, absolute module path).
fn references(files: &[SourceFile]) -> Vec<(&SourceFile, usize, Vec<String>)> {
    let mut out = Vec::new();
    for file in files {
        let code = code_only(&file.text);
        let children = declared_children(&code);
        for (line, path) in paths(&code) {
            if let Some(abs) = resolve(file, line, &path, &children) {
                out.push((file, line, abs));
            }
        }
    }
    out
}

#[test]
fn the_grpc_layer_names_nothing_outside_itself() {
    let files = library_files();
    let mut offences = Vec::new();
    for file in files
        .iter()
        .filter(|f| f.module.first().is_some_and(|m| m == "grpc"))
    {
        // Doc comments count too: the layer's documentation does not lean on what is above it.
        for (n, line) in file.text.lines().enumerate() {
            let mut rest = line;
            while let Some(at) = rest.find("crate::") {
                let after = &rest[at + "crate::".len()..];
                if !after.starts_with("grpc") {
                    offences.push(format!("src/{}:{}: {}", file.rel, n + 1, line.trim()));
                }
                rest = after;
            }
            if line.contains("pub(crate)") {
                offences.push(format!(
                    "src/{}:{}: pub(crate) reaches outside the gRPC layer; use pub(in crate::grpc)",
                    file.rel,
                    n + 1
                ));
            }
        }
    }
    for (file, line, abs) in references(&files) {
        if file.module.first().is_some_and(|m| m == "grpc")
            && abs.first().is_none_or(|m| m != "grpc")
        {
            offences.push(format!(
                "src/{}:{line}: reaches {}",
                file.rel,
                abs.join("::")
            ));
        }
    }
    assert!(
        offences.is_empty(),
        "the gRPC layer must stay a crate of its own:\n{}",
        offences.join("\n")
    );
}

#[test]
fn the_chat_client_never_imports_the_server() {
    let files = library_files();
    let mut offences = Vec::new();
    for (file, line, abs) in references(&files) {
        let from_client = file.module.first().is_some_and(|m| m == "client");
        let into_server = abs.first().is_some_and(|m| m == "services")
            || abs.starts_with(&["grpc".to_owned(), "server".to_owned()]);
        if from_client && into_server {
            offences.push(format!(
                "src/{}:{line}: reaches {}",
                file.rel,
                abs.join("::")
            ));
        }
    }
    assert!(
        offences.is_empty(),
        "the client imports the server:\n{}",
        offences.join("\n")
    );
}

#[test]
fn no_two_files_import_each_other_round_any_loop() {
    let files = library_files();
    let mut edges: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for (file, _, abs) in references(&files) {
        let Some(target) = owner(&files, &abs) else {
            continue;
        };
        // A file's uses of its own items are no edge, and neither is a child's use of the module
        // it belongs to: a module file and its children are one module whose parent file holds
        // the shared items (mini-redis's `cmd/*.rs` read `cmd/mod.rs` the same way). Every other
        // use is an edge: siblings, cousins, and a parent's use of its children.
        let own_ancestor = target.module.len() < file.module.len()
            && file.module.starts_with(&target.module)
            && !target.module.is_empty();
        if target.rel != file.rel && !own_ancestor {
            edges.entry(&file.rel).or_default().insert(&target.rel);
        }
    }
    let graph: BTreeMap<&str, Vec<&str>> = edges
        .iter()
        .map(|(from, tos)| (*from, tos.iter().copied().collect()))
        .collect();
    let cycles = find_cycles(&graph);
    assert!(
        cycles.is_empty(),
        "import cycles between files:\n{}",
        cycles.join("\n")
    );
}

/// Every elementary loop found by depth-first search, as `a -> b -> a`.
fn find_cycles<'a>(graph: &BTreeMap<&'a str, Vec<&'a str>>) -> Vec<String> {
    fn visit<'a>(
        node: &'a str,
        graph: &BTreeMap<&'a str, Vec<&'a str>>,
        stack: &mut Vec<&'a str>,
        done: &mut BTreeSet<&'a str>,
        out: &mut Vec<String>,
    ) {
        if let Some(at) = stack.iter().position(|n| *n == node) {
            let mut cycle: Vec<&str> = stack[at..].to_vec();
            cycle.push(node);
            out.push(cycle.join(" -> "));
            return;
        }
        if done.contains(node) {
            return;
        }
        stack.push(node);
        for next in graph.get(node).into_iter().flatten() {
            visit(next, graph, stack, done, out);
        }
        stack.pop();
        done.insert(node);
    }
    let mut out = Vec::new();
    let mut done = BTreeSet::new();
    for node in graph.keys() {
        visit(node, graph, &mut Vec::new(), &mut done, &mut out);
    }
    out
}

#[test]
fn the_checks_see_what_they_look_for() {
    // The scanner and the resolver, on lines written out here, so that a broken scanner cannot
    // make the checks above pass by seeing nothing.
    let code =
        code_only("use crate::services::chat::{a, b}; // crate::ignored\nuse super::{x, y};\n");
    let found = paths(&code);
    assert_eq!(
        found[0],
        (1, vec!["crate".into(), "services".into(), "chat".into()])
    );
    assert_eq!(found[1], (2, vec!["super".into()]));
    let file = SourceFile {
        rel: "grpc/server/call/mod.rs".into(),
        module: vec!["grpc".into(), "server".into(), "call".into()],
        text: String::new(),
    };
    let up = resolve(
        &file,
        1,
        &["super".into(), "super".into(), "codec".into()],
        &BTreeSet::new(),
    );
    assert_eq!(up, Some(vec!["grpc".into(), "codec".into()]));
    let out = resolve(
        &file,
        1,
        &[
            "super".into(),
            "super".into(),
            "super".into(),
            "room".into(),
        ],
        &BTreeSet::new(),
    );
    assert_eq!(out, Some(vec!["room".into()]));
    let mut graph = BTreeMap::new();
    graph.insert("a.rs", vec!["b.rs"]);
    graph.insert("b.rs", vec!["a.rs"]);
    assert_eq!(find_cycles(&graph), vec!["a.rs -> b.rs -> a.rs".to_owned()]);
    // And the real tree has files in every layer the checks talk about.
    let files = library_files();
    for layer in ["grpc", "services", "client", "stdio", "bench"] {
        assert!(
            files
                .iter()
                .any(|f| f.module.first().is_some_and(|m| m == layer)),
            "{layer}"
        );
    }
    assert!(
        references(&files).len() > 100,
        "the resolver finds the crate's imports"
    );
}

/// Every `.rs` file under `src/` (binaries included), as `grpc/server/call/mod.rs`.
fn every_source_file() -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut dirs = vec![src_dir()];
    while let Some(dir) = dirs.pop() {
        for entry in fs::read_dir(&dir).expect("read src/") {
            let path = entry.expect("dir entry").path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let rel = path.strip_prefix(src_dir()).expect("under src/");
                let rel = rel.to_string_lossy().into_owned();
                let name = path
                    .file_name()
                    .expect("a name")
                    .to_string_lossy()
                    .into_owned();
                out.push((rel, name));
            }
        }
    }
    out.sort();
    out
}

/// How far after a folder's name its files may be named (a few lines of the tree).
const NEAR_CHARS: usize = 700;

/// Whether `doc` names `rel` as the layout docs do: each directory on the way, then the file
/// (`grpc/server/` … `call/mod.rs`), or the file's own path.
fn names_file(doc: &str, rel: &str) -> bool {
    if doc.contains(rel) {
        return true;
    }
    // The docs name a file under its nearest listed folder: `server/` then `call/mod.rs`, or
    // `services/chat/` then `room.rs`. Accept any split of the path into a folder that appears
    // and a remainder that appears soon after it (within the folder's few lines).
    let parts: Vec<&str> = rel.split('/').collect();
    (1..parts.len()).any(|k| {
        let folder = format!("{}/", parts[..k].join("/"));
        let rest = parts[k..].join("/");
        let short_folder = format!("{}/", parts[k - 1]);
        [folder, short_folder].iter().any(|f| {
            doc.match_indices(f.as_str()).any(|(at, _)| {
                let near: String = doc[at..].chars().take(NEAR_CHARS).collect();
                near.contains(rest.as_str())
            })
        })
    })
}

#[test]
fn the_layout_docs_name_every_file() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = fs::read_to_string(root.join("README.md")).expect("README.md");
    let at = readme.find("\n## Layout\n").expect("a Layout section");
    let section = &readme[at..];
    let section = &section[..section[1..].find("\n## ").map_or(section.len(), |e| e + 1)];
    let lib = fs::read_to_string(src_dir().join("lib.rs")).expect("lib.rs");
    let lib_doc: String = lib
        .lines()
        .filter(|l| l.starts_with("//!"))
        .collect::<Vec<_>>()
        .join("\n");
    let mut missing = Vec::new();
    for (rel, _) in every_source_file() {
        if !names_file(section, &rel) {
            missing.push(format!("README Layout misses src/{rel}"));
        }
        if rel != "lib.rs" && !names_file(&lib_doc, &rel) {
            missing.push(format!("lib.rs # Layout misses {rel}"));
        }
    }
    assert!(missing.is_empty(), "{}", missing.join("\n"));
    assert!(
        !names_file("grpc/ codec.rs", "grpc/no_such_file.rs"),
        "the matcher can miss"
    );
}
