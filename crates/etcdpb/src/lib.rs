//! The etcd v3 wire API as Rust types: tonic servers and clients and prost
//! messages for etcd's gRPC services, generated at build time from Synod's own
//! `.proto` files in `proto/`.
//!
//! # Where the names and numbers come from
//!
//! etcd clients (etcdctl, Go clientv3, Python `etcd3`, Rust `etcd-client`) talk
//! protobuf over gRPC. What must match etcd exactly is what goes on the wire:
//! - the proto **package and service names** and the **method names**, which make
//!   the gRPC paths (`/etcdserverpb.KV/Range`, `/v3lockpb.Lock/Lock`, ...);
//! - every message's **field numbers and wire types** (and the enum values), which
//!   make the bytes.
//!
//! Message and field names do not reach the protobuf wire, but they are kept as
//! etcd spells them (`TTL`, `ID`, `peerURLs`, ...) because the JSON gateway
//! (`/v3/kv/range`, ...) uses them. The files were written for Synod from the facts
//! in etcd's own definitions (etcd-io/etcd `api/etcdserverpb/rpc.proto`,
//! `api/mvccpb/kv.proto`, `api/authpb/auth.proto`,
//! `server/etcdserver/api/v3lock/v3lockpb/v3lock.proto`,
//! `server/etcdserver/api/v3election/v3electionpb/v3election.proto`), whose
//! per-field `etcd_version` annotations say in which release each field appeared.
//! They omit etcd's prose and its gogoproto / google.api.http / versionpb options;
//! each rpc keeps its JSON gateway path as a comment.
//!
//! The shape is **etcd 3.5** (3.4 plus `Auth.AuthStatus`, `Maintenance.Downgrade`,
//! `MemberListRequest.linearizable` and the `hashedPassword` fields), with 3.6's
//! additive response fields (`StatusResponse.storageVersion`/`dbSizeQuota`/
//! `downgradeInfo`, `HashKVResponse.hash_revision`, `SnapshotResponse.version`),
//! which 3.4/3.5 clients skip as unknown fields. 3.7's streaming `KV.RangeStream`
//! is not included: clients that try it get `Unimplemented`, as from etcd 3.5.
//!
//! # Generated code
//!
//! Each module holds the messages of one proto package, plus for each service
//! `<service>_server::{<Service>, <Service>Server}` (trait and tower service) and
//! `<service>_client::<Service>Client`. For example
//! [`etcdserverpb::kv_server::Kv`], [`etcdserverpb::kv_server::KvServer`] and
//! [`etcdserverpb::kv_client::KvClient`]. Server trait methods that a service does
//! not implement answer gRPC `Unimplemented`, which is what etcd answers for RPCs
//! it does not support, so a server can implement a subset.

/// Shorthand for the lints generated code trips; applied to generated modules only.
macro_rules! generated_module {
    ($(#[$meta:meta])* $name:ident, $package:literal) => {
        $(#[$meta])*
        #[allow(missing_docs, clippy::all, clippy::pedantic, rustdoc::all)]
        pub mod $name {
            include!(concat!(env!("OUT_DIR"), "/", $package, ".rs"));
        }
    };
}

generated_module!(
    /// Package `mvccpb`: [`mvccpb::KeyValue`] (one version of a key) and
    /// [`mvccpb::Event`] (one change, as Watch delivers it).
    mvccpb,
    "mvccpb"
);

generated_module!(
    /// Package `authpb`: users, roles and key-range permissions of etcd's auth store.
    authpb,
    "authpb"
);

generated_module!(
    /// Package `etcdserverpb`: the services `KV`, `Watch`, `Lease`, `Cluster`,
    /// `Maintenance` and `Auth`, their requests and responses, and
    /// [`etcdserverpb::ResponseHeader`].
    etcdserverpb,
    "etcdserverpb"
);

generated_module!(
    /// Package `v3lockpb`: the server-side `Lock` service (Lock, Unlock).
    v3lockpb,
    "v3lockpb"
);

generated_module!(
    /// Package `v3electionpb`: the server-side `Election` service (Campaign,
    /// Proclaim, Leader, Observe, Resign).
    v3electionpb,
    "v3electionpb"
);
