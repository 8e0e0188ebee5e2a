//! The console's charts: per-minute series from the store's counts, drawn as SVG by the server
//! (no script, nothing fetched). Pure.

use maud::{html, Markup};

use crate::store::FinishedMinute;

/// Minutes the charts cover, ending at the current minute.
pub const WINDOW_MINUTES: usize = 180;

/// One queue's activity over the window, oldest minute first.
#[derive(Debug, Clone, PartialEq)]
pub struct QueueSeries {
    pub queue: String,
    pub finished: Vec<f64>,
    /// Mean wait from submit to start of the jobs that finished in each minute, in seconds
    /// (0 where none had started).
    pub mean_wait_seconds: Vec<f64>,
}

/// Spreads the store's rows over the `WINDOW_MINUTES` ending at `now` (epoch milliseconds), one
/// series per queue in `queues` order; minutes without a row are zero.
pub fn series(queues: &[String], rows: &[FinishedMinute], now: i64) -> Vec<QueueSeries> {
    let last = now.div_euclid(60_000);
    let first = last - WINDOW_MINUTES as i64 + 1;
    queues
        .iter()
        .map(|queue| {
            let mut finished = vec![0.0; WINDOW_MINUTES];
            let mut mean_wait_seconds = vec![0.0; WINDOW_MINUTES];
            for row in rows
                .iter()
                .filter(|row| &row.queue == queue && (first..=last).contains(&row.minute))
            {
                let at = (row.minute - first) as usize;
                finished[at] = row.finished as f64;
                if row.started > 0 {
                    mean_wait_seconds[at] = row.wait_millis as f64 / row.started as f64 / 1000.0;
                }
            }
            QueueSeries {
                queue: queue.clone(),
                finished,
                mean_wait_seconds,
            }
        })
        .collect()
}

/// The per-minute counts of minutes that are over, kept between requests so a page refresh reads
/// only the last minutes from the store (a busy installation finishes millions of jobs in the
/// window; the console refreshes after every burst of events).
#[derive(Debug, Default)]
pub struct MinuteCache {
    queues: Vec<String>,
    /// Rows of minutes before `complete_before`.
    rows: Vec<FinishedMinute>,
    complete_before: i64,
}

/// How far back a refresh reads again: jobs are written a moment after they stop, so the minute
/// before this one may still gain some.
const SETTLE_MINUTES: i64 = 2;

impl MinuteCache {
    /// The epoch milliseconds from which the store must be read for `queues` at `now`.
    pub fn read_since(&self, queues: &[String], now: i64) -> i64 {
        let first = now.div_euclid(60_000) - WINDOW_MINUTES as i64 + 1;
        let from = if self.queues == queues {
            self.complete_before.max(first)
        } else {
            first
        };
        from * 60_000
    }

    /// Merges what was read since `read_since` and gives every row of the window.
    pub fn merge(
        &mut self,
        queues: &[String],
        now: i64,
        since: i64,
        read: Vec<FinishedMinute>,
    ) -> Vec<FinishedMinute> {
        let minute_now = now.div_euclid(60_000);
        let first = minute_now - WINDOW_MINUTES as i64 + 1;
        let read_from = since.div_euclid(60_000);
        if self.queues != queues {
            self.queues = queues.to_vec();
            self.rows.clear();
        }
        self.rows
            .retain(|row| row.minute >= first && row.minute < read_from);
        let settled = minute_now - SETTLE_MINUTES;
        let mut all = self.rows.clone();
        for row in read {
            if row.minute < settled {
                self.rows.push(row.clone());
            }
            all.push(row);
        }
        self.complete_before = settled;
        all
    }
}

const WIDTH: f64 = 540.0;
const HEIGHT: f64 = 90.0;
const LEFT: f64 = 44.0;
const BOTTOM: f64 = 16.0;

/// A bar per minute, scaled to the largest value, with the scale and the time axis labelled.
/// `label` says what it shows to a screen reader as well as on the page.
pub fn bar_chart(label: &str, unit: &str, values: &[f64]) -> Markup {
    let top = values.iter().copied().fold(0.0_f64, f64::max);
    let scale_top = nice_ceiling(top);
    let plot_width = WIDTH - LEFT;
    let plot_height = HEIGHT - BOTTOM;
    let bar = plot_width / values.len().max(1) as f64;
    let total: f64 = values.iter().sum();
    let summary = format!(
        "{label}: at most {} {unit} in a minute over the last {} hours",
        trim(top),
        WINDOW_MINUTES / 60
    );
    html! {
        svg class="chart" viewBox={ "0 0 " (WIDTH) " " (HEIGHT) } role="img" aria-label=(summary)
            data-total=(trim(total)) {
            title { (summary) }
            line x1=(LEFT) y1=(plot_height) x2=(WIDTH) y2=(plot_height) class="axis" {}
            text x=(LEFT - 4.0) y="10" text-anchor="end" class="tick" { (trim(scale_top)) }
            text x=(LEFT - 4.0) y=(plot_height) text-anchor="end" class="tick" { "0" }
            @for (i, value) in values.iter().enumerate() {
                @if *value > 0.0 {
                    @let height = value / scale_top * plot_height;
                    rect x=(fixed(LEFT + i as f64 * bar)) y=(fixed(plot_height - height))
                        width=(fixed(bar.max(1.0))) height=(fixed(height)) class="bar" {}
                }
            }
            @for hours_ago in (0..=WINDOW_MINUTES / 60).rev() {
                @let x = LEFT + plot_width * (1.0 - hours_ago as f64 * 60.0 / WINDOW_MINUTES as f64);
                text x=(fixed(x)) y=(HEIGHT - 2.0) text-anchor=(if hours_ago == 0 { "end" } else { "middle" })
                    class="tick" {
                    @if hours_ago == 0 { "now" } @else { "-" (hours_ago) "h" }
                }
            }
        }
    }
}

