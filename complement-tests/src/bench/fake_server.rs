//! A scripted stand-in homeserver for the benchmark's own tests: just
//! enough HTTP/1.1 (keep-alive, `Content-Length` bodies) and just the four
//! endpoints the benchmark calls, recording what it was sent.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// How the fake server behaves.
#[derive(Debug, Clone)]
pub(crate) struct Script {
    /// The only registration stage offered.
    pub(crate) registration_stage: &'static str,
    /// Answer this send (1-based, counted across the run) with a 429.
    pub(crate) fail_send_number: Option<usize>,
}

impl Default for Script {
    fn default() -> Script {
        Script {
            registration_stage: "m.login.dummy",
            fail_send_number: None,
        }
    }
}

/// What the fake server saw.
#[derive(Debug, Clone, Default)]
pub(crate) struct Seen {
    pub(crate) registrations: usize,
    pub(crate) rooms_created: usize,
    pub(crate) joins: usize,
    /// `(user, room, transaction id)` of every send, failed ones included.
    pub(crate) sends: Vec<(String, String, String)>,
    pub(crate) connections_with_sends: usize,
}

#[derive(Debug, Default)]
struct State {
    seen: Seen,
    send_connections: HashSet<u64>,
}

/// A running fake server; dropping it stops accepting connections.
#[derive(Debug)]
pub(crate) struct FakeServer {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    accept: JoinHandle<()>,
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

impl FakeServer {
    pub(crate) async fn start(script: Script) -> FakeServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(State::default()));
        let shared = state.clone();
        let accept = tokio::spawn(async move {
            let mut next_connection = 0;
            while let Ok((stream, _)) = listener.accept().await {
                next_connection += 1;
                let (state, script) = (shared.clone(), script.clone());
                tokio::spawn(serve(stream, next_connection, state, script));
            }
        });
        FakeServer {
            addr,
            state,
            accept,
        }
    }

    pub(crate) fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub(crate) fn seen(&self) -> Seen {
        let state = lock(&self.state);
        let mut seen = state.seen.clone();
        seen.connections_with_sends = state.send_connections.len();
        seen
    }
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Serves requests on one connection until the client closes it.
async fn serve(stream: TcpStream, connection: u64, state: Arc<Mutex<State>>, script: Script) {
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read);
    loop {
        let mut request_line = String::new();
        match reader.read_line(&mut request_line).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let mut parts = request_line.split_whitespace();
        let method = parts.next().unwrap_or_default().to_owned();
        let path = parts.next().unwrap_or_default().to_owned();
        let mut content_length = 0;
        let mut token = String::new();
        loop {
            let mut header = String::new();
            if reader.read_line(&mut header).await.unwrap_or(0) == 0 {
                return;
            }
            let header = header.trim_end();
            if header.is_empty() {
                break;
            }
            let Some((name, value)) = header.split_once(':') else {
                continue;
            };
            match name.to_ascii_lowercase().as_str() {
                "content-length" => content_length = value.trim().parse().unwrap_or(0),
                "authorization" => {
                    token = value.trim().trim_start_matches("Bearer ").to_owned();
                }
                _ => {}
            }
        }
        let mut body = vec![0; content_length];
        if reader.read_exact(&mut body).await.is_err() {
            return;
        }
        let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        let (status, answer) = {
            let mut state = lock(&state);
            handle(
                &mut state, &script, connection, &method, &path, &token, &body,
            )
        };
        let answer = answer.to_string();
        let response = format!(
            "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{answer}",
            answer.len()
        );
        if write.write_all(response.as_bytes()).await.is_err() {
            return;
        }
    }
}

fn handle(
    state: &mut State,
    script: &Script,
    connection: u64,
    method: &str,
    path: &str,
    token: &str,
    body: &Value,
) -> (u16, Value) {
    let path = percent_decode(path);
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match (method, segments.as_slice()) {
        ("POST", ["_matrix", "client", "v3", "register"]) => {
            let username = body["username"].as_str().unwrap_or_default();
            if body["auth"]["type"] == script.registration_stage
                && script.registration_stage == "m.login.dummy"
            {
                state.seen.registrations += 1;
                let answer = json!({
                    "user_id": format!("@{username}:fake"),
                    "access_token": format!("tok_{username}"),
                    "device_id": "DEVICE",
                });
                (200, answer)
            } else {
                let flows = json!([{ "stages": [script.registration_stage] }]);
                (
                    401,
                    json!({ "flows": flows, "session": "sess", "params": {} }),
                )
            }
        }
        ("POST", ["_matrix", "client", "v3", "createRoom"]) => {
            let room_id = format!("!room{}:fake", state.seen.rooms_created);
            state.seen.rooms_created += 1;
            (200, json!({ "room_id": room_id }))
        }
        ("POST", ["_matrix", "client", "v3", "join", room_id]) => {
            state.seen.joins += 1;
            (200, json!({ "room_id": room_id }))
        }
        (
            "PUT",
            [
                "_matrix",
                "client",
                "v3",
                "rooms",
                room,
                "send",
                "m.room.message",
                txn,
            ],
        ) => {
            let user = token.trim_start_matches("tok_").to_owned();
            state
                .seen
                .sends
                .push((user, (*room).to_owned(), (*txn).to_owned()));
            state.send_connections.insert(connection);
            if script.fail_send_number == Some(state.seen.sends.len()) {
                (
                    429,
                    json!({ "errcode": "M_LIMIT_EXCEEDED", "error": "slow down" }),
                )
            } else {
                let n = state.seen.sends.len();
                (200, json!({ "event_id": format!("$event{n}") }))
            }
        }
        _ => (404, json!({ "errcode": "M_UNRECOGNIZED", "error": path })),
    }
}

/// Decodes `%XX` escapes (the ids the benchmark puts in paths are ASCII).
fn percent_decode(path: &str) -> String {
    let bytes = path.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}
