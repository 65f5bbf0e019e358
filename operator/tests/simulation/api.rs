//! A small in-memory Kubernetes API behind a real `kube::Client`: what the operator's
//! calls need, with the semantics the lifecycle depends on and kube-fake-client lacks
//! (a DELETE of an object with finalizers only sets its deletionTimestamp; a
//! terminating namespace refuses new objects). No watch: the simulation triggers
//! reconciles itself from what changed.

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
}

/// The in-memory API; cheap to clone, shared by the client and the scheduler.
#[derive(Clone, Default)]
pub struct MemoryApi {
    store: Arc<Mutex<Store>>,
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
        "secrets" => ("v1", "Secret"),
        "events" => ("events.k8s.io/v1", "Event"),
        _ => ("v1", "Unknown"),
    }
}

/// RFC 7386 merge.
fn merge(target: &mut Value, patch: &Value) {
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
        meta["uid"] = json!(format!("00000000-0000-4000-8000-{:012}", s.uids));
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
            s.objects.remove(&key);
            return true;
        }
        if obj["metadata"]["deletionTimestamp"].is_null() {
            s.by_operator.remove(&key);
            let Some(obj) = s.objects.get_mut(&key) else {
                return false;
            };
            s.revision += 1;
            obj["metadata"]["deletionTimestamp"] = json!("2026-01-02T00:00:00Z");
            obj["metadata"]["resourceVersion"] = json!(s.revision.to_string());
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
        true
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
                if !next["metadata"]["deletionTimestamp"].is_null() && finalizers(&next) == 0 {
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
