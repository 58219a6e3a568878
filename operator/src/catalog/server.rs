//! The gRPC server: `ServiceCatalog` answered from the [`Book`] and the caches, the standard
//! health service (SERVING once the caches have synced, NOT_SERVING while shutting down),
//! server reflection (so `grpcurl` needs no proto files), optional TLS and mutual TLS, limits
//! per connection and per client, and a graceful drain on shutdown.

use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{FutureExt, Stream};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use tokio::net::TcpListener;
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tokio_util::sync::CancellationToken;
use tonic::transport::Server;
use tonic::{Request, Response, Status};
use tonic_health::ServingStatus;
use tracing::{info, warn};

use super::book::{Book, Start};
use super::entry::{Filter, Invalid, Page, key, parse_name};
use super::proto;
use super::proto::service_catalog_server::{ServiceCatalog, ServiceCatalogServer};
use super::tls::{self, Reloading, TlsFiles};
use crate::cache::Stores;
use crate::domain::resources::{Resource, Resources};
use crate::metrics::Metrics;

/// Settings of the catalogue's gRPC server.
#[derive(Debug, Clone, clap::Args)]
pub struct CatalogArgs {
    /// Address of the gRPC catalogue (`verbund.catalog.v1.ServiceCatalog`).
    #[arg(long, env = "VERBUND_CATALOG_ADDR", default_value = "0.0.0.0:9090")]
    pub catalog_addr: SocketAddr,
    /// PEM certificate chain of the catalogue's TLS; with `--catalog-tls-key`, TLS is on.
    #[arg(long, env = "VERBUND_CATALOG_TLS_CERT", requires = "catalog_tls_key")]
    pub catalog_tls_cert: Option<PathBuf>,
    /// PEM private key of the catalogue's TLS.
    #[arg(long, env = "VERBUND_CATALOG_TLS_KEY", requires = "catalog_tls_cert")]
    pub catalog_tls_key: Option<PathBuf>,
    /// PEM CA certificates of clients: with it, a client must present a certificate signed by
    /// one of them (mutual TLS).
    #[arg(long, env = "VERBUND_CATALOG_CLIENT_CA", requires = "catalog_tls_cert")]
    pub catalog_client_ca: Option<PathBuf>,
    /// Requests per second one client address may send (bursts up to twice that).
    #[arg(long, env = "VERBUND_CATALOG_RATE", default_value_t = 200)]
    pub catalog_rate: u32,
    /// Address of the public HTML directory of the online services (`/`, `/healthz`).
    #[arg(long, env = "VERBUND_DIRECTORY_ADDR", default_value = "0.0.0.0:8081")]
    pub directory_addr: SocketAddr,
}

impl CatalogArgs {
    /// Defaults for an operator started in-process (tests).
    pub fn local(catalog_addr: SocketAddr) -> Self {
        Self {
            catalog_addr,
            catalog_tls_cert: None,
            catalog_tls_key: None,
            catalog_client_ca: None,
            catalog_rate: 200,
            directory_addr: ([127, 0, 0, 1], 0).into(),
        }
    }

    fn tls_files(&self) -> Option<TlsFiles> {
        let (Some(cert), Some(key)) = (&self.catalog_tls_cert, &self.catalog_tls_key) else {
            return None;
        };
        Some(TlsFiles {
            cert: cert.clone(),
            key: key.clone(),
            client_ca: self.catalog_client_ca.clone(),
        })
    }
}

/// Limits per connection and message.
const STREAMS_PER_CONNECTION: u32 = 128;
const REQUESTS_IN_FLIGHT_PER_CONNECTION: usize = 64;
const MAX_REQUEST_BYTES: usize = 64 * 1024;
const MAX_RESPONSE_BYTES: usize = 16 * 1024 * 1024;
/// Events queued for one watcher before its stream waits (and then falls behind).
const WATCHER_QUEUE: usize = 64;

