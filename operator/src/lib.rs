//! puppet-conductor: a Kubernetes operator that launches EC2/Eucalyptus instances for
//! declared Puppet nodes, records their classification in S3, signs only their verified
//! certificates and cleans all of it up on deletion.

//!
//! This crate is the top of the workspace: the controllers, the runner, metrics, HTTP and
//! the ENC and autosign commands. What it builds on is re-exported under the names the
//! code uses: `api` (CRD types), the pure `core` modules, and the three clients.

pub mod autosign;
pub mod cli;
pub mod controller;
pub mod enc;
pub mod http_server;
pub mod leader;
pub mod metrics;
pub mod runner;
pub mod telemetry;
pub mod tls;

pub use puppet_conductor_api as api;
pub use puppet_conductor_ca as ca;
pub use puppet_conductor_cloud as cloud;
pub use puppet_conductor_core::{
    certificate, certname, csr, identity, instance, lease, observation, orphans, pause, plan, pool,
    record, signing_watch, spec, status, sync, trust, userdata,
};
#[cfg(feature = "fakes")]
pub use puppet_conductor_fakes as fakes;
pub use puppet_conductor_records as records;
