//! All integration tests in one binary: one link of the AWS SDK instead of one per file.
//!
//! Tests that need the local services (`tests/services/up.sh`) skip without them unless
//! `PC_REQUIRE_SERVICES=1`, which the project's test command sets.

// Integration tests are test code: clippy.toml's allow-*-in-tests only covers
// #[test] functions, not the helpers beside them.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

mod autosign_binary;
mod ca_client;
mod ca_hostile_contract;
mod ca_load;
mod ca_smoke;
mod cloud_ec2;
mod cloud_faults;
mod cloud_support;
mod cluster_e2e;
mod cluster_namespace;
mod cluster_pool;
mod cluster_scale;
mod cluster_support;
mod cluster_trust;
mod contract_ca;
mod contract_ec2;
mod contract_records;
mod crd_drift;
mod crd_schema;
mod crd_schema_pool;
mod crd_schema_support;
mod e2e_agent;
mod e2e_ca_down;
mod e2e_hostile;
mod e2e_policy;
mod e2e_support;
mod e2e_trust;
mod enc_binary;
mod http_endpoints;
mod iam_policy;
mod layering;
mod leader_election;
mod manifests;
mod master_deletion;
mod master_reconcile;
mod node_lifecycle;
mod node_support;
mod orphans;
mod pause;
mod pool_reconcile;
mod records_probe;
mod records_s3;
mod records_support;
mod run_binary;
mod run_http;
mod run_wiring;
mod secret_hold;
mod snapshot_sharing;
mod userdata_cloud_init;
