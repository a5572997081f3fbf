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

generated_module!(
    /// Package `grpc.health.v1`: the standard gRPC health service
    /// (`/grpc.health.v1.Health/Check` and `Watch`), which etcd serves too.
    health,
    "grpc.health.v1"
);

generated_module!(
    /// Package `synodpb`: Synod's own services, not etcd's. `Pbft.Submit`
    /// is the PBFT client path: a request signed by the client, sent to
    /// every replica, answered by each with a signed result (see
    /// `crates/node/src/pbft_reply.rs`).
    synodpb,
    "synodpb"
);

/// The `protoc` binary this crate's build used (from the `protoc-bin-vendored`
/// crate), for other builds that need one, such as the Rust `etcd-client`
/// compatibility test (`crates/cli/tests/rust_etcd_client.rs`), which runs
/// the etcd-client crate's build script with `PROTOC` set to it.
pub const PROTOC: &str = env!("SYNOD_PROTOC");

#[cfg(test)]
mod tests {
    use prost::Message;

    /// Every gRPC method of etcd 3.5, as `/<package>.<Service>/<Method>`, listed
    /// from etcd's rpc.proto, v3lock.proto and v3election.proto.
    const ETCD_METHOD_PATHS: &[&str] = &[
        "/etcdserverpb.KV/Range",
        "/etcdserverpb.KV/Put",
        "/etcdserverpb.KV/DeleteRange",
        "/etcdserverpb.KV/Txn",
        "/etcdserverpb.KV/Compact",
        "/etcdserverpb.Watch/Watch",
        "/etcdserverpb.Lease/LeaseGrant",
        "/etcdserverpb.Lease/LeaseRevoke",
        "/etcdserverpb.Lease/LeaseKeepAlive",
        "/etcdserverpb.Lease/LeaseTimeToLive",
        "/etcdserverpb.Lease/LeaseLeases",
        "/etcdserverpb.Cluster/MemberAdd",
        "/etcdserverpb.Cluster/MemberRemove",
        "/etcdserverpb.Cluster/MemberUpdate",
        "/etcdserverpb.Cluster/MemberList",
        "/etcdserverpb.Cluster/MemberPromote",
        "/etcdserverpb.Maintenance/Alarm",
        "/etcdserverpb.Maintenance/Status",
        "/etcdserverpb.Maintenance/Defragment",
        "/etcdserverpb.Maintenance/Hash",
        "/etcdserverpb.Maintenance/HashKV",
        "/etcdserverpb.Maintenance/Snapshot",
        "/etcdserverpb.Maintenance/MoveLeader",
        "/etcdserverpb.Maintenance/Downgrade",
        "/etcdserverpb.Auth/AuthEnable",
        "/etcdserverpb.Auth/AuthDisable",
        "/etcdserverpb.Auth/AuthStatus",
        "/etcdserverpb.Auth/Authenticate",
        "/etcdserverpb.Auth/UserAdd",
        "/etcdserverpb.Auth/UserGet",
        "/etcdserverpb.Auth/UserList",
        "/etcdserverpb.Auth/UserDelete",
        "/etcdserverpb.Auth/UserChangePassword",
        "/etcdserverpb.Auth/UserGrantRole",
        "/etcdserverpb.Auth/UserRevokeRole",
        "/etcdserverpb.Auth/RoleAdd",
        "/etcdserverpb.Auth/RoleGet",
        "/etcdserverpb.Auth/RoleList",
        "/etcdserverpb.Auth/RoleDelete",
        "/etcdserverpb.Auth/RoleGrantPermission",
        "/etcdserverpb.Auth/RoleRevokePermission",
        "/v3lockpb.Lock/Lock",
        "/v3lockpb.Lock/Unlock",
        "/v3electionpb.Election/Campaign",
        "/v3electionpb.Election/Proclaim",
        "/v3electionpb.Election/Leader",
        "/v3electionpb.Election/Observe",
        "/v3electionpb.Election/Resign",
    ];

    /// The generated sources, where tonic spells out each method path.
    const GENERATED: [&str; 3] = [
        include_str!(concat!(env!("OUT_DIR"), "/etcdserverpb.rs")),
        include_str!(concat!(env!("OUT_DIR"), "/v3lockpb.rs")),
        include_str!(concat!(env!("OUT_DIR"), "/v3electionpb.rs")),
    ];

