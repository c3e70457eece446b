//! Rooms across processes on Redis (`h2chat serve --redis`): each test starts its own real
//! `redis-server` (persistence off, a free loopback port) and two or three real `h2chat serve
//! --redis` nodes, and checks what several nodes promise: one order per room, presence across
//! nodes, resume anywhere, and outages that lose nothing that was echoed.

#[path = "../support/mod.rs"]
mod support;

mod bench;
mod cluster;
mod limits;
mod nodes;
mod outage;
mod posts;
mod presence;
mod readme;
mod redis_server;
mod rooms;
