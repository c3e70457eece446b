//! Operability: the test command's setup on a stock Debian/Ubuntu, the command line's exit codes,
//! flag validation, configuration from the environment, the operator's log lines, metrics, and
//! the README's quick start.

#[path = "../support/mod.rs"]
mod support;

mod budget_metric;
mod command_line;
mod env;
mod flags;
mod limits_table;
mod logs;
mod metrics;
mod readme;
mod scrape;
mod server;
mod setup;
