//! Deadlines (时限) per lifecycle step and urgency, and the green/yellow/red light of an item.
//! The server reads a policy file (TOML) into `Policy`; the defaults follow published practice.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use std::collections::BTreeMap;

use crate::lifecycle::Status;
use crate::report::{Category, Urgency};

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

fn default_review() -> StepLimits {
    StepLimits { low: 3 * 24 * 60, normal: 3 * 24 * 60, high: 24 * 60, critical: 8 * 60 }
}

fn default_sign() -> StepLimits {
    StepLimits { low: 240, normal: 120, high: 60, critical: 30 }
}

/// The deadline policy: a limit for each step a hub takes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// From escalation to acceptance (受理): one working hour by default, critical faster.
    pub accept: StepLimits,
    /// From acceptance to dispatch (派遣).
    pub dispatch: StepLimits,
    /// From dispatch to resolution (处置); a handling unit's reply (办理反馈) is on time within it.
    pub resolve: StepLimits,
    /// From dispatch to the handling unit's signing for it (签收).
    #[serde(default = "default_sign")]
    pub sign: StepLimits,
    /// From a grid's own settlement (自办自结) to the town's review of it (审核).
    #[serde(default = "default_review")]
    pub review: StepLimits,
    /// From resolution to closure (结案), including the check and the return visit.
    pub close: StepLimits,
    /// What the server escalates on its own.
    #[serde(default)]
    pub auto: AutoRules,
    /// What closing needs per category, the reopen window, and which units see parties.
    #[serde(default)]
    pub closed_loop: ClosedLoop,
    /// Working hours the clock runs in ("within one working hour"). Without it, limits are
    /// wall-clock minutes around the clock.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub calendar: Option<Calendar>,
}

/// Working days and hours: deadlines count only working time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Calendar {
    /// Local time's offset from UTC in minutes (China: 480).
    pub utc_offset_minutes: i32,
    /// Start of the working day, local "HH:MM".
    pub start: String,
    /// End of the working day, local "HH:MM".
    pub end: String,
    /// Working days, 1 = Monday … 7 = Sunday.
    pub workdays: Vec<u8>,
    /// Critical items run on the wall clock, day and night.
    pub critical_around_the_clock: bool,
    /// Public holidays (local dates, `YYYY-MM-DD`): nobody works, whatever the weekday.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub holidays: Vec<String>,
    /// Make-up workdays (调休, local dates): weekend days that are working days.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub makeup_workdays: Vec<String>,
}

/// One year's public holidays and make-up workdays as the State Council publishes them (a file
/// per year, e.g. `docs/calendar-2026.toml`), added to the policy's working calendar.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HolidayYear {
    pub year: i32,
    pub holidays: Vec<String>,
    pub makeup_workdays: Vec<String>,
}

impl HolidayYear {
    /// Parses a year file: every date must be a real date of that year.
    pub fn from_toml(text: &str) -> Result<HolidayYear, String> {
        let y: HolidayYear = toml::from_str(text).map_err(|e| e.to_string())?;
        for d in y.holidays.iter().chain(&y.makeup_workdays) {
            if day_of(d).is_none() || !d.starts_with(&format!("{:04}-", y.year)) {
                return Err(format!("{d:?} is not a date (YYYY-MM-DD) of {}", y.year));
            }
        }
        Ok(y)
    }
}

/// The day number (days since 1970-01-01) of a local date `YYYY-MM-DD`.
fn day_of(date: &str) -> Option<i64> {
    crate::localtime::day_start(date, 0).map(|ms| ms.div_euclid(DAY))
}

const MINUTE: i64 = 60_000;
const DAY: i64 = 24 * 60 * MINUTE;

fn hhmm(s: &str) -> Option<i64> {
    let (h, m) = s.trim().split_once(':')?;
    let (h, m): (i64, i64) = (h.parse().ok()?, m.parse().ok()?);
    ((0..=24).contains(&h) && (0..60).contains(&m) && h * 60 + m <= 24 * 60).then_some((h * 60 + m) * MINUTE)
}

