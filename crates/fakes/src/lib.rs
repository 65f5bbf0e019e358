//! In-memory fakes of EC2, S3 and the Puppet CA behind the service traits.
//!
//! One shared module for unit tests, the lifecycle simulation and the benchmarks. Each
//! fake keeps the semantics the operator relies on (contract tests run the same cases
//! against moto and puppetserver, so the fakes cannot drift) and sends every call through
//! a [`Gate`] first, which decides whether it is applied, fails, or is applied with its
//! answer lost. [`Faults`] scripts those decisions; the simulation's scheduler is another
//! gate that parks each call until its seeded schedule picks a fate.

mod faults;

pub use faults::{Call, Fate, FaultKind, Faults, Gate, System};
pub mod ca;
pub mod ec2;
pub mod records;
