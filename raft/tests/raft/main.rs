//! missive-raft integration tests: openraft's storage suite, in-process
//! clusters over a simulated network, and clusters over real gRPC. One test
//! binary for every module; nextest runs each test in its own process.

mod chaos;
mod group_commit;
mod grpc_cluster;
mod initialized;
mod log_store;
mod restarted_leader_never_reuses_a_log_id;
mod single_node;
mod snapshot_by_size;
mod sole_voter;
mod storage_suite;
mod support;