/// The `ServiceCatalog` implementation.
pub struct Catalog {
    book: Arc<Book>,
    stores: Stores,
    metrics: Arc<Metrics>,
    limiter: DefaultKeyedRateLimiter<IpAddr>,
    shutdown: CancellationToken,
}

impl std::fmt::Debug for Catalog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Catalog").finish_non_exhaustive()
    }
}

fn invalid(e: Invalid) -> Status {
    Status::invalid_argument(e.to_string())
}

impl Catalog {
    /// Counts the request, refuses it when its client sends too many.
    fn admit<T>(&self, method: &'static str, request: &Request<T>) -> Result<Timer, Status> {
        let timer = Timer {
            method,
            started: Instant::now(),
            metrics: self.metrics.clone(),
        };
        if let Some(addr) = request.remote_addr()
            && self.limiter.check_key(&addr.ip()).is_err()
        {
            timer.done("RESOURCE_EXHAUSTED");
            return Err(Status::resource_exhausted(
                "too many requests from this address; retry in a second",
            ));
        }
        Ok(timer)
    }
}

/// Measures one request.
struct Timer {
    method: &'static str,
    started: Instant,
    metrics: Arc<Metrics>,
}

impl Timer {
    fn done(&self, code: &str) {
        self.metrics
            .catalog_requests
            .with_label_values(&[self.method, code])
            .inc();
        self.metrics
            .catalog_request_duration
            .with_label_values(&[self.method])
            .observe(self.started.elapsed().as_secs_f64());
    }

    fn finish<T>(self, result: Result<T, Status>) -> Result<T, Status> {
        let code = match &result {
            Ok(_) => "OK".to_string(),
            Err(status) => format!("{:?}", status.code()).to_uppercase(),
        };
        self.done(&code);
        result
    }
}

fn resources(
    map: &std::collections::BTreeMap<
        String,
        k8s_openapi::apimachinery::pkg::api::resource::Quantity,
    >,
) -> Resources {
    Resources::from_map_lenient(map, Resource::name)
}

fn to_proto(r: Resources) -> proto::Resources {
    proto::Resources {
        cpu_cores: r.get(Resource::Cpu).0 as f64 / 1000.0,
        memory_bytes: i64::try_from(r.get(Resource::Memory).0 / 1000).unwrap_or(i64::MAX),
        pods: i64::try_from(r.get(Resource::Pods).0 / 1000).unwrap_or(i64::MAX),
    }
}

type EventStream = Pin<Box<dyn Stream<Item = Result<proto::ServiceEvent, Status>> + Send>>;

#[tonic::async_trait]
impl ServiceCatalog for Catalog {
    async fn list_services(
        &self,
        request: Request<proto::ListServicesRequest>,
    ) -> Result<Response<proto::ListServicesResponse>, Status> {
        let timer = self.admit("ListServices", &request)?;
        let result = (|| {
            let req = request.get_ref();
            let filter = Filter::parse(req.filter.as_ref()).map_err(invalid)?;
            let page = Page::parse(req.page_size, &req.page_token, &filter).map_err(invalid)?;
            let (services, next_page_token, total) = self.book.list(&filter, &page);
            Ok(Response::new(proto::ListServicesResponse {
                services,
                next_page_token,
                total_size: i32::try_from(total).unwrap_or(i32::MAX),
            }))
        })();
        timer.finish(result)
    }

    async fn get_service(
        &self,
        request: Request<proto::GetServiceRequest>,
    ) -> Result<Response<proto::Service>, Status> {
        let timer = self.admit("GetService", &request)?;
        let result = (|| {
            let (namespace, name) = parse_name(&request.get_ref().name).map_err(invalid)?;
            self.book
                .get(&key(namespace, name))
                .map(Response::new)
                .ok_or_else(|| {
                    Status::not_found(format!("no service {namespace}/{name} in the catalogue"))
                })
        })();
        timer.finish(result)
    }

