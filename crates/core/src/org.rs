//! The organisation: county → towns → villages → grids, the roles people hold and their scopes.

use std::collections::{BTreeMap, BTreeSet};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// What kind of place a grid covers (农村网格 / 城市社区网格 / 专属网格).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum GridKind {
    Rural,
    Urban,
    Specialised,
}

/// A town (镇) or a sub-district (街道).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Town {
    pub id: String,
    pub name: String,
}

/// A village (村) or a community (社区).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Village {
    pub id: String,
    pub name: String,
    pub town: String,
}

/// A grid (网格): the smallest unit, staffed by one full-time grid worker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Grid {
    pub id: String,
    pub name: String,
    pub village: String,
    pub town: String,
    pub kind: GridKind,
}

/// The tier a handling unit works at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum UnitLevel {
    County,
    Town,
}

/// What a handling unit is: 县直部门 (a county department), 派驻机构 (a county body stationed in a
/// town, e.g. 派出所, 司法所), 站所 (a town station, e.g. 卫生院), 公共企业 (a public utility).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum UnitKind {
    CountyDepartment,
    Stationed,
    Station,
    PublicEnterprise,
}

impl UnitKind {
    pub fn label_zh(self) -> &'static str {
        match self {
            UnitKind::CountyDepartment => "县直部门",
            UnitKind::Stationed => "派驻机构",
            UnitKind::Station => "站所",
            UnitKind::PublicEnterprise => "公共企业",
        }
    }
}

/// A handling unit (承办单位) the hub dispatches to (乡呼县应): a county department, or a unit
/// working in one town.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Unit {
    pub id: String,
    pub name: String,
    pub level: UnitLevel,
    pub kind: UnitKind,
    /// The town a town-level unit works in; absent for county-level units.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub town: Option<String>,
}

/// The org file: one county and everything below it. Shape: `schemas/org.schema.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Org {
    pub county: County,
    pub towns: Vec<Town>,
    pub villages: Vec<Village>,
    pub grids: Vec<Grid>,
    /// Handling units; an org file without them dispatches by free-text department only.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub units: Vec<Unit>,
}

/// The county (县) at the top of the organisation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct County {
    pub id: String,
    pub name: String,
    /// IANA time zone name, for people reading times (default `Asia/Shanghai`). Informational:
    /// computations use `utc_offset_minutes`.
    #[serde(default = "default_timezone")]
    pub timezone: String,
    /// The county's fixed offset from UTC in minutes (default 480, UTC+8). China has no daylight
    /// saving time, so a fixed offset is exact; it is what day boundaries and displayed times use.
    #[serde(default = "default_utc_offset_minutes")]
    pub utc_offset_minutes: i32,
    /// The county's bounding box: positions outside it are refused. No box: any position on Earth.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bbox: Option<BBox>,
}

/// The default time zone of a county.
pub const DEFAULT_TIMEZONE: &str = "Asia/Shanghai";
/// The default UTC offset of a county, in minutes (China Standard Time, UTC+8, no DST).
pub const DEFAULT_UTC_OFFSET_MINUTES: i32 = 480;

fn default_timezone() -> String {
    DEFAULT_TIMEZONE.to_string()
}

fn default_utc_offset_minutes() -> i32 {
    DEFAULT_UTC_OFFSET_MINUTES
}

/// A latitude/longitude box in degrees (WGS-84), edges included.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BBox {
    pub min_lat: f64,
    pub min_lon: f64,
    pub max_lat: f64,
    pub max_lon: f64,
}

impl BBox {
    /// Whether the point lies inside the box, edges included. Non-finite points never do.
    pub fn contains(&self, lat: f64, lon: f64) -> bool {
        lat.is_finite()
            && lon.is_finite()
            && (self.min_lat..=self.max_lat).contains(&lat)
            && (self.min_lon..=self.max_lon).contains(&lon)
    }

    /// Whether the box is well formed: finite, on Earth, min not above max.
    pub fn is_valid(&self) -> bool {
        [self.min_lat, self.max_lat, self.min_lon, self.max_lon].iter().all(|v| v.is_finite())
            && (-90.0..=90.0).contains(&self.min_lat)
            && (-90.0..=90.0).contains(&self.max_lat)
            && (-180.0..=180.0).contains(&self.min_lon)
            && (-180.0..=180.0).contains(&self.max_lon)
            && self.min_lat <= self.max_lat
            && self.min_lon <= self.max_lon
    }
}