impl Calendar {
    /// The working window within a day (ms after local midnight), or why the calendar is invalid.
    pub fn window(&self) -> Result<(i64, i64), String> {
        let start =
            hhmm(&self.start).ok_or_else(|| format!("calendar start {:?} is not HH:MM", self.start))?;
        let end = hhmm(&self.end).ok_or_else(|| format!("calendar end {:?} is not HH:MM", self.end))?;
        if start >= end {
            return Err("the working day must start before it ends".into());
        }
        if self.workdays.is_empty() || self.workdays.iter().any(|d| !(1..=7).contains(d)) {
            return Err("workdays are numbers 1 (Monday) to 7 (Sunday), at least one".into());
        }
        if self.utc_offset_minutes.abs() > 14 * 60 {
            return Err("utc_offset_minutes is beyond ±14 hours".into());
        }
        for d in self.holidays.iter().chain(&self.makeup_workdays) {
            if day_of(d).is_none() {
                return Err(format!("{d:?} is not a date (YYYY-MM-DD)"));
            }
        }
        if let Some(d) = self.holidays.iter().find(|d| self.makeup_workdays.contains(d)) {
            return Err(format!("{d} is both a holiday and a make-up workday"));
        }
        Ok((start, end))
    }

    /// Adds a year's holidays and make-up workdays.
    pub fn add_year(&mut self, year: &HolidayYear) {
        for d in &year.holidays {
            if !self.holidays.contains(d) {
                self.holidays.push(d.clone());
            }
        }
        for d in &year.makeup_workdays {
            if !self.makeup_workdays.contains(d) {
                self.makeup_workdays.push(d.clone());
            }
        }
    }

    fn works(&self, day: i64) -> bool {
        let listed = |dates: &[String]| dates.iter().any(|d| day_of(d) == Some(day));
        if listed(&self.holidays) {
            return false;
        }
        if listed(&self.makeup_workdays) {
            return true;
        }
        // Day 0 (1970-01-01) was a Thursday.
        let weekday = (day + 3).rem_euclid(7) as u8 + 1;
        self.workdays.contains(&weekday)
    }

    /// The instant `minutes` of working time after `t` (ms, UTC).
    pub fn add(&self, t: i64, minutes: u32) -> i64 {
        let Ok((start, end)) = self.window() else { return t + i64::from(minutes) * MINUTE };
        let offset = i64::from(self.utc_offset_minutes) * MINUTE;
        let mut local = t + offset;
        let mut left = i64::from(minutes) * MINUTE;
        // Bounded: at least one working day a week, and limits are days long at most.
        for _ in 0..(366 * 50) {
            let day = local.div_euclid(DAY);
            if self.works(day) && local < day * DAY + end {
                let from = local.max(day * DAY + start);
                let available = day * DAY + end - from;
                if left <= available {
                    return from + left - offset;
                }
                left -= available;
            }
            local = (day + 1) * DAY;
        }
        t + i64::from(minutes) * MINUTE
    }

    /// Working time (ms) between `a` and `b`.
    pub fn between(&self, a: i64, b: i64) -> i64 {
        let Ok((start, end)) = self.window() else { return (b - a).max(0) };
        if b <= a {
            return 0;
        }
        let offset = i64::from(self.utc_offset_minutes) * MINUTE;
        let (a, b) = (a + offset, b + offset);
        let (first, last) = (a.div_euclid(DAY), b.div_euclid(DAY));
        (first..=last.min(first + 366 * 50))
            .filter(|&d| self.works(d))
            .map(|d| (b.min(d * DAY + end) - a.max(d * DAY + start)).max(0))
            .sum()
    }
}

/// A requirement of the close gate (三查二审一回访) for a result reached above the grid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum CloseNeed {
    /// The grid worker's check on site passed (核查), or a county operator waived it.
    Check,
    /// The hub called the resident back (回访); an anonymous report records `not_applicable`.
    Visit,
}

/// The closed loop's county choices: what closing needs, how long a close can be reopened, and
/// which categories' parties (names and contacts) a handling unit receives.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ClosedLoop {
    /// What a result reached above the grid needs before it closes, for categories not listed
    /// in `close_needs_by_category`.
    #[serde(default = "default_close_needs")]
    pub close_needs: Vec<CloseNeed>,
    /// Per category: what its results need before they close.
    #[serde(default)]
    pub close_needs_by_category: BTreeMap<Category, Vec<CloseNeed>>,
    /// A closed report may be reopened by the hub within this many days of its close.
    #[serde(default = "default_reopen_days")]
    pub reopen_within_days: u32,
    /// Categories whose parties' names and contacts a handling unit receives once dispatched.
    #[serde(default = "default_unit_parties")]
    pub unit_parties: Vec<Category>,
}

