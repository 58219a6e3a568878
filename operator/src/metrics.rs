//! The operator's Prometheus metrics, on an explicit registry held in the shared context.

use prometheus::{Encoder, IntGauge, Opts, Registry, TextEncoder};

/// Every metric the operator exports. Names start with `verbund_`.
#[derive(Debug, Clone)]
pub struct Metrics {
    registry: Registry,
    /// Always 1; its labels say which build is running.
    pub build_info: IntGauge,
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
        registry.register(Box::new(build_info.clone()))?;
        build_info.set(1);
        Ok(Self {
            registry,
            build_info,
        })
    }

    /// The registry in the Prometheus text exposition format.
    pub fn encode(&self) -> Result<String, prometheus::Error> {
        let mut buffer = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut buffer)?;
        String::from_utf8(buffer).map_err(|e| prometheus::Error::Msg(e.to_string()))
    }
}
