//! The npm tools the web tests drive, installed by the test command (`npm ci --prefix
//! tests/tools`): a test fails, never skips, when one is missing.

use std::path::PathBuf;

/// `tests/tools/node_modules/.bin/<name>`.
pub fn npm_tool(name: &str) -> PathBuf {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/tools/node_modules/.bin")
        .join(name);
    assert!(
        path.is_file(),
        "{} is missing: run `npm ci --prefix tests/tools` (the README's test command does)",
        path.display()
    );
    path
}
