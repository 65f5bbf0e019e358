//! Kubernetes Events for state changes and refusals.
//!
//! Events are aggregated into a series (one Event object, `series.count` and
//! `series.lastObservedTime` updated) only when a reader could not tell the occurrences
//! apart: same object, type, reason, action **and note**. kube's `Recorder` keys its series
//! without the note and keeps the first note, so a later refusal would show an earlier
//! CSR's key type or certname; [`KubeEvents`] therefore creates the events itself.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::{Event as K8sEvent, EventSeries};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, Patch, PatchParams, PostParams};
use sha2::{Digest, Sha256};

use crate::sync::lock;

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

/// How long an event stays open for repetitions: the window client-go and kube use.
const SERIES_WINDOW: SignedDuration = SignedDuration::from_mins(6);

/// The API server refuses a longer `note` (events.k8s.io/v1: at most 1 kB), which would
/// lose the whole event; a refusal's note is cut instead.
const MAX_NOTE_BYTES: usize = 1024;

/// Longest prefix of an object's name used in an event name (the name is a DNS subdomain
/// of at most 253 characters; the rest is `.` and a hexadecimal timestamp).
const MAX_NAME_PREFIX: usize = 200;

/// What makes two occurrences one series: everything a reader of the event sees.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SeriesKey {
    api_version: Option<String>,
    kind: Option<String>,
    namespace: Option<String>,
    name: Option<String>,
    uid: Option<String>,
    warning: bool,
    reason: String,
    action: String,
    /// A hash rather than the note itself: the cache need not hold every note.
    note_sha256: [u8; 32],
}

/// The series an event belongs to (the reporter is the same for one sink).
pub fn series_key(
    object: &ObjectReference,
    warning: bool,
    reason: &str,
    action: &str,
    note: &str,
) -> SeriesKey {
    SeriesKey {
        api_version: object.api_version.clone(),
        kind: object.kind.clone(),
        namespace: object.namespace.clone(),
        name: object.name.clone(),
        uid: object.uid.clone(),
        warning,
        reason: reason.to_owned(),
        action: action.to_owned(),
        note_sha256: Sha256::digest(note.as_bytes()).into(),
    }
}

/// `namespace/name` of the object, as logs and [`RecordedEvent`] show it.
fn object_key(object: &ObjectReference) -> String {
    format!(
        "{}/{}",
        object.namespace.as_deref().unwrap_or_default(),
        object.name.as_deref().unwrap_or_default()
    )
}

/// Every event also goes to the log: a refusal must be visible to whoever reads the
/// operator's log, even when the Event cannot be written or has expired.
fn log_event(object: &ObjectReference, warning: bool, reason: &str, note: &str) {
    let key = object_key(object);
    let kind = object.kind.as_deref().unwrap_or_default();
    if warning {
        tracing::warn!(object = %key, kind, reason, note, "event");
    } else {
        tracing::info!(object = %key, kind, reason, note, "event");
    }
}

/// `note`, cut at a character boundary so that it fits [`MAX_NOTE_BYTES`].
fn fit_note(note: &str) -> String {
    if note.len() <= MAX_NOTE_BYTES {
        return note.to_owned();
    }
    const MARK: &str = "…";
    let mut end = MAX_NOTE_BYTES - MARK.len();
    while !note.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}{MARK}", &note[..end])
}

/// An open series: the Event object to patch on the next occurrence.
struct Series {
    namespace: String,
    name: String,
    count: i32,
    last_observed: Timestamp,
}

#[derive(Default)]
struct State {
    series: HashMap<SeriesKey, Series>,
    /// The last timestamp used in an event name: names stay unique within the process
    /// even when two events are created in the same nanosecond.
    last_name_nanos: i128,
}

/// One event to publish, as [`EventSink::publish`] received it.
#[derive(Clone, Copy)]
struct Occurrence<'a> {
    object: &'a ObjectReference,
    warning: bool,
    reason: &'a str,
    action: &'a str,
    note: &'a str,
}

/// What to do with one occurrence, decided under the lock.
enum Step {
    Create,
    Repeat {
        namespace: String,
        name: String,
        count: i32,
    },
}

