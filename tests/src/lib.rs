//! End-to-end test harness: starts the real server and runs the real `field` binary in temp homes.