/// Why an org file was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OrgError {
    #[error("the org file is not valid JSON: {0}")]
    Shape(String),
    #[error("the org file does not match schemas/org.schema.json: {0}")]
    Schema(String),
    #[error("id {0:?} is used twice")]
    DuplicateId(String),
    #[error("{what} {id:?} names {target:?}, which does not exist")]
    DanglingReference { what: &'static str, id: String, target: String },
    #[error("grid {grid:?} says town {said:?} but its village {village:?} is in town {actual:?}")]
    TownMismatch { grid: String, said: String, village: String, actual: String },
    #[error("an id must be 1 to 64 letters, digits, '-' or '_', not {0:?}")]
    BadId(String),
    #[error("the county's bbox must be finite, on Earth, with min_lat <= max_lat and min_lon <= max_lon")]
    BadBBox,
    #[error("the county's utc_offset_minutes must be between -720 and 840")]
    BadUtcOffset,
    #[error("unit {unit:?}: a town-level unit names its town, a county-level unit names none")]
    UnitTown { unit: String },
}

impl Org {
    /// Parses an org file, validates it against its JSON Schema (the committed
    /// `schemas/org.schema.json` is generated from this type), then checks ids and references.
    pub fn from_json(text: &str) -> Result<Org, OrgError> {
        let value: serde_json::Value =
            serde_json::from_str(text).map_err(|e| OrgError::Shape(e.to_string()))?;
        let schema =
            serde_json::to_value(schemars::schema_for!(Org)).map_err(|e| OrgError::Schema(e.to_string()))?;
        let validator = jsonschema::validator_for(&schema).map_err(|e| OrgError::Schema(e.to_string()))?;
        let problems: Vec<String> = validator
            .iter_errors(&value)
            .take(5)
            .map(|e| {
                format!(
                    "at {}: {e}",
                    if e.instance_path().as_str().is_empty() { "/" } else { e.instance_path().as_str() }
                )
            })
            .collect();
        if !problems.is_empty() {
            return Err(OrgError::Schema(problems.join("; ")));
        }
        let org: Org = serde_json::from_value(value).map_err(|e| OrgError::Shape(e.to_string()))?;
        org.check()?;
        Ok(org)
    }

    /// Checks ids are unique and well-formed, every reference resolves, and the county's offset
    /// and bounding box make sense.
    pub fn check(&self) -> Result<(), OrgError> {
        if self.county.bbox.is_some_and(|b| !b.is_valid()) {
            return Err(OrgError::BadBBox);
        }
        if !(-720..=840).contains(&self.county.utc_offset_minutes) {
            return Err(OrgError::BadUtcOffset);
        }
        let mut seen = BTreeSet::new();
        let ids = std::iter::once(&self.county.id)
            .chain(self.towns.iter().map(|t| &t.id))
            .chain(self.villages.iter().map(|v| &v.id))
            .chain(self.grids.iter().map(|g| &g.id))
            .chain(self.units.iter().map(|u| &u.id));
        for id in ids {
            if !valid_id(id) {
                return Err(OrgError::BadId(id.clone()));
            }
            if !seen.insert(id.as_str()) {
                return Err(OrgError::DuplicateId(id.clone()));
            }
        }
        let towns: BTreeSet<&str> = self.towns.iter().map(|t| t.id.as_str()).collect();
        let villages: BTreeMap<&str, &str> =
            self.villages.iter().map(|v| (v.id.as_str(), v.town.as_str())).collect();
        for v in &self.villages {
            if !towns.contains(v.town.as_str()) {
                return Err(OrgError::DanglingReference {
                    what: "village",
                    id: v.id.clone(),
                    target: v.town.clone(),
                });
            }
        }
        for g in &self.grids {
            let Some(&actual) = villages.get(g.village.as_str()) else {
                return Err(OrgError::DanglingReference {
                    what: "grid",
                    id: g.id.clone(),
                    target: g.village.clone(),
                });
            };
            if actual != g.town {
                return Err(OrgError::TownMismatch {
                    grid: g.id.clone(),
                    said: g.town.clone(),
                    village: g.village.clone(),
                    actual: actual.to_string(),
                });
            }
        }
        for u in &self.units {
            match (u.level, &u.town) {
                (UnitLevel::County, None) => {}
                (UnitLevel::Town, Some(t)) if towns.contains(t.as_str()) => {}
                (UnitLevel::Town, Some(t)) => {
                    return Err(OrgError::DanglingReference {
                        what: "unit",
                        id: u.id.clone(),
                        target: t.clone(),
                    });
                }
                (UnitLevel::Town, None) | (UnitLevel::County, Some(_)) => {
                    return Err(OrgError::UnitTown { unit: u.id.clone() });
                }
            }
        }
        Ok(())
    }

