//! Judge0's `/system_info` (the host's `lscpu` facts and `free -h` rows) and `/statistics` (the
//! caller's submissions counted by day, language and status, cached for ten minutes as Judge0
//! caches them, unless `invalidate_cache=true`).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::{Extension, Json};
use kiln_core::job::now_ms;
use serde_json::{json, Map, Value};

use super::handlers::query;
use super::project;
use super::store::Store;
use super::view::view_of;
use super::wire::{flag, Judge0Error};
use crate::auth::Caller;
use crate::body::QueryParams;
use crate::state::AppState;

/// How long statistics are served from the cache.
pub const CACHE_FOR: Duration = Duration::from_secs(600);

/// `lscpu`'s facts Judge0 shows, read from `/proc/cpuinfo`, and `free -h`'s `Mem` and `Swap`
/// rows from `/proc/meminfo`.
pub fn system_info_of(cpuinfo: &str, meminfo: &str, cpus: usize) -> Map<String, Value> {
    let first = |key: &str| {
        cpuinfo.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            (k.trim() == key).then(|| v.trim().to_string())
        })
    };
    let mut m = Map::new();
    m.insert("Architecture".into(), std::env::consts::ARCH.into());
    m.insert(
        "Byte Order".into(),
        if cfg!(target_endian = "little") {
            "Little Endian"
        } else {
            "Big Endian"
        }
        .into(),
    );
    m.insert("CPU(s)".into(), cpus.to_string().into());
    for (ours, theirs) in [
        ("Vendor ID", "vendor_id"),
        ("Model name", "model name"),
        ("CPU family", "cpu family"),
        ("Model", "model"),
        ("Stepping", "stepping"),
        ("CPU MHz", "cpu MHz"),
        ("BogoMIPS", "bogomips"),
        ("Flags", "flags"),
    ] {
        if let Some(v) = first(theirs) {
            m.insert(ours.into(), v.into());
        }
    }
    let kb = |key: &str| -> u64 {
        meminfo
            .lines()
            .find_map(|l| {
                let rest = l.strip_prefix(key)?.strip_prefix(':')?;
                rest.split_whitespace().next()?.parse().ok()
            })
            .unwrap_or(0)
    };
    let (total, free, available) = (kb("MemTotal"), kb("MemFree"), kb("MemAvailable"));
    let (buffers, cached, shared) = (
        kb("Buffers"),
        kb("Cached") + kb("SReclaimable"),
        kb("Shmem"),
    );
    let used = total.saturating_sub(free + buffers + cached);
    let row = |xs: &[u64]| xs.iter().map(|k| human(*k)).collect::<Vec<_>>().join(" ");
    m.insert(
        "Mem".into(),
        row(&[total, used, free, shared, buffers + cached, available]).into(),
    );
    let (swap_total, swap_free) = (kb("SwapTotal"), kb("SwapFree"));
    m.insert(
        "Swap".into(),
        row(&[swap_total, swap_total.saturating_sub(swap_free), swap_free]).into(),
    );
    m
}

/// A size in KiB as `free -h` prints it (`23Gi`, `512Mi`, `0B`).
fn human(kib: u64) -> String {
    if kib == 0 {
        return "0B".into();
    }
    let units = ["Ki", "Mi", "Gi", "Ti"];
    let mut v = kib as f64;
    let mut i = 0;
    while v >= 1024.0 && i + 1 < units.len() {
        v /= 1024.0;
        i += 1;
    }
    if v < 10.0 {
        format!("{v:.1}{}", units[i])
    } else {
        format!("{v:.0}{}", units[i])
    }
}

/// One submission as the statistics count it.
#[derive(Debug, Clone)]
pub struct Counted {
    /// When it was made, ms since the epoch.
    pub created_at_ms: i64,
    /// Its Judge0 language id and name.
    pub language: (u32, String),
    /// Its Judge0 status id and description.
    pub status: (u64, String),
    /// The bytes kept for it (source, stdin, expected output).
    pub bytes: u64,
}

