//! Schedule expressions and their next fire times. Pure: an expression, a time zone and an instant
//! in, an instant out.
//!
//! Expressions: standard 5-field cron (`0 2 * * 1-5`; names, ranges, steps, lists; when both
//! day-of-month and day-of-week are restricted either may match, as Vixie cron), AWS's
//! `cron(min hour dom month dow year)` (`?` in one day field; day-of-week 1 = SUN), `L`, `W`, `LW`
//! and `#` in either form, `rate(N minutes|hours|days)`, `at(2027-01-01T09:00:00)` and
//! `@hourly|@daily|@midnight|@weekly|@monthly|@yearly|@annually`.
//!
//! Wall times are in the schedule's IANA time zone. A wall time that does not exist (spring
//! forward) fires once, shifted forward by the gap (02:30 → 03:30); one that happens twice (fall
//! back) fires once, at its first occurrence. `rate` counts absolute time from its anchor.

use std::fmt;

use chrono::{
    DateTime, Datelike, Duration, LocalResult, NaiveDate, NaiveDateTime, NaiveTime, Offset,
    TimeZone, Utc, Weekday,
};
use chrono_tz::Tz;

/// A parsed schedule expression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScheduleExpression {
    Cron(Box<CronSpec>),
    /// Every `seconds`, counted from the schedule's anchor (its start date or creation time).
    Rate {
        seconds: u64,
    },
    /// Once, at this wall time in the schedule's time zone.
    At(NaiveDateTime),
}

/// What a parse error says, and where in the expression (0-based character column).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("at column {column}: {message}")]
pub struct ExpressionError {
    pub column: usize,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CronSpec {
    minutes: u64,
    hours: u32,
    months: u16,
    /// `None`: any year.
    years: Option<Vec<i32>>,
    days_of_month: DayOfMonth,
    days_of_week: DayOfWeek,
    rule: DayRule,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
struct DayOfMonth {
    /// Unrestricted (`*`, `*/n` or `?`), for the day-matching rule.
    star: bool,
    /// Bit d for day d (1..=31).
    days: u32,
    last: bool,
    last_weekday: bool,
    /// `15W`: the weekday nearest the 15th, within the month.
    nearest_weekday: Vec<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
struct DayOfWeek {
    star: bool,
    /// Bit w for weekday w, 0 = Sunday.
    days: u8,
    /// `5L`: the last such weekday of the month.
    last_of: Vec<u32>,
    /// `3#2`: the n-th such weekday of the month.
    nth: Vec<(u32, u32)>,
}

/// How day-of-month and day-of-week combine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DayRule {
    /// Vixie cron: both restricted → either; otherwise both (the unrestricted one always matches).
    Vixie,
    /// AWS: one field is `?` and only the other counts.
    Aws,
}

/// How day-of-week numbers read: 0-7 with 0 and 7 Sunday, or AWS's 1-7 with 1 Sunday.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WeekdayNumbering {
    ZeroIsSunday,
    OneIsSunday,
}

const MONTH_NAMES: [&str; 12] = [
    "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
];
const DAY_NAMES: [&str; 7] = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];
const FIRST_YEAR: i32 = 1970;
const LAST_YEAR: i32 = 2199;

impl fmt::Display for ScheduleExpression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ScheduleExpression::Cron(_) => f.write_str("cron"),
            ScheduleExpression::Rate { seconds } => write!(f, "rate({seconds} seconds)"),
            ScheduleExpression::At(at) => write!(f, "at({})", at.format("%Y-%m-%dT%H:%M:%S")),
        }
    }
}

/// Parses any supported expression.
pub fn parse_expression(text: &str) -> Result<ScheduleExpression, ExpressionError> {
    let trimmed = text.trim();
    let offset = text.len() - text.trim_start().len();
    let inner = |prefix: &str| -> Result<Option<(&str, usize)>, ExpressionError> {
        let Some(rest) = trimmed.strip_prefix(prefix) else {
            return Ok(None);
        };
        let Some(body) = rest.strip_suffix(')') else {
            return Err(ExpressionError {
                column: offset + trimmed.len(),
                message: format!("{prefix}…) is missing its closing parenthesis"),
            });
        };
        Ok(Some((body, offset + prefix.len())))
    };
    if let Some((body, column)) = inner("cron(")? {
        return parse_cron(body, column, CronDialect::Aws)
            .map(|spec| ScheduleExpression::Cron(Box::new(spec)));
    }
    if let Some((body, column)) = inner("rate(")? {
        return parse_rate(body, column);
    }
    if let Some((body, column)) = inner("at(")? {
        return NaiveDateTime::parse_from_str(body.trim(), "%Y-%m-%dT%H:%M:%S")
            .map(ScheduleExpression::At)
            .map_err(|error| ExpressionError {
                column,
                message: format!("{body:?} is not a wall time like 2027-01-01T09:00:00 ({error})"),
            });
    }
    if let Some(name) = trimmed.strip_prefix('@') {
        let standard = match name.to_ascii_lowercase().as_str() {
            "yearly" | "annually" => "0 0 1 1 *",
            "monthly" => "0 0 1 * *",
            "weekly" => "0 0 * * 0",
            "daily" | "midnight" => "0 0 * * *",
            "hourly" => "0 * * * *",
            _ => {
                return Err(ExpressionError {
                    column: offset,
                    message: format!(
                    "unknown shorthand @{name}; use @hourly, @daily, @weekly, @monthly or @yearly"
                ),
                })
            }
        };
        return parse_cron(standard, 0, CronDialect::Standard)
            .map(|spec| ScheduleExpression::Cron(Box::new(spec)));
    }
    parse_cron(trimmed, offset, CronDialect::Standard)
        .map(|spec| ScheduleExpression::Cron(Box::new(spec)))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CronDialect {
    Standard,
    Aws,
}

fn parse_rate(body: &str, column: usize) -> Result<ScheduleExpression, ExpressionError> {
    let error = |message: String| ExpressionError { column, message };
    let mut words = body.split_whitespace();
    let (Some(amount), Some(unit), None) = (words.next(), words.next(), words.next()) else {
        return Err(error(format!(
            "{body:?} is not \"N minutes\", \"N hours\" or \"N days\""
        )));
    };
    let amount: u64 = amount
        .parse()
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| error(format!("{amount:?} is not a positive whole number")))?;
    let unit_seconds = match unit.to_ascii_lowercase().as_str() {
        "minute" | "minutes" => 60,
        "hour" | "hours" => 3600,
        "day" | "days" => 86_400,
        other => {
            return Err(error(format!(
                "{other:?} is not a unit; use minutes, hours or days"
            )))
        }
    };
    Ok(ScheduleExpression::Rate {
        seconds: amount * unit_seconds,
    })
}

