//! End-to-end tests with the real binaries, in one test binary: the field client against the
//! server, the hub's closed loop, and a new user's first hour.

mod closed_loop;
mod field;
mod first_hour;