/// Judge0's statistics of `subs` at `now_ms`.
pub fn statistics_of(subs: &[Counted], now_ms: i64) -> Value {
    const DAY: i64 = 86_400_000;
    let today = now_ms - now_ms.rem_euclid(DAY);
    let mut by_day: BTreeMap<String, u64> = (0..30).map(|d| (day(today - d * DAY), 0)).collect();
    let mut languages: HashMap<(u32, String), u64> = HashMap::new();
    let mut statuses: HashMap<(u64, String), u64> = HashMap::new();
    for s in subs {
        if let Some(n) = by_day.get_mut(&day(s.created_at_ms)) {
            *n += 1;
        }
        *languages.entry(s.language.clone()).or_default() += 1;
        *statuses.entry(s.status.clone()).or_default() += 1;
    }
    let bytes: u64 = subs.iter().map(|s| s.bytes).sum();
    json!({
        "now": super::project::timestamp(now_ms),
        "cached_until": super::project::timestamp(now_ms + CACHE_FOR.as_millis() as i64),
        "submissions": {
            "total": subs.len(),
            "today": subs.iter().filter(|s| s.created_at_ms >= today).count(),
            "last_30_days": by_day,
        },
        "languages": sorted(languages).into_iter().map(|((id, name), count)| json!({"language": {"id": id, "name": name}, "count": count})).collect::<Vec<_>>(),
        "statuses": sorted(statuses).into_iter().map(|((id, name), count)| json!({"status": {"id": id, "name": name}, "count": count})).collect::<Vec<_>>(),
        "database": {"size_pretty": human(bytes.div_ceil(1024)), "size_in_bytes": bytes},
    })
}

/// Counts, most first (then by key, so that equal counts keep one order).
fn sorted<K: Ord>(m: HashMap<K, u64>) -> Vec<(K, u64)> {
    let mut v: Vec<_> = m.into_iter().collect();
    v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    v
}

fn day(ms: i64) -> String {
    super::project::timestamp(ms)[..10].to_string()
}

/// Statistics by caller, each kept for [`CACHE_FOR`].
#[derive(Debug, Default)]
pub struct StatsCache {
    inner: Mutex<HashMap<String, (Instant, Value)>>,
}

impl StatsCache {
    /// `owner`'s cached statistics, while fresh.
    pub fn get(&self, owner: &str) -> Option<Value> {
        let g = self.inner.lock().ok()?;
        g.get(owner)
            .filter(|(at, _)| at.elapsed() < CACHE_FOR)
            .map(|(_, v)| v.clone())
    }

    /// Keeps `owner`'s statistics.
    pub fn put(&self, owner: &str, v: Value) {
        if let Ok(mut g) = self.inner.lock() {
            g.retain(|_, (at, _)| at.elapsed() < CACHE_FOR);
            g.insert(owner.to_string(), (Instant::now(), v));
        }
    }
}

/// `GET /system_info`: the host's `lscpu` facts and `free -h` rows.
#[utoipa::path(get, path = "/judge0/system_info", tag = "judge0", security(("bearer" = [])),
    responses((status = 200, description = "`lscpu` keys and values, and `Mem` and `Swap` rows")))]
pub async fn system_info() -> Json<Map<String, Value>> {
    let cpuinfo = tokio::fs::read_to_string("/proc/cpuinfo")
        .await
        .unwrap_or_default();
    let meminfo = tokio::fs::read_to_string("/proc/meminfo")
        .await
        .unwrap_or_default();
    let cpus = std::thread::available_parallelism().map_or(1, usize::from);
    Json(system_info_of(&cpuinfo, &meminfo, cpus))
}

/// Query of `GET /statistics`.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(default)]
pub struct StatisticsQuery {
    /// `true`: count again now instead of answering from the cache.
    pub invalidate_cache: Option<String>,
}