    pub fn unit(&self, id: &str) -> Option<&Unit> {
        self.units.iter().find(|u| u.id == id)
    }

    /// Whether a hub may dispatch a report of `town` to `unit`: county departments serve every
    /// town; a town-level unit only its own town.
    pub fn unit_serves(&self, unit: &Unit, town: &str) -> bool {
        match unit.level {
            UnitLevel::County => true,
            UnitLevel::Town => unit.town.as_deref() == Some(town),
        }
    }

    /// Finds the unit a person means for a report of `town`: its id, its full name, or its short
    /// name (派出所) among the units serving that town. `None` when nothing or several match.
    pub fn find_unit(&self, text: &str, town: &str) -> Option<&Unit> {
        let text = text.trim();
        if let Some(u) = self.unit(text) {
            return Some(u);
        }
        let serving: Vec<&Unit> = self.units.iter().filter(|u| self.unit_serves(u, town)).collect();
        let exact: Vec<&&Unit> = serving.iter().filter(|u| u.name == text).collect();
        if exact.len() == 1 {
            return Some(exact[0]);
        }
        let ending: Vec<&&Unit> = serving.iter().filter(|u| u.name.ends_with(text)).collect();
        (ending.len() == 1).then(|| *ending[0])
    }

    /// The county's offset from UTC in milliseconds (fixed: China has no daylight saving time).
    pub fn utc_offset_ms(&self) -> i64 {
        i64::from(self.county.utc_offset_minutes) * 60_000
    }

    /// Whether a position is inside the county's bounding box; `true` when the county has none.
    /// Non-finite positions are never inside a box.
    pub fn contains_point(&self, lat: f64, lon: f64) -> bool {
        self.county.bbox.is_none_or(|b| b.contains(lat, lon))
    }

    pub fn grid(&self, id: &str) -> Option<&Grid> {
        self.grids.iter().find(|g| g.id == id)
    }

    pub fn town(&self, id: &str) -> Option<&Town> {
        self.towns.iter().find(|t| t.id == id)
    }

    /// The town a grid belongs to.
    pub fn town_of(&self, grid: &str) -> Option<&str> {
        self.grid(grid).map(|g| g.town.as_str())
    }

    /// Checks that `scope` names places that exist and fit `role`.
    pub fn check_scope(&self, role: Role, scope: &Scope) -> Result<(), String> {
        match (role, scope) {
            (Role::GridWorker | Role::GridAssistant, Scope::Grids(grids)) => {
                if grids.is_empty() {
                    return Err("a grid worker needs at least one grid".into());
                }
                for g in grids {
                    if self.grid(g).is_none() {
                        return Err(format!("grid {g:?} does not exist in the org"));
                    }
                }
                Ok(())
            }
            (Role::TownOperator, Scope::Town(t)) => match self.town(t) {
                Some(_) => Ok(()),
                None => Err(format!("town {t:?} does not exist in the org")),
            },
            (Role::CountyOperator | Role::Admin | Role::System, Scope::County) => Ok(()),
            (Role::UnitHandler, Scope::Unit(u)) => match self.unit(u) {
                Some(_) => Ok(()),
                None => Err(format!("unit {u:?} does not exist in the org")),
            },
            (role, _) => Err(format!(
                "role {} needs a scope of {}",
                role.as_str(),
                match role {
                    Role::GridWorker | Role::GridAssistant => "grids",
                    Role::TownOperator => "one town",
                    Role::UnitHandler => "one handling unit",
                    _ => "the county",
                }
            )),
        }
    }

