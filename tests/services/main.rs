//! The services beside chat, over real sockets: health, reflection, log watching and echo.

#[path = "../support/mod.rs"]
mod support;

mod echo;
mod health;
mod logwatch;
mod reflection;
