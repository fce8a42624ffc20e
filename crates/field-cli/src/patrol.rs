//! `field patrol …`: a patrol's check-ins, visits, narrative and track, recorded offline. Track
//! points are buffered locally and packed into compact chunks, so a day's track is a few changes.

use anyhow::{Context, Result, anyhow, bail};
use clap::Subcommand;
use gridsync_core::doc::DocKind;
use gridsync_core::patrol::{CheckIn, PatrolEdit, PatrolView, TrackPoint, edit_patrol, start_patrol};
use rusqlite::params;

use crate::home::{Home, Profile, record_local, save_profile_in};
use crate::report::short;
use crate::{author, lang, now_ms, show, sync, tr};
use gridsync_core::org::Role;
use gridsync_core::validate;

#[derive(Subcommand)]
pub enum PatrolCommand {
    /// Start a patrol; later patrol commands act on it until it ends.
    Start {
        /// Someone patrolling with you (repeat for several).
        #[arg(long)]
        companion: Vec<String>,
        /// The grid (needed only when you cover several).
        #[arg(long)]
        grid: Option<String>,
    },
    /// Check in at a place.
    Checkin {
        /// The place, in words.
        #[arg(long)]
        place: String,
        /// Latitude (with --lon).
        #[arg(long, allow_negative_numbers = true)]
        lat: Option<f64>,
        /// Longitude (with --lat).
        #[arg(long, allow_negative_numbers = true)]
        lon: Option<f64>,
    },
    /// Record one track point.
    Track {
        /// Latitude, decimal degrees.
        #[arg(long, allow_negative_numbers = true)]
        lat: f64,
        /// Longitude, decimal degrees.
        #[arg(long, allow_negative_numbers = true)]
        lon: f64,
    },
    /// Import a track from a GPX file or a CSV of lat,lon[,time]; points already recorded are skipped.
    Import {
        /// The GPX or CSV file.
        file: std::path::PathBuf,
    },
    /// Record a household visit (走访).
    Visit {
        /// The household visited.
        #[arg(long)]
        household: String,
    },
    /// Add to the patrol's narrative.
    Note {
        /// The text to add.
        text: String,
    },
    /// Link a report found on this patrol (linking it again changes nothing).
    Finding {
        /// The report's id (or part of it).
        report: String,
    },
    /// End the patrol.
    End,
    /// List patrols on this device, newest first.
    List {
        #[command(flatten)]
        paging: crate::show::Paging,
        /// Print JSON (schemas/patrol-list.schema.json).
        #[arg(long)]
        json: bool,
    },
    /// Show a patrol (the current one by default).
    Show {
        /// The patrol's id (or part of it).
        id: Option<String>,
        /// Print JSON (schemas/patrol-view.schema.json).
        #[arg(long)]
        json: bool,
    },
}

fn active(home: &Home) -> Result<String> {
    home.profile()?.active_patrol.ok_or_else(|| {
        anyhow!(tr!(
            "没有进行中的巡查；先开始一次：field patrol start",
            "no patrol is under way; start one with: field patrol start"
        ))
    })
}

fn edit(home: &mut Home, id: &str, e: PatrolEdit) -> Result<()> {
    home.edit(id, |d, profile| {
        edit_patrol(d, &author(profile), &e).map_err(|e| anyhow!("{e}"))?;
        Ok(())
    })
}

