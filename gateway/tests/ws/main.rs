//! Gateway integration tests: real WebSocket clients against a gateway in
//! front of real chat nodes. One test binary for every module; nextest runs
//! each test in its own process.

mod media;
mod support;
mod websocket;