fn parse_cron(
    text: &str,
    offset: usize,
    dialect: CronDialect,
) -> Result<CronSpec, ExpressionError> {
    // Each field with the column it starts at.
    let mut fields = Vec::new();
    let mut column = 0;
    for part in text.split(' ') {
        if !part.is_empty() {
            fields.push((part, offset + column));
        }
        column += part.len() + 1;
    }
    let expected = match dialect {
        CronDialect::Standard => 5,
        CronDialect::Aws => 6,
    };
    if fields.len() != expected {
        let shape = match dialect {
            CronDialect::Standard => "5 fields: minute hour day-of-month month day-of-week",
            CronDialect::Aws => "6 fields: minute hour day-of-month month day-of-week year",
        };
        return Err(ExpressionError {
            column: offset,
            message: format!("has {} fields; a cron expression has {shape}", fields.len()),
        });
    }
    let numbering = match dialect {
        CronDialect::Standard => WeekdayNumbering::ZeroIsSunday,
        CronDialect::Aws => WeekdayNumbering::OneIsSunday,
    };
    let minutes = mask(fields[0], 0, 59, &[], "minute")?;
    let hours = mask(fields[1], 0, 23, &[], "hour")? as u32;
    let days_of_month = day_of_month(fields[2])?;
    let months = (mask(fields[3], 1, 12, &MONTH_NAMES, "month")? >> 1) as u16;
    let days_of_week = day_of_week(fields[4], numbering)?;
    let years = match dialect {
        CronDialect::Standard => None,
        CronDialect::Aws => {
            let (text, column) = fields[5];
            if text == "*" {
                None
            } else {
                Some(years(text, column)?)
            }
        }
    };
    let rule = match dialect {
        CronDialect::Standard => DayRule::Vixie,
        CronDialect::Aws => {
            let question = |(text, _): (&str, usize)| text == "?";
            if question(fields[2]) == question(fields[4]) {
                return Err(ExpressionError {
                    column: fields[2].1,
                    message: "AWS cron needs ? in exactly one of day-of-month and day-of-week"
                        .into(),
                });
            }
            DayRule::Aws
        }
    };
    Ok(CronSpec {
        minutes,
        hours,
        months,
        years,
        days_of_month,
        days_of_week,
        rule,
    })
}

/// A bit mask of the values a plain field allows (`*`, `a`, `a-b`, `*/s`, `a/s`, `a-b/s`, names).
fn mask(
    (text, column): (&str, usize),
    low: u32,
    high: u32,
    names: &[&str],
    what: &str,
) -> Result<u64, ExpressionError> {
    let mut bits = 0u64;
    let mut item_column = column;
    for item in text.split(',') {
        for value in range_values(item, item_column, low, high, names, what)? {
            bits |= 1 << value;
        }
        item_column += item.len() + 1;
    }
    Ok(bits)
}

fn range_values(
    item: &str,
    column: usize,
    low: u32,
    high: u32,
    names: &[&str],
    what: &str,
) -> Result<Vec<u32>, ExpressionError> {
    let error = |message: String| ExpressionError { column, message };
    let (range, step) = match item.split_once('/') {
        Some((range, step)) => {
            let step: u32 = step.parse().ok().filter(|s| *s > 0).ok_or_else(|| {
                error(format!(
                    "{step:?} is not a step; give a positive number after /"
                ))
            })?;
            (range, step)
        }
        None => (item, 1),
    };
    let value = |text: &str| -> Result<u32, ExpressionError> {
        let named = names
            .iter()
            .position(|name| name.eq_ignore_ascii_case(text))
            .map(|index| index as u32 + low);
        let number = named.or_else(|| text.parse().ok());
        match number {
            Some(n) if (low..=high).contains(&n) => Ok(n),
            Some(n) => Err(error(format!("{what} {n} is out of range {low}-{high}"))),
            None => Err(error(format!("{text:?} is not a {what}"))),
        }
    };
    let (first, last) = match range {
        "*" => (low, high),
        _ => match range.split_once('-') {
            Some((a, b)) => (value(a)?, value(b)?),
            None if item.contains('/') => (value(range)?, high),
            None => {
                let single = value(range)?;
                (single, single)
            }
        },
    };
    if first > last {
        return Err(error(format!("range {first}-{last} runs backwards")));
    }
    Ok((first..=last).step_by(step as usize).collect())
}

