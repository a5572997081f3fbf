//! etcd's JSON gateway on the client port, so `curl` works as it does with
//! etcd: `POST /v3/kv/range`, `/v3/kv/put`, `/v3/kv/deleterange`,
//! `/v3/kv/txn`, `/v3/kv/compaction`, `/v3/watch` (a stream of
//! `{"result":...}` objects), `/v3/lease/grant`, `/v3/lease/revoke`,
//! `/v3/lease/keepalive`, `/v3/lease/timetolive`, `/v3/lease/leases` (also
//! under `/v3/kv/lease/`), `/v3/lock/lock`, `/v3/lock/unlock`,
//! `/v3/maintenance/status`, `/v3/cluster/member/list`.
//!
//! **One port, two protocols** ([`split_incoming`]): each accepted client
//! connection is sniffed; one that opens with the HTTP/2 preface (`PRI`) is
//! gRPC and goes to tonic, anything else is HTTP/1.1 and is served here.
//!
//! **The JSON** is grpc-gateway's as etcd configures it: proto field names
//! (`range_end`, `ID`, `TTL`), bytes as base64, 64-bit integers as strings,
//! enums by name, default values left out; input accepts names or
//! lowerCamelCase, integers as strings or numbers, enums as names or
//! numbers. Errors answer grpc-gateway's status for the gRPC code with
//! `{"error":..,"code":..,"message":..}`.
//!
//! Bounds: a request's head is at most [`MAX_HEAD_BYTES`], its body at most
//! [`MAX_BODY_BYTES`]; an idle connection is closed after
//! [`IDLE_TIMEOUT`].

use crate::service::Service;
use serde_json::{Map, Value, json};
use std::time::Duration;
use synod_etcdpb::etcdserverpb as pb;
use synod_etcdpb::etcdserverpb::cluster_server::Cluster;
use synod_etcdpb::etcdserverpb::kv_server::Kv;
use synod_etcdpb::etcdserverpb::lease_server::Lease;
use synod_etcdpb::etcdserverpb::maintenance_server::Maintenance;
use synod_etcdpb::mvccpb;
use synod_etcdpb::v3lockpb;
use synod_etcdpb::v3lockpb::lock_server::Lock;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tonic::codegen::tokio_stream::wrappers::ReceiverStream;
use tonic::codegen::tokio_stream::{Stream, StreamExt};
use tonic::{Request, Status};

/// Largest request head (request line and headers).
pub const MAX_HEAD_BYTES: usize = 16 * 1024;
/// Largest request body (etcd's request limit plus room for base64).
pub const MAX_BODY_BYTES: usize = 3 * 1024 * 1024;
/// How long a connection may stay silent.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Connections waiting to be handed to tonic.
const GRPC_BACKLOG: usize = 1024;

/// A gRPC client connection as tonic serves it: the TCP stream, but without
/// vectored writes. h2 copies a DATA frame into its 16 KiB write buffer
/// only when the payload is small (256 bytes with vectored I/O, 1 KiB
/// without); a larger one is chained and the buffer flushed before the next
/// frame, one `writev` per frame. With vectored writes a watch fan-out of
/// ~330-byte events (or many clients' small answers on one connection) cost
/// one system call per response (measured: as many `writev` calls as
/// events delivered); without, up to ~50 responses share one `write`.
///
/// It also lets the tasks that are ready run before it writes: the first
/// write of a flush yields once (the connection task goes to the back of
/// the run queue) and the next poll writes. A commit answers many requests
/// at once; each request's task queues its response on the connection and
/// wakes the connection task, which tokio runs straight after the waker
/// (its LIFO slot): without the yield every response left in its own
/// `write` (one system call, and one wakeup of the client, per request);
/// with it the responses of the requests that were ready share one.
pub struct GrpcConn {
    stream: TcpStream,
    /// Whether this flush has already yielded once.
    yielded: bool,
}

impl GrpcConn {
    /// Wraps an accepted client connection.
    pub fn new(stream: TcpStream) -> Self {
        GrpcConn { stream, yielded: false }
    }
}

