//! Core's integration tests, in one test binary (one link instead of four): convergence
//! properties, hostile bytes, indicators on a hand-worked data set, and the rule tables.

mod convergence;
mod hostile;
mod indicators;
mod rules;