fn day_of_month((text, column): (&str, usize)) -> Result<DayOfMonth, ExpressionError> {
    let mut field = DayOfMonth {
        star: text.starts_with('*') || text == "?",
        ..DayOfMonth::default()
    };
    if text == "?" {
        return Ok(field);
    }
    let mut item_column = column;
    for item in text.split(',') {
        let error = |message: String| ExpressionError {
            column: item_column,
            message,
        };
        if item.eq_ignore_ascii_case("L") {
            field.last = true;
        } else if item.eq_ignore_ascii_case("LW") {
            field.last_weekday = true;
        } else if let Some(day) = item.strip_suffix(['W', 'w']) {
            let day: u32 = day
                .parse()
                .ok()
                .filter(|d| (1..=31).contains(d))
                .ok_or_else(|| error(format!("{item:?}: W follows a day of the month, 1-31")))?;
            field.nearest_weekday.push(day);
        } else {
            for day in range_values(item, item_column, 1, 31, &[], "day of the month")? {
                field.days |= 1 << day;
            }
        }
        item_column += item.len() + 1;
    }
    Ok(field)
}

fn day_of_week(
    (text, column): (&str, usize),
    numbering: WeekdayNumbering,
) -> Result<DayOfWeek, ExpressionError> {
    let mut field = DayOfWeek {
        star: text.starts_with('*') || text == "?",
        ..DayOfWeek::default()
    };
    if text == "?" {
        return Ok(field);
    }
    let (low, high) = match numbering {
        WeekdayNumbering::ZeroIsSunday => (0, 7),
        WeekdayNumbering::OneIsSunday => (1, 7),
    };
    // Names map onto the numbering's own values: SUN is `low`.
    let names = DAY_NAMES;
    let to_weekday = |value: u32| match numbering {
        WeekdayNumbering::ZeroIsSunday => value % 7,
        WeekdayNumbering::OneIsSunday => value - 1,
    };
    let mut item_column = column;
    for item in text.split(',') {
        let error = |message: String| ExpressionError {
            column: item_column,
            message,
        };
        let one = |text: &str| -> Result<u32, ExpressionError> {
            let values = range_values(text, item_column, low, high, &names, "day of the week")?;
            match values.as_slice() {
                [value] => Ok(to_weekday(*value)),
                _ => Err(error(format!(
                    "{text:?} must be a single day of the week here"
                ))),
            }
        };
        if item.eq_ignore_ascii_case("L") {
            // Alone, L is the last day of the week: Saturday.
            field.days |= 1 << 6;
        } else if let Some(day) = item.strip_suffix(['L', 'l']) {
            field.last_of.push(one(day)?);
        } else if let Some((day, n)) = item.split_once('#') {
            let n: u32 = n
                .parse()
                .ok()
                .filter(|n| (1..=5).contains(n))
                .ok_or_else(|| error(format!("{item:?}: # is followed by 1 to 5 (which week)")))?;
            field.nth.push((one(day)?, n));
        } else {
            for value in range_values(item, item_column, low, high, &names, "day of the week")? {
                field.days |= 1 << to_weekday(value);
            }
        }
        item_column += item.len() + 1;
    }
    Ok(field)
}

/// Names in a year field are not a thing; `range_values` works on u32, so years are offset.
fn years(text: &str, column: usize) -> Result<Vec<i32>, ExpressionError> {
    let mut years = Vec::new();
    let mut item_column = column;
    for item in text.split(',') {
        let values = range_values(
            item,
            item_column,
            FIRST_YEAR as u32,
            LAST_YEAR as u32,
            &[],
            "year",
        )?;
        years.extend(values.into_iter().map(|year| year as i32));
        item_column += item.len() + 1;
    }
    years.sort_unstable();
    years.dedup();
    Ok(years)
}

impl CronSpec {
    fn matches_day(&self, date: NaiveDate) -> bool {
        if self.months & (1 << (date.month() - 1)) == 0 {
            return false;
        }
        if let Some(years) = &self.years {
            if years.binary_search(&date.year()).is_err() {
                return false;
            }
        }
        let dom = self.days_of_month.matches(date);
        let dow = self.days_of_week.matches(date);
        match self.rule {
            DayRule::Aws if self.days_of_month.star => dow,
            DayRule::Aws => dom,
            DayRule::Vixie if self.days_of_month.star || self.days_of_week.star => dom && dow,
            DayRule::Vixie => dom || dow,
        }
    }

    fn last_year(&self) -> Option<i32> {
        self.years.as_ref().and_then(|years| years.last().copied())
    }
}

fn last_day_of_month(date: NaiveDate) -> u32 {
    let (year, month) = match date.month() {
        12 => (date.year() + 1, 1),
        month => (date.year(), month + 1),
    };
    NaiveDate::from_ymd_opt(year, month, 1)
        .and_then(|first| first.pred_opt())
        .map_or(28, |last| last.day())
}

