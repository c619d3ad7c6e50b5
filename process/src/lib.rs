//! What both service binaries do the same way around the service itself: logs, traces,
//! signals, and the parsing of flag values ([`flags`]).

#![warn(missing_docs)]

pub mod flags;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::Resource;
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// What [`init_logs`] started that must end with the process: dropping it exports the spans
/// not sent yet (keep it alive in `main`).
#[must_use = "dropping it stops the trace export"]
pub struct Telemetry {
    traces: Option<SdkTracerProvider>,
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Some(provider) = self.traces.take() {
            if let Err(error) = provider.shutdown() {
                eprintln!("OTLP trace export: shutdown failed: {error}");
            }
        }
    }
}

/// Logs to stderr, filtered by `RUST_LOG` (default `info`), as JSON lines when `json`; and,
/// when `OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set,
/// exports the service's spans over OTLP (HTTP/protobuf) as `service` (unless
/// `OTEL_SERVICE_NAME` says otherwise). The spans exported are this workspace's, at `info` and
/// above, whatever `RUST_LOG` says of the logs.
pub fn init_logs(json: bool, service: &'static str) -> Telemetry {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let logs = if json {
        tracing_subscriber::fmt::layer().json().boxed()
    } else {
        tracing_subscriber::fmt::layer().boxed()
    };
    let (traces, provider, trouble) = match otlp(service) {
        Ok(Some(provider)) => {
            let spans = Targets::new()
                .with_target("broadcast_service", LevelFilter::INFO)
                .with_target("primary_picture_service", LevelFilter::INFO);
            let layer = tracing_opentelemetry::layer()
                .with_tracer(provider.tracer(service))
                .with_filter(spans);
            (Some(layer), Some(provider), None)
        }
        Ok(None) => (None, None, None),
        Err(error) => (None, None, Some(error)),
    };
    tracing_subscriber::registry()
        .with(logs.with_filter(filter))
        .with(traces)
        .init();
    if let Some(error) = trouble {
        tracing::error!(%error, "OTLP trace export is configured but cannot start; no traces are exported");
    } else if provider.is_some() {
        tracing::info!("exporting traces over OTLP (OTEL_EXPORTER_OTLP_* variables)");
    }
    Telemetry { traces: provider }
}

/// Installs the process-wide Prometheus recorder that the service's `GET /metrics` renders
/// (through the handle returned), with a thread that runs its upkeep every 5 seconds (which
/// keeps histogram buckets from growing between scrapes). `main` calls it once; a library never
/// does, so a host application keeps its own recorder. Fails when a recorder is already
/// installed.
pub fn install_metrics() -> Result<metrics_exporter_prometheus::PrometheusHandle, String> {
    let handle = metrics_exporter_prometheus::PrometheusBuilder::new()
        .install_recorder()
        .map_err(|e| format!("installing the metrics recorder: {e}"))?;
    let upkeep = handle.clone();
    std::thread::Builder::new()
        .name("metrics-upkeep".to_string())
        .spawn(move || loop {
            std::thread::sleep(std::time::Duration::from_secs(5));
            upkeep.run_upkeep();
        })
        .map_err(|e| format!("starting the metrics upkeep thread: {e}"))?;
    Ok(handle)
}

/// The OTLP trace pipeline, if the environment asks for one (the OpenTelemetry SDK's
/// variables: an endpoint set, and neither `OTEL_SDK_DISABLED=true` nor
/// `OTEL_TRACES_EXPORTER=none`). The exporter reads the other `OTEL_EXPORTER_OTLP_*` variables
/// (headers, timeout) itself; the batch processor the `OTEL_BSP_*` ones.
fn otlp(service: &'static str) -> Result<Option<SdkTracerProvider>, String> {
    let set = |name: &str| std::env::var(name).is_ok_and(|v| !v.trim().is_empty());
    let is = |name: &str, value: &str| {
        std::env::var(name).is_ok_and(|v| v.trim().eq_ignore_ascii_case(value))
    };
    if !(set("OTEL_EXPORTER_OTLP_ENDPOINT") || set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))
        || is("OTEL_SDK_DISABLED", "true")
        || is("OTEL_TRACES_EXPORTER", "none")
    {
        return Ok(None);
    }
    for name in [
        "OTEL_EXPORTER_OTLP_PROTOCOL",
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
    ] {
        if set(name) && !is(name, "http/protobuf") {
            return Err(format!(
                "{name}: only http/protobuf is supported (the OTLP/HTTP port, usually 4318)"
            ));
        }
    }
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .build()
        .map_err(|error| error.to_string())?;
    let mut resource = Resource::builder();
    if !set("OTEL_SERVICE_NAME") {
        resource = resource.with_service_name(service);
    }
    Ok(Some(
        SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(resource.build())
            .build(),
    ))
}
/// Resolves on ctrl-c or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::error!(%error, "cannot listen for ctrl-c");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::error!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutdown signal received");
}
