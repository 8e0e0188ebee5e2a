//! Parsing schedule expressions and computing their next fire time (see the module above).

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
#[path = "expression_tests.rs"]
mod tests;
