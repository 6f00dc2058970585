//! Browser tests: the real page (static/) in headless Chromium, driven through chromedriver
//! with fantoccini, against the real server in-process on 127.0.0.1 port 0.
//!
//! They need Debian's `chromium` and `chromium-driver` (/usr/bin/chromium,
//! /usr/bin/chromedriver) and fail, saying how to install them, when those are missing.
//! Each test starts its own chromedriver, one Chromium (a window per person) and its own
//! server; the tests run one at a time. On failure, every window's screenshot, console log
//! and HTML are saved under target/browser-artifacts/<test>/ and their paths printed.

#[path = "../it/common.rs"]
mod common;
mod harness;

mod access;
mod chat;
mod dashboard;
mod dates;
mod notify;
mod protocol;
mod resilience;
mod rooms;
mod safety;
mod session;
mod threads;
mod tokens;