pub fn run(home: &mut Home, c: PatrolCommand) -> Result<()> {
    home.profile()?;
    match c {
        PatrolCommand::Start { companion, grid } => {
            let id = home.write(|tx, profile| {
                crate::home::refuse_if_revoked(profile)?;
                if !matches!(profile.whoami.role, Role::GridWorker | Role::GridAssistant) {
                    bail!(
                        "{}",
                        tr!(
                            "巡查由网格员和协管员记录",
                            "patrols are recorded by grid workers and assistants"
                        )
                    );
                }
                if let Some(p) = &profile.active_patrol {
                    bail!(
                        "{}",
                        tr!(
                            "巡查 {} 还在进行中；先结束它：field patrol end",
                            "patrol {} is still under way; end it first with: field patrol end",
                            short(p)
                        )
                    );
                }
                for c in &companion {
                    crate::report::check_len(
                        "同行人姓名",
                        "a companion's name",
                        c,
                        validate::MAX_NAME_CHARS,
                    )?;
                }
                let grids = &profile.org.grids;
                let grid = match grid {
                    Some(g) => grids.iter().find(|x| x.id == g).ok_or_else(|| {
                        anyhow!(tr!("网格 {} 不归你管", "grid {} is not one of yours", lang::cell(&g, 30)))
                    })?,
                    None if grids.len() == 1 => &grids[0],
                    None => bail!(
                        "{}",
                        tr!(
                            "你负责多个网格；请用 --grid 指明",
                            "you cover several grids; say which with --grid"
                        )
                    ),
                };
                let id = uuid::Uuid::now_v7().to_string();
                let mut d = start_patrol(
                    profile.actor_id()?,
                    &author(profile),
                    uuid::Uuid::parse_str(&id)?,
                    &grid.id,
                    &grid.town,
                    &companion,
                )
                .map_err(|e| anyhow!("{e}"))?;
                record_local(tx, &id, DocKind::Patrol, &mut d, &[])?;
                save_profile_in(tx, &Profile { active_patrol: Some(id.clone()), ..profile.clone() })?;
                Ok(id)
            })?;
            println!("{id}");
            Ok(())
        }
        PatrolCommand::Checkin { place, lat, lon } => {
            crate::report::check_len("地点", "the place", &place, validate::MAX_ADDRESS_CHARS)?;
            match (lat, lon) {
                (Some(a), Some(o)) => crate::report::check_position(&home.profile()?.org, a, o)?,
                (None, None) => {}
                _ => bail!(
                    "{}",
                    tr!("--lat 和 --lon 要一起给，或都不给", "give both --lat and --lon, or neither")
                ),
            }
            let id = active(home)?;
            edit(home, &id, PatrolEdit::CheckIn(CheckIn { place, lat, lon, at: now_ms() }))?;
            println!("{}", tr!("已打卡（已保存）", "checked in (saved)"));
            Ok(())
        }
        PatrolCommand::Track { lat, lon } => {
            let profile = home.profile()?;
            crate::home::refuse_if_revoked(&profile)?;
            crate::report::check_position(&profile.org, lat, lon)?;
            let id = active(home)?;
            home.conn.execute(
                "INSERT INTO pending_track (patrol_id, lat, lon, at) VALUES (?1, ?2, ?3, ?4)",
                params![id, lat, lon, now_ms()],
            )?;
            let waiting: i64 = home.conn.query_row(
                "SELECT COUNT(*) FROM pending_track WHERE patrol_id = ?1",
                [&id],
                |r| r.get(0),
            )?;
            if waiting as usize >= gridsync_core::patrol::TRACK_CHUNK_POINTS {
                sync::flush_track(home)?;
            }
            println!("{}", tr!("轨迹点已保存", "track point saved"));
            Ok(())
        }
        PatrolCommand::Import { file } => {
            let id = active(home)?;
            let text = std::fs::read_to_string(&file)
                .with_context(|| tr!("读不到 {}", "cannot read {}", file.display()))?;
            let points = parse_track(&text, now_ms()).with_context(|| {
                tr!(
                    "{} 不是 GPX 文件，也不是 纬度,经度[,时间] 的 CSV",
                    "{} is not a GPX file or a CSV of lat,lon[,time]",
                    file.display()
                )
            })?;
            let org = home.profile()?.org;
            if let Some(p) = points.iter().find(|p| validate::check_location(&org, p.lat, p.lon).is_err()) {
                crate::report::check_position(&org, p.lat, p.lon)?;
            }
            // A point already recorded (packed or waiting) is not recorded twice: importing the
            // same file again adds nothing.
            let mut known: std::collections::HashSet<(u64, u64, i64)> =
                pending_points(home, &id)?.iter().map(point_key).collect();
            if let Some(v) = patrol_views(home)?.into_iter().find(|v| v.id == id) {
                known.extend(v.track.iter().map(point_key));
            }
            let total = points.len();
            let fresh: Vec<TrackPoint> = points.into_iter().filter(|p| known.insert(point_key(p))).collect();
            let n = fresh.len();
            if n > 0 {
                edit(home, &id, PatrolEdit::Track(fresh))?;
            }
            if n < total {
                println!(
                    "{}",
                    tr!(
                        "导入 {n} 个轨迹点（另有 {} 个之前已记录，跳过）",
                        "imported {n} track points ({} already recorded, skipped)",
                        total - n
                    )
                );
            } else {
                println!("{}", tr!("导入 {n} 个轨迹点", "imported {n} track points"));
            }
            Ok(())
        }
        PatrolCommand::Visit { household } => {
            crate::report::check_len("走访对象", "the household", &household, validate::MAX_ADDRESS_CHARS)?;
            let id = active(home)?;
            edit(home, &id, PatrolEdit::Visit(household))?;
            println!("{}", tr!("走访已记录（已保存）", "visit recorded (saved)"));
            Ok(())
        }
        PatrolCommand::Note { text } => {
            crate::report::check_len("巡查记述", "the note", &text, validate::MAX_NOTE_CHARS)?;
            let id = active(home)?;
            edit(home, &id, PatrolEdit::Narrative(text))?;
            println!("{}", tr!("已添加到巡查记述（已保存）", "added to the narrative (saved)"));
            Ok(())
        }
        PatrolCommand::Finding { report } => {
            let id = active(home)?;
            let report = home.resolve_id(DocKind::Report, &report)?;
            let linked = patrol_views(home)?
                .into_iter()
                .find(|v| v.id == id)
                .is_some_and(|v| v.findings.contains(&report));
            if linked {
                println!(
                    "{}",
                    tr!(
                        "事件 {} 已经关联过，没有变化",
                        "report {} is linked already; nothing changed",
                        short(&report)
                    )
                );
                return Ok(());
            }
            edit(home, &id, PatrolEdit::Finding(report))?;
            println!("{}", tr!("已关联发现的事件（已保存）", "finding linked (saved)"));
            Ok(())
        }
        PatrolCommand::End => {
            let id = active(home)?;
            sync::flush_track(home)?;
            home.edit(&id, |d, profile| {
                edit_patrol(d, &author(profile), &PatrolEdit::End).map_err(|e| anyhow!("{e}"))?;
                Ok(())
            })?;
            home.write(|tx, profile| {
                save_profile_in(tx, &Profile { active_patrol: None, ..profile.clone() })
            })?;
            println!(
                "{}",
                tr!(
                    "巡查 {} 已结束（已保存，下次 field sync 时发送）",
                    "patrol {} ended (saved; it is sent at the next 'field sync')",
                    short(&id)
                )
            );
            Ok(())
        }
        PatrolCommand::List { paging, json } => {
            let views = show::page(patrol_views(home)?, paging, json, 100);
            show::patrol_list(&views, json)
        }
        PatrolCommand::Show { id, json } => {
            let id = match id {
                Some(i) => home.resolve_id(DocKind::Patrol, &i)?,
                None => active(home)?,
            };
            let mut view = patrol_views(home)?
                .into_iter()
                .find(|v| v.id == id)
                .ok_or_else(|| anyhow!(tr!("巡查 {id} 不在本机", "patrol {id} is not on this device")))?;
            // Points recorded but not yet packed into the document.
            view.track.extend(pending_points(home, &id)?);
            show::patrol(&view, json)
        }
    }
}