    async fn get_pool_capacity(
        &self,
        request: Request<proto::GetPoolCapacityRequest>,
    ) -> Result<Response<proto::PoolCapacity>, Status> {
        let timer = self.admit("GetPoolCapacity", &request)?;
        let mut pool = proto::PoolCapacity::default();
        let (mut allocatable, mut requested) = (Resources::ZERO, Resources::ZERO);
        let mut sites = self.stores.sites.state();
        sites.sort_by_key(|s| kube::ResourceExt::name_any(&**s));
        for site in sites {
            let status = site.status.clone().unwrap_or_default();
            let (a, r) = (resources(&status.allocatable), resources(&status.requested));
            allocatable += a;
            requested += r;
            pool.sites.push(proto::SiteCapacity {
                site: kube::ResourceExt::name_any(&*site),
                display_name: site.spec.display_name.clone(),
                operated_by: site.spec.operated_by.name.clone(),
                ready: crate::conditions::is_true(
                    &status.conditions,
                    crate::conditions::kind::READY,
                ),
                cordoned: site.spec.cordoned,
                allocatable: Some(to_proto(a)),
                requested: Some(to_proto(r)),
                free: Some(to_proto(a.saturating_sub(r))),
            });
        }
        let mut tenants = self.stores.tenants.state();
        tenants.sort_by_key(|t| kube::ResourceExt::name_any(&**t));
        for tenant in tenants {
            let status = tenant.status.clone().unwrap_or_default();
            let (quota, used) = (resources(&status.quota.hard), resources(&status.quota.used));
            pool.tenants.push(proto::TenantCapacity {
                tenant: kube::ResourceExt::name_any(&*tenant),
                display_name: tenant.spec.display_name.clone(),
                quota: Some(to_proto(quota)),
                requested: Some(to_proto(used)),
                free: Some(to_proto(quota.saturating_sub(used))),
            });
        }
        pool.allocatable = Some(to_proto(allocatable));
        pool.requested = Some(to_proto(requested));
        pool.free = Some(to_proto(allocatable.saturating_sub(requested)));
        timer.finish(Ok(Response::new(pool)))
    }

    type WatchServicesStream = EventStream;

    async fn watch_services(
        &self,
        request: Request<proto::WatchServicesRequest>,
    ) -> Result<Response<EventStream>, Status> {
        let timer = self.admit("WatchServices", &request)?;
        let req = request.into_inner();
        let filter = match Filter::parse(req.filter.as_ref()) {
            Ok(filter) => filter,
            Err(e) => return timer.finish(Err(invalid(e))),
        };
        let start = self.book.watch(&filter, req.resume_revision);
        let (tx, rx) = mpsc::channel(WATCHER_QUEUE);
        let watchers = self.metrics.catalog_watchers.clone();
        watchers.inc();
        tokio::spawn(forward(
            self.book.clone(),
            filter,
            start,
            tx,
            self.shutdown.clone(),
            WatcherGuard(watchers),
        ));
        timer.finish(Ok(Response::new(
            Box::pin(ReceiverStream::new(rx)) as EventStream
        )))
    }
}

/// Lowers the watcher gauge when a watch ends, however it ends.
struct WatcherGuard(prometheus::IntGauge);

