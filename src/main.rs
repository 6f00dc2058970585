//! The roomcast binary: parse the configuration, start logging, run the server.

use clap::Parser;

fn main() -> anyhow::Result<()> {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let config = roomcast::Config::parse();
    // Past a file-size limit (`ulimit -f`) a write then fails with an error that the store
    // reports (the chat is answered `store_unavailable`, as on a full disk), rather than
    // SIGXFSZ ending the server.
    // SAFETY: sets one signal's disposition, before any thread starts.
    unsafe { libc::signal(libc::SIGXFSZ, libc::SIG_IGN) };
    actix_web::rt::System::new().block_on(roomcast::run(config))
}