/// Track points recorded for a patrol but not yet packed into its document.
fn pending_points(home: &Home, id: &str) -> Result<Vec<TrackPoint>> {
    let mut st =
        home.conn.prepare("SELECT lat, lon, at FROM pending_track WHERE patrol_id = ?1 ORDER BY id")?;
    let points = st
        .query_map([id], |r| Ok(TrackPoint { lat: r.get(0)?, lon: r.get(1)?, at: r.get(2)? }))?
        .collect::<Result<_, _>>()?;
    Ok(points)
}

/// What makes two track points the same point.
fn point_key(p: &TrackPoint) -> (u64, u64, i64) {
    (p.lat.to_bits(), p.lon.to_bits(), p.at)
}

fn patrol_views(home: &Home) -> Result<Vec<PatrolView>> {
    home.list(DocKind::Patrol)?.into_iter().map(|r| Ok(serde_json::from_str(&r.view)?)).collect()
}

/// Parses a GPX track (`<trkpt lat=".." lon="..">` with optional `<time>`) or CSV lines of
/// `lat,lon[,time]` where time is Unix seconds or RFC 3339. Points without a time get `default_at`.
pub fn parse_track(text: &str, default_at: i64) -> Result<Vec<TrackPoint>> {
    let mut out = Vec::new();
    if text.contains("<trkpt") || text.contains("<gpx") {
        for chunk in text.split("<trkpt").skip(1) {
            let attr = |name: &str| -> Option<f64> {
                let start = chunk.find(&format!("{name}=\""))? + name.len() + 2;
                let end = chunk[start..].find('"')? + start;
                chunk[start..end].trim().parse().ok()
            };
            let (Some(lat), Some(lon)) = (attr("lat"), attr("lon")) else { bail!("a trkpt without lat/lon") };
            let body = chunk.split("</trkpt>").next().unwrap_or("");
            let at = body
                .find("<time>")
                .and_then(|s| body[s + 6..].split("</time>").next())
                .and_then(parse_time)
                .unwrap_or(default_at);
            out.push(TrackPoint { lat, lon, at });
        }
    } else {
        // A header naming the columns may put lon before lat.
        let swapped = text.lines().next().is_some_and(|h| {
            let h = h.to_lowercase();
            matches!((h.find("lon"), h.find("lat")), (Some(o), Some(a)) if o < a)
        });
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let cols: Vec<&str> = line.split(',').map(str::trim).collect();
            let (lat_col, lon_col) = if swapped { (1, 0) } else { (0, 1) };
            let (Some(lat), Some(lon)) = (
                cols.get(lat_col).and_then(|c| c.parse::<f64>().ok()),
                cols.get(lon_col).and_then(|c| c.parse::<f64>().ok()),
            ) else {
                if n == 0 {
                    continue; // a header line
                }
                bail!("line {} is not lat,lon[,time]", n + 1);
            };
            let at = cols.get(2).and_then(|t| parse_time(t)).unwrap_or(default_at);
            out.push(TrackPoint { lat, lon, at });
        }
    }
    if out.is_empty() {
        bail!("no track points found");
    }
    for p in &out {
        if !((-90.0..=90.0).contains(&p.lat) && (-180.0..=180.0).contains(&p.lon)) {
            bail!("{},{} is not a position on Earth", p.lat, p.lon);
        }
    }
    Ok(out)
}

