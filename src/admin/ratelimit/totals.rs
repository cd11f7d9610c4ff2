//! This month's usage totals of the metered requests (credentials with a
//! token or dollar budget at any level), kept by the rate limit service in
//! Redis beside the budget counters, so that `tokenhub-admin usage
//! --current` answers from counters instead of re-reading access logs.
//!
//! Per calendar month (UTC) and per level (key, sub-account, tenant), one
//! hash: `tokenhub.usage|YYYY-MM|key` maps a member to its totals packed in
//! one value, `requests input output cached usd nano` (the cost as whole
//! dollars and nano-dollars, so that Lua's doubles stay exact). The member
//! is, at the key level, `tenant|sub-account|key` (key `-` for an identity
//! without one), at the sub-account level `tenant|sub-account|*`, at the
//! tenant level `tenant|*|*` (ids never contain `|` or `*`:
//! `compile::check_id`, key ids are base62). The settlement adds to the
//! three levels in its `MULTI`/`EXEC` with `ADD_SCRIPT`; the hashes expire
//! a week after their month.
//!
//! One packed field per member, not one hash per total, because reading is
//! what must be fast: 100 000 keys are 100 000 fields, walked with `HSCAN`
//! in pages of 20 000 (none holding Redis up for long: the gateways'
//! admissions share it); five hashes of 100 000 fields took Redis five times
//! as long to walk.

use super::descriptors::Identity;
use crate::admin::usage::{Grouping, Level, Owner, Report, Source, Usage};
use crate::core::budget::Settlement;
use crate::core::quota::{window, DAY, MONTH};

/// How long a month's totals stay after it ends.
const KEEP_AFTER_MONTH: u64 = 7 * DAY;

/// `YYYY-MM` (UTC) of `now`.
pub fn month_label(now: u64) -> String {
    let (months, _) = window(now, MONTH);
    format!("{:04}-{:02}", 1970 + months / 12, months % 12 + 1)
}

/// The hash of one level's totals in `month`.
pub fn total_key(month: &str, level: Level) -> String {
    let level = match level {
        Level::Key => "key",
        Level::SubAccount => "sub",
        Level::Tenant => "tenant",
    };
    format!("tokenhub.usage|{month}|{level}")
}

/// Adds ARGV[2..6] (requests, input, output, cached tokens, cost in
/// nano-dollars) to member ARGV[1]'s packed totals in KEYS[1], which
/// expires at ARGV[7]. Whole numbers below 2^53 are exact in Lua; the cost
/// carries into whole dollars so a month's total stays below that.
const ADD_SCRIPT: &str = r"
local t = {0, 0, 0, 0, 0, 0}
local i = 1
for n in string.gmatch(redis.call('HGET', KEYS[1], ARGV[1]) or '', '%d+') do
  t[i] = tonumber(n)
  i = i + 1
end
for j = 1, 4 do t[j] = t[j] + tonumber(ARGV[j + 1]) end
local nano = t[6] + tonumber(ARGV[6])
t[5] = t[5] + math.floor(nano / 1e9)
t[6] = nano % 1e9
redis.call('HSET', KEYS[1], ARGV[1], string.format('%.0f %.0f %.0f %.0f %.0f %.0f', t[1], t[2], t[3], t[4], t[5], t[6]))
redis.call('EXPIREAT', KEYS[1], ARGV[7])
";

/// A member's totals (requests, input, output and cached tokens, cost in
/// nano-dollars) from its packed value; `None` when it is
/// not six whole numbers.
fn unpack(value: &[u8]) -> Option<[u64; 5]> {
    let text = std::str::from_utf8(value).ok()?;
    let mut n = text.split(' ').map(|t| t.parse::<u64>().ok());
    let mut next = || n.next().flatten();
    let (requests, input, output, cached, usd, nano) = (next()?, next()?, next()?, next()?, next()?, next()?);
    let cost = usd.saturating_mul(crate::core::budget::NANO_USD_PER_USD).saturating_add(nano);
    n.next().is_none().then_some([requests, input, output, cached, cost])
}

/// `who`'s member at `level` (`*` for the levels below it).
fn member_at(who: &Identity, level: Level) -> String {
    match level {
        Level::Key => member(who),
        Level::SubAccount => format!("{}|{}|*", who.tenant, who.sub_account),
        Level::Tenant => format!("{}|*|*", who.tenant),
    }
}