/// Publishes events.k8s.io/v1 Events, one series per [`series_key`].
pub struct KubeEvents {
    client: kube::Client,
    controller: String,
    instance: String,
    state: Mutex<State>,
}

impl KubeEvents {
    /// A sink reporting as `controller` (and `instance`, the controller's name when `None`,
    /// as kube's `Recorder` does).
    pub fn new(client: kube::Client, controller: &str, instance: Option<String>) -> Self {
        Self {
            client,
            controller: controller.to_owned(),
            instance: instance.unwrap_or_else(|| controller.to_owned()),
            state: Mutex::new(State::default()),
        }
    }

    /// The lock is never held across an await.
    fn state(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    /// Counts the occurrence in its open series, if there is one; drops expired series.
    fn step(&self, key: &SeriesKey, now: Timestamp) -> Step {
        let mut state = self.state();
        state
            .series
            .retain(|_, s| s.last_observed + SERIES_WINDOW > now);
        match state.series.get_mut(key) {
            // Counted before the patch is sent: the occurrence happened even if this patch
            // fails, and the next one then carries it.
            Some(series) => {
                series.count = series.count.saturating_add(1);
                series.last_observed = now;
                Step::Repeat {
                    namespace: series.namespace.clone(),
                    name: series.name.clone(),
                    count: series.count,
                }
            }
            None => Step::Create,
        }
    }

    fn event_name(&self, object: &ObjectReference, now: Timestamp) -> String {
        let nanos = {
            let mut state = self.state();
            let nanos = now.as_nanosecond().max(state.last_name_nanos + 1);
            state.last_name_nanos = nanos;
            nanos
        };
        let prefix: String = object
            .name
            .as_deref()
            .unwrap_or(&self.controller)
            .chars()
            .take(MAX_NAME_PREFIX)
            .collect();
        format!("{prefix}.{nanos:x}")
    }

    fn namespace(object: &ObjectReference) -> String {
        // Events about cluster-scoped objects go to `default`, as kube's Recorder puts them.
        object
            .namespace
            .clone()
            .unwrap_or_else(|| "default".to_owned())
    }

    async fn create(
        &self,
        key: SeriesKey,
        occurrence: &Occurrence<'_>,
        now: Timestamp,
    ) -> Result<(), kube::Error> {
        let Occurrence {
            object,
            warning,
            reason,
            action,
            note,
        } = *occurrence;
        let namespace = Self::namespace(object);
        let name = self.event_name(object, now);
        let event = K8sEvent {
            action: Some(action.to_owned()),
            reason: Some(reason.to_owned()),
            event_time: Some(MicroTime(now)),
            regarding: Some(object.clone()),
            note: Some(fit_note(note)),
            metadata: ObjectMeta {
                namespace: Some(namespace.clone()),
                name: Some(name.clone()),
                ..ObjectMeta::default()
            },
            reporting_controller: Some(self.controller.clone()),
            reporting_instance: Some(self.instance.clone()),
            type_: Some(if warning { "Warning" } else { "Normal" }.to_owned()),
            ..K8sEvent::default()
        };
        Api::<K8sEvent>::namespaced(self.client.clone(), &namespace)
            .create(&PostParams::default(), &event)
            .await?;
        self.state().series.insert(
            key,
            Series {
                namespace,
                name,
                count: 1,
                last_observed: now,
            },
        );
        Ok(())
    }

    async fn repeat(
        &self,
        namespace: &str,
        name: &str,
        count: i32,
        now: Timestamp,
    ) -> Result<(), kube::Error> {
        let patch = serde_json::json!({
            "series": EventSeries {
                count,
                last_observed_time: MicroTime(now),
            }
        });
        Api::<K8sEvent>::namespaced(self.client.clone(), namespace)
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map(|_| ())
    }

    async fn try_publish(&self, occurrence: &Occurrence<'_>) -> Result<(), kube::Error> {
        let now = Timestamp::now();
        let o = occurrence;
        let key = series_key(o.object, o.warning, o.reason, o.action, o.note);
        if let Step::Repeat {
            namespace,
            name,
            count,
        } = self.step(&key, now)
        {
            match self.repeat(&namespace, &name, count, now).await {
                // The Event expired (the API server's TTL) or was deleted: start over.
                Err(kube::Error::Api(status)) if status.is_not_found() => {
                    self.state().series.remove(&key);
                }
                other => return other,
            }
        }
        self.create(key, occurrence, now).await
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
        log_event(object, warning, reason, &note);
        let occurrence = Occurrence {
            object,
            warning,
            reason,
            action,
            note: &note,
        };
        if let Err(error) = self.try_publish(&occurrence).await {
            tracing::warn!(%error, object = %object_key(object), reason, "could not publish event");
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
    events: Mutex<Vec<RecordedEvent>>,
}

impl MemoryEvents {
    /// Everything published so far.
    pub fn all(&self) -> Vec<RecordedEvent> {
        lock(&self.events).clone()
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
        log_event(object, warning, reason, &note);
        lock(&self.events).push(RecordedEvent {
            object: object_key(object),
            warning,
            reason: reason.to_string(),
            note,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, uid: &str) -> ObjectReference {
        ObjectReference {
            api_version: Some("puppet-conductor.dev/v1alpha1".into()),
            kind: Some("PuppetNode".into()),
            namespace: Some("ns".into()),
            name: Some(name.into()),
            uid: Some(uid.into()),
            ..ObjectReference::default()
        }
    }

    async fn events_of(client: &kube::Client) -> Vec<K8sEvent> {
        let mut events = Api::<K8sEvent>::namespaced(client.clone(), "ns")
            .list(&Default::default())
            .await
            .unwrap()
            .items;
        events.sort_by_key(|e| e.metadata.name.clone());
        events
    }

    fn note_of(e: &K8sEvent) -> &str {
        e.note.as_deref().unwrap_or_default()
    }

    fn count_of(e: &K8sEvent) -> i32 {
        e.series.as_ref().map_or(1, |s| s.count)
    }

    #[test]
    fn the_note_is_part_of_the_series_key() {
        let a = node("web-1", "u1");
        let key = |o: &ObjectReference, w, r: &str, n: &str| series_key(o, w, r, "Sign", n);
        let first = key(&a, true, "CSRWeakKey", "RSA 1024 for web-1");
        assert_eq!(first, key(&a, true, "CSRWeakKey", "RSA 1024 for web-1"));
        for other in [
            key(&a, true, "CSRWeakKey", "RSA 512 for web-1"),
            key(&a, false, "CSRWeakKey", "RSA 1024 for web-1"),
            key(&a, true, "CSRBadSignature", "RSA 1024 for web-1"),
            key(
                &node("web-1", "u2"),
                true,
                "CSRWeakKey",
                "RSA 1024 for web-1",
            ),
            key(
                &node("web-2", "u1"),
                true,
                "CSRWeakKey",
                "RSA 1024 for web-1",
            ),
            series_key(&a, true, "CSRWeakKey", "Verify", "RSA 1024 for web-1"),
        ] {
            assert_ne!(first, other);
        }
    }

    #[test]
    fn long_notes_are_cut_to_what_the_api_accepts() {
        assert_eq!(fit_note("short"), "short");
        for filler in ["x", "é", "漢"] {
            let note = filler.repeat(2000);
            let fitted = fit_note(&note);
            assert!(fitted.len() <= MAX_NOTE_BYTES, "{}", fitted.len());
            assert!(fitted.ends_with('…'));
            assert!(note.starts_with(fitted.trim_end_matches('…')));
        }
    }

    #[tokio::test]
    async fn different_notes_are_different_events_and_the_same_note_is_a_series() {
        let client = kube_fake_client::ClientBuilder::new()
            .build()
            .await
            .unwrap();
        let sink = KubeEvents::new(client.clone(), "puppet-conductor", Some("pod-1".into()));
        let web = node("web-1", "u1");
        let first = "refused the CSR of web-1: RSA key of 1024 bits".to_owned();
        let second = "refused the CSR of web-1: EC key on curve P-192".to_owned();

        sink.publish(&web, true, "CSRWeakKey", "Sign", first.clone())
            .await;
        sink.publish(&web, true, "CSRWeakKey", "Sign", second.clone())
            .await;
        let events = events_of(&client).await;
        assert_eq!(events.len(), 2, "{events:?}");
        let notes: Vec<&str> = events.iter().map(note_of).collect();
        assert_eq!(notes, [first.as_str(), second.as_str()]);
        assert!(events.iter().all(|e| e.series.is_none()));
        for e in &events {
            assert_eq!(e.type_.as_deref(), Some("Warning"));
            assert_eq!(e.reason.as_deref(), Some("CSRWeakKey"));
            assert_eq!(e.action.as_deref(), Some("Sign"));
            assert_eq!(e.regarding.as_ref(), Some(&web));
            assert_eq!(e.reporting_controller.as_deref(), Some("puppet-conductor"));
            assert_eq!(e.reporting_instance.as_deref(), Some("pod-1"));
            assert!(e.event_time.is_some());
        }

        // The same note again: the first event becomes a series of two, nothing new.
        sink.publish(&web, true, "CSRWeakKey", "Sign", first.clone())
            .await;
        let events = events_of(&client).await;
        assert_eq!(events.len(), 2, "{events:?}");
        let by_note = |n: &str| events.iter().find(|e| note_of(e) == n).unwrap().clone();
        assert_eq!(count_of(&by_note(&first)), 2);
        assert!(
            by_note(&first).series.unwrap().last_observed_time.0
                >= by_note(&first).event_time.unwrap().0
        );
        assert_eq!(count_of(&by_note(&second)), 1);
        sink.publish(&web, true, "CSRWeakKey", "Sign", first.clone())
            .await;
        assert_eq!(count_of(&by_note_in(&events_of(&client).await, &first)), 3);

        // Another object with the same note is its own event.
        sink.publish(
            &node("web-2", "u2"),
            true,
            "CSRWeakKey",
            "Sign",
            first.clone(),
        )
        .await;
        assert_eq!(events_of(&client).await.len(), 3);
    }

    fn by_note_in(events: &[K8sEvent], note: &str) -> K8sEvent {
        events.iter().find(|e| note_of(e) == note).unwrap().clone()
    }

    #[tokio::test]
    async fn a_series_whose_event_is_gone_starts_again() {
        let client = kube_fake_client::ClientBuilder::new()
            .build()
            .await
            .unwrap();
        let sink = KubeEvents::new(client.clone(), "puppet-conductor", None);
        let web = node("web-1", "u1");
        sink.publish(&web, false, "Launched", "Launch", "i-1".into())
            .await;
        let events = events_of(&client).await;
        assert_eq!(events.len(), 1);
        assert_eq!(
            events[0].reporting_instance.as_deref(),
            Some("puppet-conductor")
        );
        let name = events[0].metadata.name.clone().unwrap();
        Api::<K8sEvent>::namespaced(client.clone(), "ns")
            .delete(&name, &Default::default())
            .await
            .unwrap();

        sink.publish(&web, false, "Launched", "Launch", "i-1".into())
            .await;
        let events = events_of(&client).await;
        assert_eq!(events.len(), 1, "{events:?}");
        assert_ne!(events[0].metadata.name.as_deref(), Some(name.as_str()));
        assert_eq!(count_of(&events[0]), 1);
        assert_eq!(note_of(&events[0]), "i-1");
    }

    #[tokio::test]
    async fn memory_events_keep_every_note() {
        let sink = MemoryEvents::default();
        let web = node("web-1", "u1");
        sink.publish(&web, true, "CSRWeakKey", "Sign", "a".into())
            .await;
        sink.publish(&web, true, "CSRWeakKey", "Sign", "b".into())
            .await;
        let notes: Vec<String> = sink.all().into_iter().map(|e| e.note).collect();
        assert_eq!(notes, ["a", "b"]);
        assert_eq!(sink.all()[0].object, "ns/web-1");
    }
}
