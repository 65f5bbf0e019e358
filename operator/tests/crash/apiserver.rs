//! The simulation's in-memory Kubernetes API served over plain HTTP on loopback, for the
//! real binary (no API server can be installed here): what `puppet-conductor run` calls,
//! with watches. Requests it does not serve are answered 404 and kept, so the trial fails
//! when the operator starts calling something new instead of silently degrading.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::Response;
use axum::Router;
use bytes::Bytes;
use http::{header, StatusCode};
use serde_json::Value;

#[path = "../simulation/api.rs"]
#[allow(dead_code)] // The simulation's helpers the trials do not use.
mod api;

use api::served::{Answer, Request as ApiRequest};
pub use api::MemoryApi;

/// Requests bodies larger than this are refused (the operator's are a few KiB).
const MAX_BODY: usize = 4 * 1024 * 1024;

/// The API and where it listens.
#[derive(Clone)]
pub struct ApiServer {
    pub api: MemoryApi,
    pub addr: SocketAddr,
    unserved: Arc<Mutex<Vec<String>>>,
}

#[derive(Clone)]
struct Served {
    api: MemoryApi,
    unserved: Arc<Mutex<Vec<String>>>,
}

impl ApiServer {
    /// Serves a fresh API (UIDs from `uid_prefix`) with the CRDs of `crds_dir` established.
    pub async fn start(uid_prefix: &str, crds_dir: &Path) -> Result<Self, String> {
        let api = MemoryApi::served(uid_prefix);
        let entries = std::fs::read_dir(crds_dir).map_err(|e| format!("{crds_dir:?}: {e}"))?;
        for entry in entries {
            let path = entry.map_err(|e| e.to_string())?.path();
            let text = std::fs::read_to_string(&path).map_err(|e| format!("{path:?}: {e}"))?;
            let crd: Value = serde_yaml::from_str(&text).map_err(|e| format!("{path:?}: {e}"))?;
            api.add_established_crd(crd)?;
        }
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| e.to_string())?;
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        let unserved = Arc::new(Mutex::new(Vec::new()));
        let state = Served {
            api: api.clone(),
            unserved: unserved.clone(),
        };
        let router = Router::new().fallback(handle).with_state(state);
        tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        Ok(Self {
            api,
            addr,
            unserved,
        })
    }

    /// A kubeconfig naming this server (plain HTTP, no credentials), namespace `ns`.
    pub fn write_kubeconfig(&self, path: &Path, ns: &str) -> std::io::Result<()> {
        let server = format!("    server: http://{}", self.addr);
        let namespace = format!("    namespace: {ns}");
        let lines = [
            "apiVersion: v1",
            "kind: Config",
            "clusters:",
            "- name: memory",
            "  cluster:",
            &server,
            "users:",
            "- name: memory",
            "  user: {}",
            "contexts:",
            "- name: memory",
            "  context:",
            "    cluster: memory",
            "    user: memory",
            &namespace,
            "current-context: memory",
            "",
        ];
        let text = lines.join("\n");
        std::fs::write(path, text)
    }

    /// Requests the API did not serve (`METHOD path?query`), in order.
    pub fn unserved(&self) -> Vec<String> {
        self.unserved.lock().unwrap().clone()
    }
}

fn json_response(code: StatusCode, value: &Value) -> Response {
    let mut response = Response::new(Body::from(serde_json::to_vec(value).unwrap_or_default()));
    *response.status_mut() = code;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    response
}

async fn handle(State(served): State<Served>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let Ok(body) = axum::body::to_bytes(body, MAX_BODY).await else {
        return json_response(StatusCode::PAYLOAD_TOO_LARGE, &Value::Null);
    };
    let header_str = |name: header::HeaderName| {
        parts
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    let (accept, content_type) = (header_str(header::ACCEPT), header_str(header::CONTENT_TYPE));
    let query = parts.uri.query().unwrap_or_default();
    let answer = served.api.handle(&ApiRequest {
        method: &parts.method,
        path: parts.uri.path(),
        query,
        accept: &accept,
        content_type: &content_type,
        body: &body,
    });
    match answer {
        Answer::Json(code, value) => json_response(code, &value),
        Answer::NoRoute(code, value) => {
            served.unserved.lock().unwrap().push(format!(
                "{} {}?{query}",
                parts.method,
                parts.uri.path()
            ));
            json_response(code, &value)
        }
        Answer::Watch(watch) => {
            let api = served.api.clone();
            let events = futures::stream::unfold((api, watch), |(api, mut watch)| async move {
                let lines = api.watch_next(&mut watch).await?;
                Some((
                    Ok::<_, std::convert::Infallible>(Bytes::from(lines)),
                    (api, watch),
                ))
            });
            let mut response = Response::new(Body::from_stream(events));
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                http::HeaderValue::from_static("application/json"),
            );
            response
        }
    }
}