pub fn member(who: &Identity) -> String {
    format!("{}|{}|{}", who.tenant, who.sub_account, who.key_id)
}

fn parse_member(member: &str) -> Option<Identity> {
    let mut parts = member.split('|');
    let (tenant, sub_account, key_id) = (parts.next()?, parts.next()?, parts.next()?);
    parts.next().is_none().then(|| Identity {
        tenant: tenant.into(),
        sub_account: sub_account.into(),
        key_id: key_id.into(),
    })
}

/// Adds one settled request to its identity's totals, in `pipe` (the
/// settlement's transaction).
pub fn record(pipe: &mut redis::Pipeline, who: &Identity, s: &Settlement, now: u64) {
    let month = month_label(now);
    let (_, reset) = window(now, MONTH);
    let expires = i64::try_from(now.saturating_add(reset).saturating_add(KEEP_AFTER_MONTH)).unwrap_or(i64::MAX);
    for level in [Level::Key, Level::SubAccount, Level::Tenant] {
        pipe.cmd("EVAL")
            .arg(ADD_SCRIPT)
            .arg(1)
            .arg(total_key(&month, level))
            .arg(member_at(who, level))
            .arg(&[1, s.input, s.output, s.cached_input, s.cost][..])
            .arg(expires)
            .ignore();
    }
}

/// An `HSCAN` reply: the next cursor, and members with their values.
type ScanPage = (u64, Vec<(Vec<u8>, Vec<u8>)>);

/// Fields per `HSCAN` page.
const PAGE: usize = 20_000;

/// Every member's totals of `month` at `level` (a member whose value is
/// not in the packed form is skipped: nothing but the service writes there).
pub async fn read_month(
    conn: &mut redis::aio::MultiplexedConnection,
    month: &str,
    level: Level,
) -> redis::RedisResult<Vec<(Identity, [u64; 5])>> {
    let key = total_key(month, level);
    let mut totals: std::collections::HashMap<Vec<u8>, [u64; 5]> = std::collections::HashMap::new();
    let mut cursor: u64 = 0;
    loop {
        let (next, page): ScanPage =
            redis::cmd("HSCAN").arg(&key).arg(cursor).arg("COUNT").arg(PAGE).query_async(conn).await?;
        // HSCAN may return a member twice (while the hash is rehashed):
        // the value is the same, so set, never add.
        totals.extend(page.into_iter().filter_map(|(member, value)| Some((member, unpack(&value)?))));
        if next == 0 {
            break;
        }
        cursor = next;
    }
    Ok(totals.into_iter().filter_map(|(m, t)| Some((parse_member(std::str::from_utf8(&m).ok()?)?, t))).collect())
}

/// This month's totals (`now`'s month) at `level`, read from the Redis at
/// `url` (a blocking call for the CLI; `timeout` bounds the whole read).
pub fn read_current(
    url: &str,
    level: Level,
    timeout: std::time::Duration,
    now: u64,
) -> Result<Vec<(Identity, [u64; 5])>, String> {
    // The URL is never echoed: it may hold a password.
    let client = redis::Client::open(url)
        .map_err(|e| format!("--redis is not a Redis URL like redis://127.0.0.1:6379 ({:?})", e.kind()))?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("tokio runtime: {e}"))?;
    let month = month_label(now);
    runtime.block_on(async {
        let read = async {
            // The whole read is bounded by `timeout`, not each page by the
            // client's default (0.5 s: too short for a 20 000-field page
            // on a busy machine).
            let config = redis::AsyncConnectionConfig::new()
                .set_connection_timeout(Some(timeout))
                .set_response_timeout(Some(timeout));
            let mut conn = client.get_multiplexed_async_connection_with_config(&config).await?;
            read_month(&mut conn, &month, level).await
        };
        match tokio::time::timeout(timeout, read).await {
            Ok(Ok(totals)) => Ok(totals),
            Ok(Err(e)) => Err(format!(
                "Redis: {e} (is it the Redis `tokenhub-admin ratelimit` uses? --redis or TOKENHUB_REDIS_URL)"
            )),
            Err(_) => Err(format!("Redis did not answer within {} s", timeout.as_secs())),
        }
    })
}

