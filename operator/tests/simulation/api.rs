//! A small in-memory Kubernetes API behind a real `kube::Client`: what the operator's
//! calls need, with the semantics the lifecycle depends on and kube-fake-client lacks
//! (a DELETE of an object with finalizers only sets its deletionTimestamp; a
//! terminating namespace refuses new objects). The simulation uses no watch: it triggers
//! reconciles itself from what changed. The crash trials (`tests/crash/`) serve the same
//! API over HTTP to the real binary, with the watch, selectors, paging and metadata-only
//! answers of [`served`], switched on by [`MemoryApi::served`] so the simulation pays
//! nothing for them.

use std::collections::{BTreeMap, BTreeSet};
use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use serde_json::{json, Value};

/// Objects by (plural, namespace, name).
type Key = (String, String, String);

#[derive(Default)]
struct Store {
    objects: BTreeMap<Key, Value>,
    revision: u64,
    uids: u64,
    terminating: BTreeSet<String>,
    /// Objects whose last change came through the client (the operator), by key.
    by_operator: BTreeSet<Key>,
    /// What UIDs start with instead of the fixed `00000000-0000-4000-8000-` (certnames
    /// derive from UIDs: trials against a shared CA need their own).
    uid_prefix: Option<String>,
    /// The changes a watch replays; only kept when served over HTTP.
    changes: Option<served::ChangeLog>,
}

/// The in-memory API; cheap to clone, shared by the client and the scheduler.
#[derive(Clone, Default)]
pub struct MemoryApi {
    store: Arc<Mutex<Store>>,
    /// Requests served through [`MemoryApi::client`], by verb and resource (`GET secrets`,
    /// `LIST puppetnodes`, `PATCH puppetnodes/status`...).
    requests: Arc<Mutex<BTreeMap<String, u64>>>,
}

fn status(code: StatusCode, reason: &str, message: String) -> (StatusCode, Value) {
    (
        code,
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
               "message": message, "reason": reason, "code": code.as_u16()}),
    )
}

fn kind_of(plural: &str) -> (&'static str, &'static str) {
    match plural {
        "puppetnodes" => ("puppet-conductor.dev/v1alpha1", "PuppetNode"),
        "puppetmasters" => ("puppet-conductor.dev/v1alpha1", "PuppetMaster"),
        "puppetnodepools" => ("puppet-conductor.dev/v1alpha1", "PuppetNodePool"),
        "secrets" => ("v1", "Secret"),
        "events" => ("events.k8s.io/v1", "Event"),
        "customresourcedefinitions" => ("apiextensions.k8s.io/v1", "CustomResourceDefinition"),
        _ => ("v1", "Unknown"),
    }
}