impl tokio::io::AsyncRead for GrpcConn {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for GrpcConn {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        if !self.yielded {
            // Once per flush: let the other ready tasks queue their
            // responses first (see the type's doc). The wake puts this
            // task at the back of the run queue, so it cannot starve.
            self.yielded = true;
            cx.waker().wake_by_ref();
            return std::task::Poll::Pending;
        }
        std::pin::Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let flushed = std::pin::Pin::new(&mut self.stream).poll_flush(cx);
        if flushed.is_ready() {
            self.yielded = false;
        }
        flushed
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.stream).poll_shutdown(cx)
    }
    // `is_write_vectored` stays false (the default): see the type's doc.
}

impl tonic::transport::server::Connected for GrpcConn {
    type ConnectInfo = tonic::transport::server::TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.stream.connect_info()
    }
}

/// Accepts client connections on `listener`: gRPC ones are yielded for
/// tonic (`serve_with_incoming*`), HTTP/1.1 ones are served by the gateway.
pub fn split_incoming(
    listener: TcpListener,
    service: Service,
) -> impl Stream<Item = std::io::Result<GrpcConn>> {
    let (tx, rx) = mpsc::channel(GRPC_BACKLOG);
    tokio::spawn(async move {
        loop {
            let stream = match listener.accept().await {
                Ok((s, _)) => s,
                Err(e) => {
                    tracing::debug!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            let grpc = tx.clone();
            let service = service.clone();
            tokio::spawn(async move {
                match is_http2(&stream).await {
                    Some(true) => {
                        let _ = grpc.send(Ok(GrpcConn::new(stream))).await;
                    }
                    Some(false) => serve_http(stream, service).await,
                    None => {}
                }
            });
            if tx.is_closed() {
                return;
            }
        }
    });
    ReceiverStream::new(rx)
}

/// Whether the connection opens with the HTTP/2 preface; `None` if it
/// closed or stayed silent.
async fn is_http2(stream: &TcpStream) -> Option<bool> {
    let mut buf = [0u8; 3];
    let deadline = tokio::time::Instant::now() + IDLE_TIMEOUT;
    loop {
        let n = tokio::time::timeout_at(deadline, stream.peek(&mut buf)).await.ok()?.ok()?;
        if n == 0 {
            return None;
        }
        if n >= 3 || buf[..n] != b"PRI"[..n] {
            return Some(&buf[..n] == b"PRI");
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// One HTTP/1.1 request.
struct HttpRequest {
    method: String,
    path: String,
    body: Vec<u8>,
    close: bool,
}

/// Reads one request; `Ok(None)` at a clean end of the connection.
async fn read_request(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
) -> Result<Option<HttpRequest>, (u16, String)> {
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        if buf.len() > MAX_HEAD_BYTES {
            return Err((431, "request head too large".into()));
        }
        let mut chunk = [0u8; 4096];
        let n = match tokio::time::timeout(IDLE_TIMEOUT, stream.read(&mut chunk)).await {
            Ok(Ok(n)) => n,
            _ => return Ok(None),
        };
        if n == 0 {
            return Ok(None);
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let mut first = lines.next().unwrap_or("").split_whitespace();
    let method = first.next().unwrap_or("").to_string();
    let path = first.next().unwrap_or("").to_string();
    let version = first.next().unwrap_or("HTTP/1.0").to_string();
    let mut length = 0usize;
    let mut close = version == "HTTP/1.0";
    for line in lines {
        let Some((name, value)) = line.split_once(':') else { continue };
        let value = value.trim();
        match name.trim().to_ascii_lowercase().as_str() {
            "content-length" => {
                length = value.parse().map_err(|_| (400, "bad content-length".to_string()))?;
            }
            "transfer-encoding" if !value.eq_ignore_ascii_case("identity") => {
                return Err((411, "chunked request bodies are not supported".into()));
            }
            "connection" => close = value.eq_ignore_ascii_case("close"),
            _ => {}
        }
    }
    if length > MAX_BODY_BYTES {
        return Err((413, "request body too large".into()));
    }
    let body_start = head_end + 4;
    while buf.len() < body_start + length {
        let mut chunk = vec![0u8; (body_start + length - buf.len()).min(64 * 1024)];
        let n = match tokio::time::timeout(IDLE_TIMEOUT, stream.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => n,
            _ => return Ok(None),
        };
        buf.extend_from_slice(&chunk[..n]);
    }
    let body = buf[body_start..body_start + length].to_vec();
    buf.drain(..body_start + length);
    Ok(Some(HttpRequest { method, path, body, close }))
}

fn reason(code: u16) -> &'static str {
    match code {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        411 => "Length Required",
        412 => "Precondition Failed",
        413 => "Payload Too Large",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Internal Server Error",
    }
}

async fn respond(stream: &mut TcpStream, code: u16, body: &Value, close: bool) -> bool {
    let body = format!("{body}");
    let head = format!(
        "HTTP/1.1 {code} {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{}\r\n",
        reason(code),
        body.len(),
        if close { "Connection: close\r\n" } else { "" }
    );
    stream.write_all(head.as_bytes()).await.is_ok()
        && stream.write_all(body.as_bytes()).await.is_ok()
}

/// grpc-gateway's HTTP status for a gRPC code.
fn http_status(code: tonic::Code) -> u16 {
    use tonic::Code::*;
    match code {
        Ok => 200,
        Cancelled => 408,
        InvalidArgument | OutOfRange => 400,
        DeadlineExceeded => 504,
        NotFound => 404,
        AlreadyExists | Aborted => 409,
        PermissionDenied => 403,
        Unauthenticated => 401,
        ResourceExhausted => 429,
        FailedPrecondition => 412,
        Unimplemented => 501,
        Unavailable => 503,
        _ => 500,
    }
}

fn error_body(s: &Status) -> Value {
    json!({ "error": s.message(), "code": s.code() as i32, "message": s.message() })
}

async fn serve_http(mut stream: TcpStream, service: Service) {
    let mut buf = Vec::new();
    loop {
        let req = match read_request(&mut stream, &mut buf).await {
            Ok(Some(r)) => r,
            Ok(None) => return,
            Err((code, why)) => {
                let _ = respond(&mut stream, code, &json!({ "error": why, "code": 3 }), true).await;
                return;
            }
        };
        if req.method != "POST" && req.method != "PUT" {
            let body = json!({ "error": "Method Not Allowed", "code": 12 });
            let _ = respond(&mut stream, 405, &body, true).await;
            return;
        }
        let path = req.path.split('?').next().unwrap_or("").to_string();
        let input: Value = if req.body.iter().all(u8::is_ascii_whitespace) {
            json!({})
        } else {
            match serde_json::from_slice(&req.body) {
                Ok(v) => v,
                Err(e) => {
                    let s = Status::invalid_argument(format!("bad JSON: {e}"));
                    let _ = respond(&mut stream, 400, &error_body(&s), true).await;
                    return;
                }
            }
        };
        if path == "/v3/watch" || path == "/v3beta/watch" {
            watch_http(stream, service, input).await;
            return;
        }
        let (code, body) = match call(&service, &path, &input).await {
            Ok(v) => (200, v),
            Err(s) => (http_status(s.code()), error_body(&s)),
        };
        if !respond(&mut stream, code, &body, req.close).await || req.close {
            return;
        }
    }
}

fn inner<T>(r: Result<tonic::Response<T>, Status>) -> Result<T, Status> {
    r.map(tonic::Response::into_inner)
}

/// Runs the unary RPC at `path` on `input`.
async fn call(service: &Service, path: &str, input: &Value) -> Result<Value, Status> {
    let path = path.strip_prefix("/v3beta").map(|p| format!("/v3{p}")).unwrap_or(path.to_string());
    Ok(match path.as_str() {
        "/v3/kv/range" => {
            range_response(inner(Kv::range(service, Request::new(range_request(input)?)).await)?)
        }
        "/v3/kv/put" => {
            let r = inner(Kv::put(service, Request::new(put_request(input)?)).await)?;
            obj().header(r.header).opt_kv("prev_kv", r.prev_kv).done()
        }
        "/v3/kv/deleterange" => {
            let r = inner(Kv::delete_range(service, Request::new(delete_request(input)?)).await)?;
            obj().header(r.header).i64("deleted", r.deleted).kvs("prev_kvs", r.prev_kvs).done()
        }
        "/v3/kv/txn" => {
            txn_response(inner(Kv::txn(service, Request::new(txn_request(input)?)).await)?)
        }
        "/v3/kv/compaction" => {
            let req = pb::CompactionRequest {
                revision: int(input, "revision")?,
                physical: boolean(input, "physical"),
            };
            obj().header(inner(Kv::compact(service, Request::new(req)).await)?.header).done()
        }
        "/v3/lease/grant" | "/v3/kv/lease/grant" => {
            let req = pb::LeaseGrantRequest { ttl: int(input, "TTL")?, id: int(input, "ID")? };
            let r = inner(Lease::lease_grant(service, Request::new(req)).await)?;
            obj().header(r.header).i64("ID", r.id).i64("TTL", r.ttl).string("error", r.error).done()
        }
        "/v3/lease/revoke" | "/v3/kv/lease/revoke" => {
            let req = pb::LeaseRevokeRequest { id: int(input, "ID")? };
            obj()
                .header(inner(Lease::lease_revoke(service, Request::new(req)).await)?.header)
                .done()
        }
        "/v3/lease/keepalive" | "/v3/kv/lease/keepalive" => {
            let req = pb::LeaseKeepAliveRequest { id: int(input, "ID")? };
            let r = service.keep_alive_once(false, req).await?;
            json!({ "result": obj().header(r.header).i64("ID", r.id).i64("TTL", r.ttl).done() })
        }
        "/v3/lease/timetolive" | "/v3/kv/lease/timetolive" => {
            let req =
                pb::LeaseTimeToLiveRequest { id: int(input, "ID")?, keys: boolean(input, "keys") };
            let r = inner(Lease::lease_time_to_live(service, Request::new(req)).await)?;
            let keys: Vec<Value> = r.keys.iter().map(|k| Value::String(b64(k))).collect();
            let mut o = obj().header(r.header).i64("ID", r.id).i64("TTL", r.ttl);
            o = o.i64("grantedTTL", r.granted_ttl);
            if !keys.is_empty() {
                o.0.insert("keys".into(), Value::Array(keys));
            }
            o.done()
        }
        "/v3/lease/leases" | "/v3/kv/lease/leases" => {
            let r =
                inner(Lease::lease_leases(service, Request::new(pb::LeaseLeasesRequest {})).await)?;
            let leases: Vec<Value> =
                r.leases.iter().map(|l| obj().i64("ID", l.id).done()).collect();
            let mut o = obj().header(r.header);
            if !leases.is_empty() {
                o.0.insert("leases".into(), Value::Array(leases));
            }
            o.done()
        }
        "/v3/lock/lock" => {
            let req =
                v3lockpb::LockRequest { name: bytes(input, "name")?, lease: int(input, "lease")? };
            let r = inner(Lock::lock(service, Request::new(req)).await)?;
            obj().header(r.header).bytes("key", &r.key).done()
        }
        "/v3/lock/unlock" => {
            let req = v3lockpb::UnlockRequest { key: bytes(input, "key")? };
            obj().header(inner(Lock::unlock(service, Request::new(req)).await)?.header).done()
        }
        "/v3/maintenance/status" => {
            let r = inner(Maintenance::status(service, Request::new(pb::StatusRequest {})).await)?;
            obj()
                .header(r.header)
                .string("version", r.version)
                .i64("dbSize", r.db_size)
                .u64("leader", r.leader)
                .u64("raftIndex", r.raft_index)
                .u64("raftTerm", r.raft_term)
                .u64("raftAppliedIndex", r.raft_applied_index)
                .done()
        }
        "/v3/cluster/member/list" => {
            let req = pb::MemberListRequest { linearizable: false };
            let r = inner(Cluster::member_list(service, Request::new(req)).await)?;
            let members: Vec<Value> = r
                .members
                .iter()
                .map(|m| {
                    let mut o = obj().u64("ID", m.id).string("name", m.name.clone());
                    o.0.insert("peerURLs".into(), json!(m.peer_ur_ls));
                    o.0.insert("clientURLs".into(), json!(m.client_ur_ls));
                    o.done()
                })
                .collect();
            let mut o = obj().header(r.header);
            o.0.insert("members".into(), Value::Array(members));
            o.done()
        }
        _ => return Err(Status::new(tonic::Code::NotFound, "Not Found")),
    })
}

/// `/v3/watch`: the body's watch request(s), then `{"result":...}` objects,
/// one per response, until the client goes away.
async fn watch_http(mut stream: TcpStream, service: Service, input: Value) {
    let requests: Vec<Value> = match input {
        Value::Array(a) => a,
        v => vec![v],
    };
    let mut parsed = Vec::new();
    for r in &requests {
        match watch_request(r) {
            Ok(w) => parsed.push(Ok(w)),
            Err(s) => {
                let _ = respond(&mut stream, 400, &error_body(&s), true).await;
                return;
            }
        }
    }
    let inbound =
        tonic::codegen::tokio_stream::iter(parsed).chain(tonic::codegen::tokio_stream::pending());
    let mut out = crate::watch::open_stream(&service, Box::pin(inbound));
    let head = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\
                Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n";
    if stream.write_all(head.as_bytes()).await.is_err() {
        return;
    }
    let mut probe = [0u8; 1];
    loop {
        let next = tokio::select! {
            n = out.next() => n,
            r = stream.read(&mut probe) => match r {
                Ok(0) | Err(_) => return,
                Ok(_) => continue,
            },
        };
        let Some(item) = next else { break };
        let line = match item {
            Ok(r) => json!({ "result": watch_response(r) }),
            Err(s) => json!({ "error": error_body(&s) }),
        };
        let text = format!("{line}\n");
        let chunk = format!("{:x}\r\n{text}\r\n", text.len());
        if stream.write_all(chunk.as_bytes()).await.is_err() {
            return;
        }
    }
    let _ = stream.write_all(b"0\r\n\r\n").await;
}

// ----- JSON → protobuf ------------------------------------------------------

fn lower_camel(name: &str) -> String {
    let mut out = String::new();
    let mut up = false;
    for c in name.chars() {
        if c == '_' {
            up = true;
        } else if up {
            out.extend(c.to_uppercase());
            up = false;
        } else {
            out.push(c);
        }
    }
    out
}

fn field<'v>(v: &'v Value, name: &str) -> Option<&'v Value> {
    let o = v.as_object()?;
    o.get(name).or_else(|| o.get(&lower_camel(name))).filter(|x| !x.is_null())
}

fn bad(name: &str, why: &str) -> Status {
    Status::invalid_argument(format!("bad field \"{name}\": {why}"))
}

fn int(v: &Value, name: &str) -> Result<i64, Status> {
    match field(v, name) {
        None => Ok(0),
        Some(Value::Number(n)) => n.as_i64().ok_or_else(|| bad(name, "not an integer")),
        Some(Value::String(s)) => s.parse().map_err(|_| bad(name, "not an integer")),
        Some(_) => Err(bad(name, "not an integer")),
    }
}

fn boolean(v: &Value, name: &str) -> bool {
    matches!(field(v, name), Some(Value::Bool(true)))
}

fn bytes(v: &Value, name: &str) -> Result<Vec<u8>, Status> {
    match field(v, name) {
        None => Ok(Vec::new()),
        Some(Value::String(s)) => unb64(s).ok_or_else(|| bad(name, "not base64")),
        Some(_) => Err(bad(name, "not a base64 string")),
    }
}

fn enumeration(v: &Value, name: &str, names: &[&str]) -> Result<i32, Status> {
    match field(v, name) {
        None => Ok(0),
        Some(Value::Number(n)) => n.as_i64().map(|x| x as i32).ok_or_else(|| bad(name, "bad enum")),
        Some(Value::String(s)) => names
            .iter()
            .position(|n| n == s)
            .map(|i| i as i32)
            .ok_or_else(|| bad(name, "unknown enum value")),
        Some(_) => Err(bad(name, "bad enum")),
    }
}

fn range_request(v: &Value) -> Result<pb::RangeRequest, Status> {
    Ok(pb::RangeRequest {
        key: bytes(v, "key")?,
        range_end: bytes(v, "range_end")?,
        limit: int(v, "limit")?,
        revision: int(v, "revision")?,
        sort_order: enumeration(v, "sort_order", &["NONE", "ASCEND", "DESCEND"])?,
        sort_target: enumeration(v, "sort_target", &["KEY", "VERSION", "CREATE", "MOD", "VALUE"])?,
        serializable: boolean(v, "serializable"),
        keys_only: boolean(v, "keys_only"),
        count_only: boolean(v, "count_only"),
        min_mod_revision: int(v, "min_mod_revision")?,
        max_mod_revision: int(v, "max_mod_revision")?,
        min_create_revision: int(v, "min_create_revision")?,
        max_create_revision: int(v, "max_create_revision")?,
    })
}

fn put_request(v: &Value) -> Result<pb::PutRequest, Status> {
    Ok(pb::PutRequest {
        key: bytes(v, "key")?,
        value: bytes(v, "value")?,
        lease: int(v, "lease")?,
        prev_kv: boolean(v, "prev_kv"),
        ignore_value: boolean(v, "ignore_value"),
        ignore_lease: boolean(v, "ignore_lease"),
    })
}

fn delete_request(v: &Value) -> Result<pb::DeleteRangeRequest, Status> {
    Ok(pb::DeleteRangeRequest {
        key: bytes(v, "key")?,
        range_end: bytes(v, "range_end")?,
        prev_kv: boolean(v, "prev_kv"),
    })
}

fn compare(v: &Value) -> Result<pb::Compare, Status> {
    use pb::compare::TargetUnion;
    let union = if field(v, "version").is_some() {
        Some(TargetUnion::Version(int(v, "version")?))
    } else if field(v, "create_revision").is_some() {
        Some(TargetUnion::CreateRevision(int(v, "create_revision")?))
    } else if field(v, "mod_revision").is_some() {
        Some(TargetUnion::ModRevision(int(v, "mod_revision")?))
    } else if field(v, "value").is_some() {
        Some(TargetUnion::Value(bytes(v, "value")?))
    } else if field(v, "lease").is_some() {
        Some(TargetUnion::Lease(int(v, "lease")?))
    } else {
        None
    };
    Ok(pb::Compare {
        result: enumeration(v, "result", &["EQUAL", "GREATER", "LESS", "NOT_EQUAL"])?,
        target: enumeration(v, "target", &["VERSION", "CREATE", "MOD", "VALUE", "LEASE"])?,
        key: bytes(v, "key")?,
        target_union: union,
        range_end: bytes(v, "range_end")?,
    })
}

fn request_op(v: &Value) -> Result<pb::RequestOp, Status> {
    use pb::request_op::Request as R;
    let request = if let Some(r) = field(v, "request_range") {
        R::RequestRange(range_request(r)?)
    } else if let Some(r) = field(v, "request_put") {
        R::RequestPut(put_request(r)?)
    } else if let Some(r) = field(v, "request_delete_range") {
        R::RequestDeleteRange(delete_request(r)?)
    } else if let Some(r) = field(v, "request_txn") {
        R::RequestTxn(txn_request(r)?)
    } else {
        return Err(bad(
            "request",
            "one of request_range, request_put, request_delete_range, request_txn",
        ));
    };
    Ok(pb::RequestOp { request: Some(request) })
}

fn list<T>(v: &Value, name: &str, each: fn(&Value) -> Result<T, Status>) -> Result<Vec<T>, Status> {
    match field(v, name) {
        None => Ok(Vec::new()),
        Some(Value::Array(a)) => a.iter().map(each).collect(),
        Some(_) => Err(bad(name, "not a list")),
    }
}

fn txn_request(v: &Value) -> Result<pb::TxnRequest, Status> {
    Ok(pb::TxnRequest {
        compare: list(v, "compare", compare)?,
        success: list(v, "success", request_op)?,
        failure: list(v, "failure", request_op)?,
    })
}

fn watch_request(v: &Value) -> Result<pb::WatchRequest, Status> {
    use pb::watch_request::RequestUnion as U;
    let union = if let Some(c) = field(v, "create_request") {
        let filters = match field(c, "filters") {
            None => Vec::new(),
            Some(Value::Array(a)) => a
                .iter()
                .map(|f| enumeration(&json!({ "f": f }), "f", &["NOPUT", "NODELETE"]))
                .collect::<Result<_, _>>()?,
            Some(_) => return Err(bad("filters", "not a list")),
        };
        U::CreateRequest(pb::WatchCreateRequest {
            key: bytes(c, "key")?,
            range_end: bytes(c, "range_end")?,
            start_revision: int(c, "start_revision")?,
            progress_notify: boolean(c, "progress_notify"),
            filters,
            prev_kv: boolean(c, "prev_kv"),
            watch_id: int(c, "watch_id")?,
            fragment: boolean(c, "fragment"),
        })
    } else if let Some(c) = field(v, "cancel_request") {
        U::CancelRequest(pb::WatchCancelRequest { watch_id: int(c, "watch_id")? })
    } else if field(v, "progress_request").is_some() {
        U::ProgressRequest(pb::WatchProgressRequest {})
    } else {
        return Err(bad(
            "request_union",
            "one of create_request, cancel_request, progress_request",
        ));
    };
    Ok(pb::WatchRequest { request_union: Some(union) })
}

// ----- protobuf → JSON ------------------------------------------------------

/// A JSON object that leaves default values out.
struct Obj(Map<String, Value>);

fn obj() -> Obj {
    Obj(Map::new())
}

impl Obj {
    fn i64(mut self, name: &str, x: i64) -> Obj {
        if x != 0 {
            self.0.insert(name.into(), Value::String(x.to_string()));
        }
        self
    }
    fn u64(mut self, name: &str, x: u64) -> Obj {
        if x != 0 {
            self.0.insert(name.into(), Value::String(x.to_string()));
        }
        self
    }
    fn bool(mut self, name: &str, x: bool) -> Obj {
        if x {
            self.0.insert(name.into(), Value::Bool(true));
        }
        self
    }
    fn string(mut self, name: &str, x: String) -> Obj {
        if !x.is_empty() {
            self.0.insert(name.into(), Value::String(x));
        }
        self
    }
    fn bytes(mut self, name: &str, x: &[u8]) -> Obj {
        if !x.is_empty() {
            self.0.insert(name.into(), Value::String(b64(x)));
        }
        self
    }
    fn header(mut self, h: Option<pb::ResponseHeader>) -> Obj {
        if let Some(h) = h {
            let v = obj()
                .u64("cluster_id", h.cluster_id)
                .u64("member_id", h.member_id)
                .i64("revision", h.revision)
                .u64("raft_term", h.raft_term)
                .done();
            self.0.insert("header".into(), v);
        }
        self
    }
    fn opt_kv(mut self, name: &str, kv: Option<mvccpb::KeyValue>) -> Obj {
        if let Some(kv) = kv {
            self.0.insert(name.into(), key_value(&kv));
        }
        self
    }
    fn kvs(mut self, name: &str, kvs: Vec<mvccpb::KeyValue>) -> Obj {
        if !kvs.is_empty() {
            self.0.insert(name.into(), Value::Array(kvs.iter().map(key_value).collect()));
        }
        self
    }
    fn done(self) -> Value {
        Value::Object(self.0)
    }
}

fn key_value(kv: &mvccpb::KeyValue) -> Value {
    obj()
        .bytes("key", &kv.key)
        .i64("create_revision", kv.create_revision)
        .i64("mod_revision", kv.mod_revision)
        .i64("version", kv.version)
        .bytes("value", &kv.value)
        .i64("lease", kv.lease)
        .done()
}

fn range_response(r: pb::RangeResponse) -> Value {
    obj().header(r.header).kvs("kvs", r.kvs).bool("more", r.more).i64("count", r.count).done()
}

fn txn_response(r: pb::TxnResponse) -> Value {
    use pb::response_op::Response as R;
    let responses: Vec<Value> = r
        .responses
        .into_iter()
        .filter_map(|op| {
            Some(match op.response? {
                R::ResponseRange(x) => json!({ "response_range": range_response(x) }),
                R::ResponsePut(x) => {
                    json!({ "response_put": obj().header(x.header).opt_kv("prev_kv", x.prev_kv).done() })
                }
                R::ResponseDeleteRange(x) => json!({ "response_delete_range": obj()
                    .header(x.header)
                    .i64("deleted", x.deleted)
                    .kvs("prev_kvs", x.prev_kvs)
                    .done() }),
                R::ResponseTxn(x) => json!({ "response_txn": txn_response(x) }),
            })
        })
        .collect();
    let mut o = obj().header(r.header).bool("succeeded", r.succeeded);
    if !responses.is_empty() {
        o.0.insert("responses".into(), Value::Array(responses));
    }
    o.done()
}

fn watch_response(r: pb::WatchResponse) -> Value {
    let events: Vec<Value> = r
        .events
        .iter()
        .map(|e| {
            let mut o = obj();
            if e.r#type == mvccpb::event::EventType::Delete as i32 {
                o.0.insert("type".into(), Value::String("DELETE".into()));
            }
            o.opt_kv("kv", e.kv.clone()).opt_kv("prev_kv", e.prev_kv.clone()).done()
        })
        .collect();
    let mut o = obj()
        .header(r.header)
        .i64("watch_id", r.watch_id)
        .bool("created", r.created)
        .bool("canceled", r.canceled)
        .i64("compact_revision", r.compact_revision)
        .string("cancel_reason", r.cancel_reason)
        .bool("fragment", r.fragment);
    if !events.is_empty() {
        o.0.insert("events".into(), Value::Array(events));
    }
    o.done()
}

// ----- base64 ---------------------------------------------------------------

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 with padding.
pub fn b64(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, b)| acc | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(B64[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Decodes standard or URL-safe base64, padded or not; `None` if invalid.
pub fn unb64(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() / 4 * 3);
    let mut acc = 0u32;
    let mut bits = 0;
    for c in text.trim_end_matches('=').bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    if bits >= 6 {
        return None;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_round_trips_and_matches_known_values() {
        assert_eq!(b64(b"foo"), "Zm9v");
        assert_eq!(b64(b"bar-new"), "YmFyLW5ldw==");
        assert_eq!(b64(b""), "");
        for len in 0..20 {
            let data: Vec<u8> = (0..len).map(|i| (i * 37 + 11) as u8).collect();
            assert_eq!(unb64(&b64(&data)), Some(data));
        }
        assert_eq!(unb64("Zm9v"), Some(b"foo".to_vec()));
        assert_eq!(unb64("YmFyLW5ldw"), Some(b"bar-new".to_vec()), "padding optional");
        assert_eq!(unb64("Z"), None);
        assert_eq!(unb64("Zm9v!"), None);
    }

    #[test]
    fn requests_take_names_or_camel_case_strings_or_numbers() {
        let v = json!({ "key": "Zm9v", "rangeEnd": "Zm9w", "limit": "2", "sort_order": "DESCEND",
                        "sort_target": 3, "keys_only": true });
        let r = range_request(&v).expect("parses");
        assert_eq!((r.key, r.range_end), (b"foo".to_vec(), b"fop".to_vec()));
        assert_eq!((r.limit, r.sort_order, r.sort_target, r.keys_only), (2, 2, 3, true));
        assert!(range_request(&json!({ "limit": "x" })).is_err());
        let t = txn_request(&json!({
            "compare": [{ "key": "Zm9v", "result": "EQUAL", "target": "VALUE", "value": "YmFy" }],
            "success": [{ "request_put": { "key": "Zm9v", "value": "YmF6" } }],
            "failure": [{ "request_range": { "key": "Zm9v" } }]
        }))
        .expect("parses");
        assert_eq!(t.compare[0].target, 3);
        assert_eq!(
            t.compare[0].target_union,
            Some(pb::compare::TargetUnion::Value(b"bar".to_vec()))
        );
        assert_eq!(t.success.len(), 1);
    }

    #[test]
    fn responses_leave_defaults_out_and_quote_64_bit_integers() {
        let r = pb::RangeResponse {
            header: Some(pb::ResponseHeader {
                cluster_id: 7,
                member_id: 1,
                revision: 5,
                raft_term: 2,
            }),
            kvs: vec![mvccpb::KeyValue {
                key: b"foo".to_vec(),
                create_revision: 2,
                mod_revision: 5,
                version: 2,
                value: b"bar".to_vec(),
                lease: 0,
            }],
            more: false,
            count: 1,
        };
        assert_eq!(
            range_response(r).to_string(),
            r#"{"count":"1","header":{"cluster_id":"7","member_id":"1","raft_term":"2","revision":"5"},"kvs":[{"create_revision":"2","key":"Zm9v","mod_revision":"5","value":"YmFy","version":"2"}]}"#
        );
    }
}
