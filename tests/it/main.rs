//! Integration tests: the real server on 127.0.0.1 port 0, real WebSocket clients.
//!
//! One test binary with modules (rather than one binary per file) so the suite links once.

mod api;
mod auth;
mod bad_input;
mod chat;
mod cluster;
mod common;
mod durable;
mod fuzz;
mod guard;
mod hostile;
mod lifecycle;
mod limits;
mod loadtool;
mod metrics;
mod notify;
mod overload;
mod peer_tool;
mod terminal_client;