/// RFC 7386 merge.
fn merge(target: &mut Value, patch: &Value) {
    // RFC 7386: an object patched onto anything else patches an empty object (so a null
    // in it removes nothing rather than storing a null, e.g. unpausing an object that has
    // no annotations).
    if patch.is_object() && !target.is_object() {
        *target = Value::Object(Default::default());
    }
    match (target, patch) {
        (Value::Object(t), Value::Object(p)) => {
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        (t, p) => *t = p.clone(),
    }
}

fn finalizers(obj: &Value) -> usize {
    obj["metadata"]["finalizers"].as_array().map_or(0, Vec::len)
}

impl MemoryApi {
    /// Stores `obj` (any kind) as the API server would on create, outside the operator.
    pub fn create(&self, plural: &str, ns: &str, obj: Value) -> Result<Value, String> {
        let mut s = self.store.lock().unwrap();
        Self::create_locked(&mut s, plural, ns, obj).map_err(|(_, v)| v.to_string())
    }

    fn create_locked(
        s: &mut Store,
        plural: &str,
        ns: &str,
        mut obj: Value,
    ) -> Result<Value, (StatusCode, Value)> {
        if s.terminating.contains(ns) {
            return Err(status(
                StatusCode::FORBIDDEN,
                "Forbidden",
                format!(
                    "unable to create new content in namespace {ns} because it is being terminated"
                ),
            ));
        }
        let name = obj["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let key = (plural.to_string(), ns.to_string(), name.clone());
        if s.objects.contains_key(&key) {
            return Err(status(
                StatusCode::CONFLICT,
                "AlreadyExists",
                format!("{plural} \"{name}\" already exists"),
            ));
        }
        s.revision += 1;
        s.uids += 1;
        let (api_version, kind) = kind_of(plural);
        obj["apiVersion"] = json!(api_version);
        obj["kind"] = json!(kind);
        let meta = &mut obj["metadata"];
        meta["namespace"] = json!(ns);
        let uid_prefix = s
            .uid_prefix
            .as_deref()
            .unwrap_or("00000000-0000-4000-8000-");
        meta["uid"] = json!(format!("{uid_prefix}{:012}", s.uids));
        meta["resourceVersion"] = json!(s.revision.to_string());
        meta["generation"] = json!(1);
        // Creation order is what "older wins" compares: one second apart, fixed origin.
        meta["creationTimestamp"] = json!(format!(
            "2026-01-01T{:02}:{:02}:{:02}Z",
            (s.uids / 3600) % 24,
            (s.uids / 60) % 60,
            s.uids % 60
        ));
        if let Some(m) = meta.as_object_mut() {
            m.remove("deletionTimestamp");
        }
        served::record(s, "ADDED", &key, None, &obj);
        s.objects.insert(key, obj.clone());
        Ok(obj)
    }

    /// The object now, if any.
    pub fn get(&self, plural: &str, ns: &str, name: &str) -> Option<Value> {
        let s = self.store.lock().unwrap();
        s.objects
            .get(&(plural.to_string(), ns.to_string(), name.to_string()))
            .cloned()
    }

    /// Every object of a kind in a namespace, by name.
    pub fn list(&self, plural: &str, ns: &str) -> Vec<Value> {
        let s = self.store.lock().unwrap();
        s.objects
            .iter()
            .filter(|((p, n, _), _)| p == plural && n == ns)
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// Name and resourceVersion of every object of a kind in a namespace (cheap: no clones
    /// of the objects).
    pub fn revisions(&self, plural: &str, ns: &str) -> Vec<(String, String)> {
        let s = self.store.lock().unwrap();
        s.objects
            .iter()
            .filter(|((p, n, _), _)| p == plural && n == ns)
            .map(|((_, _, name), v)| {
                let rv = v["metadata"]["resourceVersion"]
                    .as_str()
                    .unwrap_or_default();
                (name.clone(), rv.to_string())
            })
            .collect()
    }

    /// `kubectl delete`: with finalizers only the deletionTimestamp is set.
    pub fn delete(&self, plural: &str, ns: &str, name: &str) -> bool {
        let mut s = self.store.lock().unwrap();
        Self::delete_locked(&mut s, plural, ns, name)
    }

    fn delete_locked(s: &mut Store, plural: &str, ns: &str, name: &str) -> bool {
        let key = (plural.to_string(), ns.to_string(), name.to_string());
        let Some(obj) = s.objects.get_mut(&key) else {
            return false;
        };
        if finalizers(obj) == 0 {
            if let Some(obj) = s.objects.remove(&key) {
                served::record_removal(s, &key, obj);
            }
            return true;
        }
        if obj["metadata"]["deletionTimestamp"].is_null() {
            s.by_operator.remove(&key);
            let before = served::snapshot(s, &key);
            let Some(obj) = s.objects.get_mut(&key) else {
                return false;
            };
            s.revision += 1;
            obj["metadata"]["deletionTimestamp"] = json!("2026-01-02T00:00:00Z");
            obj["metadata"]["resourceVersion"] = json!(s.revision.to_string());
            if let Some(after) = served::snapshot(s, &key) {
                served::record(s, "MODIFIED", &key, before, &after);
            }
        }
        true
    }

    /// Whether the object's last change was the operator's.
    pub fn changed_by_operator(&self, plural: &str, ns: &str, name: &str) -> bool {
        let s = self.store.lock().unwrap();
        s.by_operator
            .contains(&(plural.to_string(), ns.to_string(), name.to_string()))
    }

    /// Namespace deletion: no new objects in it, and every object in it is deleted.
    pub fn delete_namespace(&self, ns: &str) {
        let mut s = self.store.lock().unwrap();
        s.terminating.insert(ns.to_string());
        let keys: Vec<Key> = s.objects.keys().filter(|k| k.1 == ns).cloned().collect();
        for (plural, ns, name) in keys {
            Self::delete_locked(&mut s, &plural, &ns, &name);
        }
    }

    /// Whether the namespace is terminating and empty (its deletion completed).
    pub fn namespace_gone(&self, ns: &str) -> bool {
        let s = self.store.lock().unwrap();
        s.terminating.contains(ns) && !s.objects.keys().any(|k| k.1 == ns)
    }

    /// A change made outside the operator (a user's edit): merge `patch` into the object.
    pub fn edit(&self, plural: &str, ns: &str, name: &str, patch: &Value) -> bool {
        let mut s = self.store.lock().unwrap();
        let key = (plural.to_string(), ns.to_string(), name.to_string());
        s.revision += 1;
        let revision = s.revision;
        let before = served::snapshot(&s, &key);
        let Some(obj) = s.objects.get_mut(&key) else {
            return false;
        };
        let spec_before = obj["spec"].clone();
        let data_before = obj["data"].clone();
        merge(obj, patch);
        s.by_operator.remove(&key);
        let Some(obj) = s.objects.get_mut(&key) else {
            return false;
        };
        if obj["spec"] != spec_before || obj["data"] != data_before {
            let generation = obj["metadata"]["generation"].as_i64().unwrap_or(1);
            obj["metadata"]["generation"] = json!(generation + 1);
        }
        obj["metadata"]["resourceVersion"] = json!(revision.to_string());
        if let Some(after) = served::snapshot(&s, &key) {
            served::record(&mut s, "MODIFIED", &key, before, &after);
        }
        true
    }

    /// Counts a request by verb and resource: a GET of a collection (an odd number of
    /// segments after the version, `namespaces/<ns>/<plural>`) is a LIST.
    fn count(&self, method: &Method, path: &str) {
        let path = path.split('?').next().unwrap_or_default();
        let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
        let core = path.starts_with("/api/");
        let rest = &segments[(if core { 2 } else { 3 }).min(segments.len())..];
        let rest = match rest {
            ["namespaces", _, tail @ ..] if !tail.is_empty() => tail,
            other => other,
        };
        let verb = match method.as_str() {
            "GET" if rest.len() == 1 => "LIST",
            other => other,
        };
        let resource = match rest {
            [plural, _, sub, ..] => format!("{plural}/{sub}"),
            [plural, ..] => plural.to_string(),
            [] => String::new(),
        };
        *self
            .requests
            .lock()
            .unwrap()
            .entry(format!("{verb} {resource}"))
            .or_default() += 1;
    }

    /// Requests served so far by verb and resource; `reset` starts the count again.
    pub fn requests(&self, reset: bool) -> BTreeMap<String, u64> {
        let mut requests = self.requests.lock().unwrap();
        if reset {
            std::mem::take(&mut *requests)
        } else {
            requests.clone()
        }
    }

    /// A `kube::Client` served by this API.
    pub fn client(&self) -> kube::Client {
        let api = self.clone();
        let service = tower::service_fn(move |req: Request<kube::client::Body>| {
            let api = api.clone();
            async move {
                let (parts, body) = req.into_parts();
                let body = body
                    .collect()
                    .await
                    .map(|b| b.to_bytes())
                    .unwrap_or_default();
                let content_type = parts
                    .headers
                    .get(http::header::CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_string();
                api.count(&parts.method, parts.uri.path());
                let (code, value) =
                    api.serve(&parts.method, parts.uri.path(), &content_type, &body);
                let bytes = Bytes::from(serde_json::to_vec(&value).unwrap_or_default());
                let response = Response::builder()
                    .status(code)
                    .header(http::header::CONTENT_TYPE, "application/json")
                    .body(Full::new(bytes))
                    .unwrap();
                Ok::<_, Infallible>(response)
            }
        });
        kube::Client::new(service, "default")
    }

    fn serve(
        &self,
        method: &Method,
        path: &str,
        content_type: &str,
        body: &[u8],
    ) -> (StatusCode, Value) {
        // /api/v1/namespaces/{ns}/{plural}[/{name}[/status]] or /apis/{g}/{v}/...
        let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
        let rest = match parts.first() {
            Some(&"api") => &parts[2..],
            Some(&"apis") => &parts[3..],
            _ => return status(StatusCode::NOT_FOUND, "NotFound", path.to_string()),
        };
        let (ns, plural, name, sub) = match rest {
            ["namespaces", ns, plural] => (Some(*ns), *plural, None, None),
            ["namespaces", ns, plural, name] => (Some(*ns), *plural, Some(*name), None),
            ["namespaces", ns, plural, name, sub] => (Some(*ns), *plural, Some(*name), Some(*sub)),
            [plural] => (None, *plural, None, None),
            _ => return status(StatusCode::NOT_FOUND, "NotFound", path.to_string()),
        };
        let mut s = self.store.lock().unwrap();
        let (api_version, kind) = kind_of(plural);
        match (method.clone(), name) {
            (Method::GET, None) => {
                let items: Vec<Value> = s
                    .objects
                    .iter()
                    .filter(|((p, n, _), _)| p == plural && ns.is_none_or(|ns| ns == n))
                    .map(|(_, v)| v.clone())
                    .collect();
                (
                    StatusCode::OK,
                    json!({"apiVersion": api_version, "kind": format!("{kind}List"),
                           "metadata": {"resourceVersion": s.revision.to_string()}, "items": items}),
                )
            }
            (Method::GET, Some(name)) => {
                let key = (
                    plural.to_string(),
                    ns.unwrap_or_default().to_string(),
                    name.to_string(),
                );
                match s.objects.get(&key) {
                    Some(v) => (StatusCode::OK, v.clone()),
                    None => status(
                        StatusCode::NOT_FOUND,
                        "NotFound",
                        format!("{plural} \"{name}\" not found"),
                    ),
                }
            }
            (Method::POST, None) => {
                let Ok(obj) = serde_json::from_slice::<Value>(body) else {
                    return status(StatusCode::BAD_REQUEST, "BadRequest", "body".into());
                };
                let ns = ns.unwrap_or_default();
                match Self::create_locked(&mut s, plural, ns, obj) {
                    Ok(v) => (StatusCode::CREATED, v),
                    Err(e) => e,
                }
            }
            (Method::PATCH, Some(name)) => {
                let key = (
                    plural.to_string(),
                    ns.unwrap_or_default().to_string(),
                    name.to_string(),
                );
                let Some(current) = s.objects.get(&key).cloned() else {
                    return status(
                        StatusCode::NOT_FOUND,
                        "NotFound",
                        format!("{plural} \"{name}\" not found"),
                    );
                };
                let Ok(patch) = serde_json::from_slice::<Value>(body) else {
                    return status(StatusCode::BAD_REQUEST, "BadRequest", "body".into());
                };
                // A patch naming a UID is for that object only: a namesake made since
                // refuses it, as the API server's update precondition does.
                if let Some(uid) = patch["metadata"]["uid"].as_str() {
                    if current["metadata"]["uid"].as_str() != Some(uid) {
                        return status(
                            StatusCode::CONFLICT,
                            "Conflict",
                            format!(
                                "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                                current["metadata"]["uid"].as_str().unwrap_or_default()
                            ),
                        );
                    }
                }
                let mut next = current.clone();
                if content_type.starts_with("application/json-patch+json") {
                    let Ok(p) = serde_json::from_value::<json_patch::Patch>(patch) else {
                        return status(StatusCode::BAD_REQUEST, "BadRequest", "json patch".into());
                    };
                    if let Err(e) = json_patch::patch(&mut next, &p) {
                        return status(StatusCode::UNPROCESSABLE_ENTITY, "Invalid", e.to_string());
                    }
                } else if content_type.starts_with("application/apply-patch")
                    && sub == Some("status")
                {
                    // The operator is the only status writer and applies all of it.
                    next["status"] = patch["status"].clone();
                } else {
                    merge(&mut next, &patch);
                }
                // The status subresource changes only status; the object only the rest.
                if sub == Some("status") {
                    let status = next["status"].clone();
                    next = current.clone();
                    next["status"] = status;
                } else {
                    next["status"] = current["status"].clone();
                    if next["status"].is_null() {
                        if let Some(m) = next.as_object_mut() {
                            m.remove("status");
                        }
                    }
                    for field in [
                        "uid",
                        "creationTimestamp",
                        "deletionTimestamp",
                        "namespace",
                        "name",
                    ] {
                        next["metadata"][field] = current["metadata"][field].clone();
                    }
                    if next["spec"] != current["spec"] {
                        let generation = current["metadata"]["generation"].as_i64().unwrap_or(1);
                        next["metadata"]["generation"] = json!(generation + 1);
                    }
                }
                if next == current {
                    return (StatusCode::OK, current);
                }
                s.revision += 1;
                next["metadata"]["resourceVersion"] = json!(s.revision.to_string());
                s.by_operator.insert(key.clone());
                let removed =
                    !next["metadata"]["deletionTimestamp"].is_null() && finalizers(&next) == 0;
                let change = if removed { "DELETED" } else { "MODIFIED" };
                served::record(&mut s, change, &key, Some(current), &next);
                if removed {
                    s.objects.remove(&key);
                } else {
                    s.objects.insert(key, next.clone());
                }
                (StatusCode::OK, next)
            }
            (Method::DELETE, Some(name)) => {
                let ns = ns.unwrap_or_default();
                if Self::delete_locked(&mut s, plural, ns, name) {
                    (
                        StatusCode::OK,
                        json!({"kind": "Status", "apiVersion": "v1", "status": "Success"}),
                    )
                } else {
                    status(
                        StatusCode::NOT_FOUND,
                        "NotFound",
                        format!("{plural} \"{name}\" not found"),
                    )
                }
            }
            _ => status(
                StatusCode::METHOD_NOT_ALLOWED,
                "MethodNotAllowed",
                path.to_string(),
            ),
        }
    }
}

/// What the crash trials need beyond the simulation, to serve this API over HTTP to the
/// real binary: watches replaying a change log (ADDED / MODIFIED / DELETED / BOOKMARK, 410
/// for a resourceVersion older than the log), list answers with their resourceVersion,
/// `limit`/`continue`, equality label and field selectors, metadata-only answers
/// (`as=PartialObjectMetadata[List]`), and cluster-scoped reads of established CRDs. The
/// change log exists only in an API made by [`MemoryApi::served`].
pub mod served {
    // The simulation compiles this module too but never serves over HTTP.
    #![allow(dead_code)]

    use std::collections::{BTreeMap, VecDeque};
    use std::sync::Arc;
    use std::time::Duration;

    use http::{Method, StatusCode};
    use serde_json::{json, Value};
    use tokio::sync::Notify;
    use tokio::time::Instant;

    use super::{kind_of, status, Key, MemoryApi, Store};

    /// Changes kept by default for watches to resume from; a watch from before them answers 410.
    const KEPT_CHANGES: usize = 20_000;
    /// How often a quiet watch that asked for bookmarks gets one.
    const BOOKMARK_EVERY: Duration = Duration::from_secs(5);
    /// A watch without `timeoutSeconds` ends after this (the API server's default range).
    const DEFAULT_WATCH_TIMEOUT: Duration = Duration::from_secs(1800);
    /// The kinds served (anything else is a route the trial must learn about).
    const PLURALS: &[&str] = &[
        "puppetnodes",
        "puppetmasters",
        "puppetnodepools",
        "secrets",
        "events",
        "customresourcedefinitions",
    ];

    struct Change {
        revision: u64,
        kind: &'static str,
        key: Key,
        before: Option<Value>,
        after: Value,
    }

    /// Every change since the log began (the last [`KEPT_CHANGES`] of them).
    pub(super) struct ChangeLog {
        entries: VecDeque<Change>,
        /// How many changes are kept.
        kept: usize,
        /// Revision of the newest change dropped: a watch must start at or after it.
        floor: u64,
        notify: Arc<Notify>,
    }

    /// A copy of the object, only when changes are recorded (free in the simulation).
    pub(super) fn snapshot(s: &Store, key: &Key) -> Option<Value> {
        s.changes.as_ref()?;
        s.objects.get(key).cloned()
    }

    /// Records a change made at the store's current revision, when changes are recorded.
    pub(super) fn record(
        s: &mut Store,
        kind: &'static str,
        key: &Key,
        before: Option<Value>,
        after: &Value,
    ) {
        let revision = s.revision;
        let Some(log) = &mut s.changes else {
            return;
        };
        log.entries.push_back(Change {
            revision,
            kind,
            key: key.clone(),
            before,
            after: after.clone(),
        });
        while log.entries.len() > log.kept {
            if let Some(dropped) = log.entries.pop_front() {
                log.floor = dropped.revision;
            }
        }
        log.notify.notify_waiters();
    }

    /// Records the removal of `obj` under a revision of its own, as the API server does,
    /// when changes are recorded (the simulation's revisions stay as they were).
    pub(super) fn record_removal(s: &mut Store, key: &Key, obj: Value) {
        if s.changes.is_none() {
            return;
        }
        s.revision += 1;
        let mut gone = obj.clone();
        gone["metadata"]["resourceVersion"] = json!(s.revision.to_string());
        record(s, "DELETED", key, Some(obj), &gone);
    }

    /// One HTTP request, as the listener hands it over.
    pub struct Request<'a> {
        pub method: &'a Method,
        pub path: &'a str,
        pub query: &'a str,
        pub accept: &'a str,
        pub content_type: &'a str,
        pub body: &'a [u8],
    }

    /// What to answer.
    pub enum Answer {
        /// A JSON body with this status.
        Json(StatusCode, Value),
        /// A stream of watch events: call [`MemoryApi::watch_next`] until it says `None`.
        Watch(Box<Watch>),
        /// A path or kind this API does not serve (a 404 the trial reports).
        NoRoute(StatusCode, Value),
    }

    #[derive(Clone, Copy, PartialEq, Eq, Debug)]
    enum Op {
        Eq,
        NotEq,
        Exists,
        NotExists,
    }

    /// An equality-based label or field selector.
    #[derive(Clone, Debug, Default)]
    struct Selector(Vec<(String, Op, String)>);

    impl Selector {
        fn parse(text: &str, fields: bool) -> Result<Self, String> {
            if text.contains('(') {
                return Err(format!("set-based selector {text:?} is not served"));
            }
            let mut out = Vec::new();
            for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
                let (key, op, value) = if let Some((k, v)) = part.split_once("!=") {
                    (k, Op::NotEq, v)
                } else if let Some((k, v)) = part.split_once("==") {
                    (k, Op::Eq, v)
                } else if let Some((k, v)) = part.split_once('=') {
                    (k, Op::Eq, v)
                } else if let Some(k) = part.strip_prefix('!') {
                    (k, Op::NotExists, "")
                } else {
                    (part, Op::Exists, "")
                };
                let key = key.trim();
                if fields
                    && (!matches!(op, Op::Eq | Op::NotEq)
                        || !matches!(key, "metadata.name" | "metadata.namespace"))
                {
                    return Err(format!("field selector {part:?} is not served"));
                }
                out.push((key.to_string(), op, value.trim().to_string()));
            }
            Ok(Self(out))
        }

        fn matches(&self, obj: &Value, fields: bool) -> bool {
            self.0.iter().all(|(key, op, value)| {
                let found = if fields {
                    let field = key.trim_start_matches("metadata.");
                    obj["metadata"][field].as_str().map(str::to_string)
                } else {
                    obj["metadata"]["labels"][key.as_str()]
                        .as_str()
                        .map(str::to_string)
                };
                match op {
                    Op::Eq => found.as_deref() == Some(value.as_str()),
                    Op::NotEq => found.as_deref() != Some(value.as_str()),
                    Op::Exists => found.is_some(),
                    Op::NotExists => found.is_none(),
                }
            })
        }
    }

    /// A watch in progress.
    pub struct Watch {
        plural: String,
        ns: Option<String>,
        labels: Selector,
        fields: Selector,
        metadata_only: bool,
        bookmarks: bool,
        /// Changes up to this revision were sent (or did not concern the watch).
        after: u64,
        until: Instant,
        last_bookmark: Instant,
        /// ADDED events for a watch that started without a resourceVersion.
        initial: VecDeque<Value>,
        /// The too old resourceVersion asked for, answered by one ERROR event.
        expired: Option<u64>,
        done: bool,
    }

    impl Watch {
        fn selects(&self, key: &Key, obj: &Value) -> bool {
            key.0 == self.plural
                && self.ns.as_deref().is_none_or(|ns| ns == key.1)
                && self.labels.matches(obj, false)
                && self.fields.matches(obj, true)
        }

        fn event(&self, kind: &str, obj: &Value) -> Value {
            let object = if self.metadata_only {
                partial(obj)
            } else {
                obj.clone()
            };
            json!({"type": kind, "object": object})
        }
    }

    fn partial(obj: &Value) -> Value {
        json!({"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata",
               "metadata": obj["metadata"].clone()})
    }

    fn lines(events: &[Value]) -> Vec<u8> {
        let mut out = Vec::new();
        for e in events {
            out.extend(serde_json::to_vec(e).unwrap_or_default());
            out.push(b'\n');
        }
        out
    }

    /// `a=b&c=d` with %-escapes and `+` decoded.
    fn query_params(query: &str) -> BTreeMap<String, String> {
        fn decode(text: &str) -> String {
            let bytes = text.as_bytes();
            let mut out = Vec::with_capacity(bytes.len());
            let mut i = 0;
            while i < bytes.len() {
                let hex = bytes
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                match (bytes[i], hex) {
                    (b'+', _) => {
                        out.push(b' ');
                        i += 1;
                    }
                    (b'%', Some(b)) => {
                        out.push(b);
                        i += 3;
                    }
                    (b, _) => {
                        out.push(b);
                        i += 1;
                    }
                }
            }
            String::from_utf8_lossy(&out).into_owned()
        }
        query
            .split('&')
            .filter(|p| !p.is_empty())
            .map(|p| match p.split_once('=') {
                Some((k, v)) => (decode(k), decode(v)),
                None => (decode(p), String::new()),
            })
            .collect()
    }

    /// (namespace, plural, name, subresource) of a served path.
    type Route<'a> = (Option<&'a str>, &'a str, Option<&'a str>, Option<&'a str>);

    fn route(path: &str) -> Option<Route<'_>> {
        let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
        let rest = match parts.first() {
            Some(&"api") if parts.len() >= 2 => &parts[2..],
            Some(&"apis") if parts.len() >= 3 => &parts[3..],
            _ => return None,
        };
        let route = match rest {
            ["namespaces", ns, plural] => (Some(*ns), *plural, None, None),
            ["namespaces", ns, plural, name] => (Some(*ns), *plural, Some(*name), None),
            ["namespaces", ns, plural, name, sub] => (Some(*ns), *plural, Some(*name), Some(*sub)),
            [plural] => (None, *plural, None, None),
            [plural, name] => (None, *plural, Some(*name), None),
            _ => return None,
        };
        PLURALS.contains(&route.1).then_some(route)
    }

    fn bad_request(message: String) -> Answer {
        let (code, value) = status(StatusCode::BAD_REQUEST, "BadRequest", message);
        Answer::Json(code, value)
    }

    impl MemoryApi {
        /// An API to serve over HTTP: it keeps the change log watches replay, and its UIDs
        /// start with `uid_prefix` (24 characters, `xxxxxxxx-xxxx-4xxx-8xxx-`) so that
        /// certnames of different trials never meet on a shared CA.
        pub fn served(uid_prefix: &str) -> Self {
            let api = Self::default();
            {
                let mut s = api.store.lock().unwrap();
                s.uid_prefix = Some(uid_prefix.to_string());
                s.changes = Some(ChangeLog {
                    entries: VecDeque::new(),
                    kept: KEPT_CHANGES,
                    floor: 0,
                    notify: Arc::new(Notify::new()),
                });
            }
            api
        }

        /// Keeps only the last `n` changes from now on: a watch from before them is answered
        /// 410 Gone (what an API server does once etcd compacted them).
        pub fn keep_changes(&self, n: usize) {
            if let Some(log) = &mut self.store.lock().unwrap().changes {
                log.kept = n;
            }
        }

        /// Stores a CRD (as generated into `crds/`) the way the API server shows it once
        /// established, for the operator's start-up check.
        pub fn add_established_crd(&self, mut crd: Value) -> Result<(), String> {
            let versions: Vec<Value> = crd["spec"]["versions"]
                .as_array()
                .map(|v| v.iter().map(|v| v["name"].clone()).collect())
                .unwrap_or_default();
            crd["status"] = json!({
                "acceptedNames": crd["spec"]["names"].clone(),
                "storedVersions": versions,
                "conditions": [
                    {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts",
                     "message": "no conflicts found", "lastTransitionTime": "2026-01-01T00:00:00Z"},
                    {"type": "Established", "status": "True", "reason": "InitialNamesAccepted",
                     "message": "the initial names have been accepted",
                     "lastTransitionTime": "2026-01-01T00:00:00Z"},
                ],
            });
            self.create("customresourcedefinitions", "", crd)
                .map(|_| ())
        }

        /// Answers one HTTP request.
        pub fn handle(&self, req: &Request<'_>) -> Answer {
            let Some((ns, plural, name, sub)) = route(req.path) else {
                let (code, value) = status(StatusCode::NOT_FOUND, "NotFound", req.path.to_string());
                return Answer::NoRoute(code, value);
            };
            let q = query_params(req.query);
            let metadata_only = req.accept.contains("as=PartialObjectMetadata");
            let (labels, fields) = match (
                Selector::parse(q.get("labelSelector").map_or("", String::as_str), false),
                Selector::parse(q.get("fieldSelector").map_or("", String::as_str), true),
            ) {
                (Ok(l), Ok(f)) => (l, f),
                (Err(e), _) | (_, Err(e)) => return bad_request(e),
            };
            match (req.method, name, sub) {
                (&Method::GET, None, None)
                    if q.get("watch").map(String::as_str) == Some("true") =>
                {
                    self.start_watch(plural, ns, labels, fields, metadata_only, &q)
                }
                (&Method::GET, None, None) => {
                    self.list_page(plural, ns, &labels, &fields, metadata_only, &q)
                }
                (&Method::GET, Some(name), None) => {
                    let s = self.store.lock().unwrap();
                    let key = (
                        plural.to_string(),
                        ns.unwrap_or_default().to_string(),
                        name.to_string(),
                    );
                    match s.objects.get(&key) {
                        Some(v) if metadata_only => Answer::Json(StatusCode::OK, partial(v)),
                        Some(v) => Answer::Json(StatusCode::OK, v.clone()),
                        None => {
                            let (code, value) = status(
                                StatusCode::NOT_FOUND,
                                "NotFound",
                                format!("{plural} \"{name}\" not found"),
                            );
                            Answer::Json(code, value)
                        }
                    }
                }
                (method, _, _) if ns.is_some() => {
                    let (code, value) = self.serve(method, req.path, req.content_type, req.body);
                    Answer::Json(code, value)
                }
                _ => {
                    let (code, value) = status(
                        StatusCode::METHOD_NOT_ALLOWED,
                        "MethodNotAllowed",
                        format!("{} {}", req.method, req.path),
                    );
                    Answer::NoRoute(code, value)
                }
            }
        }

        fn list_page(
            &self,
            plural: &str,
            ns: Option<&str>,
            labels: &Selector,
            fields: &Selector,
            metadata_only: bool,
            q: &BTreeMap<String, String>,
        ) -> Answer {
            let s = self.store.lock().unwrap();
            // `<revision>|<namespace>|<name>` of the list's first page and its last item.
            let (revision, after) = match q.get("continue").filter(|c| !c.is_empty()) {
                Some(token) => {
                    let mut parts = token.splitn(3, '|');
                    match (
                        parts.next().and_then(|r| r.parse::<u64>().ok()),
                        parts.next(),
                        parts.next(),
                    ) {
                        (Some(r), Some(n), Some(name)) => {
                            (r, Some((n.to_string(), name.to_string())))
                        }
                        _ => return bad_request(format!("continue token {token:?}")),
                    }
                }
                None => (s.revision, None),
            };
            let limit = q
                .get("limit")
                .and_then(|l| l.parse::<usize>().ok())
                .filter(|l| *l > 0)
                .unwrap_or(usize::MAX);
            let mut matching = s.objects.iter().filter(|(k, v)| {
                k.0 == plural
                    && ns.is_none_or(|ns| ns == k.1)
                    && after
                        .as_ref()
                        .is_none_or(|(n, name)| (&k.1, &k.2) > (n, name))
                    && labels.matches(v, false)
                    && fields.matches(v, true)
            });
            let mut items = Vec::new();
            let mut last = None;
            for (k, v) in matching.by_ref().take(limit) {
                items.push(if metadata_only { partial(v) } else { v.clone() });
                last = Some(k);
            }
            let more = matching.next().is_some();
            let (api_version, kind) = kind_of(plural);
            let (api_version, kind) = if metadata_only {
                ("meta.k8s.io/v1", "PartialObjectMetadataList".to_string())
            } else {
                (api_version, format!("{kind}List"))
            };
            let mut meta = json!({"resourceVersion": revision.to_string()});
            if let (true, Some(k)) = (more, last) {
                meta["continue"] = json!(format!("{revision}|{}|{}", k.1, k.2));
            }
            Answer::Json(
                StatusCode::OK,
                json!({"apiVersion": api_version, "kind": kind, "metadata": meta, "items": items}),
            )
        }

        fn start_watch(
            &self,
            plural: &str,
            ns: Option<&str>,
            labels: Selector,
            fields: Selector,
            metadata_only: bool,
            q: &BTreeMap<String, String>,
        ) -> Answer {
            let s = self.store.lock().unwrap();
            let Some(log) = &s.changes else {
                return bad_request("this API keeps no changes to watch".into());
            };
            let timeout = q
                .get("timeoutSeconds")
                .and_then(|t| t.parse::<u64>().ok())
                .map_or(DEFAULT_WATCH_TIMEOUT, Duration::from_secs);
            let mut watch = Watch {
                plural: plural.to_string(),
                ns: ns.map(str::to_string),
                labels,
                fields,
                metadata_only,
                bookmarks: q.get("allowWatchBookmarks").map(String::as_str) == Some("true"),
                after: s.revision,
                until: Instant::now() + timeout,
                last_bookmark: Instant::now(),
                initial: VecDeque::new(),
                expired: None,
                done: false,
            };
            match q.get("resourceVersion").map(String::as_str) {
                None | Some("") | Some("0") => {
                    // "Any": the current objects as ADDED, then what changes.
                    let initial: VecDeque<Value> = s
                        .objects
                        .iter()
                        .filter(|(k, v)| watch.selects(k, v))
                        .map(|(_, v)| watch.event("ADDED", v))
                        .collect();
                    watch.initial = initial;
                }
                Some(rv) => match rv.parse::<u64>() {
                    Ok(rv) if rv < log.floor => watch.expired = Some(rv),
                    Ok(rv) => watch.after = rv,
                    Err(_) => return bad_request(format!("resourceVersion {rv:?}")),
                },
            }
            Answer::Watch(Box::new(watch))
        }

        /// The next newline-separated watch events of `watch`, waiting for changes; `None`
        /// once it timed out (or ended with its 410).
        pub async fn watch_next(&self, watch: &mut Watch) -> Option<Vec<u8>> {
            loop {
                if watch.done {
                    return None;
                }
                if let Some(rv) = watch.expired.take() {
                    watch.done = true;
                    let (_, status) = status(
                        StatusCode::GONE,
                        "Expired",
                        format!("too old resource version: {rv}"),
                    );
                    return Some(lines(&[json!({"type": "ERROR", "object": status})]));
                }
                if !watch.initial.is_empty() {
                    let events: Vec<Value> = watch.initial.drain(..).collect();
                    return Some(lines(&events));
                }
                let woken = {
                    let s = self.store.lock().unwrap();
                    let Some(log) = &s.changes else {
                        return None;
                    };
                    if watch.after < log.floor {
                        watch.expired = Some(watch.after);
                        continue;
                    }
                    let mut events = Vec::new();
                    for c in log.entries.iter().filter(|c| c.revision > watch.after) {
                        let was = c.before.as_ref().is_some_and(|b| watch.selects(&c.key, b));
                        let is = watch.selects(&c.key, &c.after);
                        let kind = match (c.kind, was, is) {
                            ("DELETED", true, _) => "DELETED",
                            ("DELETED", false, _) | (_, false, false) => continue,
                            (_, false, true) => "ADDED",
                            (_, true, false) => "DELETED",
                            (kind, true, true) => kind,
                        };
                        events.push(watch.event(kind, &c.after));
                    }
                    // Every change up to the store's revision is in the log.
                    watch.after = watch.after.max(s.revision);
                    if !events.is_empty() {
                        return Some(lines(&events));
                    }
                    if watch.bookmarks && watch.last_bookmark.elapsed() >= BOOKMARK_EVERY {
                        watch.last_bookmark = Instant::now();
                        let (api_version, kind) = if watch.metadata_only {
                            ("meta.k8s.io/v1", "PartialObjectMetadata")
                        } else {
                            kind_of(&watch.plural)
                        };
                        let bookmark = json!({"type": "BOOKMARK", "object": {
                            "apiVersion": api_version, "kind": kind,
                            "metadata": {"resourceVersion": s.revision.to_string()}}});
                        return Some(lines(&[bookmark]));
                    }
                    // Created under the lock: no change recorded after it can be missed.
                    log.notify.clone().notified_owned()
                };
                let wake_at = if watch.bookmarks {
                    watch.until.min(watch.last_bookmark + BOOKMARK_EVERY)
                } else {
                    watch.until
                };
                tokio::select! {
                    () = woken => {}
                    () = tokio::time::sleep_until(wake_at) => {}
                }
                if Instant::now() >= watch.until {
                    watch.done = true;
                }
            }
        }
    }
}