impl Drop for WatcherGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Sends a watcher its start, then every change through its filter, until it goes away or
/// the operator shuts down. A watcher that falls [`super::book::BROADCAST`] changes behind gets
/// a fresh snapshot instead of an ever longer queue.
async fn forward(
    book: Arc<Book>,
    filter: Filter,
    start: Start,
    tx: mpsc::Sender<Result<proto::ServiceEvent, Status>>,
    shutdown: CancellationToken,
    _guard: WatcherGuard,
) {
    let Start {
        mut events,
        mut changes,
    } = start;
    loop {
        for event in events.drain(..) {
            if tx.send(Ok(event)).await.is_err() {
                return;
            }
        }
        let change = tokio::select! {
            change = changes.recv() => change,
            _ = tx.closed() => return,
            _ = shutdown.cancelled() => {
                let _ = tx.send(Err(Status::unavailable("the catalogue is shutting down; resume from the last revision"))).await;
                return;
            }
        };
        match change {
            Ok(change) => events.extend(change.seen_through(&filter)),
            Err(broadcast::error::RecvError::Lagged(missed)) => {
                warn!(
                    missed,
                    "a catalogue watcher fell behind; sending it a fresh snapshot"
                );
                let fresh = book.resnapshot(&filter);
                events = fresh.events;
                changes = fresh.changes;
            }
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}

/// Serves the catalogue on `listener` until `shutdown`; `health` turns SERVING once `synced`
/// is cancelled (the caches have synced and the book is filled).
pub async fn serve(
    listener: TcpListener,
    args: CatalogArgs,
    book: Arc<Book>,
    stores: Stores,
    metrics: Arc<Metrics>,
    synced: CancellationToken,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let (reporter, health) = tonic_health::server::health_reporter();
    let name = <ServiceCatalogServer<Catalog> as tonic::server::NamedService>::NAME;
    reporter
        .set_service_status("", ServingStatus::NotServing)
        .await;
    reporter
        .set_service_status(name, ServingStatus::NotServing)
        .await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(super::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let rate = NonZeroU32::new(args.catalog_rate.max(1)).unwrap_or(NonZeroU32::MIN);
    let burst = NonZeroU32::new(args.catalog_rate.max(1).saturating_mul(2)).unwrap_or(rate);
    let catalog = Catalog {
        book,
        stores,
        metrics,
        limiter: RateLimiter::keyed(Quota::per_second(rate).allow_burst(burst)),
        shutdown: shutdown.clone(),
    };
    let service = ServiceCatalogServer::new(catalog)
        .max_decoding_message_size(MAX_REQUEST_BYTES)
        .max_encoding_message_size(MAX_RESPONSE_BYTES);

    let mut server = Server::builder()
        .max_concurrent_streams(Some(STREAMS_PER_CONNECTION))
        .concurrency_limit_per_connection(REQUESTS_IN_FLIGHT_PER_CONNECTION)
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)));
    // TLS is Verbund's own (see `tls`), not tonic's, so that renewed files are taken up.
    let tls = match args.tls_files() {
        Some(files) => Some(Arc::new(Reloading::new(files)?)),
        None => None,
    };
    let router = server
        .add_service(health)
        .add_service(reflection)
        .add_service(service);

    let health_reporter = reporter.clone();
    let serving = async move {
        synced.cancelled().await;
        health_reporter
            .set_service_status("", ServingStatus::Serving)
            .await;
        health_reporter
            .set_service_status(name, ServingStatus::Serving)
            .await;
        info!("catalogue serving");
    };
    let draining = {
        let shutdown = shutdown.clone();
        async move {
            shutdown.cancelled().await;
            reporter
                .set_service_status("", ServingStatus::NotServing)
                .await;
            reporter
                .set_service_status(name, ServingStatus::NotServing)
                .await;
        }
    };
    info!(addr = %listener.local_addr()?, tls = tls.is_some(), mutual_tls = args.catalog_client_ca.is_some(), "catalogue listening");
    let served = match tls {
        Some(tls) => {
            tokio::spawn(tls.clone().watch(shutdown.clone()));
            let incoming = tls::incoming(listener, tls, shutdown.clone());
            router
                .serve_with_incoming_shutdown(incoming, draining)
                .boxed()
        }
        None => router
            .serve_with_incoming_shutdown(TcpListenerStream::new(listener), draining)
            .boxed(),
    };
    tokio::pin!(served);
    tokio::select! {
        result = &mut served => return result.map_err(Into::into),
        _ = serving => {}
    }
    served.await.map_err(Into::into)
}
