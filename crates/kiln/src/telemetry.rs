//! Optional export of the service's spans over OTLP (HTTP, protobuf) to a collector, off unless
//! `[telemetry] otlp_endpoint` is set. The spans are the service's tracing spans (each HTTP
//! request, each job run with its client's trace as parent); the layer that turns them into
//! OpenTelemetry spans sits beside the log layer, each with its own filter.
//! The exporter's batch thread sends through a hyper connection that runs on the service's tokio
//! runtime, so no second HTTP stack is built in.

use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper_util::rt::TokioIo;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry::trace::{
    SpanContext, SpanId, TraceContextExt as _, TraceFlags, TraceId, TraceState,
};
use opentelemetry_otlp::{WithExportConfig as _, WithHttpConfig as _};
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::Resource;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;
use tracing_subscriber::Layer as _;

/// How long one export may take.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);

/// The most bytes of a collector's answer read.
const MAX_ANSWER: usize = 1 << 20;

/// Sends the exporter's requests on the service's runtime.
#[derive(Debug, Clone)]
struct RuntimeClient {
    runtime: tokio::runtime::Handle,
}

async fn send(request: http::Request<Bytes>) -> Result<http::Response<Bytes>, String> {
    let uri = request.uri().clone();
    if uri.scheme_str() != Some("http") {
        return Err(format!("{uri}: only http:// collectors are supported"));
    }
    let host = uri.host().ok_or("no host")?.to_string();
    let port = uri.port_u16().unwrap_or(80);
    let stream = tokio::net::TcpStream::connect((host.as_str(), port))
        .await
        .map_err(|e| format!("connect to {host}:{port}: {e}"))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    let conn = tokio::spawn(conn);
    let (mut parts, body) = request.into_parts();
    let authority = uri.authority().map(|a| a.to_string()).unwrap_or(host);
    parts.uri = uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/")
        .parse()
        .map_err(|e| format!("path: {e}"))?;
    parts.headers.insert(
        http::header::HOST,
        authority.parse().map_err(|e| format!("host: {e}"))?,
    );
    let response = sender
        .send_request(http::Request::from_parts(parts, Full::new(body)))
        .await
        .map_err(|e| format!("send: {e}"))?;
    let (parts, body) = response.into_parts();
    let body = http_body_util::Limited::new(body, MAX_ANSWER)
        .collect()
        .await
        .map_err(|e| format!("answer: {e}"))?
        .to_bytes();
    conn.abort();
    Ok(http::Response::from_parts(parts, body))
}

#[async_trait::async_trait]
impl opentelemetry_http::HttpClient for RuntimeClient {
    async fn send_bytes(
        &self,
        request: http::Request<Bytes>,
    ) -> Result<http::Response<Bytes>, opentelemetry_http::HttpError> {
        let task = self
            .runtime
            .spawn(async move { tokio::time::timeout(EXPORT_TIMEOUT, send(request)).await });
        match task.await {
            Ok(Ok(Ok(response))) => Ok(response),
            Ok(Ok(Err(e))) => Err(e.into()),
            Ok(Err(_)) => Err("the collector did not answer in time".into()),
            Err(e) => Err(e.to_string().into()),
        }
    }
}

/// What stops the exporter, sending what it still holds.
#[derive(Debug)]
pub struct Exporter {
    provider: SdkTracerProvider,
}

impl Exporter {
    /// Sends the spans still held and stops.
    pub fn shutdown(self) {
        if let Err(e) = self.provider.shutdown() {
            tracing::warn!(error = %e, "stopping the span exporter");
        }
    }
}

/// Makes a client's trace the parent of a span.
fn set_parent(span: &tracing::Span, cx: &kiln_core::trace::TraceContext) {
    let (Ok(trace), Ok(parent)) = (
        TraceId::from_hex(cx.trace_id()),
        SpanId::from_hex(cx.parent_id()),
    ) else {
        return;
    };
    let sampled = u8::from_str_radix(&cx.traceparent()[53..55], 16).is_ok_and(|f| f & 1 == 1);
    let state = cx
        .tracestate()
        .and_then(|s| s.parse::<TraceState>().ok())
        .unwrap_or_default();
    let remote = SpanContext::new(
        trace,
        parent,
        if sampled {
            TraceFlags::SAMPLED
        } else {
            TraceFlags::default()
        },
        true,
        state,
    );
    let _ = span.set_parent(opentelemetry::Context::new().with_remote_span_context(remote));
}

/// Starts logging to stderr (`KILN_LOG` filters it, `KILN_LOG_FORMAT=json` makes it JSON) and,
/// with `otlp` (`http://host:4318` and a service name), exporting the service's spans to that
/// collector's `/v1/traces`. Needs a tokio runtime entered.
pub fn init(otlp: Option<(&str, &str)>) -> anyhow::Result<Option<Exporter>> {
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    let filter = tracing_subscriber::EnvFilter::try_from_env("KILN_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let logs = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    // One JSON object per line for log collectors; text for people.
    let logs = if std::env::var("KILN_LOG_FORMAT").as_deref() == Ok("json") {
        logs.json().with_filter(filter).boxed()
    } else {
        logs.with_filter(filter).boxed()
    };
    let (spans, exporter) = match otlp {
        Some((endpoint, service_name)) => {
            let (layer, exporter) = span_layer(endpoint, service_name)?;
            kiln_core::trace::set_parent_hook(set_parent);
            (Some(layer), Some(exporter))
        }
        None => (None, None),
    };
    tracing_subscriber::registry().with(spans).with(logs).init();
    Ok(exporter)
}

/// The layer that exports spans to `endpoint`, with what stops it.
fn span_layer<S>(
    endpoint: &str,
    service_name: &str,
) -> anyhow::Result<(impl tracing_subscriber::Layer<S>, Exporter)>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    let url = format!("{}/v1/traces", endpoint.trim_end_matches('/'));
    anyhow::ensure!(
        url.starts_with("http://"),
        "otlp_endpoint {endpoint:?}: only http:// collectors are supported"
    );
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_http_client(RuntimeClient {
            runtime: tokio::runtime::Handle::current(),
        })
        .with_endpoint(url)
        .with_timeout(EXPORT_TIMEOUT)
        .build()
        .context("building the OTLP span exporter")?;
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(
            Resource::builder()
                .with_service_name(service_name.to_string())
                .build(),
        )
        .build();
    let tracer = provider.tracer("kiln");
    // The service's own spans; the libraries' are not its story.
    let layer = tracing_opentelemetry::layer()
        .with_tracer(tracer)
        .with_filter(tracing_subscriber::EnvFilter::new(
            "warn,kiln_core=info,kiln_server=info",
        ));
    Ok((layer, Exporter { provider }))
}