fn is_weekday(date: NaiveDate) -> bool {
    !matches!(date.weekday(), Weekday::Sat | Weekday::Sun)
}

impl DayOfMonth {
    fn matches(&self, date: NaiveDate) -> bool {
        if self.star {
            return true;
        }
        let day = date.day();
        let last = last_day_of_month(date);
        if self.days & (1 << day) != 0 || (self.last && day == last) {
            return true;
        }
        if self.last_weekday
            && is_weekday(date)
            && (day + 1..=last).all(|later| date.with_day(later).is_some_and(|d| !is_weekday(d)))
        {
            return true;
        }
        self.nearest_weekday
            .iter()
            .any(|&target| nearest_weekday(date, target.min(last)) == Some(day))
    }
}

/// The weekday nearest the `target`-th of `date`'s month, not leaving the month (Quartz's `W`).
fn nearest_weekday(date: NaiveDate, target: u32) -> Option<u32> {
    let target_date = date.with_day(target)?;
    let last = last_day_of_month(date);
    Some(match target_date.weekday() {
        Weekday::Sat if target == 1 => 3,
        Weekday::Sat => target - 1,
        Weekday::Sun if target == last => target - 2,
        Weekday::Sun => target + 1,
        _ => target,
    })
}

impl DayOfWeek {
    fn matches(&self, date: NaiveDate) -> bool {
        if self.star {
            return true;
        }
        let weekday = date.weekday().num_days_from_sunday();
        if self.days & (1 << weekday) != 0 {
            return true;
        }
        let day = date.day();
        let last = last_day_of_month(date);
        self.last_of
            .iter()
            .any(|&wanted| wanted == weekday && day + 7 > last)
            || self
                .nth
                .iter()
                .any(|&(wanted, n)| wanted == weekday && (day - 1) / 7 + 1 == n)
    }
}

/// The instant a wall time in `tz` names, by this module's DST rule: a wall time in a gap is
/// shifted forward by the gap; one that happens twice is its first occurrence.
pub fn instant_of_wall_time(tz: Tz, wall: NaiveDateTime) -> Option<DateTime<Utc>> {
    match tz.from_local_datetime(&wall) {
        LocalResult::Single(time) => Some(time.with_timezone(&Utc)),
        LocalResult::Ambiguous(first, _) => Some(first.with_timezone(&Utc)),
        LocalResult::None => {
            // Read the wall time with the offset in force just before the gap: that lands as far
            // after the gap's end as the wall time is after its start.
            let before = wall - Duration::hours(3);
            let offset = match tz.from_local_datetime(&before) {
                LocalResult::Single(time) | LocalResult::Ambiguous(time, _) => {
                    time.offset().fix().local_minus_utc()
                }
                LocalResult::None => return None,
            };
            Some(Utc.from_utc_datetime(&(wall - Duration::seconds(i64::from(offset)))))
        }
    }
}

/// The first fire time strictly after `after`, or `None` if there is none (an `at` in the past, a
/// cron whose years have passed). `anchor` is where a `rate` counts from.
pub fn next_fire(
    expression: &ScheduleExpression,
    tz: Tz,
    anchor: DateTime<Utc>,
    after: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    match expression {
        ScheduleExpression::Rate { seconds } => {
            let period = *seconds as i64;
            if after < anchor {
                return Some(anchor);
            }
            let elapsed = (after - anchor).num_seconds();
            let ticks = elapsed / period + 1;
            Some(anchor + Duration::seconds(ticks * period))
        }
        ScheduleExpression::At(wall) => {
            instant_of_wall_time(tz, *wall).filter(|instant| *instant > after)
        }
        ScheduleExpression::Cron(spec) => next_cron_fire(spec, tz, after),
    }
}

fn next_cron_fire(spec: &CronSpec, tz: Tz, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
    // A day before, so a wall time shifted forward across midnight by a gap is not missed.
    let mut date = after.with_timezone(&tz).date_naive().pred_opt()?;
    // Without a year field, an expression that can fire at all fires within 28 years (the
    // calendar repeats); with one, the search ends with its last year.
    let end_year = spec
        .last_year()
        .unwrap_or_else(|| date.year().saturating_add(28));
    while date.year() <= end_year {
        if spec.matches_day(date) {
            let best = (0..24u32)
                .filter(|hour| spec.hours & (1 << hour) != 0)
                .flat_map(|hour| {
                    (0..60u32)
                        .filter(|minute| spec.minutes & (1 << minute) != 0)
                        .map(move |minute| (hour, minute))
                })
                .filter_map(|(hour, minute)| {
                    let wall = date.and_time(NaiveTime::from_hms_opt(hour, minute, 0)?);
                    instant_of_wall_time(tz, wall)
                })
                .filter(|instant| *instant > after)
                .min();
            if best.is_some() {
                return best;
            }
        }
        date = date.succ_opt()?;
    }
    None
}