fn default_close_needs() -> Vec<CloseNeed> {
    vec![CloseNeed::Check, CloseNeed::Visit]
}

fn default_reopen_days() -> u32 {
    30
}

fn default_unit_parties() -> Vec<Category> {
    vec![Category::Dispute, Category::Request, Category::PublicSecurity]
}

impl Default for ClosedLoop {
    fn default() -> Self {
        ClosedLoop {
            close_needs: default_close_needs(),
            close_needs_by_category: BTreeMap::from([(Category::Suggestion, vec![CloseNeed::Visit])]),
            reopen_within_days: default_reopen_days(),
            unit_parties: default_unit_parties(),
        }
    }
}

impl ClosedLoop {
    /// What closing a result of `category` needs.
    pub fn close_needs(&self, category: Category) -> &[CloseNeed] {
        self.close_needs_by_category.get(&category).unwrap_or(&self.close_needs)
    }

    /// The reopen window in milliseconds.
    pub fn reopen_within_ms(&self) -> i64 {
        i64::from(self.reopen_within_days) * 86_400_000
    }

    /// Whether a handling unit receives the parties of a report of `category`.
    pub fn unit_sees_parties(&self, category: Category) -> bool {
        self.unit_parties.contains(&category)
    }
}

/// Auto-escalation rules, run by the server and written into the report as its own transitions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AutoRules {
    /// A `critical` report still open in its grid goes to its town at once.
    pub critical_to_town: bool,
    /// A report not accepted at the town within the `accept` limit goes to the county. Off by
    /// default: 乡呼县应 is a deliberate call from below, and lateness is met with reminders and
    /// supervision (督办) that leave the item where it is. A county may choose to turn it on.
    pub unaccepted_to_county: bool,
    /// The server writes a reminder (催办) into a report whose step passed its limit.
    #[serde(default = "yes")]
    pub remind_overdue: bool,
    /// The server writes a yellow supervision order (督办) into a report whose step is this many
    /// working days (calendar days without a calendar) past its limit; 0: never.
    #[serde(default = "default_supervise_after_days")]
    pub supervise_after_days: u32,
}

fn yes() -> bool {
    true
}

fn default_supervise_after_days() -> u32 {
    2
}

/// What the server writes into a report on its own, and why (in words people read).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AutoWrite {
    Escalate(String),
    Remind(String),
    Supervise(String),
}

/// What the server should write into report `v` now, if anything: an escalation the rules ask
/// for; else, for a step past its limit, a supervision order once it is `supervise_after_days`
/// working days late, or before that one reminder. `since` is when the step started (server).
pub fn auto_write(policy: &Policy, v: &crate::report::ReportView, since: i64, now: i64) -> Option<AutoWrite> {
    if let Some(reason) = auto_escalation(&policy.auto, policy, v.status, v.level, v.urgency, since, now) {
        return Some(AutoWrite::Escalate(reason));
    }
    let (_, due) = policy.next_step(v, since)?;
    if now <= due {
        return None;
    }
    let days = policy.auto.supervise_after_days;
    let supervised = v.records_on(&v.tip, crate::report::Record::Supervise).next().is_some();
    if days > 0 && !supervised {
        let day_minutes = match policy.calendar_for(v.urgency) {
            Some(c) => c.window().map_or(24 * 60, |(start, end)| ((end - start) / MINUTE) as u32),
            None => 24 * 60,
        };
        if now > policy.after(v.urgency, due, days * day_minutes) {
            return Some(AutoWrite::Supervise(format!(
                "超过时限 {days} 个工作日仍未办结，系统黄牌督办，请说明进展"
            )));
        }
    }
    (policy.auto.remind_overdue && !v.reminded())
        .then(|| AutoWrite::Remind("已超过办理时限，系统催办".into()))
}

