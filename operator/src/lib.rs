//! puppet-conductor: a Kubernetes operator that launches EC2/Eucalyptus instances for
//! declared Puppet nodes, records their classification in S3, signs only their verified
//! certificates and cleans all of it up on deletion.

pub mod api;
pub mod autosign;
pub mod ca;
pub mod cloud;
pub mod controller;
pub mod enc;
#[cfg(any(test, feature = "fakes"))]
pub mod fakes;
pub mod http_server;
pub mod identity;
pub mod leader;
pub mod metrics;
pub mod records;
pub mod runner;
pub mod telemetry;
pub mod tls;
pub mod trust;
pub mod userdata;