/// The `usage` report (same rows and rendering as the access-log report)
/// over a month's totals: rows per key, sub-account or tenant, limited to
/// `tenant` and `key_id` when given.
pub fn report(
    totals: Vec<(Identity, [u64; 5])>,
    month: &str,
    level: Level,
    tenant: Option<&str>,
    key_id: Option<&str>,
) -> Report {
    let mut out = Report {
        grouping: Grouping { level, per_model: false, per_day: false },
        source: Source::Counters { month: month.to_string() },
        ..Report::default()
    };
    for (who, [requests, input, output, cached, cost]) in totals {
        if tenant.is_some_and(|t| t != who.tenant) || key_id.is_some_and(|k| k != who.key_id) {
            continue;
        }
        let all = || "*".to_string();
        let owner = Owner {
            tenant: who.tenant,
            sub_account: if level == Level::Tenant { all() } else { who.sub_account },
            key_id: if level == Level::Key { who.key_id } else { all() },
            model: String::new(),
            day: String::new(),
        };
        let row: &mut Usage = out.rows.entry(owner).or_default();
        row.requests = row.requests.saturating_add(requests);
        row.input_tokens = row.input_tokens.saturating_add(input);
        row.output_tokens = row.output_tokens.saturating_add(output);
        row.cached_tokens = row.cached_tokens.saturating_add(cached);
        row.cost_nano_usd = row.cost_nano_usd.saturating_add(cost);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn who(t: &str, s: &str, k: &str) -> Identity {
        Identity { tenant: t.into(), sub_account: s.into(), key_id: k.into() }
    }

    #[test]
    fn months_are_utc_calendar_months() {
        assert_eq!(month_label(0), "1970-01");
        // 2026-12-01T00:00:00Z and one second before.
        assert_eq!(month_label(1_796_083_200), "2026-12");
        assert_eq!(month_label(1_796_083_199), "2026-11");
        let m = member(&who("acme", "default", "-"));
        assert_eq!(parse_member(&m), Some(who("acme", "default", "-")));
        assert_eq!(parse_member("a|b"), None);
        assert_eq!(total_key("2026-12", Level::Key), "tokenhub.usage|2026-12|key");
        assert_eq!(total_key("2026-12", Level::Tenant), "tokenhub.usage|2026-12|tenant");
        assert_eq!(unpack(b"2 100 10 5 3 000000007"), Some([2, 100, 10, 5, 3_000_000_007]));
        assert_eq!(unpack(b"2 100 10 5 3"), None);
        assert_eq!(unpack(b"2 100 10 5 3 7 1"), None);
        assert_eq!(unpack(b"2 100 -10 5 3 7"), None);
        let k = who("acme", "lab", "k1");
        assert_eq!(
            [Level::Key, Level::SubAccount, Level::Tenant].map(|l| member_at(&k, l)),
            ["acme|lab|k1", "acme|lab|*", "acme|*|*"]
        );
    }

    #[test]
    fn totals_roll_up_by_level_and_filter() {
        let totals = vec![
            (who("acme", "default", "k1"), [2, 100, 10, 5, 1_000]),
            (who("acme", "default", "k2"), [1, 50, 5, 0, 500]),
            (who("acme", "lab", "k3"), [4, 1, 1, 1, 1]),
            (who("globex", "default", "-"), [7, 0, 0, 0, 0]),
        ];
        let by_key = report(totals.clone(), "2026-12", Level::Key, None, None);
        assert_eq!(by_key.rows.len(), 4);
        let by_sub = report(totals.clone(), "2026-12", Level::SubAccount, Some("acme"), None);
        let default = &by_sub.rows[&Owner { key_id: "*".into(), ..Owner::key("acme", "default", "") }];
        assert_eq!((default.requests, default.input_tokens, default.cost_nano_usd), (3, 150, 1_500));
        assert_eq!(by_sub.rows.len(), 2);
        let by_tenant = report(totals.clone(), "2026-12", Level::Tenant, None, None);
        let acme =
            &by_tenant.rows[&Owner { sub_account: "*".into(), key_id: "*".into(), ..Owner::key("acme", "", "") }];
        assert_eq!((acme.requests, acme.output_tokens, acme.cached_tokens), (7, 16, 6));
        assert_eq!(report(totals.clone(), "2026-12", Level::Key, None, Some("k3")).rows.len(), 1);
    }
}
