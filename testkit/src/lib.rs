//! Test tooling for spanrec, used by tests, benches, the demo and the CLI
//! tests — never by a production crate: provisioning a MongoDB server
//! ([`server::LocalServer`]) and injecting faults into it
//! ([`fail_point::FailPoint`]).

pub mod fail_point;
pub mod server;

pub use fail_point::FailPoint;
pub use server::{LocalServer, ProvisionError, ServerKind};