    /// Resolves a scope argument (`county`, a town id, or comma-separated grid ids) for a role.
    pub fn parse_scope(&self, role: Role, text: &str) -> Result<Scope, String> {
        let scope = match role {
            Role::GridWorker | Role::GridAssistant => {
                Scope::Grids(text.split(',').map(|s| s.trim().to_string()).collect())
            }
            Role::TownOperator => Scope::Town(text.trim().to_string()),
            Role::UnitHandler => Scope::Unit(text.trim().to_string()),
            _ if text.trim().is_empty() || text.trim().eq_ignore_ascii_case("county") => Scope::County,
            _ => {
                return Err(format!(
                    "the scope of a {} is the whole county: use --scope county",
                    role.as_str()
                ));
            }
        };
        self.check_scope(role, &scope)?;
        Ok(scope)
    }
}

fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// What a person does in the system; each role comes with a kind of scope.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// 专职网格员: the full-time worker of one or more grids.
    GridWorker,
    /// 网格协管员: a volunteer assistant of a grid.
    GridAssistant,
    /// Staff of a township hub (镇域治理运行管理中心).
    TownOperator,
    /// Staff of the county centre (县域治理运行管理中心).
    CountyOperator,
    /// Runs the system; sees everything.
    Admin,
    /// The server itself (auto-escalation).
    System,
    /// Staff of a handling unit (承办单位: a county department, a stationed unit, a station):
    /// sees the reports dispatched to the unit.
    UnitHandler,
}

impl Role {
    pub const ALL: [Role; 7] = [
        Role::GridWorker,
        Role::GridAssistant,
        Role::TownOperator,
        Role::CountyOperator,
        Role::Admin,
        Role::System,
        Role::UnitHandler,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::GridWorker => "grid_worker",
            Role::GridAssistant => "grid_assistant",
            Role::TownOperator => "town_operator",
            Role::CountyOperator => "county_operator",
            Role::Admin => "admin",
            Role::System => "system",
            Role::UnitHandler => "unit_handler",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == s)
    }

    /// Authority used as a merge tie-break: the hub's correction beats a concurrent field edit.
    pub fn authority(self) -> u8 {
        match self {
            Role::GridAssistant => 1,
            Role::GridWorker | Role::UnitHandler => 2,
            Role::TownOperator => 3,
            Role::CountyOperator => 4,
            Role::Admin => 5,
            Role::System => 6,
        }
    }

    pub fn is_operator(self) -> bool {
        matches!(self, Role::TownOperator | Role::CountyOperator | Role::Admin | Role::System)
    }
}

/// Where a person may read and write. On the wire always an object, one shape per field:
/// `{"grids": ["G…"]}`, `{"town": "T01"}` or `{"county": {}}` (the bare string `"county"` that
/// older servers wrote is still read).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "ScopeObject", try_from = "ScopeWire")]
pub enum Scope {
    /// Grid workers and assistants: their grids.
    Grids(Vec<String>),
    /// Town operators: every grid of one town.
    Town(String),
    /// County operators and admins: everything.
    County,
    /// Unit handlers: the reports dispatched to one handling unit.
    Unit(String),
}

/// A scope as written on the wire.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
enum ScopeObject {
    /// Grid workers and assistants: their grids.
    Grids(Vec<String>),
    /// Town operators: every grid of one town.
    Town(String),
    /// County operators and admins: everything.
    County {},
    /// Unit handlers: the reports dispatched to one handling unit.
    Unit(String),
}

/// What is read: the object, or the older bare `"county"`.
#[derive(Deserialize)]
#[serde(untagged)]
enum ScopeWire {
    Object(ScopeObject),
    Bare(String),
}

impl From<Scope> for ScopeObject {
    fn from(s: Scope) -> ScopeObject {
        match s {
            Scope::Grids(g) => ScopeObject::Grids(g),
            Scope::Town(t) => ScopeObject::Town(t),
            Scope::County => ScopeObject::County {},
            Scope::Unit(u) => ScopeObject::Unit(u),
        }
    }
}

