//! The README's flags-and-limits tables, checked against the code: every row names a default
//! and the tests that show it, each test named there must exist (a `fn` of that name under
//! `tests/` or `src/`, so a renamed or deleted test cannot leave the table pointing at nothing),
//! and each default the flags table states is the one `h2chat serve --help` shows (so a changed
//! default cannot leave the table, and the tests that rely on it, behind).

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Stdio;

use tokio::process::Command;

use crate::support::{within, PATIENCE};

/// Every flag of `serve --help` with the default it shows (`None`: it shows none).
async fn help_defaults() -> BTreeMap<String, Option<String>> {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_h2chat"));
    cmd.args(["serve", "--help"])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true);
    let out = within(PATIENCE, "h2chat serve --help", cmd.output())
        .await
        .expect("run h2chat serve --help");
    assert!(out.status.success(), "serve --help: {}", out.status);
    let text = String::from_utf8(out.stdout).expect("UTF-8 help");
    let mut defaults = BTreeMap::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        // An option's first line: six spaces, then `--name`.
        if let Some(rest) = line.strip_prefix("      --") {
            let name = rest.split_whitespace().next().unwrap_or_default();
            current = Some(format!("--{name}"));
            defaults.insert(format!("--{name}"), None);
        }
        if let (Some(flag), Some(at)) = (&current, line.find("[default: ")) {
            let value = line[at + "[default: ".len()..]
                .split(']')
                .next()
                .unwrap_or_default()
                .to_owned();
            defaults.insert(flag.clone(), Some(value));
        }
    }
    defaults
}

/// The rows of the README's limits table: (flags, default cell).
fn table_rows(readme: &str) -> Vec<(Vec<String>, String)> {
    let section = readme
        .split("\n## Flags and limits\n")
        .nth(1)
        .expect("a \"Flags and limits\" section");
    let mut rows = Vec::new();
    let mut in_table = false;
    for line in section.lines() {
        if line.starts_with("| flag | default |") {
            in_table = true;
            continue;
        }
        if !in_table || line.starts_with("|---") {
            continue;
        }
        if !line.starts_with('|') {
            break;
        }
        let cells: Vec<&str> = line.split(" | ").collect();
        let (Some(first), Some(default)) = (cells.first(), cells.get(1)) else {
            continue;
        };
        let flags: Vec<String> = first
            .split('`')
            .filter(|w| w.starts_with("--"))
            .map(str::to_owned)
            .collect();
        if !flags.is_empty() {
            rows.push((flags, default.trim().to_owned()));
        }
    }
    rows
}

/// What a README default says in `--help`'s terms: `Some(Some(value))` for a value
/// (`4194304 (4 MiB)` → 4194304, `1 MiB` → 1048576, `300 s` → 300, `0.002 s` → 0.002, `100/s` → 100,
/// `` `text` `` → text), `Some(None)` for `none` or `off` (the help shows no default, or 0),
/// `None` for prose the test cannot read (such a row is not checked).
fn readme_value(cell: &str) -> Option<Option<String>> {
    let cell = cell.trim();
    if cell.starts_with("none") || cell == "off" {
        return Some(None);
    }
    if let Some(inner) = cell.strip_prefix('`').and_then(|c| c.strip_suffix('`')) {
        return (!inner.contains('`')).then(|| Some(inner.replace(',', " ")));
    }
    let digits: String = cell
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.')
        .collect();
    if digits.contains('.') {
        // A decimal (`0.002 s`) is shown by --help as written.
        return digits.parse::<f64>().ok().map(|_| Some(digits));
    }
    let n: u64 = digits.parse().ok()?;
    let unit = cell[digits.len()..]
        .split_whitespace()
        .next()
        .unwrap_or_default();
    let n = match unit {
        "MiB" => n << 20,
        "KiB" => n << 10,
        _ => n,
    };
    Some(Some(n.to_string()))
}

#[tokio::test]
async fn every_default_in_the_readme_limits_table_is_the_one_serve_help_shows() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("read README.md");
    let help = help_defaults().await;
    let mut checked = 0;
    let mut wrong = Vec::new();
    for (flags, cell) in table_rows(&readme) {
        // `a / b` gives each flag its own default; one value for several flags is theirs all.
        let parts: Vec<&str> = cell.split(" / ").collect();
        for (i, flag) in flags.iter().enumerate() {
            let part = if parts.len() == flags.len() {
                parts[i]
            } else {
                &cell
            };
            let Some(want) = readme_value(part) else {
                continue;
            };
            let Some(shown) = help.get(flag) else {
                wrong.push(format!(
                    "{flag}: in the README's table, not in serve --help"
                ));
                continue;
            };
            let agrees = match (&want, shown) {
                (None, None) => true,
                (None, Some(v)) => v == "0" || v == "false",
                (Some(w), Some(v)) => w == v,
                (Some(_), None) => false,
            };
            if !agrees {
                wrong.push(format!("{flag}: README {part:?}, serve --help {shown:?}"));
            }
            checked += 1;
        }
    }
    assert!(wrong.is_empty(), "defaults that disagree: {wrong:#?}");
    // The table has about 50 flags; most defaults are plain values the test reads.
    assert!(
        checked >= 40,
        "only {checked} defaults were read from the table"
    );
}

/// The README from "## Flags and limits" to the next section after its tables.
fn limits_section() -> String {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("read README.md");
    let start = readme
        .find("## Flags and limits")
        .expect("a \"Flags and limits\" section");
    let rest = &readme[start..];
    let end = rest
        .find("### Configuration from the environment")
        .unwrap_or(rest.len());
    rest[..end].to_string()
}

/// Every table row's cells, header and rule rows left out.
fn rows(section: &str) -> Vec<Vec<String>> {
    section
        .lines()
        .filter(|l| l.starts_with("| ") && !l.starts_with("|---"))
        .map(|l| {
            l.trim()
                .trim_matches('|')
                .split(" | ")
                .map(|c| c.trim().to_string())
                .collect::<Vec<_>>()
        })
        .filter(|cells| cells.first().is_some_and(|c| c != "flag" && c != "what"))
        .collect()
}

/// Names in backticks that look like test functions (snake case with an underscore).
fn test_names(cell: &str) -> Vec<String> {
    cell.split('`')
        .skip(1)
        .step_by(2)
        .filter(|w| {
            w.contains('_')
                && w.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        })
        .map(str::to_string)
        .collect()
}

/// The text of every `.rs` file below `dir`.
fn sources(dir: &Path, out: &mut String) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push_str(&std::fs::read_to_string(&path).unwrap_or_default());
        }
    }
}

#[test]
fn every_row_has_a_default_and_every_test_it_names_exists() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut code = String::new();
    sources(&root.join("tests"), &mut code);
    sources(&root.join("src"), &mut code);
    let section = limits_section();
    let rows = rows(&section);
    assert!(rows.len() > 40, "found only {} rows", rows.len());
    let mut named = 0;
    for cells in &rows {
        let flag_row = cells.len() == 4;
        if flag_row {
            assert!(
                cells.get(1).is_some_and(|d| !d.is_empty()),
                "no default: {cells:?}"
            );
        }
        let tested_by = cells.last().map(String::as_str).unwrap_or_default();
        for name in test_names(tested_by) {
            named += 1;
            let defined =
                code.contains(&format!("fn {name}(")) || code.contains(&format!("fn {name}<"));
            assert!(
                defined,
                "the README names a test `{name}` that does not exist ({})",
                cells[0]
            );
        }
    }
    assert!(named > 50, "found only {named} test names");
}
