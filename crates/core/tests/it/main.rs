//! Core's integration tests, in one test binary (one link instead of four): convergence
//! properties, hostile bytes, hostile documents, indicators on a hand-worked data set, and the rule tables.

mod convergence;
mod hostile;
mod hostile_docs;
mod indicators;
mod rules;