impl TryFrom<ScopeWire> for Scope {
    type Error = String;
    fn try_from(w: ScopeWire) -> Result<Scope, String> {
        match w {
            ScopeWire::Object(ScopeObject::Grids(g)) => Ok(Scope::Grids(g)),
            ScopeWire::Object(ScopeObject::Town(t)) => Ok(Scope::Town(t)),
            ScopeWire::Object(ScopeObject::County {}) => Ok(Scope::County),
            ScopeWire::Object(ScopeObject::Unit(u)) => Ok(Scope::Unit(u)),
            ScopeWire::Bare(b) if b == "county" => Ok(Scope::County),
            ScopeWire::Bare(_) => {
                Err("a scope is {\"grids\": [...]}, {\"town\": ID} or {\"county\": {}}".into())
            }
        }
    }
}

impl JsonSchema for Scope {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Scope".into()
    }

    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        ScopeObject::json_schema(generator)
    }
}

impl Scope {
    /// Whether a document of `grid` in `town` is visible in this scope by place. A unit's scope
    /// covers no place: its documents are the ones dispatched to it (see [`Scope::unit`]).
    pub fn covers(&self, grid: &str, town: &str) -> bool {
        match self {
            Scope::Grids(grids) => grids.iter().any(|g| g == grid),
            Scope::Town(t) => t == town,
            Scope::County => true,
            Scope::Unit(_) => false,
        }
    }

    /// The handling unit of a unit handler's scope.
    pub fn unit(&self) -> Option<&str> {
        match self {
            Scope::Unit(u) => Some(u),
            _ => None,
        }
    }

    /// The short text form used on command lines and in tables.
    pub fn describe(&self) -> String {
        match self {
            Scope::Grids(g) => g.join(","),
            Scope::Town(t) => t.clone(),
            Scope::County => "county".into(),
            Scope::Unit(u) => u.clone(),
        }
    }
}

/// Who is acting: a user with a role and a scope.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Principal {
    pub user: String,
    pub role: Role,
    pub scope: Scope,
}

/// A small deterministic generator (splitmix64): the demo county depends only on its seed.
struct SeededRng(u64);

impl SeededRng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn pick<'a>(&mut self, items: &'a [&'a str]) -> &'a str {
        items[self.below(items.len())]
    }
}

const SYLLABLES: [&str; 48] = [
    "安", "宝", "长", "大", "东", "丰", "福", "高", "和", "河", "红", "华", "吉", "金", "康", "乐", "林",
    "龙", "茂", "南", "平", "浦", "清", "泉", "仁", "瑞", "山", "上", "石", "顺", "桃", "天", "田", "西",
    "祥", "新", "兴", "阳", "杨", "永", "玉", "园", "云", "泽", "中", "竹", "溪", "岭",
];

/// The survey county's shape: 8 towns, 507 villages, 942 grids (539 rural, 308 urban, 95 specialised).
pub const DEMO_TOWNS: usize = 8;
pub const DEMO_VILLAGES: usize = 507;
pub const DEMO_RURAL_GRIDS: usize = 539;
pub const DEMO_URBAN_GRIDS: usize = 308;
pub const DEMO_SPECIALISED_GRIDS: usize = 95;
/// Of the 507 villages, this many are urban communities (社区); the rest are villages (村).
const DEMO_COMMUNITIES: usize = 107;

/// The demo county's bounds: 0.6° × 0.6° (about 58 km × 67 km) in Hubei, around the positions the
/// tests, demos and benchmarks use (30.0–30.52 N, 114.0–114.31 E).
pub const DEMO_BBOX: BBox = BBox { min_lat: 29.95, min_lon: 113.95, max_lat: 30.55, max_lon: 114.55 };

