//! Kubernetes Events for state changes and refusals.

use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};

/// Where events go: the API server in production, a list in tests.
#[async_trait::async_trait]
pub trait EventSink: Send + Sync {
    /// Publishes one event about `object`; failures are logged, never fatal.
    async fn publish(
        &self,
        object: &ObjectReference,
        warning: bool,
        reason: &str,
        action: &str,
        note: String,
    );
}

/// Publishes through kube's [`Recorder`] (events.k8s.io/v1).
pub struct KubeEvents {
    recorder: Recorder,
}

impl KubeEvents {
    /// A sink reporting as `controller`.
    pub fn new(client: kube::Client, controller: &str, instance: Option<String>) -> Self {
        Self {
            recorder: Recorder::new(
                client,
                Reporter {
                    controller: controller.to_string(),
                    instance,
                },
            ),
        }
    }
}

#[async_trait::async_trait]
impl EventSink for KubeEvents {
    async fn publish(
        &self,
        object: &ObjectReference,
        warning: bool,
        reason: &str,
        action: &str,
        note: String,
    ) {
        let event = Event {
            type_: if warning {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: reason.to_string(),
            note: Some(note),
            action: action.to_string(),
            secondary: None,
        };
        if let Err(error) = self.recorder.publish(&event, object).await {
            tracing::warn!(%error, reason, "could not publish event");
        }
    }
}

/// One recorded event (tests and the local demo).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordedEvent {
    /// `namespace/name` of the object.
    pub object: String,
    /// Warning or Normal.
    pub warning: bool,
    /// Reason.
    pub reason: String,
    /// Note.
    pub note: String,
}

/// Keeps events in memory.
#[derive(Default)]
pub struct MemoryEvents {
    events: std::sync::Mutex<Vec<RecordedEvent>>,
}

impl MemoryEvents {
    /// Everything published so far.
    pub fn all(&self) -> Vec<RecordedEvent> {
        self.events.lock().map(|e| e.clone()).unwrap_or_default()
    }
}

#[async_trait::async_trait]
impl EventSink for MemoryEvents {
    async fn publish(
        &self,
        object: &ObjectReference,
        warning: bool,
        reason: &str,
        _action: &str,
        note: String,
    ) {
        let key = format!(
            "{}/{}",
            object.namespace.clone().unwrap_or_default(),
            object.name.clone().unwrap_or_default()
        );
        tracing::info!(object = %key, warning, reason, %note, "event");
        if let Ok(mut e) = self.events.lock() {
            e.push(RecordedEvent {
                object: key,
                warning,
                reason: reason.to_string(),
                note,
            });
        }
    }
}