/// `n` fire times strictly after `after`, in order.
pub fn preview(
    expression: &ScheduleExpression,
    tz: Tz,
    anchor: DateTime<Utc>,
    after: DateTime<Utc>,
    n: usize,
) -> Vec<DateTime<Utc>> {
    let mut times = Vec::with_capacity(n);
    let mut cursor = after;
    while times.len() < n {
        match next_fire(expression, tz, anchor, cursor) {
            Some(next) => {
                times.push(next);
                cursor = next;
            }
            None => break,
        }
    }
    times
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .unwrap()
            .with_timezone(&Utc)
    }

    /// The next `n` fire times of `expression` in `tz` after `from`, as RFC 3339 in that zone.
    fn fires(expression: &str, tz: &str, from: &str, n: usize) -> Vec<String> {
        let tz: Tz = tz.parse().unwrap();
        let parsed = parse_expression(expression).unwrap_or_else(|e| panic!("{expression}: {e}"));
        preview(&parsed, tz, utc(from), utc(from), n)
            .into_iter()
            .map(|t| t.with_timezone(&tz).to_rfc3339())
            .collect()
    }

    #[test]
    fn next_fire_times() {
        let cases: &[(&str, &str, &str, &[&str])] = &[
            // Standard cron: steps, ranges, lists, names.
            (
                "*/20 9-10 * * MON-FRI",
                "UTC",
                "2026-11-20T09:50:00Z",
                &[
                    "2026-11-20T10:00:00+00:00",
                    "2026-11-20T10:20:00+00:00",
                    "2026-11-20T10:40:00+00:00",
                    "2026-11-23T09:00:00+00:00",
                ],
            ),
            (
                "0 2 * * 1-5",
                "Europe/Berlin",
                "2026-11-21T00:00:00Z",
                &["2026-11-23T02:00:00+01:00", "2026-11-24T02:00:00+01:00"],
            ),
            (
                "30 4 1,15 * 5",
                "UTC",
                "2026-11-01T00:00:00Z",
                // Vixie: the 1st, the 15th, and every Friday.
                &[
                    "2026-11-01T04:30:00+00:00",
                    "2026-11-06T04:30:00+00:00",
                    "2026-11-13T04:30:00+00:00",
                    "2026-11-15T04:30:00+00:00",
                ],
            ),
            (
                "0 0 * JAN,jul 7",
                "UTC",
                "2026-12-31T00:00:00Z",
                &["2027-01-03T00:00:00+00:00", "2027-01-10T00:00:00+00:00"],
            ),
            (
                "@monthly",
                "UTC",
                "2026-11-21T00:00:00Z",
                &["2026-12-01T00:00:00+00:00"],
            ),
            (
                "@weekly",
                "UTC",
                "2026-11-21T00:00:00Z",
                &["2026-11-22T00:00:00+00:00"],
            ),
            // AWS cron: ? and 1 = SUN, L, W, LW, #, years.
            (
                "cron(0 2 ? * MON-FRI *)",
                "UTC",
                "2026-11-21T00:00:00Z",
                &["2026-11-23T02:00:00+00:00"],
            ),
            (
                "cron(0 12 ? * 1 *)",
                "UTC",
                "2026-11-21T00:00:00Z",
                &["2026-11-22T12:00:00+00:00"],
            ),
            (
                "cron(0 18 L * ? *)",
                "UTC",
                "2027-01-31T19:00:00Z",
                &["2027-02-28T18:00:00+00:00", "2027-03-31T18:00:00+00:00"],
            ),
            (
                "cron(0 18 L * ? 2028)",
                "UTC",
                "2027-01-31T19:00:00Z",
                &["2028-01-31T18:00:00+00:00", "2028-02-29T18:00:00+00:00"],
            ),
            // 15W: Sat 2026-08-15 → Fri 14th; Sun 2026-11-15 → Mon 16th.
            (
                "cron(0 9 15W * ? *)",
                "UTC",
                "2026-08-01T00:00:00Z",
                &[
                    "2026-08-14T09:00:00+00:00",
                    "2026-09-15T09:00:00+00:00",
                    "2026-10-15T09:00:00+00:00",
                    "2026-11-16T09:00:00+00:00",
                ],
            ),
            // 1W on Sat 2026-08-01 → Mon 3rd (never into the month before).
            (
                "cron(0 9 1W 8 ? 2026)",
                "UTC",
                "2026-07-01T00:00:00Z",
                &["2026-08-03T09:00:00+00:00"],
            ),
            // LW: last weekday; Oct 2026 ends on a Saturday.
            (
                "cron(0 9 LW 10 ? 2026)",
                "UTC",
                "2026-10-01T00:00:00Z",
                &["2026-10-30T09:00:00+00:00"],
            ),
            // 3#2: the second Tuesday (AWS 3 = TUE).
            (
                "cron(0 9 ? * 3#2 *)",
                "UTC",
                "2026-11-01T00:00:00Z",
                &["2026-11-10T09:00:00+00:00", "2026-12-08T09:00:00+00:00"],
            ),
            // 6L: the last Friday (AWS 6 = FRI).
            (
                "cron(0 9 ? * 6L *)",
                "UTC",
                "2026-11-01T00:00:00Z",
                &["2026-11-27T09:00:00+00:00", "2026-12-25T09:00:00+00:00"],
            ),
            (
                "cron(0/30 8 ? * * 2027-2028)",
                "UTC",
                "2026-11-21T00:00:00Z",
                &[
                    "2027-01-01T08:00:00+00:00",
                    "2027-01-01T08:30:00+00:00",
                    "2027-01-02T08:00:00+00:00",
                ],
            ),
            ("cron(0 0 1 1 ? 2020)", "UTC", "2026-11-21T00:00:00Z", &[]),
            // Standard 5-field with # and L: second Monday, last Sunday.
            (
                "0 9 * * 1#2",
                "UTC",
                "2026-11-01T00:00:00Z",
                &["2026-11-09T09:00:00+00:00"],
            ),
            (
                "0 9 * * 0L",
                "UTC",
                "2026-11-01T00:00:00Z",
                &["2026-11-29T09:00:00+00:00"],
            ),
            // rate counts from its anchor; at fires once.
            (
                "rate(15 minutes)",
                "UTC",
                "2026-11-21T10:00:00Z",
                &["2026-11-21T10:15:00+00:00", "2026-11-21T10:30:00+00:00"],
            ),
            (
                "rate(1 day)",
                "UTC",
                "2026-11-21T10:00:00Z",
                &["2026-11-22T10:00:00+00:00"],
            ),
            (
                "at(2027-01-01T09:00:00)",
                "Europe/Berlin",
                "2026-11-21T00:00:00Z",
                &["2027-01-01T09:00:00+01:00"],
            ),
            (
                "at(2020-01-01T09:00:00)",
                "UTC",
                "2026-11-21T00:00:00Z",
                &[],
            ),
        ];
        for (expression, tz, from, expected) in cases {
            let got = fires(expression, tz, from, expected.len().max(1));
            let want: Vec<String> = expected.iter().map(|s| s.to_string()).collect();
            // An empty list asks for one fire time and expects none.
            assert_eq!(got, want, "{expression} in {tz} after {from}");
        }
    }

    #[test]
    fn daylight_saving_time() {
        let cases: &[(&str, &str, &str, &[&str])] = &[
            // New York springs forward 2027-03-14 02:00 → 03:00: 02:30 fires once, at 03:30 EDT.
            (
                "30 2 * * *",
                "America/New_York",
                "2027-03-13T12:00:00Z",
                &["2027-03-14T03:30:00-04:00", "2027-03-15T02:30:00-04:00"],
            ),
            // ... and falls back 2026-11-01 02:00 → 01:00: 01:30 fires once, the first time (EDT).
            (
                "30 1 * * *",
                "America/New_York",
                "2026-10-31T12:00:00Z",
                &["2026-11-01T01:30:00-04:00", "2026-11-02T01:30:00-05:00"],
            ),
            // Every 30 minutes across the fall-back hour: the repeated wall times fire once.
            (
                "*/30 * * * *",
                "America/New_York",
                "2026-11-01T04:45:00Z",
                &[
                    "2026-11-01T01:00:00-04:00",
                    "2026-11-01T01:30:00-04:00",
                    "2026-11-01T02:00:00-05:00",
                ],
            ),
            // London springs forward 2027-03-28 01:00 → 02:00 and falls back 2026-10-25 02:00 → 01:00.
            (
                "30 1 * * *",
                "Europe/London",
                "2027-03-27T12:00:00Z",
                &["2027-03-28T02:30:00+01:00", "2027-03-29T01:30:00+01:00"],
            ),
            (
                "30 1 * * *",
                "Europe/London",
                "2026-10-24T12:00:00Z",
                &["2026-10-25T01:30:00+01:00", "2026-10-26T01:30:00+00:00"],
            ),
            // Every 15 minutes through the spring-forward gap: nothing fires twice or goes back.
            (
                "*/15 * * * *",
                "Europe/London",
                "2027-03-28T00:40:00Z",
                &[
                    "2027-03-28T00:45:00+00:00",
                    "2027-03-28T02:00:00+01:00",
                    "2027-03-28T02:15:00+01:00",
                ],
            ),
            // rate is absolute time: an hour is an hour across the change.
            (
                "rate(1 hour)",
                "America/New_York",
                "2027-03-14T06:00:00Z",
                &["2027-03-14T03:00:00-04:00", "2027-03-14T04:00:00-04:00"],
            ),
        ];
        for (expression, tz, from, expected) in cases {
            assert_eq!(
                fires(expression, tz, from, expected.len()),
                *expected,
                "{expression} in {tz} after {from}"
            );
        }
    }

    #[test]
    fn invalid_expressions_say_what_and_where() {
        let cases = [
            ("0 2 * *", "at column 0: has 4 fields"),
            ("0 25 * * *", "at column 2: hour 25 is out of range 0-23"),
            (
                "0 2 * * MON-FOO",
                "at column 8: \"FOO\" is not a day of the week",
            ),
            ("*/0 * * * *", "at column 0: \"0\" is not a step"),
            ("5-1 * * * *", "at column 0: range 5-1 runs backwards"),
            (
                "cron(0 2 * * MON *)",
                "at column 9: AWS cron needs ? in exactly one",
            ),
            (
                "cron(0 2 ? * 0 *)",
                "at column 13: day of the week 0 is out of range 1-7",
            ),
            ("cron(0 2 ? * 2#6 *)", "# is followed by 1 to 5"),
            ("cron(0 2 ? * MON *", "missing its closing parenthesis"),
            ("rate(0 minutes)", "\"0\" is not a positive whole number"),
            ("rate(5 weeks)", "\"weeks\" is not a unit"),
            ("at(2027-13-01T00:00:00)", "is not a wall time"),
            ("@fortnightly", "unknown shorthand @fortnightly"),
            (
                "cron(0 2 ? * * 1969)",
                "year 1969 is out of range 1970-2199",
            ),
        ];
        for (expression, expected) in cases {
            let error = parse_expression(expression).unwrap_err().to_string();
            assert!(error.contains(expected), "{expression}: {error}");
        }
    }
}