/// Unix seconds, or RFC 3339 in UTC (`2026-11-26T08:30:00Z`), to milliseconds.
pub fn parse_time(s: &str) -> Option<i64> {
    let s = s.trim();
    if let Ok(secs) = s.parse::<i64>() {
        return Some(secs * 1000);
    }
    let b = s.as_bytes();
    if b.len() < 19 || b[4] != b'-' || b[7] != b'-' || (b[10] != b'T' && b[10] != b' ') {
        return None;
    }
    let num = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
    let (y, m, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hh, mm, ss) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) || hh > 23 || mm > 59 || ss > 60 {
        return None;
    }
    let days = gridsync_core::localtime::days_from_civil(y, m, d);
    Some(((days * 24 + hh) * 60 + mm) * 60_000 + ss * 1000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gpx_and_csv_tracks_parse() {
        let gpx = r#"<gpx><trk><trkseg>
            <trkpt lat="30.5" lon="114.25"><time>2026-11-26T08:30:00Z</time></trkpt>
            <trkpt lon="114.26" lat="30.51"></trkpt>
        </trkseg></trk></gpx>"#;
        let p = parse_track(gpx, 7).unwrap();
        assert_eq!(p.len(), 2);
        assert_eq!(p[0].at, 1_795_681_800_000);
        assert_eq!((p[1].lat, p[1].lon, p[1].at), (30.51, 114.26, 7));
        let csv = "lat,lon,time\n30.5,114.25,1795681800\n30.6,114.3\n";
        let p = parse_track(csv, 9).unwrap();
        assert_eq!(p.len(), 2);
        assert_eq!(p[0].at, 1_795_681_800_000);
        assert_eq!(p[1].at, 9);
        assert!(parse_track("30.5,114\nnot,a,point\n", 0).is_err());
        let p = parse_track("lon,lat\n114.25,30.5\n", 0).unwrap();
        assert_eq!((p[0].lat, p[0].lon), (30.5, 114.25));
        assert!(parse_track("", 0).is_err());
        assert!(parse_track("95,10\n", 0).is_err());
    }
}
