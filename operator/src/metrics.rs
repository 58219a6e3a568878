//! The operator's Prometheus metrics, on an explicit registry held in the shared context.
//! Every name starts with `verbund_`.

use prometheus::core::Collector;
use prometheus::process_collector::ProcessCollector;
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

/// Every metric the operator exports.
#[derive(Debug, Clone)]
pub struct Metrics {
    registry: Registry,
    /// Always 1; its labels say which build is running.
    pub build_info: IntGauge,
    /// 1 while this replica holds the lease and reconciles; 0 while it follows.
    pub leader: IntGauge,
    /// Reconciles started, by controller.
    pub reconciles: IntCounterVec,
    /// Time per reconcile, by controller.
    pub reconcile_duration: HistogramVec,
    /// Reconciles running now, by controller.
    pub reconciles_in_flight: IntGaugeVec,
    /// Failed reconciles, by controller and reason category.
    pub reconcile_errors: IntCounterVec,
    /// Writes sent to the API server, by kind and verb (apply, status, delete).
    pub api_writes: IntCounterVec,
    /// Objects per cache.
    pub cache_objects: IntGaugeVec,
    /// Watch failures per cache (each is retried with backoff).
    pub cache_watch_errors: IntCounterVec,
    /// Changes a controller fell behind on and was resynced for, per cache.
    pub cache_lagged_changes: IntCounterVec,
    /// Objects of Verbund's kinds the types cannot decode, per cache.
    pub invalid_objects: IntGaugeVec,
    /// Catalogue requests, by gRPC method and status code.
    pub catalog_requests: IntCounterVec,
    /// Time to answer a catalogue request (for a watch: to start it), by method.
    pub catalog_request_duration: HistogramVec,
    /// Catalogue watchers connected now.
    pub catalog_watchers: IntGauge,
    /// Entries in the catalogue.
    pub catalog_services: IntGauge,
}

impl Metrics {
    /// Creates the registry and registers every metric on it.
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let build_info = IntGauge::with_opts(
            Opts::new(
                "verbund_build_info",
                "Build of the running Verbund operator (always 1).",
            )
            .const_label("version", env!("CARGO_PKG_VERSION")),
        )?;
        let leader = IntGauge::new(
            "verbund_leader",
            "1 while this replica leads (reconciles and writes), 0 while it follows.",
        )?;
        let reconcile_duration = HistogramVec::new(
            HistogramOpts::new(
                "verbund_reconcile_duration_seconds",
                "Time spent in one reconcile.",
            )
            .buckets(vec![
                0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
            ]),
            &["controller"],
        )?;
        let reconciles = IntCounterVec::new(
            Opts::new(
                "verbund_reconciles_total",
                "Reconciles started, by controller.",
            ),
            &["controller"],
        )?;
        let reconcile_errors = IntCounterVec::new(
            Opts::new(
                "verbund_reconcile_errors_total",
                "Reconciles that failed, by controller and error category.",
            ),
            &["controller", "reason"],
        )?;
        let api_writes = IntCounterVec::new(
            Opts::new(
                "verbund_api_writes_total",
                "Write requests sent to the Kubernetes API server.",
            ),
            &["kind", "verb"],
        )?;
        let cache_objects = IntGaugeVec::new(
            Opts::new(
                "verbund_cache_objects",
                "Objects held in a cache of the operator.",
            ),
            &["cache"],
        )?;
        let cache_watch_errors = IntCounterVec::new(
            Opts::new(
                "verbund_cache_watch_errors_total",
                "Failures of a cache's watch (retried with backoff).",
            ),
            &["cache"],
        )?;
        let cache_lagged_changes = IntCounterVec::new(
            Opts::new(
                "verbund_cache_lagged_changes_total",
                "Changes a controller fell behind on and was resynced for.",
            ),
            &["cache"],
        )?;
        let invalid_objects = IntGaugeVec::new(
            Opts::new(
                "verbund_invalid_objects",
                "Objects the operator cannot decode and skips.",
            ),
            &["cache"],
        )?;
        let reconciles_in_flight = IntGaugeVec::new(
            Opts::new(
                "verbund_reconciles_in_flight",
                "Reconciles running now, by controller.",
            ),
            &["controller"],
        )?;
        let catalog_requests = IntCounterVec::new(
            Opts::new(
                "verbund_catalog_requests_total",
                "Requests to the gRPC catalogue, by method and status code.",
            ),
            &["method", "code"],
        )?;
        let catalog_request_duration = HistogramVec::new(
            HistogramOpts::new(
                "verbund_catalog_request_duration_seconds",
                "Time to answer a catalogue request (a watch: to start it).",
            )
            .buckets(vec![
                0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
            ]),
            &["method"],
        )?;
        let catalog_watchers = IntGauge::new(
            "verbund_catalog_watchers",
            "Clients watching the catalogue now.",
        )?;
        let catalog_services = IntGauge::new(
            "verbund_catalog_services",
            "Online services in the catalogue.",
        )?;
        registry.register(Box::new(build_info.clone()))?;
        registry.register(Box::new(catalog_requests.clone()))?;
        registry.register(Box::new(catalog_request_duration.clone()))?;
        registry.register(Box::new(catalog_watchers.clone()))?;
        registry.register(Box::new(catalog_services.clone()))?;
        registry.register(Box::new(leader.clone()))?;
        registry.register(Box::new(reconciles.clone()))?;
        registry.register(Box::new(reconcile_duration.clone()))?;
        registry.register(Box::new(reconciles_in_flight.clone()))?;
        registry.register(Box::new(reconcile_errors.clone()))?;
        registry.register(Box::new(api_writes.clone()))?;
        registry.register(Box::new(cache_objects.clone()))?;
        registry.register(Box::new(cache_watch_errors.clone()))?;
        registry.register(Box::new(cache_lagged_changes.clone()))?;
        registry.register(Box::new(invalid_objects.clone()))?;
        // process_*: CPU seconds, memory, file descriptors and start time of this process.
        registry.register(Box::new(ProcessCollector::for_self()))?;
        build_info.set(1);
        Ok(Self {
            registry,
            build_info,
            leader,
            reconciles,
            reconcile_duration,
            reconciles_in_flight,
            reconcile_errors,
            catalog_requests,
            catalog_request_duration,
            catalog_watchers,
            catalog_services,
            api_writes,
            cache_objects,
            cache_watch_errors,
            cache_lagged_changes,
            invalid_objects,
        })
    }

    /// Adds a collector computed at scrape time (the pool's state from the caches).
    pub fn register(&self, collector: Box<dyn Collector>) -> Result<(), prometheus::Error> {
        self.registry.register(collector)
    }

    /// The registry in the Prometheus text exposition format.
    pub fn encode(&self) -> Result<String, prometheus::Error> {
        let mut buffer = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut buffer)?;
        String::from_utf8(buffer).map_err(|e| prometheus::Error::Msg(e.to_string()))
    }
}
