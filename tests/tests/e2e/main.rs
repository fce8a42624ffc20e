//! End-to-end tests with the real binaries, in one test binary: the field client against the
//! server, and the hub's closed loop.

mod closed_loop;
mod field;