/// `GET /statistics`: the caller's submissions counted by day, language and status.
#[utoipa::path(get, path = "/judge0/statistics", tag = "judge0", security(("bearer" = [])),
    params(("invalidate_cache" = Option<bool>, Query)),
    responses((status = 200, description = "`{now, cached_until, submissions: {total, today, last_30_days}, languages, statuses, database}`")))]
pub async fn statistics(
    State(state): State<AppState>,
    Extension(store): Extension<Arc<Store>>,
    Extension(cache): Extension<Arc<StatsCache>>,
    Extension(caller): Extension<Caller>,
    q: Result<QueryParams<StatisticsQuery>, crate::error::ApiError>,
) -> Result<Json<Value>, Judge0Error> {
    let q = query(q)?;
    if !flag(&q.invalidate_cache) {
        if let Some(v) = cache.get(&caller.0) {
            return Ok(Json(v));
        }
    }
    let fields = project::fields(Some("status"))?;
    let mut counted = Vec::new();
    for token in store.tokens_of(&caller.0) {
        let Some(entry) = store.get(&caller.0, &token) else {
            continue;
        };
        let Some(Ok(view)) = view_of(&state, &store, &caller, &token, &fields, true).await else {
            continue;
        };
        let c = &entry.checked;
        counted.push(Counted {
            created_at_ms: entry.created_at_ms,
            language: (c.language_id, entry.language_name.clone()),
            status: (
                view["status"]["id"].as_u64().unwrap_or(0),
                view["status"]["description"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            ),
            bytes: (c.source_code.len()
                + c.stdin.as_ref().map_or(0, Vec::len)
                + c.expected_output.as_ref().map_or(0, Vec::len)) as u64,
        });
    }
    let v = statistics_of(&counted, now_ms());
    cache.put(&caller.0, v.clone());
    Ok(Json(v))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lscpu_and_free_rows_come_from_proc() {
        let cpu = "processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Some CPU @ 2.0GHz\n";
        let mem = "MemTotal:       24000000 kB\nMemFree:        10000000 kB\nMemAvailable:   20000000 kB\nBuffers: 1000 kB\nCached: 2000000 kB\nSwapTotal: 0 kB\nSwapFree: 0 kB\n";
        let m = system_info_of(cpu, mem, 2);
        assert_eq!(m["CPU(s)"], "2");
        assert_eq!(m["Model name"], "Some CPU @ 2.0GHz");
        assert_eq!(m["Vendor ID"], "GenuineIntel");
        assert!(
            m["Mem"].as_str().unwrap().starts_with("23Gi "),
            "{}",
            m["Mem"]
        );
        assert_eq!(m["Swap"], "0B 0B 0B");
    }

    #[test]
    fn submissions_are_counted_by_day_language_and_status() {
        let now = 1_700_000_000_000;
        let sub = |age_days: i64, lang: u32, status: u64| Counted {
            created_at_ms: now - age_days * 86_400_000,
            language: (lang, format!("L{lang}")),
            status: (status, format!("S{status}")),
            bytes: 10,
        };
        let subs = [sub(0, 71, 3), sub(0, 71, 4), sub(1, 50, 3), sub(40, 50, 3)];
        let s = statistics_of(&subs, now);
        assert_eq!(s["submissions"]["total"], 4);
        assert_eq!(s["submissions"]["today"], 2);
        let days = s["submissions"]["last_30_days"].as_object().unwrap();
        assert_eq!(days.len(), 30);
        assert_eq!(days.values().map(|v| v.as_u64().unwrap()).sum::<u64>(), 3);
        assert_eq!(
            s["statuses"][0],
            json!({"status": {"id": 3, "name": "S3"}, "count": 3})
        );
        assert_eq!(s["languages"].as_array().unwrap().len(), 2);
        assert_eq!(s["database"]["size_in_bytes"], 40);
    }
}
