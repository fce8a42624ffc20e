//! Deadlines (时限) per lifecycle step and urgency, and the green/yellow/red light of an item.
//! The server reads a policy file (TOML) into `Policy`; the defaults follow published practice.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::lifecycle::Status;
use crate::report::Urgency;

/// Minutes allowed for one step, by urgency.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StepLimits {
    pub low: u32,
    pub normal: u32,
    pub high: u32,
    pub critical: u32,
}

impl StepLimits {
    pub fn minutes(&self, u: Urgency) -> u32 {
        match u {
            Urgency::Low => self.low,
            Urgency::Normal => self.normal,
            Urgency::High => self.high,
            Urgency::Critical => self.critical,
        }
    }
}

/// The deadline policy: a limit for each step a hub takes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// From escalation to acceptance (受理): one working hour by default, critical faster.
    pub accept: StepLimits,
    /// From acceptance to dispatch (派遣).
    pub dispatch: StepLimits,
    /// From dispatch to resolution (处置).
    pub resolve: StepLimits,
    /// From resolution to closure (结案), including the check and the return visit.
    pub close: StepLimits,
    /// What the server escalates on its own.
    #[serde(default)]
    pub auto: AutoRules,
}

/// Auto-escalation rules, run by the server and written into the report as its own transitions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AutoRules {
    /// A `critical` report still open in its grid goes to its town at once.
    pub critical_to_town: bool,
    /// A report not accepted at the town within the `accept` limit goes to the county.
    pub unaccepted_to_county: bool,
}

impl Default for AutoRules {
    fn default() -> Self {
        AutoRules { critical_to_town: true, unaccepted_to_county: true }
    }
}

/// Why the server should escalate a report now, if it should.
pub fn auto_escalation(
    rules: &AutoRules,
    policy: &Policy,
    status: Status,
    level: crate::lifecycle::Level,
    urgency: Urgency,
    status_since: i64,
    now: i64,
) -> Option<String> {
    use crate::lifecycle::Level;
    match (status, level) {
        (Status::Open, Level::Grid) if rules.critical_to_town && urgency == Urgency::Critical => {
            Some("auto-escalated: a critical report goes to the town hub at once".into())
        }
        (Status::Escalated, Level::Town) if rules.unaccepted_to_county => {
            let limit = policy.limit_minutes("accept", urgency)?;
            (now > status_since + i64::from(limit) * 60_000)
                .then(|| format!("auto-escalated: not accepted at the town within {limit} minutes"))
        }
        _ => None,
    }
}

impl Default for Policy {
    fn default() -> Self {
        let h = 60;
        Policy {
            accept: StepLimits { low: h, normal: h, high: 30, critical: 15 },
            dispatch: StepLimits { low: 4 * h, normal: 2 * h, high: h, critical: 30 },
            resolve: StepLimits { low: 15 * 24 * h, normal: 7 * 24 * h, high: 3 * 24 * h, critical: 24 * h },
            close: StepLimits { low: 5 * 24 * h, normal: 3 * 24 * h, high: 2 * 24 * h, critical: 24 * h },
            auto: AutoRules::default(),
        }
    }
}

/// The traffic light of an item: the share of its time limit used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Light {
    /// Under 80% of the limit used.
    Green,
    /// 80% to 100%.
    Yellow,
    /// Over the limit: overdue.
    Red,
}

/// The step a report in `status` is waiting for, if a hub has one to take.
pub fn pending_step(status: Status) -> Option<&'static str> {
    match status {
        Status::Escalated => Some("accept"),
        Status::Accepted => Some("dispatch"),
        Status::Dispatched => Some("resolve"),
        Status::Resolved => Some("close"),
        _ => None,
    }
}

impl Policy {
    /// Minutes allowed for `step` at `urgency`.
    pub fn limit_minutes(&self, step: &str, urgency: Urgency) -> Option<u32> {
        let limits = match step {
            "accept" => &self.accept,
            "dispatch" => &self.dispatch,
            "resolve" => &self.resolve,
            "close" => &self.close,
            _ => return None,
        };
        Some(limits.minutes(urgency))
    }

    /// Deadline (ms) of the step waiting in `status`, which started at `since` (ms).
    pub fn deadline(&self, status: Status, urgency: Urgency, since: i64) -> Option<i64> {
        let minutes = self.limit_minutes(pending_step(status)?, urgency)?;
        Some(since + i64::from(minutes) * 60_000)
    }

    /// Parses a policy file.
    pub fn from_toml(text: &str) -> Result<Policy, String> {
        toml::from_str(text).map_err(|e| e.to_string())
    }
}

/// The light for a step that started at `since`, is due at `due`, seen at `now` (all ms).
pub fn light(since: i64, due: i64, now: i64) -> Light {
    let limit = (due - since).max(1);
    let used = now - since;
    if used * 10 < limit * 8 {
        Light::Green
    } else if used <= limit {
        Light::Yellow
    } else {
        Light::Red
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lights_follow_the_share_of_the_limit_used() {
        let (since, due) = (0, 100_000);
        assert_eq!(light(since, due, 0), Light::Green);
        assert_eq!(light(since, due, 79_999), Light::Green);
        assert_eq!(light(since, due, 80_000), Light::Yellow);
        assert_eq!(light(since, due, 100_000), Light::Yellow);
        assert_eq!(light(since, due, 100_001), Light::Red);
    }

    #[test]
    fn default_policy_accepts_within_an_hour_and_critical_faster() {
        let p = Policy::default();
        assert_eq!(p.deadline(Status::Escalated, Urgency::Normal, 0), Some(3_600_000));
        assert!(p.accept.critical < p.accept.normal);
        assert_eq!(p.deadline(Status::Open, Urgency::Normal, 0), None);
        let text = toml::to_string(&p).unwrap();
        assert_eq!(Policy::from_toml(&text).unwrap(), p);
        assert!(Policy::from_toml("accept = 3").is_err());
        let shipped = include_str!("../../../docs/policy.toml");
        assert_eq!(Policy::from_toml(shipped).unwrap(), p, "docs/policy.toml shows the defaults");
    }

    #[test]
    fn auto_escalation_rules() {
        use crate::lifecycle::Level;
        let p = Policy::default();
        let r = p.auto;
        let hour = 3_600_000;
        assert!(auto_escalation(&r, &p, Status::Open, Level::Grid, Urgency::Critical, 0, 0).is_some());
        assert!(auto_escalation(&r, &p, Status::Open, Level::Grid, Urgency::High, 0, 10 * hour).is_none());
        assert!(auto_escalation(&r, &p, Status::Escalated, Level::Town, Urgency::Normal, 0, hour).is_none());
        assert!(
            auto_escalation(&r, &p, Status::Escalated, Level::Town, Urgency::Normal, 0, hour + 1).is_some()
        );
        assert!(
            auto_escalation(&r, &p, Status::Accepted, Level::Town, Urgency::Normal, 0, 99 * hour).is_none()
        );
        let off = AutoRules { critical_to_town: false, unaccepted_to_county: false };
        assert!(auto_escalation(&off, &p, Status::Open, Level::Grid, Urgency::Critical, 0, 0).is_none());
    }
}
