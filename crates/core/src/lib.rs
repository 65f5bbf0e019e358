//! The decisions of puppet-conductor, apart from all I/O: identity and certnames, CSR
//! parsing and checks, the trust rules, user data, the node planner, the lease decision,
//! record and instance data, the validated spec, and status derivation.
//!
//! This crate has no Kubernetes client, no AWS SDK and no HTTP: the workspace's layering
//! test fails if it gains one. The clients (`cloud`, `records`, `ca`) and the operator
//! depend on it, never the other way round.

pub mod certificate;
pub mod certname;
pub mod csr;
pub mod identity;
pub mod instance;
pub mod lease;
pub mod observation;
pub mod orphans;
pub mod pause;
pub mod plan;
pub mod pool;
pub mod record;
pub mod signing_watch;
pub mod spec;
pub mod status;
pub mod sync;
pub mod trust;
pub mod userdata;
