//! End-to-end tests with the real binaries, in one test binary: the field client against the
//! server, the hub's closed loop, a new user's first hour, and syncs over a 2G valley.

mod closed_loop;
mod field;
mod first_hour;
mod slow_link;