    #[test]
    fn every_etcd_method_path_is_served_and_no_other() {
        for path in ETCD_METHOD_PATHS {
            let quoted = format!("\"{path}\"");
            assert!(
                GENERATED.iter().any(|src| src.contains(&quoted)),
                "no generated method for {path}"
            );
        }
        // The server match arms quote each path once; the client quotes it once more.
        let generated_paths: usize = GENERATED
            .iter()
            .map(|src| src.matches("\"/etcdserverpb.").count() + src.matches("\"/v3").count())
            .sum();
        assert_eq!(generated_paths, 2 * ETCD_METHOD_PATHS.len(), "unexpected extra methods");
    }

    #[test]
    fn service_names_are_etcds() {
        use crate::{etcdserverpb as pb, v3electionpb, v3lockpb};
        assert_eq!(pb::kv_server::SERVICE_NAME, "etcdserverpb.KV");
        assert_eq!(pb::watch_server::SERVICE_NAME, "etcdserverpb.Watch");
        assert_eq!(pb::lease_server::SERVICE_NAME, "etcdserverpb.Lease");
        assert_eq!(pb::cluster_server::SERVICE_NAME, "etcdserverpb.Cluster");
        assert_eq!(pb::maintenance_server::SERVICE_NAME, "etcdserverpb.Maintenance");
        assert_eq!(pb::auth_server::SERVICE_NAME, "etcdserverpb.Auth");
        assert_eq!(v3lockpb::lock_server::SERVICE_NAME, "v3lockpb.Lock");
        assert_eq!(v3electionpb::election_server::SERVICE_NAME, "v3electionpb.Election");
        assert_eq!(crate::health::health_server::SERVICE_NAME, "grpc.health.v1.Health");
    }

    #[test]
    fn the_exported_protoc_exists() {
        assert!(std::path::Path::new(crate::PROTOC).is_file(), "{}", crate::PROTOC);
    }

    /// Protobuf tag byte for a field: number << 3 | wire type (0 varint, 2 bytes).
    fn tag(field_number: u8, wire_type: u8) -> u8 {
        field_number << 3 | wire_type
    }

    #[test]
    fn put_request_bytes_use_etcds_field_numbers() {
        let request = crate::etcdserverpb::PutRequest {
            key: b"foo".to_vec(),
            value: b"bar".to_vec(),
            lease: 7,
            prev_kv: true,
            ignore_value: true,
            ignore_lease: true,
        };
        let expected = [
            &[tag(1, 2), 3][..],
            b"foo",
            &[tag(2, 2), 3],
            b"bar",
            &[tag(3, 0), 7, tag(4, 0), 1, tag(5, 0), 1, tag(6, 0), 1],
        ]
        .concat();
        assert_eq!(request.encode_to_vec(), expected);
    }

    #[test]
    fn key_value_and_header_bytes_use_etcds_field_numbers() {
        let kv = crate::mvccpb::KeyValue {
            key: b"k".to_vec(),
            create_revision: 2,
            mod_revision: 3,
            version: 4,
            value: b"v".to_vec(),
            lease: 5,
        };
        let expected_kv = [
            tag(1, 2),
            1,
            b'k',
            tag(2, 0),
            2,
            tag(3, 0),
            3,
            tag(4, 0),
            4,
            tag(5, 2),
            1,
            b'v',
            tag(6, 0),
            5,
        ];
        assert_eq!(kv.encode_to_vec(), expected_kv);

        let header = crate::etcdserverpb::ResponseHeader {
            cluster_id: 1,
            member_id: 2,
            revision: 3,
            raft_term: 4,
        };
        assert_eq!(
            header.encode_to_vec(),
            [tag(1, 0), 1, tag(2, 0), 2, tag(3, 0), 3, tag(4, 0), 4]
        );
    }

    #[test]
    fn sparse_field_numbers_match_etcd() {
        // WatchResponse.events is field 11 and Compare.range_end is field 64: gaps
        // that a hand-written proto could easily get wrong.
        let response = crate::etcdserverpb::WatchResponse {
            events: vec![crate::mvccpb::Event::default()],
            ..Default::default()
        };
        assert_eq!(response.encode_to_vec(), [tag(11, 2), 0]);

        let compare =
            crate::etcdserverpb::Compare { range_end: b"z".to_vec(), ..Default::default() };
        // Field 64, wire type 2: tag 514 as a varint is [0x82, 0x04].
        assert_eq!(compare.encode_to_vec(), [0x82, 0x04, 1, b'z']);

        let create = crate::etcdserverpb::WatchRequest {
            request_union: Some(crate::etcdserverpb::watch_request::RequestUnion::ProgressRequest(
                crate::etcdserverpb::WatchProgressRequest {},
            )),
        };
        assert_eq!(create.encode_to_vec(), [tag(3, 2), 0]);
    }
}
