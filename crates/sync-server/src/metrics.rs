//! Prometheus metrics: counters and a latency histogram kept in atomics, rendered as text.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use gridsync_core::protocol::{Outcome, Verdict};

/// Upper bounds (seconds) of the sync latency histogram buckets.
const BUCKETS: [f64; 12] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0];

/// Everything `/metrics` reports.
#[derive(Default)]
pub struct Metrics {
    requests: Mutex<BTreeMap<(String, u16), u64>>,
    /// Changes by outcome and refusal code.
    changes: Mutex<BTreeMap<(&'static str, String), u64>>,
    /// Sync request and response bodies, uncompressed.
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
    syncs: AtomicU64,
    sync_buckets: [AtomicU64; BUCKETS.len()],
    sync_sum_micros: AtomicU64,
    group_commits: AtomicU64,
    grouped_pushes: AtomicU64,
    /// Set by the server from the ingest cache.
    pub cached_documents: AtomicU64,
}

fn outcome_name(o: Outcome) -> &'static str {
    match o {
        Outcome::Accepted => "accepted",
        Outcome::Duplicate => "duplicate",
        Outcome::Forbidden => "forbidden",
        Outcome::MissingDeps => "missing_deps",
        Outcome::Malformed => "malformed",
    }
}

impl Metrics {
    pub fn request(&self, route: &str, status: u16) {
        *self
            .requests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry((route.to_string(), status))
            .or_default() += 1;
    }

    pub fn bytes(&self, inbound: u64, outbound: u64) {
        self.bytes_in.fetch_add(inbound, Relaxed);
        self.bytes_out.fetch_add(outbound, Relaxed);
    }

    pub fn verdict(&self, v: &Verdict) {
        let code = v.code.clone().unwrap_or_default();
        *self
            .changes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry((outcome_name(v.outcome), code))
            .or_default() += 1;
    }

    pub fn sync_latency(&self, seconds: f64) {
        self.syncs.fetch_add(1, Relaxed);
        self.sync_sum_micros.fetch_add((seconds * 1e6) as u64, Relaxed);
        if let Some(i) = BUCKETS.iter().position(|&b| seconds <= b) {
            self.sync_buckets[i].fetch_add(1, Relaxed);
        }
    }

    pub fn group_commit(&self, pushes: usize) {
        self.group_commits.fetch_add(1, Relaxed);
        self.grouped_pushes.fetch_add(pushes as u64, Relaxed);
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        use std::fmt::Write;
        let mut o = String::new();
        let _ = writeln!(o, "# TYPE gridsync_http_requests_total counter");
        for ((route, status), n) in self.requests.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            let _ = writeln!(o, "gridsync_http_requests_total{{route=\"{route}\",status=\"{status}\"}} {n}");
        }
        let _ = writeln!(o, "# TYPE gridsync_changes_total counter");
        for ((outcome, code), n) in self.changes.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            let _ = writeln!(o, "gridsync_changes_total{{outcome=\"{outcome}\",reason=\"{code}\"}} {n}");
        }
        let _ = writeln!(
            o,
            "# TYPE gridsync_sync_body_bytes_in_total counter\ngridsync_sync_body_bytes_in_total {}",
            self.bytes_in.load(Relaxed)
        );
        let _ = writeln!(
            o,
            "# TYPE gridsync_sync_body_bytes_out_total counter\ngridsync_sync_body_bytes_out_total {}",
            self.bytes_out.load(Relaxed)
        );
        let _ = writeln!(o, "# TYPE gridsync_sync_seconds histogram");
        let mut cumulative = 0;
        for (i, b) in BUCKETS.iter().enumerate() {
            cumulative += self.sync_buckets[i].load(Relaxed);
            let _ = writeln!(o, "gridsync_sync_seconds_bucket{{le=\"{b}\"}} {cumulative}");
        }
        let count = self.syncs.load(Relaxed);
        let _ = writeln!(o, "gridsync_sync_seconds_bucket{{le=\"+Inf\"}} {count}");
        let _ = writeln!(o, "gridsync_sync_seconds_sum {}", self.sync_sum_micros.load(Relaxed) as f64 / 1e6);
        let _ = writeln!(o, "gridsync_sync_seconds_count {count}");
        let _ = writeln!(
            o,
            "# TYPE gridsync_group_commits_total counter\ngridsync_group_commits_total {}",
            self.group_commits.load(Relaxed)
        );
        let _ = writeln!(
            o,
            "# TYPE gridsync_grouped_pushes_total counter\ngridsync_grouped_pushes_total {}",
            self.grouped_pushes.load(Relaxed)
        );
        let _ = writeln!(
            o,
            "# TYPE gridsync_cached_documents gauge\ngridsync_cached_documents {}",
            self.cached_documents.load(Relaxed)
        );
        o
    }
}
