//! missive-log integration tests: crash, corruption, retention and model
//! tests of the log engine. One test binary for every module; nextest runs
//! each test in its own process.

mod concurrent;
mod corruption;
mod fixture;
mod fixture_carried;
mod garbage_input;
mod model;
mod poison;
mod prepared;
mod purge_beyond_end;
mod retention;
mod torn_tail;
mod truncate;
