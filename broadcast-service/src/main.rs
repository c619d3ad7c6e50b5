//! `broadcast-service`: parses the configuration, sets up logs and metrics and runs the service
//! until SIGTERM or ctrl-c.

use broadcast_service::Config;
use clap::{CommandFactory, Parser};
use process::{init_logs, install_metrics, shutdown_signal};

fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    if let Err(message) = config.validate() {
        Config::command()
            .error(clap::error::ErrorKind::ArgumentConflict, message)
            .exit();
    }
    // Outside the runtime: the trace exporter's blocking HTTP client must be neither built
    // nor dropped on a runtime thread. Dropped last, it exports the last spans.
    let _telemetry = init_logs(config.log_json, "broadcast-service");
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(config.listen).await?;
        let metrics = install_metrics().map_err(anyhow::Error::msg)?;
        broadcast_service::run(config, listener, Some(metrics), shutdown_signal()).await
    })
}
