//! The language and clock of human output: Chinese by default (English with `--lang en` or an
//! English locale), every time in the organisation's local time, and the domain's words for the
//! internal identifiers (statuses, levels, actions, roles, merge rules, refusal codes).

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};

use gridsync_core::lifecycle::{Action, Level, Status};
use gridsync_core::merge::Rule;
use gridsync_core::org::Role;
use gridsync_core::report::Urgency;

static ENGLISH: AtomicBool = AtomicBool::new(false);
/// The organisation's offset from UTC; Beijing time until a profile says otherwise.
static OFFSET_MS: AtomicI64 = AtomicI64::new(8 * 3_600_000);

/// Picks the language: `--lang`, else `GRIDSYNC_LANG`, else `LC_ALL` / `LC_MESSAGES` / `LANG`
/// (an `en…` locale means English); Chinese otherwise.
pub fn choose(flag: Option<&str>) -> Result<(), String> {
    let from_env = || {
        ["GRIDSYNC_LANG", "LC_ALL", "LC_MESSAGES", "LANG"]
            .iter()
            .filter_map(|k| std::env::var(k).ok())
            .find(|v| !v.is_empty())
    };
    let english = match flag.map(str::to_string).or_else(from_env) {
        Some(v) => {
            let v = v.to_lowercase();
            if flag.is_some() && !(v.starts_with("en") || v.starts_with("zh")) {
                return Err(format!(
                    "不支持的语言（unsupported language）{v:?}: 请用 zh 或 en (use zh or en)"
                ));
            }
            v.starts_with("en")
        }
        None => false,
    };
    ENGLISH.store(english, Ordering::Relaxed);
    Ok(())
}

/// Is human output in English?
pub fn en() -> bool {
    ENGLISH.load(Ordering::Relaxed)
}

/// Sets the organisation's offset from UTC for every time shown.
pub fn set_utc_offset_ms(ms: i64) {
    OFFSET_MS.store(ms, Ordering::Relaxed);
}

pub fn utc_offset_ms() -> i64 {
    OFFSET_MS.load(Ordering::Relaxed)
}

/// A human message in the chosen language: `tr!("中文 {x}", "English {x}")`, `format!` syntax,
/// the same arguments for both.
#[macro_export]
macro_rules! tr {
    ($zh:literal, $en:literal $(,)?) => {
        if $crate::lang::en() { format!($en) } else { format!($zh) }
    };
    ($zh:literal, $en:literal, $($arg:tt)*) => {
        if $crate::lang::en() { format!($en, $($arg)*) } else { format!($zh, $($arg)*) }
    };
}

/// One of two words, by language.
pub fn pick(zh: &'static str, en_word: &'static str) -> &'static str {
    if en() { en_word } else { zh }
}

/// A time a person reads: the organisation's local time, to the minute, no zone letter.
pub fn when(ms: i64) -> String {
    gridsync_core::localtime::minute(ms, utc_offset_ms())
}

/// Local midnight starting the day `YYYY-MM-DD`, in ms since the epoch.
pub fn local_day_start(s: &str) -> Option<i64> {
    gridsync_core::localtime::day_start(s, utc_offset_ms())
}

pub fn status(s: Status) -> &'static str {
    match s {
        Status::Open => pick("待处置", "open"),
        Status::Escalated => pick("已上报", "escalated"),
        Status::Accepted => pick("已受理", "accepted"),
        Status::Dispatched => pick("已派遣", "dispatched"),
        Status::Resolved => pick("已处置", "resolved"),
        Status::Closed => pick("已结案", "closed"),
        Status::Cancelled => pick("已撤销", "cancelled"),
    }
}

pub fn level(l: Level) -> &'static str {
    match l {
        Level::Grid => pick("网格", "grid"),
        Level::Town => pick("镇（街道）", "town"),
        Level::County => pick("县", "county"),
    }
}

pub fn action(a: Action) -> &'static str {
    match a {
        Action::SelfResolve => pick("自办自结", "settled on the spot"),
        Action::Escalate => pick("上报", "escalated"),
        Action::Cancel => pick("撤销", "cancelled"),
        Action::Accept => pick("受理", "accepted"),
        Action::Reject => pick("不予受理", "refused"),
        Action::Dispatch => pick("派遣", "dispatched"),
        Action::HandBack => pick("退办", "handed back"),
        Action::Resolve => pick("处置", "resolved"),
        Action::Rework => pick("返工", "sent back for rework"),
        Action::Close => pick("结案", "closed"),
        Action::Reopen => pick("重新办理", "reopened"),
        Action::TakeOver => pick("提级办理", "taken over by the county"),
    }
}

