//! `broadcast-service`: parses the configuration, sets up logging and runs the service until
//! SIGTERM or ctrl-c.

use broadcast_service::Config;
use clap::Parser;
use primary_picture_service::process::{init_logs, shutdown_signal};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    init_logs(config.log_json);
    let listener = tokio::net::TcpListener::bind(config.listen).await?;
    broadcast_service::run(config, listener, shutdown_signal()).await
}
