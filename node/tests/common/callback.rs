//! A real HTTP callback server for WebSub tests: records every request and answers by script.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::routing::any;
use axum::Router;

/// One request the callback server received.
#[derive(Debug, Clone)]
pub struct Received {
    pub method: Method,
    pub path: String,
    pub query: HashMap<String, String>,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// When it arrived.
    pub at: tokio::time::Instant,
}

/// How a path answers verification `GET`s.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verify {
    Echo,
    WrongChallenge,
    NotFound,
}

#[derive(Default)]
struct Script {
    verify: HashMap<String, Verify>,
    /// Statuses to answer to the next POSTs on a path, then 200.
    posts: HashMap<String, VecDeque<u16>>,
    /// Answer every POST on a path with this status.
    always: HashMap<String, u16>,
    /// A `Retry-After` sent with the failing answers on a path.
    retry_after: HashMap<String, String>,
}

#[derive(Clone, Default)]
struct Shared {
    received: Arc<Mutex<Vec<Received>>>,
    script: Arc<Mutex<Script>>,
}

/// The server.
pub struct CallbackServer {
    pub addr: SocketAddr,
    shared: Shared,
    task: tokio::task::JoinHandle<()>,
}

async fn handle(
    State(shared): State<Shared>,
    method: Method,
    Path(path): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, HeaderMap, String) {
    let query: HashMap<String, String> = query
        .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
        .unwrap_or_default();
    let path = format!("/{path}");
    shared.received.lock().unwrap().push(Received {
        method: method.clone(),
        path: path.clone(),
        query: query.clone(),
        headers,
        body,
        at: tokio::time::Instant::now(),
    });
    let mut script = shared.script.lock().unwrap();
    if method == Method::GET {
        let challenge = query.get("hub.challenge").cloned().unwrap_or_default();
        return match script.verify.get(&path).copied().unwrap_or(Verify::Echo) {
            Verify::Echo => (StatusCode::OK, HeaderMap::new(), challenge),
            Verify::WrongChallenge => {
                (StatusCode::OK, HeaderMap::new(), format!("not-{challenge}"))
            }
            Verify::NotFound => (StatusCode::NOT_FOUND, HeaderMap::new(), String::new()),
        };
    }
    let status = match script.always.get(&path) {
        Some(status) => *status,
        None => script
            .posts
            .get_mut(&path)
            .and_then(VecDeque::pop_front)
            .unwrap_or(200),
    };
    let mut answer = HeaderMap::new();
    if !(200..300).contains(&status) {
        if let Some(value) = script.retry_after.get(&path) {
            answer.insert("retry-after", value.parse().unwrap());
        }
    }
    (StatusCode::from_u16(status).unwrap(), answer, String::new())
}

impl CallbackServer {
    pub async fn start() -> Self {
        let shared = Shared::default();
        let app = Router::new()
            .route("/{*path}", any(handle))
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Self { addr, shared, task }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn set_verify(&self, path: &str, verify: Verify) {
        self.shared
            .script
            .lock()
            .unwrap()
            .verify
            .insert(path.to_owned(), verify);
    }

    pub fn fail_next_posts(&self, path: &str, statuses: &[u16]) {
        self.shared
            .script
            .lock()
            .unwrap()
            .posts
            .insert(path.to_owned(), statuses.iter().copied().collect());
    }

    pub fn always(&self, path: &str, status: Option<u16>) {
        let mut script = self.shared.script.lock().unwrap();
        match status {
            Some(s) => script.always.insert(path.to_owned(), s),
            None => script.always.remove(path),
        };
    }

    /// Sends `Retry-After: value` with every failing answer on `path` (none: stop).
    pub fn retry_after(&self, path: &str, value: Option<&str>) {
        let mut script = self.shared.script.lock().unwrap();
        match value {
            Some(v) => script.retry_after.insert(path.to_owned(), v.to_owned()),
            None => script.retry_after.remove(path),
        };
    }

    /// Requests on `path` with `method` so far.
    pub fn requests(&self, method: &Method, path: &str) -> Vec<Received> {
        self.shared
            .received
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.method == *method && r.path == path)
            .cloned()
            .collect()
    }

    /// Waits until `path` received at least `n` requests with `method`.
    pub async fn wait_for(
        &self,
        method: &Method,
        path: &str,
        n: usize,
        timeout: Duration,
    ) -> Vec<Received> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let got = self.requests(method, path);
            if got.len() >= n {
                return got;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{path} got {} {method} requests, expected {n}",
                got.len()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl Drop for CallbackServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}
