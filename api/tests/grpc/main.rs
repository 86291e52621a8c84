//! ChatService integration tests, over real gRPC against 1-node and 3-node
//! in-process clusters. One test binary holds every module, so the workspace
//! links the dependency tree once for them instead of once per file; nextest
//! still runs each test in its own process.

mod authorization;
mod cluster;
mod conversations;
mod history_and_inbox;
mod keys;
mod limits;
mod messages;
mod offline_rebuild;
mod presence_and_typing;
mod push;
mod receipts;
mod replay;
mod restart;
mod retention;
mod subscribe;
mod support;
