//! The metrics listener (`--metrics ADDR`): `GET /metrics` in the Prometheus text format, on an
//! address of its own so the public port never shows it. A scrape first reads what is cheaper
//! to read than to count (connections, the hub's levels, the process), then renders.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::Server;
use crate::metrics::{self, process};
use crate::park;

/// Scrapes served at once; more wait for the accept loop.
const MAX_SCRAPERS: usize = 16;

/// Deadline of a scrape's request head and of the whole answer.
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(10);

/// How often histograms' recent samples are folded into their buckets, so memory between
/// scrapes stays bounded however rarely Prometheus comes.
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

/// Serves `/metrics` on `listener` until `shutdown`.
pub async fn serve(
    listener: TcpListener,
    handle: PrometheusHandle,
    server: Arc<Server>,
    shutdown: CancellationToken,
) {
    let handle = Arc::new(handle);
    tokio::spawn(upkeep(handle.clone(), shutdown.clone()));
    let scrapers = Arc::new(Semaphore::new(MAX_SCRAPERS));
    loop {
        let permit = tokio::select! {
            () = shutdown.cancelled() => return,
            permit = scrapers.clone().acquire_owned() => permit,
        };
        let Ok(permit) = permit else { return };
        let accepted = tokio::select! {
            () = shutdown.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(error) => {
                warn!(%error, "metrics listener: accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let (handle, server) = (handle.clone(), server.clone());
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let (handle, server) = (handle.clone(), server.clone());
                async move { Ok::<_, Infallible>(answer(req, &handle, server).await) }
            });
            let conn = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(SCRAPE_TIMEOUT)
                .keep_alive(false)
                .serve_connection(TokioIo::new(stream), service);
            match tokio::time::timeout(SCRAPE_TIMEOUT, conn).await {
                Ok(Err(error)) => debug!(%error, "metrics connection ended with an error"),
                Err(_) => debug!("metrics connection timed out"),
                Ok(Ok(())) => {}
            }
            drop(permit);
        });
    }
}

async fn upkeep(handle: Arc<PrometheusHandle>, shutdown: CancellationToken) {
    let mut every = tokio::time::interval(UPKEEP_EVERY);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = every.tick() => handle.run_upkeep(),
        }
    }
}

async fn answer(
    req: Request<Incoming>,
    handle: &PrometheusHandle,
    server: Arc<Server>,
) -> Response<Full<Bytes>> {
    if req.uri().path() != "/metrics" {
        return plain(StatusCode::NOT_FOUND, "only /metrics here\n".into());
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return plain(StatusCode::METHOD_NOT_ALLOWED, "GET /metrics\n".into());
    }
    // /proc reads block: off the runtime, with the hub's levels read meanwhile.
    let figures = tokio::task::spawn_blocking(process::read).await;
    record_levels(&server);
    let mut text = handle.render();
    if let Ok(figures) = &figures {
        process::render(figures, &mut text);
    }
    render_busiest_rooms(&server, &mut text);
    let mut resp = plain(StatusCode::OK, text);
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    resp
}

fn plain(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    resp
}

/// Rooms named in labels: the busiest few now, so the series stay few however many rooms exist.
const BUSIEST_ROOMS: usize = 10;

/// The busiest rooms as a gauge with a `room` label, written here rather than through the
/// recorder, which would keep a series for every room that was ever among them.
fn render_busiest_rooms(server: &Server, out: &mut String) {
    use std::fmt::Write as _;
    let (rooms, _) = server.hub.busiest_rooms(BUSIEST_ROOMS);
    let _ = write!(
        out,
        "# HELP parley_busiest_room_messages Messages numbered here over the last 30 to 60 s in \
         the {BUSIEST_ROOMS} busiest rooms (no series for the others).\n\
         # TYPE parley_busiest_room_messages gauge\n"
    );
    for (room, count) in rooms {
        let room = room
            .replace('\\', "\\\\")
            .replace('"', "\\\"")
            .replace('\n', "\\n");
        let _ = writeln!(
            out,
            "parley_busiest_room_messages{{room=\"{room}\"}} {count}"
        );
    }
}

/// Levels read at scrape time: open connections, the hub's sizes and queues, its counters.
fn record_levels(server: &Server) {
    let open = server.settings.max_connections - server.connections.available_permits();
    metrics::set_gauge("parley_connections_open", open as f64);
    metrics::set_gauge("parley_connections_parked", park::parked() as f64);
    let hub = &server.hub;
    let g = hub.gauges();
    metrics::set_gauge("parley_broker_sessions", g.broker.sessions as f64);
    metrics::set_gauge("parley_subscriptions", g.broker.subscriptions as f64);
    metrics::set_gauge("parley_rooms_active", g.broker.topics as f64);
    metrics::set_gauge("parley_queues", g.broker.queues as f64);
    metrics::set_gauge("parley_queued_bytes", g.broker.queued_bytes as f64);
    metrics::set_gauge("parley_rooms", hub.acl().room_count() as f64);
    metrics::set_gauge("parley_outbox_messages", g.outbox_messages as f64);
    metrics::set_gauge("parley_outbox_bytes", g.outbox_bytes as f64);
    metrics::set_gauge("parley_outbox_deepest_messages", g.outbox_deepest as f64);
    metrics::set_gauge("parley_journal_queue", g.journal_queue as f64);
    metrics::set_gauge("parley_memory_budget_used_bytes", g.budget_used as f64);
    metrics::set_gauge("parley_memory_budget_bytes", g.budget_limit as f64);
    metrics::set_gauge(
        "parley_draining",
        f64::from(u8::from(server.draining.is_cancelled())),
    );
    let mut ready = !server.draining.is_cancelled();
    for (component, up) in server.health.components() {
        metrics::set_labelled(
            "parley_component_up",
            "component",
            component,
            f64::from(u8::from(up)),
        );
        ready &= up;
    }
    metrics::set_gauge("parley_ready", f64::from(u8::from(ready)));
}