/// A validated `kind: Schedule`.
#[derive(Debug, Clone, PartialEq)]
pub struct Schedule {
    pub name: String,
    pub expression: ScheduleExpression,
    /// As written, for display.
    pub expression_text: String,
    pub time_zone: Tz,
    pub enabled: bool,
    pub start: Option<DateTime<Utc>>,
    pub end: Option<DateTime<Utc>>,
    /// Each tick fires at a random point up to this late (EventBridge Scheduler's
    /// flexibleTimeWindow), spreading many schedules of the same tick.
    pub flexible_window_minutes: u32,
    pub overlap: OverlapPolicy,
    pub catch_up: CatchUp,
}

/// Kubernetes CronJob's concurrencyPolicy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum OverlapPolicy {
    /// Fire even while the last fired job runs.
    Allow,
    /// Skip a tick while the last fired job has not finished.
    Forbid,
    /// Terminate the last fired job if it has not finished, then fire.
    Replace,
}

/// What happens to ticks missed while no server ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CatchUp {
    pub policy: CatchUpPolicy,
    /// Missed ticks older than this are skipped (recorded as such), whatever the policy.
    pub max_age_seconds: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CatchUpPolicy {
    /// Skip every missed tick.
    None,
    /// Fire only the most recent missed tick.
    Latest,
    /// Fire every missed tick.
    All,
}

