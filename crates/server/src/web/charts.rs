//! Charts as inline SVG, drawn on the server: they show with script off,
//! every mark carries its exact value as a `<title>` (a tooltip on hover)
//! and every chart has a text summary for screen readers.
use maud::{Markup, html};
use rust_decimal::Decimal;
use rust_decimal::prelude::ToPrimitive;

const W: f64 = 640.0;
const H: f64 = 200.0;
/// Room for the axis labels.
const LEFT: f64 = 70.0;
const BOTTOM: f64 = 24.0;
const TOP: f64 = 10.0;

fn f(d: Decimal) -> f64 {
    d.to_f64().unwrap_or(0.0)
}

/// A value on the y axis between `lo` and `hi`, in a chart `h` high.
fn y_of(v: f64, lo: f64, hi: f64, h: f64) -> f64 {
    let span = if hi > lo { hi - lo } else { 1.0 };
    TOP + (h - TOP - BOTTOM) * (1.0 - (v - lo) / span)
}

/// Money as the axis shows it: grouped thousands, no decimals past 1,000.
fn short(v: Decimal) -> String {
    let rounded = if v.abs() >= Decimal::from(1000) {
        v.round()
    } else {
        v.round_dp(2)
    };
    rounded.to_string()
}

/// A line of values over time: `points` are (label, value), oldest first.
/// Drawn small (it sits in a card), so its text stays readable when scaled.
pub(crate) fn line(points: &[(String, Decimal)], currency: &str, summary: &str) -> Markup {
    const W: f64 = 360.0;
    const H: f64 = 160.0;
    if points.is_empty() {
        return html! {};
    }
    let lo = points.iter().map(|p| p.1).min().unwrap_or_default();
    let hi = points.iter().map(|p| p.1).max().unwrap_or_default();
    let (flo, fhi) = (f(lo), f(hi));
    let step = (W - LEFT - 10.0) / (points.len().max(2) - 1) as f64;
    let xy: Vec<(f64, f64)> = points
        .iter()
        .enumerate()
        .map(|(i, p)| (LEFT + step * i as f64, y_of(f(p.1), flo, fhi, H)))
        .collect();
    let path: String = xy
        .iter()
        .map(|(x, y)| format!("{x:.1},{y:.1}"))
        .collect::<Vec<_>>()
        .join(" ");
    html! {
        svg.chart viewBox={"0 0 " (W) " " (H)} role="img" aria-label=(summary) {
            (axis(flo, fhi, currency, W, H))
            polyline.line points=(path) {}
            @for (i, (x, y)) in xy.iter().enumerate() {
                circle.dot cx=(format!("{x:.1}")) cy=(format!("{y:.1}")) r="3.5" {
                    title { (points[i].0) ": " (points[i].1) " " (currency) }
                }
            }
            text x=(LEFT) y=(H - 6.0) { (points[0].0) }
            text x=(W - 10.0) y=(H - 6.0) text-anchor="end" { (points[points.len() - 1].0) }
        }
    }
}

/// The y axis: its low and high values, and zero when it is in between.
fn axis(lo: f64, hi: f64, currency: &str, w: f64, h: f64) -> Markup {
    let label = |v: f64| short(Decimal::from_f64_retain(v).unwrap_or_default());
    html! {
        line.axis x1=(LEFT) y1=(TOP) x2=(LEFT) y2=(h - BOTTOM) {}
        text x=(LEFT - 6.0) y=(y_of(hi, lo, hi, h) + 4.0) text-anchor="end" { (label(hi)) }
        text x=(LEFT - 6.0) y=(y_of(lo, lo, hi, h) + 4.0) text-anchor="end" { (label(lo)) " " (currency) }
        @if lo < 0.0 && hi > 0.0 {
            line.zero x1=(LEFT) y1=(format!("{:.1}", y_of(0.0, lo, hi, h))) x2=(w - 10.0) y2=(format!("{:.1}", y_of(0.0, lo, hi, h))) {}
        }
    }
}

/// Money out and in per month, side by side: (month, debit ≤ 0, credit ≥ 0).
pub(crate) fn debit_credit(
    months: &[(String, Decimal, Decimal)],
    currency: &str,
    summary: &str,
) -> Markup {
    let hi = months
        .iter()
        .map(|m| m.1.abs().max(m.2))
        .max()
        .unwrap_or_default();
    let fhi = f(hi).max(1.0);
    let slot = (W - LEFT - 10.0) / months.len().max(1) as f64;
    let bar = (slot * 0.38).min(24.0);
    let base = H - BOTTOM;
    let height = |v: Decimal| (H - TOP - BOTTOM) * f(v.abs()) / fhi;
    html! {
        svg.chart viewBox={"0 0 " (W) " " (H)} role="img" aria-label=(summary) {
            (axis(0.0, fhi, currency, W, H))
            @for (i, (month, debit, credit)) in months.iter().enumerate() {
                @let x = LEFT + slot * i as f64 + slot / 2.0;
                rect.debit x=(format!("{:.1}", x - bar)) y=(format!("{:.1}", base - height(*debit))) width=(format!("{bar:.1}")) height=(format!("{:.1}", height(*debit))) {
                    title { (month) " out: " (debit) " " (currency) }
                }
                rect.credit x=(format!("{x:.1}")) y=(format!("{:.1}", base - height(*credit))) width=(format!("{bar:.1}")) height=(format!("{:.1}", height(*credit))) {
                    title { (month) " in: " (credit) " " (currency) }
                }
                @if months.len() <= 12 || i % 2 == 0 {
                    text x=(format!("{x:.1}")) y=(H - 6.0) text-anchor="middle" { (&month[2..]) }
                }
            }
        }
    }
}

