//! The roomcast binary: parse the configuration, start logging, run the server.

use clap::Parser;

fn main() -> anyhow::Result<()> {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let config = roomcast::Config::parse();
    actix_web::rt::System::new().block_on(roomcast::run(config))
}