/// How late a tick may fire and still count as on time rather than missed.
pub const ON_TIME_SECONDS: i64 = 60;
/// The most ticks one evaluation considers, so a tiny rate after a long downtime stays bounded.
pub const MAX_TICKS_PER_EVALUATION: usize = 1000;

/// What to do with one tick.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TickDecision {
    Fire { tick: DateTime<Utc> },
    Skip { tick: DateTime<Utc>, reason: String },
}

/// The ticks of `schedule` that are due at `now`, having handled every tick up to `since`
/// (exclusive of later ones), each with what to do. Missed ticks (older than `ON_TIME_SECONDS`)
/// follow the catch-up policy; none is dropped silently: skipped ones are returned as `Skip`.
pub fn due_ticks(
    schedule: &Schedule,
    anchor: DateTime<Utc>,
    since: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Vec<TickDecision> {
    if !schedule.enabled {
        return Vec::new();
    }
    let mut ticks = Vec::new();
    let mut cursor = match schedule.start {
        // A start date later than `since` means nothing before it counts.
        Some(start) if start > since => start - Duration::milliseconds(1),
        _ => since,
    };
    while ticks.len() < MAX_TICKS_PER_EVALUATION {
        match next_fire(&schedule.expression, schedule.time_zone, anchor, cursor) {
            Some(tick) if tick <= now && schedule.end.is_none_or(|end| tick <= end) => {
                ticks.push(tick);
                cursor = tick;
            }
            _ => break,
        }
    }
    let on_time = |tick: &DateTime<Utc>| (now - *tick).num_seconds() < ON_TIME_SECONDS;
    let too_old = |tick: &DateTime<Utc>| {
        schedule
            .catch_up
            .max_age_seconds
            .is_some_and(|max| (now - *tick).num_seconds() > max as i64)
    };
    let latest_missed = ticks.iter().rev().find(|tick| !on_time(tick)).copied();
    ticks
        .into_iter()
        .map(|tick| {
            if on_time(&tick) {
                return TickDecision::Fire { tick };
            }
            let skip = |reason: String| TickDecision::Skip { tick, reason };
            if too_old(&tick) {
                return skip(format!(
                    "missed while no server ran, older than catchUp.maxAgeSeconds ({})",
                    schedule.catch_up.max_age_seconds.unwrap_or_default()
                ));
            }
            match schedule.catch_up.policy {
                CatchUpPolicy::All => TickDecision::Fire { tick },
                CatchUpPolicy::Latest if Some(tick) == latest_missed => TickDecision::Fire { tick },
                CatchUpPolicy::Latest => skip(
                    "missed while no server ran; catchUp.policy latest fires only the latest"
                        .into(),
                ),
                CatchUpPolicy::None => {
                    skip("missed while no server ran; catchUp.policy is none".into())
                }
            }
        })
        .collect()
}

/// What the overlap policy says about firing while the last fired job is `last_job_finished`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OverlapAction {
    Fire,
    Skip,
    TerminateThenFire,
}

pub fn overlap_action(policy: OverlapPolicy, last_job_finished: bool) -> OverlapAction {
    match (policy, last_job_finished) {
        (_, true) | (OverlapPolicy::Allow, false) => OverlapAction::Fire,
        (OverlapPolicy::Forbid, false) => OverlapAction::Skip,
        (OverlapPolicy::Replace, false) => OverlapAction::TerminateThenFire,
    }
}