impl Default for AutoRules {
    fn default() -> Self {
        AutoRules {
            critical_to_town: true,
            unaccepted_to_county: false,
            remind_overdue: true,
            supervise_after_days: default_supervise_after_days(),
        }
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
            let due = policy.deadline(Status::Escalated, urgency, status_since)?;
            (now > due).then(|| format!("auto-escalated: not accepted at the town within {limit} minutes"))
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
            sign: default_sign(),
            review: default_review(),
            close: StepLimits { low: 5 * 24 * h, normal: 3 * 24 * h, high: 2 * 24 * h, critical: 24 * h },
            auto: AutoRules::default(),
            closed_loop: ClosedLoop::default(),
            calendar: None,
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
            "sign" => &self.sign,
            "review" => &self.review,
            "close" => &self.close,
            _ => return None,
        };
        Some(limits.minutes(urgency))
    }

    /// The step report `v` waits for and when it is due, its step having started at `since` (the
    /// server's receive time of its last applied transition): a grid's own settlement waits for
    /// the town's review (审核); an approved extension (延期) moves a live order's deadline.
    pub fn next_step(&self, v: &crate::report::ReportView, since: i64) -> Option<(&'static str, i64)> {
        if v.awaits_review() {
            return Some(("review", self.after(v.urgency, since, self.limit_minutes("review", v.urgency)?)));
        }
        let step = pending_step(v.status)?;
        let due = self.deadline(v.status, v.urgency, since)?.max(v.extended_until().unwrap_or(i64::MIN));
        Some((step, due))
    }

    /// The calendar the clock of an item at `urgency` runs on, if any.
    fn calendar_for(&self, urgency: Urgency) -> Option<&Calendar> {
        self.calendar.as_ref().filter(|c| !(urgency == Urgency::Critical && c.critical_around_the_clock))
    }

    /// `minutes` of the limit clock after `since`: working time under a calendar, else wall time.
    pub fn after(&self, urgency: Urgency, since: i64, minutes: u32) -> i64 {
        match self.calendar_for(urgency) {
            Some(c) => c.add(since, minutes),
            None => since + i64::from(minutes) * MINUTE,
        }
    }

    /// Deadline (ms) of the step waiting in `status`, which started at `since` (ms).
    pub fn deadline(&self, status: Status, urgency: Urgency, since: i64) -> Option<i64> {
        let minutes = self.limit_minutes(pending_step(status)?, urgency)?;
        Some(self.after(urgency, since, minutes))
    }

    /// The light of a step that started at `since` and is due at `due`, at `now`, counting the
    /// limit clock's time (working time under a calendar).
    pub fn light(&self, urgency: Urgency, since: i64, due: i64, now: i64) -> Light {
        match self.calendar_for(urgency) {
            Some(c) => light(0, c.between(since, due), c.between(since, now)),
            None => light(since, due, now),
        }
    }

    /// Parses a policy file.
    pub fn from_toml(text: &str) -> Result<Policy, String> {
        let p: Policy = toml::from_str(text).map_err(|e| e.to_string())?;
        if let Some(c) = &p.calendar {
            c.window()?;
        }
        Ok(p)
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

    fn china_office_hours() -> Policy {
        Policy {
            calendar: Some(Calendar {
                utc_offset_minutes: 480,
                start: "08:30".into(),
                end: "17:30".into(),
                workdays: vec![1, 2, 3, 4, 5],
                critical_around_the_clock: true,
                holidays: vec![],
                makeup_workdays: vec![],
            }),
            ..Policy::default()
        }
    }

    /// Issue 12 item 2: the 2026 National Day holiday (Oct 1–7) and its make-up workdays (Sunday
    /// Sep 20, Saturday Oct 10), from the shipped year file.
    #[test]
    fn the_2026_national_day_holiday_and_its_make_up_saturday() {
        let mut p = china_office_hours();
        let year = HolidayYear::from_toml(include_str!("../../../docs/calendar-2026.toml")).unwrap();
        assert_eq!(year.year, 2026);
        p.calendar.as_mut().unwrap().add_year(&year);
        let c = p.calendar.as_ref().unwrap();
        c.window().unwrap();
        let at = |date: &str, hh: i64, mm: i64| {
            crate::localtime::day_start(date, 480 * MINUTE).unwrap() + (hh * 60 + mm) * MINUTE
        };
        // Escalated Wednesday Sep 30 at 17:00: 30 working minutes that day; Oct 1–7 are holidays,
        // Thursday Oct 8 is the next working day: due at 09:00 (normal, 60 working minutes).
        assert_eq!(
            p.deadline(Status::Escalated, Urgency::Normal, at("2026-09-30", 17, 0)),
            Some(at("2026-10-08", 9, 0))
        );
        // Friday Oct 9 at 17:00: Saturday Oct 10 is a make-up workday, so due Saturday 09:00, not Monday.
        assert_eq!(
            p.deadline(Status::Escalated, Urgency::Normal, at("2026-10-09", 17, 0)),
            Some(at("2026-10-10", 9, 0))
        );
        // Sunday Sep 20 works too; Saturday Sep 19 does not.
        assert_eq!(c.between(at("2026-09-19", 0, 0), at("2026-09-20", 0, 0)), 0);
        assert_eq!(c.between(at("2026-09-20", 0, 0), at("2026-09-21", 0, 0)), 9 * 60 * MINUTE);
        // The whole holiday counts no working time; critical items keep the wall clock.
        assert_eq!(c.between(at("2026-10-01", 0, 0), at("2026-10-08", 0, 0)), 0);
        assert_eq!(
            p.deadline(Status::Escalated, Urgency::Critical, at("2026-10-02", 12, 0)),
            Some(at("2026-10-02", 12, 15))
        );
        // Bad year files are refused.
        assert!(
            HolidayYear::from_toml("year = 2026\nholidays = [\"2026-02-30\"]\nmakeup_workdays = []").is_err()
        );
        assert!(
            HolidayYear::from_toml("year = 2026\nholidays = [\"2025-10-01\"]\nmakeup_workdays = []").is_err()
        );
    }

    #[test]
    fn working_hours_carry_a_friday_evening_escalation_into_monday() {
        let p = china_office_hours();
        let friday_1700 = 1_795_770_000_000; // 2026-11-27 17:00 +08:00, a Friday
        let monday_0900 = 1_796_000_400_000; // 2026-11-30 09:00 +08:00
        let monday_0850 = 1_795_999_800_000;
        // 30 working minutes on Friday, 30 on Monday from 08:30.
        assert_eq!(p.deadline(Status::Escalated, Urgency::Normal, friday_1700), Some(monday_0900));
        // Monday 08:50: 50 of the 60 working minutes used — yellow, though 64 wall hours have passed.
        assert_eq!(p.light(Urgency::Normal, friday_1700, monday_0900, monday_0850), Light::Yellow);
        assert_eq!(
            p.light(Urgency::Normal, friday_1700, monday_0900, friday_1700 + 10 * MINUTE),
            Light::Green
        );
        assert_eq!(p.light(Urgency::Normal, friday_1700, monday_0900, monday_0900 + MINUTE), Light::Red);
        // Critical runs around the clock: 15 wall minutes.
        assert_eq!(
            p.deadline(Status::Escalated, Urgency::Critical, friday_1700),
            Some(friday_1700 + 15 * MINUTE)
        );
        // The calendar counts working time between two instants.
        let c = p.calendar.as_ref().unwrap();
        assert_eq!(c.between(friday_1700, monday_0900), 60 * MINUTE);
        assert_eq!(c.add(monday_0900, 0), monday_0900);
        // Policy files with a calendar round-trip; broken ones are refused.
        let text = toml::to_string(&p).unwrap();
        assert_eq!(Policy::from_toml(&text).unwrap(), p);
        let broken = text.replace("17:30", "07:00");
        assert!(Policy::from_toml(&broken).is_err());
    }

    #[test]
    fn auto_escalation_rules() {
        use crate::lifecycle::Level;
        let p = Policy::default();
        assert!(!p.auto.unaccepted_to_county, "off unless the county chooses it");
        let r = AutoRules { unaccepted_to_county: true, ..AutoRules::default() };
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
        let off = AutoRules { critical_to_town: false, ..AutoRules::default() };
        assert!(auto_escalation(&off, &p, Status::Open, Level::Grid, Urgency::Critical, 0, 0).is_none());
    }
}