/// Builds the demo county, deterministically from `seed`.
pub fn demo_county(seed: u64) -> Org {
    let mut rng = SeededRng(seed);
    let mut used = BTreeSet::new();
    let mut name = |rng: &mut SeededRng, suffix: &str| loop {
        let n = format!("{}{}{}", rng.pick(&SYLLABLES), rng.pick(&SYLLABLES), suffix);
        if used.insert(n.clone()) {
            return n;
        }
    };
    let towns: Vec<Town> = (0..DEMO_TOWNS)
        .map(|i| {
            let suffix = if i < 2 { "街道" } else { "镇" };
            Town { id: format!("T{:02}", i + 1), name: name(&mut rng, suffix) }
        })
        .collect();
    // Villages are dealt round-robin to towns; communities first, then villages.
    let mut villages = Vec::with_capacity(DEMO_VILLAGES);
    let mut per_town = [0usize; DEMO_TOWNS];
    for i in 0..DEMO_VILLAGES {
        let t = i % DEMO_TOWNS;
        per_town[t] += 1;
        let suffix = if i < DEMO_COMMUNITIES { "社区" } else { "村" };
        villages.push(Village {
            id: format!("{}-V{:03}", towns[t].id, per_town[t]),
            name: name(&mut rng, suffix),
            town: towns[t].id.clone(),
        });
    }
    let mut grids = Vec::with_capacity(942);
    let mut per_village = vec![0usize; DEMO_VILLAGES];
    // `label` None: numbered grid 第N网格; Some: a specialised grid's name.
    let mut add_grid = |grids: &mut Vec<Grid>, v: usize, kind: GridKind, label: Option<String>| {
        per_village[v] += 1;
        let label = label.unwrap_or_else(|| format!("第{}网格", per_village[v]));
        let village = &villages[v];
        grids.push(Grid {
            id: format!("{}-G{}", village.id, per_village[v]),
            name: format!("{}{}", village.name, label),
            village: village.id.clone(),
            town: village.town.clone(),
            kind,
        });
    };
    let rural: Vec<usize> = (DEMO_COMMUNITIES..DEMO_VILLAGES).collect();
    let urban: Vec<usize> = (0..DEMO_COMMUNITIES).collect();
    for k in 0..DEMO_RURAL_GRIDS {
        let v = if k < rural.len() { rural[k] } else { rural[rng.below(rural.len())] };
        add_grid(&mut grids, v, GridKind::Rural, None);
    }
    for k in 0..DEMO_URBAN_GRIDS {
        let v = if k < urban.len() { urban[k] } else { urban[rng.below(urban.len())] };
        add_grid(&mut grids, v, GridKind::Urban, None);
    }
    const PLACES: [&str; 5] = ["学校", "市场", "工业园", "医院", "景区"];
    for _ in 0..DEMO_SPECIALISED_GRIDS {
        let v = rng.below(DEMO_VILLAGES);
        let label = format!("{}专属网格", rng.pick(&PLACES));
        add_grid(&mut grids, v, GridKind::Specialised, Some(label));
    }
    let county_units = [
        ("GA", "公安局", UnitKind::CountyDepartment),
        ("ZF", "综合执法局", UnitKind::CountyDepartment),
        ("ZR", "自然资源局", UnitKind::CountyDepartment),
        ("ZJ", "住建局", UnitKind::CountyDepartment),
        ("HB", "生态环境分局", UnitKind::CountyDepartment),
        ("SJ", "市场监管局", UnitKind::CountyDepartment),
        ("WJ", "卫健局", UnitKind::CountyDepartment),
        ("MZ", "民政局", UnitKind::CountyDepartment),
        ("SF", "司法局", UnitKind::CountyDepartment),
        ("SL", "水利局", UnitKind::CountyDepartment),
        ("JT", "交通运输局", UnitKind::CountyDepartment),
        ("GD", "供电公司", UnitKind::PublicEnterprise),
    ];
    let town_units = [
        ("PCS", "派出所", UnitKind::Stationed),
        ("SFS", "司法所", UnitKind::Stationed),
        ("ZFZD", "综合执法中队", UnitKind::Stationed),
        ("GDS", "供电所", UnitKind::PublicEnterprise),
        ("WSY", "卫生院", UnitKind::Station),
    ];
    let mut units: Vec<Unit> = county_units
        .iter()
        .map(|(code, name, kind)| Unit {
            id: format!("C01-{code}"),
            name: format!("县{name}"),
            level: UnitLevel::County,
            kind: *kind,
            town: None,
        })
        .collect();
    for t in &towns {
        units.extend(town_units.iter().map(|(code, name, kind)| Unit {
            id: format!("{}-{code}", t.id),
            name: format!("{}{name}", t.name),
            level: UnitLevel::Town,
            kind: *kind,
            town: Some(t.id.clone()),
        }));
    }
    Org {
        county: County {
            id: "C01".into(),
            name: format!("{}县", name(&mut rng, "")),
            timezone: DEFAULT_TIMEZONE.into(),
            utc_offset_minutes: DEFAULT_UTC_OFFSET_MINUTES,
            bbox: Some(DEMO_BBOX),
        },
        towns,
        villages,
        grids,
        units,
    }
}

