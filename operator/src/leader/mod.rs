//! Leader election on a `coordination.k8s.io/v1` Lease, so several replicas can run with
//! one active.
//!
//! Every write carries the resourceVersion it read, so two candidates racing for an expired
//! Lease cannot both win: the loser gets a 409 Conflict and stands by.

use std::future::Future;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, PostParams};

use crate::api::FIELD_MANAGER;
use crate::lease::{decide, LeaseDecision};

/// Errors of the election.
#[derive(Debug, thiserror::Error)]
pub enum LeaderError {
    /// Reading or writing the Lease failed.
    #[error("Lease {name}: {operation}")]
    Kube {
        /// Lease name.
        name: String,
        /// What was attempted.
        operation: &'static str,
        /// The API error.
        #[source]
        source: Box<kube::Error>,
    },
    /// Another replica took the Lease, or it could not be renewed in time.
    #[error("lost leadership of Lease {0}")]
    Lost(String),
}

/// Where the Lease is and how it is kept.
#[derive(Clone, Debug)]
pub struct LeaseSettings {
    /// Lease name.
    pub name: String,
    /// Lease namespace (the operator's own).
    pub namespace: String,
    /// This replica's identity (the pod name).
    pub identity: String,
    /// How long the Lease lasts without renewal.
    pub duration: Duration,
    /// How often the holder renews and a standby retries.
    pub retry: Duration,
}

impl LeaseSettings {
    /// Settings with the usual timings (15 s lease, 5 s retry).
    pub fn new(name: &str, namespace: &str, identity: &str) -> Self {
        Self {
            name: name.to_string(),
            namespace: namespace.to_string(),
            identity: identity.to_string(),
            duration: Duration::from_secs(15),
            retry: Duration::from_secs(5),
        }
    }
}

/// One candidate in the election.
pub struct LeaderElector {
    api: Api<Lease>,
    settings: LeaseSettings,
}

/// Outcome of one round.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Round {
    /// We hold the Lease now.
    Leading,
    /// Someone else holds it (or won the race for it).
    Following(String),
}

impl LeaderElector {
    /// A candidate using `client`.
    pub fn new(client: kube::Client, settings: LeaseSettings) -> Self {
        Self {
            api: Api::namespaced(client, &settings.namespace),
            settings,
        }
    }

    /// The settings.
    pub fn settings(&self) -> &LeaseSettings {
        &self.settings
    }

    fn kube_error(&self, operation: &'static str, source: kube::Error) -> LeaderError {
        LeaderError::Kube {
            name: self.settings.name.clone(),
            operation,
            source: Box::new(source),
        }
    }

    fn spec(&self, now: Timestamp, acquired: Option<MicroTime>, transitions: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(self.settings.identity.clone()),
            lease_duration_seconds: Some(
                i32::try_from(self.settings.duration.as_secs()).unwrap_or(15),
            ),
            acquire_time: Some(acquired.unwrap_or(MicroTime(now))),
            renew_time: Some(MicroTime(now)),
            lease_transitions: Some(transitions),
            ..Default::default()
        }
    }

    /// One election round: create, renew or take over the Lease, or stand by.
    pub async fn try_acquire_or_renew(&self) -> Result<Round, LeaderError> {
        let now = Timestamp::now();
        let current = self
            .api
            .get_opt(&self.settings.name)
            .await
            .map_err(|e| self.kube_error("get", e))?;
        let spec = current.as_ref().and_then(|l| l.spec.as_ref());
        let params = PostParams {
            field_manager: Some(FIELD_MANAGER.to_string()),
            ..Default::default()
        };
        let write = match (decide(spec, &self.settings.identity, now), current) {
            (LeaseDecision::Follow { holder }, _) => return Ok(Round::Following(holder)),
            (LeaseDecision::Create, _) => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(self.settings.name.clone()),
                        namespace: Some(self.settings.namespace.clone()),
                        ..Default::default()
                    },
                    spec: Some(self.spec(now, None, 0)),
                };
                self.api.create(&params, &lease).await
            }
            (decision, Some(mut lease)) => {
                let old = lease.spec.take().unwrap_or_default();
                let transitions = old.lease_transitions.unwrap_or(0);
                lease.spec = Some(if decision == LeaseDecision::Renew {
                    self.spec(now, old.acquire_time, transitions)
                } else {
                    self.spec(now, None, transitions.saturating_add(1))
                });
                // `lease.metadata.resource_version` is still the one read: a concurrent
                // writer makes this a 409 instead of a second leader.
                self.api.replace(&self.settings.name, &params, &lease).await
            }
            (_, None) => return Ok(Round::Following(String::new())),
        };
        match write {
            Ok(_) => Ok(Round::Leading),
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(Round::Following(
                "another candidate (lost the race)".to_string(),
            )),
            Err(e) => Err(self.kube_error("write", e)),
        }
    }

    /// Gives the Lease up at shutdown so a standby takes over at once instead of after
    /// it expires. Only clears it while we still hold it.
    pub async fn release(&self) -> Result<(), LeaderError> {
        let Some(mut lease) = self
            .api
            .get_opt(&self.settings.name)
            .await
            .map_err(|e| self.kube_error("get", e))?
        else {
            return Ok(());
        };
        let Some(spec) = lease.spec.as_mut() else {
            return Ok(());
        };
        if spec.holder_identity.as_deref() != Some(self.settings.identity.as_str()) {
            return Ok(());
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        let params = PostParams {
            field_manager: Some(FIELD_MANAGER.to_string()),
            ..Default::default()
        };
        match self.api.replace(&self.settings.name, &params, &lease).await {
            Ok(_) => Ok(()),
            // Someone else wrote it meanwhile: it is not ours to clear.
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(()),
            Err(e) => Err(self.kube_error("release", e)),
        }
    }

    /// Waits until this replica leads, calling `on_round` after each round (standby
    /// reporting). API errors are retried: a standby must outlive a flaky API server.
    pub async fn acquire(&self, mut on_round: impl FnMut(&Result<Round, LeaderError>)) {
        loop {
            let round = self.try_acquire_or_renew().await;
            on_round(&round);
            if matches!(round, Ok(Round::Leading)) {
                return;
            }
            tokio::time::sleep(self.settings.retry).await;
        }
    }

    /// Keeps renewing while `work` runs. Returns `work`'s output, or [`LeaderError::Lost`]
    /// when the Lease was taken or could not be renewed before it expired: the caller must
    /// stop acting at once (the process exits and restarts as a standby).
    pub async fn hold<T>(&self, work: impl Future<Output = T>) -> Result<T, LeaderError> {
        tokio::pin!(work);
        let mut last_renewed = tokio::time::Instant::now();
        loop {
            tokio::select! {
                output = &mut work => return Ok(output),
                _ = tokio::time::sleep(self.settings.retry) => {}
            }
            match self.try_acquire_or_renew().await {
                Ok(Round::Leading) => last_renewed = tokio::time::Instant::now(),
                Ok(Round::Following(holder)) => {
                    tracing::error!(%holder, "another replica holds the Lease");
                    return Err(LeaderError::Lost(self.settings.name.clone()));
                }
                Err(error) => {
                    tracing::warn!(%error, "could not renew the Lease");
                    // Stop before the Lease can expire, so two leaders never overlap.
                    if last_renewed.elapsed() + self.settings.retry >= self.settings.duration {
                        return Err(LeaderError::Lost(self.settings.name.clone()));
                    }
                }
            }
        }
    }
}
