//! The catalogue of online services, `verbund.catalog.v1.ServiceCatalog` over gRPC: for the
//! citizens' portal and the federal Portalverbund.
//!
//! - `entry`: a PortalService's catalogue entry and the filters and pages clients ask for (pure);
//! - `book`: the catalogue in memory, its revisions and the bounded change feed for watchers;
//! - `feed`: keeps the book equal to the caches (no API-server call per request);
//! - `server`: the gRPC service, health (`grpc.health.v1`) and reflection, limits and shutdown;
//! - `tls`: TLS and mutual TLS from files, taken up again when they are renewed;
//! - `page`: the public, accessible HTML directory of the services (`--directory-addr`).

pub mod book;
pub mod entry;
pub mod feed;
pub mod page;
pub mod server;
pub mod tls;

/// The generated protocol types, client and server.
#[allow(clippy::all, missing_debug_implementations, missing_docs)]
pub mod proto {
    tonic::include_proto!("verbund.catalog.v1");
}

/// The encoded descriptors of the protocol, for server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/catalog_descriptor.bin"));

pub use book::Book;
pub use server::{CatalogArgs, serve};