/// The step a queue item waits for (`policy::pending_step`'s names).
pub fn step(s: &str) -> String {
    let word = match s {
        "accept" => pick("待受理", "to accept"),
        "dispatch" => pick("待派遣", "to dispatch"),
        "resolve" => pick("待处置", "to resolve"),
        "close" => pick("待结案", "to close"),
        "review" => pick("待审核", "to review"),
        other => return other.replace('_', " "),
    };
    word.to_string()
}

pub fn urgency(u: Urgency) -> &'static str {
    match u {
        Urgency::Low => pick("低", "low"),
        Urgency::Normal => pick("一般", "normal"),
        Urgency::High => pick("急", "high"),
        Urgency::Critical => pick("紧急", "critical"),
    }
}

pub fn role(r: Role) -> &'static str {
    match r {
        Role::GridWorker => pick("网格员", "grid worker"),
        Role::GridAssistant => pick("网格协管员", "grid assistant"),
        Role::TownOperator => pick("镇（街道）综治中心", "town operator"),
        Role::CountyOperator => pick("县综治中心", "county operator"),
        Role::Admin => pick("系统管理员", "administrator"),
        Role::System => pick("系统", "the system"),
        Role::UnitHandler => pick("承办单位", "handling unit"),
    }
}

/// What a close still lacks, in words.
pub fn close_gap(g: gridsync_core::validate::CloseGap) -> &'static str {
    use gridsync_core::validate::CloseGap;
    match g {
        CloseGap::FailedCheck => pick("网格员核查未通过，需先返工", g.describe()),
        CloseGap::Check => pick("网格员核查（field report verify）或县级免核查", g.describe()),
        CloseGap::Visit => pick("回访（field queue visit）", g.describe()),
        CloseGap::Explanation => pick("回访不满意时的结案说明（--note）", g.describe()),
    }
}

pub fn record(r: gridsync_core::report::Record) -> &'static str {
    use gridsync_core::report::Record;
    match r {
        Record::Sign => pick("签收", "sign"),
        Record::Reply => pick("办理反馈", "reply"),
        Record::Verify => pick("核查", "check"),
        Record::Visit => pick("回访", "return visit"),
        Record::Extend => pick("延期申请", "extension request"),
        Record::Extension => pick("延期审批", "extension decision"),
        Record::Review => pick("审核", "review"),
        Record::Waive => pick("免核查", "check waiver"),
        Record::Supervise => pick("督办", "supervision order"),
        Record::Answer => pick("督办回复", "answer to supervision"),
        Record::Remind => pick("催办", "reminder"),
    }
}

pub fn category(c: gridsync_core::report::Category) -> &'static str {
    if en() { c.label_en() } else { c.label_zh() }
}

/// A merge rule, explained in words.
pub fn rule(r: Rule) -> &'static str {
    match r {
        Rule::LwwAuthority => pick(
            "同时修改时，以职级较高者为准，职级相同取后写的",
            "when edits cross, the higher role wins, then the later write",
        ),
        Rule::UrgencyMax => {
            pick("同时修改紧急程度时，取最紧急的", "when urgency edits cross, the most urgent wins")
        }
        Rule::TransitionPrecedence => pick(
            "同时办理时，按办理环节的先后规则取一个，其余记录在案",
            "when steps cross, the lifecycle's precedence picks one; the others stay on record",
        ),
    }
}

