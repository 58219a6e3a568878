//! The domain layer: what the pool is made of and how it is counted, as pure functions of the
//! API types and of what the caches hold. No client, no I/O, no clock.
//!
//! Controllers, placement, the baseline catalogue (and the catalogue and metrics above them)
//! build on this layer; it builds only on `api` and `quantity`.
//!
//! - [`resources`]: the cpu/memory/pods triple every quota, request and capacity is counted in;
//! - [`sites`]: which nodes belong to which site (the zone label) and whether they are Ready;
//! - [`projections`]: pods and nodes as the caches keep them, read down to what Verbund uses;
//! - [`pods`]: which portal service a pod belongs to;
//! - [`tenancy`]: a tenant's namespaces, its guard rails' names, its baseline and its use;
//! - [`shares`]: how a tenant's quota is split over its namespaces;
//! - [`routes`]: which host names and paths each tenant may be reached under.

pub mod pods;
pub mod projections;
pub mod resources;
pub mod routes;
pub mod shares;
pub mod sites;
pub mod tenancy;