/// How late within its flexible window a tick fires: a stable fraction of the window per
/// (schedule, tick), so every replica computes the same instant.
pub fn flexible_delay(schedule: &Schedule, tick: DateTime<Utc>) -> Duration {
    if schedule.flexible_window_minutes == 0 {
        return Duration::zero();
    }
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in schedule
        .name
        .bytes()
        .chain(tick.timestamp_millis().to_le_bytes())
    {
        hash = (hash ^ u64::from(byte)).wrapping_mul(0x100_0000_01b3);
    }
    let window_ms = i64::from(schedule.flexible_window_minutes) * 60_000;
    Duration::milliseconds((hash % window_ms as u64) as i64)
}

#[cfg(test)]
mod decision_tests {
    use super::*;

    fn utc(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .unwrap()
            .with_timezone(&Utc)
    }

    fn schedule(expression: &str, policy: CatchUpPolicy, max_age: Option<u64>) -> Schedule {
        Schedule {
            name: "s".into(),
            expression: parse_expression(expression).unwrap(),
            expression_text: expression.into(),
            time_zone: chrono_tz::UTC,
            enabled: true,
            start: None,
            end: None,
            flexible_window_minutes: 0,
            overlap: OverlapPolicy::Allow,
            catch_up: CatchUp {
                policy,
                max_age_seconds: max_age,
            },
        }
    }

    fn summary(decisions: &[TickDecision]) -> Vec<String> {
        decisions
            .iter()
            .map(|decision| match decision {
                TickDecision::Fire { tick } => format!("fire {}", tick.format("%H:%M")),
                TickDecision::Skip { tick, .. } => format!("skip {}", tick.format("%H:%M")),
            })
            .collect()
    }

    #[test]
    fn missed_ticks_follow_the_catch_up_policy() {
        // Every 10 minutes; the server was down from 10:00 to 10:35; it is now 10:40:20, so 10:40
        // is on time and 10:10 to 10:30 were missed.
        let since = utc("2026-11-21T10:00:00Z");
        let now = utc("2026-11-21T10:40:20Z");
        let cases: [(CatchUpPolicy, Option<u64>, &[&str]); 5] = [
            (
                CatchUpPolicy::None,
                None,
                &["skip 10:10", "skip 10:20", "skip 10:30", "fire 10:40"],
            ),
            (
                CatchUpPolicy::Latest,
                None,
                &["skip 10:10", "skip 10:20", "fire 10:30", "fire 10:40"],
            ),
            (
                CatchUpPolicy::All,
                None,
                &["fire 10:10", "fire 10:20", "fire 10:30", "fire 10:40"],
            ),
            // maxAge 1300 s: 10:10 (1820 s old) is too old, 10:20 (1220 s) is not.
            (
                CatchUpPolicy::All,
                Some(1300),
                &["skip 10:10", "fire 10:20", "fire 10:30", "fire 10:40"],
            ),
            (
                CatchUpPolicy::Latest,
                Some(60),
                &["skip 10:10", "skip 10:20", "skip 10:30", "fire 10:40"],
            ),
        ];
        for (policy, max_age, expected) in cases {
            let schedule = schedule("*/10 * * * *", policy, max_age);
            let decisions = due_ticks(&schedule, since, since, now);
            assert_eq!(summary(&decisions), *expected, "{policy:?} {max_age:?}");
        }
    }

    #[test]
    fn start_end_and_state_bound_the_ticks() {
        let since = utc("2026-11-21T10:00:00Z");
        let now = utc("2026-11-21T10:00:50Z");
        let mut every_minute = schedule("rate(1 minute)", CatchUpPolicy::All, None);
        assert_eq!(
            summary(&due_ticks(&every_minute, since, since, now)),
            Vec::<String>::new()
        );
        let now = utc("2026-11-21T10:03:10Z");
        assert_eq!(
            summary(&due_ticks(&every_minute, since, since, now)),
            ["fire 10:01", "fire 10:02", "fire 10:03"]
        );
        every_minute.end = Some(utc("2026-11-21T10:02:00Z"));
        assert_eq!(
            summary(&due_ticks(&every_minute, since, since, now)),
            ["fire 10:01", "fire 10:02"]
        );
        every_minute.end = None;
        every_minute.start = Some(utc("2026-11-21T10:02:30Z"));
        assert_eq!(
            summary(&due_ticks(&every_minute, since, since, now)),
            ["fire 10:03"]
        );
        every_minute.enabled = false;
        assert!(due_ticks(&every_minute, since, since, now).is_empty());
    }

    #[test]
    fn overlap_policies_as_kubernetes() {
        use OverlapAction::*;
        let cases = [
            (OverlapPolicy::Allow, false, Fire),
            (OverlapPolicy::Forbid, false, Skip),
            (OverlapPolicy::Replace, false, TerminateThenFire),
            (OverlapPolicy::Forbid, true, Fire),
            (OverlapPolicy::Replace, true, Fire),
        ];
        for (policy, finished, expected) in cases {
            assert_eq!(
                overlap_action(policy, finished),
                expected,
                "{policy:?} {finished}"
            );
        }
    }

    #[test]
    fn the_flexible_delay_is_stable_and_within_the_window() {
        let mut s = schedule("@hourly", CatchUpPolicy::None, None);
        let tick = utc("2026-11-21T10:00:00Z");
        assert_eq!(flexible_delay(&s, tick), Duration::zero());
        s.flexible_window_minutes = 15;
        let delay = flexible_delay(&s, tick);
        assert_eq!(delay, flexible_delay(&s, tick));
        assert!(delay >= Duration::zero() && delay < Duration::minutes(15));
    }
}