/// The smallest of 1, 2 or 5 times a power of ten at or above `value` (at least 1).
fn nice_ceiling(value: f64) -> f64 {
    if value <= 1.0 {
        return 1.0;
    }
    let power = 10f64.powf(value.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|step| step * power)
        .find(|candidate| *candidate >= value)
        .unwrap_or(10.0 * power)
}

fn fixed(value: f64) -> String {
    format!("{value:.1}")
}

fn trim(value: f64) -> String {
    if value.fract() == 0.0 {
        format!("{value:.0}")
    } else {
        format!("{value:.1}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(
        queue: &str,
        minute: i64,
        finished: u64,
        started: u64,
        wait_millis: i64,
    ) -> FinishedMinute {
        FinishedMinute {
            queue: queue.into(),
            minute,
            finished,
            started,
            wait_millis,
        }
    }

    #[test]
    fn rows_land_in_their_minute_and_old_ones_fall_out() {
        let now = 1_000 * 60_000 + 30_000;
        let queues = vec!["a".to_string(), "b".to_string()];
        let rows = [
            row("a", 1_000, 4, 2, 3_000),
            row("a", 999, 1, 0, 0),
            row("a", 1_000 - WINDOW_MINUTES as i64, 7, 7, 7_000),
            row("b", 1_000 - WINDOW_MINUTES as i64 + 1, 2, 2, 1_000),
        ];
        let series = series(&queues, &rows, now);
        assert_eq!(series.len(), 2);
        let a = &series[0];
        assert_eq!(a.finished.len(), WINDOW_MINUTES);
        assert_eq!(a.finished[WINDOW_MINUTES - 1], 4.0);
        assert_eq!(a.mean_wait_seconds[WINDOW_MINUTES - 1], 1.5);
        assert_eq!(a.finished[WINDOW_MINUTES - 2], 1.0);
        assert_eq!(a.mean_wait_seconds[WINDOW_MINUTES - 2], 0.0);
        assert_eq!(
            a.finished.iter().sum::<f64>(),
            5.0,
            "the minute before the window is out"
        );
        assert_eq!(series[1].finished[0], 2.0);
        assert_eq!(series[1].mean_wait_seconds[0], 0.5);
    }

    #[test]
    fn the_cache_reads_only_the_last_minutes_once_it_has_the_rest() {
        let queues = vec!["q".to_string()];
        let minute = |m: i64| m * 60_000 + 5_000;
        let mut cache = MinuteCache::default();
        // First read: the whole window.
        let now = minute(1_000);
        let since = cache.read_since(&queues, now);
        assert_eq!(since, (1_000 - WINDOW_MINUTES as i64 + 1) * 60_000);
        let all = cache.merge(
            &queues,
            now,
            since,
            vec![
                row("q", 900, 1, 1, 0),
                row("q", 999, 2, 2, 0),
                row("q", 1_000, 3, 3, 0),
            ],
        );
        assert_eq!(all.len(), 3);
        // A minute later: only from two minutes back; the settled minute 900 comes from the cache.
        let now = minute(1_001);
        let since = cache.read_since(&queues, now);
        assert_eq!(since, 998 * 60_000);
        let all = cache.merge(
            &queues,
            now,
            since,
            vec![
                row("q", 999, 2, 2, 0),
                row("q", 1_000, 4, 4, 0),
                row("q", 1_001, 1, 1, 0),
            ],
        );
        let counts: Vec<(i64, u64)> = all.iter().map(|r| (r.minute, r.finished)).collect();
        assert_eq!(counts, [(900, 1), (999, 2), (1_000, 4), (1_001, 1)]);
        // Another queue: everything again.
        let other = vec!["q".to_string(), "p".to_string()];
        assert_eq!(
            cache.read_since(&other, now),
            (1_001 - WINDOW_MINUTES as i64 + 1) * 60_000
        );
    }

    #[test]
    fn scales_round_up_to_readable_steps() {
        assert_eq!(nice_ceiling(0.0), 1.0);
        assert_eq!(nice_ceiling(3.0), 5.0);
        assert_eq!(nice_ceiling(10.0), 10.0);
        assert_eq!(nice_ceiling(11.0), 20.0);
        assert_eq!(nice_ceiling(430.0), 500.0);
        assert_eq!(nice_ceiling(501.0), 1000.0);
    }

    #[test]
    fn a_chart_draws_a_bar_per_busy_minute_and_says_what_it_shows() {
        let mut values = vec![0.0; WINDOW_MINUTES];
        values[10] = 3.0;
        values[WINDOW_MINUTES - 1] = 6.0;
        let svg = bar_chart("Jobs finished per minute in q", "jobs", &values).into_string();
        assert_eq!(svg.matches("<rect").count(), 2, "{svg}");
        assert!(svg.contains(r#"aria-label="Jobs finished per minute in q: at most 6 jobs in a minute over the last 3 hours""#), "{svg}");
        assert!(svg.contains(r#"data-total="9""#), "{svg}");
        // The tallest bar fills the scale's top (10) to 6/10 of the plot.
        assert!(
            svg.contains(&format!(
                r#"height="{:.1}""#,
                6.0 / 10.0 * (HEIGHT - BOTTOM)
            )),
            "{svg}"
        );
        assert!(svg.contains(">-3h<") && svg.contains(">now<"), "{svg}");
    }
}