/// What a refusal code means, in words (the server's own message is English and may be
/// technical; this is what a worker reads).
pub fn refusal(code: &str) -> Option<&'static str> {
    Some(match code {
        "out_of_scope" => pick("这份文档不在你的管辖范围内", "the document is outside your scope"),
        "unknown_grid" => pick("网格不在组织架构中", "the grid is not in the organisation"),
        "wrong_town" => pick("网格与所属镇（街道）不符", "the grid does not belong to that town"),
        "immutable_field" => pick("该项在创建后不能修改", "that field is fixed once the document is created"),
        "role_cannot" => pick("你的角色不能做这项操作", "your role cannot do that"),
        "not_your_name" => pick("只能以你本人的名义记录", "it must be written in your own name"),
        "history_rewritten" => {
            pick("已有的记录不能修改或删除", "existing entries cannot be changed or removed")
        }
        "transition_not_allowed" => {
            pick("当前状态下不能办理这一步", "that step is not allowed in the report's current state")
        }
        "transition_out_of_order" | "transition_not_from_latest" => pick(
            "别人已先办理了这份事件，你的操作基于旧的状态",
            "someone acted on the report first; your step was based on an older state",
        ),
        "no_department" => pick("派遣时必须写明承办部门", "a dispatch must name the department"),
        "unknown_unit" => {
            pick("派遣的承办单位不在组织名单中", "the dispatch names a unit the organisation does not have")
        }
        "unit_out_of_reach" => pick(
            "派遣的承办单位不服务这份事件所在的镇（街道）",
            "the dispatch names a unit that does not serve this report's town",
        ),
        "not_your_order" => pick(
            "这份事件现在不是派给你单位办理的（没派给你，或已办结、已退回）",
            "this report's live order is not your unit's (never sent to you, or it has ended)",
        ),
        "reopen_not_allowed" => pick(
            "重新办理要写明理由，并且只能在结案后规定天数内（默认 30 天）",
            "a reopen needs the reason and comes within the county's window after the close (30 days by default)",
        ),
        "close_requirements_unmet" => pick(
            "结案条件未满足：按本县规定需要网格员核查通过和/或完成回访（回访不满意时要写明结案说明）",
            "closing needs what the county's policy asks: the grid's passing check and/or a return visit (an explanation after an unsatisfied visit)",
        ),
        "parties_in_report" => pick(
            "当事人信息要记在事件的当事人记录里，不能写进事件正文；请升级 field",
            "parties go in the report's parties document, not in the report; update field",
        ),
        "reason_required" => pick("这一步要写明理由", "this step needs its reason"),
        "record_not_allowed" => pick("这一步现在不能由你记录", "you cannot record this step now"),
        "duplicate_unit" => pick("同一个承办单位写了两次", "the dispatch names the same unit twice"),
        "too_many" => pick("这份事件的记录条数已达上限", "the report holds as many entries as it may"),
        "too_long" => pick("内容太长，超过了字数上限", "the text is longer than allowed"),
        "bad_contact" => pick("联系电话格式不对", "the contact number is not a valid phone number"),
        "outside_county" => pick("位置不在本县范围内", "the position is outside the county"),
        "implausible_time" => pick(
            "设备时间比服务器快了一天以上；请校正手机的日期和时间后重新记录",
            "the device's clock is more than a day ahead of the server's; set the date and time, then record it again",
        ),
        "too_large" => pick(
            "这次修改太大（超过 256 KB），请分成几次较小的修改",
            "the change is too large; make it as several smaller edits",
        ),
        "quota_exceeded" => pick(
            "今天新建的文档已达上限，请明天再同步",
            "today's limit of new documents is reached; sync again tomorrow",
        ),
        "document_unreadable" => pick(
            "服务器暂时读不到这份文档，下次同步再试",
            "the server cannot read this document now; the next sync tries again",
        ),
        "claimed" => pick("另一位工作人员正在办理（已认领）", "another operator holds a claim on it"),
        "report_finished" => {
            pick("事件已办结，只能追加备注", "the report is finished; only notes can be added")
        }
        "malformed" => pick("数据格式不正确", "the document's layout is invalid"),
        "depends_on_refused" => pick(
            "这一修改建立在被拒绝的修改之上，一并作废",
            "it was built on a refused edit and was set aside too",
        ),
        "removed" => pick(
            "服务器拒收，已从本机移除（内容保留在这里）",
            "refused by the server and removed from this device",
        ),
        "revoked" => pick("账号已被管理员停用", "the account was revoked by an administrator"),
        _ => return None,
    })
}

/// A refusal for a person: the words for its code, then the server's details in English only.
pub fn refusal_text(code: &str, message: &str) -> String {
    match refusal(code) {
        Some(words) if en() => format!("{words}: {message}"),
        Some(words) => words.to_string(),
        None => message.to_string(),
    }
}

/// Removes control characters (terminal escapes) from text someone else wrote.
pub fn clean(s: &str) -> String {
    s.chars().map(|c| if c.is_control() && c != '\n' { '�' } else { c }).collect()
}

/// Shortens a table cell to `max` characters, marking the cut.
pub fn cell(s: &str, max: usize) -> String {
    let s = clean(s).replace('\n', " ");
    if s.chars().count() <= max {
        return s;
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_days_and_times_use_the_offset() {
        set_utc_offset_ms(8 * 3_600_000);
        // 2026-11-26 00:00 in Beijing is 2026-11-25 16:00 UTC.
        let start = local_day_start("2026-11-26").unwrap();
        assert_eq!(start, 1_795_651_200_000 - 8 * 3_600_000);
        assert_eq!(when(start), "2026-11-26 00:00");
        assert_eq!(when(start - 60_000), "2026-11-25 23:59");
        assert_eq!(local_day_start("2026-02-31"), None);
        assert_eq!(local_day_start("26-1-1"), None);
        assert!(!when(start).contains('Z'));
    }

    #[test]
    fn cells_are_cut_and_cleaned() {
        assert_eq!(cell("abcdef", 4), "abc…");
        assert_eq!(cell("\u{1b}[31mred", 20), "�[31mred");
        assert_eq!(cell("短", 4), "短");
    }
}