/// Horizontal bars, largest first: (label, amount ≥ 0).
pub(crate) fn bars(rows: &[(String, Decimal)], currency: &str, summary: &str) -> Markup {
    let hi = f(rows.iter().map(|r| r.1).max().unwrap_or_default()).max(1.0);
    let row_h = 26.0;
    let h = row_h * rows.len() as f64 + 4.0;
    let label_w = 150.0;
    let room = W - label_w - 140.0;
    html! {
        svg.chart viewBox={"0 0 " (W) " " (format!("{h:.0}"))} role="img" aria-label=(summary) {
            @for (i, (label, amount)) in rows.iter().enumerate() {
                @let y = row_h * i as f64 + 4.0;
                @let w = (room * f(*amount) / hi).max(1.0);
                text x=(label_w - 8.0) y=(format!("{:.1}", y + 15.0)) text-anchor="end" { (label) }
                rect.spend x=(label_w) y=(format!("{y:.1}")) width=(format!("{w:.1}")) height=(row_h - 8.0) {
                    title { (label) ": " (amount) " " (currency) }
                }
                text x=(format!("{:.1}", label_w + w + 6.0)) y=(format!("{:.1}", y + 15.0)) { (short(*amount)) " " (currency) }
            }
        }
    }
}

/// A bar of a waterfall: where it starts and how long it lasts (ms).
pub(crate) struct Bar {
    pub label: String,
    /// The bar's class (its colour): `run-passed`, `run-failed`, …
    pub class: String,
    pub start: i64,
    pub length: i64,
}

/// Bars on a shared time axis, one row each, with their time written beside.
pub(crate) fn waterfall(bars: &[Bar], summary: &str) -> Markup {
    let end = bars
        .iter()
        .map(|b| b.start + b.length)
        .max()
        .unwrap_or(0)
        .max(1) as f64;
    let row_h = 24.0;
    let label_w = 200.0;
    let room = W - label_w - 80.0;
    let h = row_h * bars.len() as f64 + 4.0;
    html! {
        svg.chart.waterfall viewBox={"0 0 " (W) " " (format!("{h:.0}"))} role="img" aria-label=(summary) {
            @for (i, b) in bars.iter().enumerate() {
                @let y = row_h * i as f64 + 4.0;
                @let x = label_w + room * b.start as f64 / end;
                @let w = (room * b.length as f64 / end).max(2.0);
                text x="0" y=(format!("{:.1}", y + 14.0)) { (b.label) }
                rect class=(b.class) x=(format!("{x:.1}")) y=(format!("{y:.1}")) width=(format!("{w:.1}")) height=(row_h - 8.0) {
                    title { (b.label) ": " (b.length) " ms, from " (b.start) " ms" }
                }
                text x=(format!("{:.1}", x + w + 6.0)) y=(format!("{:.1}", y + 14.0)) { (b.length) " ms" }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    fn d(s: &str) -> Decimal {
        Decimal::from_str(s).unwrap()
    }

    #[test]
    fn every_month_has_two_bars_with_exact_titles() {
        let months = vec![
            ("2024-05".to_owned(), d("-120.50"), d("1500")),
            ("2024-06".to_owned(), d("-3000.25"), d("0")),
        ];
        let svg = debit_credit(&months, "EUR", "summary").into_string();
        assert_eq!(svg.matches("<rect class=\"debit\"").count(), 2);
        assert_eq!(svg.matches("<rect class=\"credit\"").count(), 2);
        assert!(svg.contains("2024-06 out: -3000.25 EUR"));
        // The tallest bar fills the plot: 3000.25 is the largest magnitude.
        assert!(svg.contains(&format!("height=\"{:.1}\"", H - TOP - BOTTOM)));
    }

    #[test]
    fn a_line_marks_each_point_and_escapes_labels() {
        let pts = vec![("<b>".to_owned(), d("10")), ("2024-06".to_owned(), d("-5"))];
        let svg = line(&pts, "EUR", "a \"quoted\" summary").into_string();
        assert_eq!(svg.matches("<circle").count(), 2);
        assert!(svg.contains("&lt;b&gt;") && !svg.contains("<b>"));
        assert!(svg.contains("aria-label=\"a &quot;quoted&quot; summary\""));
        assert!(
            svg.contains("class=\"zero\""),
            "zero is drawn between -5 and 10"
        );
    }

    #[test]
    fn a_waterfall_places_each_step_after_the_ones_before() {
        let bars = vec![
            Bar {
                label: "login".into(),
                class: "run-passed".into(),
                start: 0,
                length: 300,
            },
            Bar {
                label: "accounts".into(),
                class: "run-failed".into(),
                start: 300,
                length: 100,
            },
        ];
        let svg = waterfall(&bars, "2 steps").into_string();
        let room = W - 200.0 - 80.0;
        assert!(
            svg.contains(&format!("x=\"{:.1}\"", 200.0 + room * 0.75)),
            "{svg}"
        );
        assert!(svg.contains(&format!("width=\"{:.1}\"", room * 0.25)));
        assert!(svg.contains("class=\"run-failed\""));
    }

    #[test]
    fn bars_scale_to_the_largest() {
        let rows = vec![("food".to_owned(), d("200")), ("rent".to_owned(), d("50"))];
        let svg = bars(&rows, "EUR", "s").into_string();
        let room = W - 150.0 - 140.0;
        assert!(svg.contains(&format!("width=\"{room:.1}\"")));
        assert!(svg.contains(&format!("width=\"{:.1}\"", room / 4.0)));
    }
}
