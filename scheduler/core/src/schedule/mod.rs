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

mod expression;
mod firing;

pub use expression::*;
pub use firing::*;
