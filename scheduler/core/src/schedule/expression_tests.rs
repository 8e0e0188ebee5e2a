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