#[cfg(test)]
mod scope_wire_tests {
    use super::*;

    #[test]
    fn a_scope_is_always_an_object_and_the_old_bare_county_still_reads() {
        assert_eq!(serde_json::to_string(&Scope::County).unwrap(), r#"{"county":{}}"#);
        assert_eq!(serde_json::to_string(&Scope::Town("T01".into())).unwrap(), r#"{"town":"T01"}"#);
        for text in [r#""county""#, r#"{"county":{}}"#] {
            assert_eq!(serde_json::from_str::<Scope>(text).unwrap(), Scope::County);
        }
        let g: Scope = serde_json::from_str(r#"{"grids":["G1"]}"#).unwrap();
        assert_eq!(g, Scope::Grids(vec!["G1".into()]));
        assert!(serde_json::from_str::<Scope>(r#""town""#).is_err());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_demo_county_has_handling_units_and_units_are_checked() {
        let org = demo_county(7);
        assert_eq!(org.units.iter().filter(|u| u.level == UnitLevel::County).count(), 12);
        assert_eq!(org.units.len(), 12 + 5 * org.towns.len());
        let town = &org.towns[0].id;
        // A short name finds this town's unit, not another town's; a county name finds its department.
        assert_eq!(org.find_unit("派出所", town).unwrap().id, format!("{town}-PCS"));
        assert_eq!(org.find_unit("县公安局", town).unwrap().id, "C01-GA");
        assert_eq!(org.find_unit("公安局", town).unwrap().id, "C01-GA");
        assert!(org.find_unit("城管办", town).is_none());
        let other = org.unit(&format!("{}-PCS", org.towns[1].id)).unwrap();
        assert!(!org.unit_serves(other, town));
        assert!(org.unit_serves(org.unit("C01-GA").unwrap(), town));

        let mut bad = org.clone();
        bad.units[0].town = Some(town.clone());
        assert!(matches!(bad.check(), Err(OrgError::UnitTown { .. })));
        let mut bad = org.clone();
        let last = bad.units.len() - 1;
        bad.units[last].town = Some("T99".into());
        assert!(matches!(bad.check(), Err(OrgError::DanglingReference { what: "unit", .. })));
        let mut bad = org.clone();
        bad.units[1].id = bad.units[0].id.clone();
        assert!(matches!(bad.check(), Err(OrgError::DuplicateId(_))));
        // An org file without units still reads.
        let mut json = serde_json::to_value(&org).unwrap();
        json.as_object_mut().unwrap().remove("units");
        assert!(Org::from_json(&json.to_string()).unwrap().units.is_empty());
    }

    #[test]
    fn demo_county_has_the_surveys_shape() {
        let org = demo_county(7);
        org.check().unwrap();
        assert_eq!(org.towns.len(), 8);
        assert_eq!(org.villages.len(), 507);
        assert_eq!(org.grids.len(), 942);
        let count = |k| org.grids.iter().filter(|g| g.kind == k).count();
        assert_eq!(count(GridKind::Rural), 539);
        assert_eq!(count(GridKind::Urban), 308);
        assert_eq!(count(GridKind::Specialised), 95);
        // Every village has at least one grid.
        for v in &org.villages {
            assert!(org.grids.iter().any(|g| g.village == v.id), "{} has no grid", v.id);
        }
    }

    #[test]
    fn demo_county_is_deterministic_from_its_seed() {
        assert_eq!(demo_county(1), demo_county(1));
        assert_ne!(demo_county(1).towns, demo_county(2).towns);
    }

    #[test]
    fn org_file_round_trips_and_bad_files_are_refused() {
        let org = demo_county(3);
        let text = serde_json::to_string(&org).unwrap();
        assert_eq!(Org::from_json(&text).unwrap(), org);

        let mut broken = org.clone();
        broken.grids[0].village = "nowhere".into();
        let err = Org::from_json(&serde_json::to_string(&broken).unwrap()).unwrap_err();
        assert!(matches!(err, OrgError::DanglingReference { .. }), "{err}");

        let mut dup = org.clone();
        dup.grids[1].id = dup.grids[0].id.clone();
        assert!(matches!(dup.check(), Err(OrgError::DuplicateId(_))));

        let mut wrong_town = org;
        let other = wrong_town.towns.iter().find(|t| t.id != wrong_town.grids[0].town).unwrap();
        wrong_town.grids[0].town = other.id.clone();
        assert!(matches!(wrong_town.check(), Err(OrgError::TownMismatch { .. })));

        assert!(matches!(Org::from_json("{\"county\":1}"), Err(OrgError::Schema(_))));
        assert!(matches!(Org::from_json("{not json"), Err(OrgError::Shape(_))));
        let mut v = serde_json::to_value(demo_county(3)).unwrap();
        v["grids"][2]["kind"] = "farm".into();
        let err = Org::from_json(&v.to_string()).unwrap_err().to_string();
        assert!(err.contains("/grids/2/kind"), "the error points at the field: {err}");
    }

    #[test]
    fn an_org_file_without_time_zone_or_bounds_loads_with_the_defaults() {
        let mut v = serde_json::to_value(demo_county(3)).unwrap();
        let county = v["county"].as_object_mut().unwrap();
        county.remove("timezone");
        county.remove("utc_offset_minutes");
        county.remove("bbox");
        let org = Org::from_json(&v.to_string()).unwrap();
        assert_eq!(org.county.timezone, "Asia/Shanghai");
        assert_eq!(org.county.utc_offset_minutes, 480);
        assert_eq!(org.utc_offset_ms(), 8 * 3_600_000);
        assert_eq!(org.county.bbox, None);
        assert!(org.contains_point(-33.9, 151.2), "no box: anywhere");
        assert!(!serde_json::to_string(&org).unwrap().contains("bbox"));
    }

    #[test]
    fn the_demo_county_has_a_box_around_the_positions_in_use() {
        let org = demo_county(1);
        assert_eq!(org.county.timezone, "Asia/Shanghai");
        for (lat, lon) in [(30.0, 114.0), (30.1, 114.2), (30.5, 114.25), (30.52, 114.31), (30.5, 114.3)] {
            assert!(org.contains_point(lat, lon), "{lat},{lon}");
        }
        for (lat, lon) in [(39.9, 116.4), (30.0, 115.0), (f64::NAN, 114.0), (30.0, f64::INFINITY)] {
            assert!(!org.contains_point(lat, lon), "{lat},{lon}");
        }
        let mut bad = org.clone();
        bad.county.bbox = Some(BBox { min_lat: 31.0, ..DEMO_BBOX });
        assert_eq!(bad.check(), Err(OrgError::BadBBox));
        let mut bad = org;
        bad.county.utc_offset_minutes = 2_000;
        assert_eq!(bad.check(), Err(OrgError::BadUtcOffset));
    }

    #[test]
    fn scopes_cover_what_their_role_may_see() {
        let grids = Scope::Grids(vec!["G1".into()]);
        assert!(grids.covers("G1", "T1"));
        assert!(!grids.covers("G2", "T1"));
        assert!(Scope::Town("T1".into()).covers("G9", "T1"));
        assert!(!Scope::Town("T1".into()).covers("G9", "T2"));
        assert!(Scope::County.covers("G9", "T2"));
        let org = demo_county(1);
        assert!(org.parse_scope(Role::GridWorker, &org.grids[0].id).is_ok());
        assert!(org.parse_scope(Role::GridWorker, "nope").is_err());
        assert!(org.parse_scope(Role::TownOperator, "T01").is_ok());
        assert!(org.parse_scope(Role::TownOperator, "T99").is_err());
        assert_eq!(org.parse_scope(Role::Admin, "county").unwrap(), Scope::County);
        assert!(org.parse_scope(Role::CountyOperator, "T04").is_err(), "a town is not a county scope");
    }
}
