//! The README's flags-and-limits tables name, for every row, a default and the tests that show
//! it: each test named there must exist (a `fn` of that name under `tests/` or `src/`), so a
//! renamed or deleted test cannot leave the table pointing at nothing.

use std::path::Path;

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
