//! The board's trend chart: a bar chart drawn on the server as inline SVG
//! (no script, no inline style), with the same numbers as a table for
//! readers who cannot see it.

use maud::{Markup, html};

use super::Lang;
use super::board::{count, share};

/// One month of the trend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrendPoint {
    /// The month as the axis shows it (`11/2026`).
    pub label: String,
    /// Pickup handoffs created in the month.
    pub received_by_post: u64,
    /// Return handoffs created in the month.
    pub returned_by_post: u64,
    /// Of the month's handoffs, those delivered by the legal time.
    pub on_time: u64,
    /// Of the month's handoffs, those delivered after the legal time.
    pub late: u64,
}

/// The view box: the SVG scales to its container, these are its units.
const WIDTH: f64 = 720.0;
const HEIGHT: f64 = 300.0;
/// The plot area inside the view box (room left for the axis labels, above
/// for the legend, below for the months).
const LEFT: f64 = 56.0;
const RIGHT: f64 = 704.0;
const TOP: f64 = 44.0;
const BASE: f64 = 260.0;

/// The two series' colours (the stylesheet's accent, and an orange that
/// stays distinct from it for colour-blind readers).
const RECEIVED_FILL: &str = "#0b5cad";
const RETURNED_FILL: &str = "#d06a00";
const GRID: &str = "#d8dde3";
const INK: &str = "#1b1f24";

/// The top of the value axis and its step: the smallest step of 1, 2 or 5
/// times a power of ten that reaches `max` in at most five steps, so the
/// ticks are whole numbers; at least one step when everything is zero.
pub fn axis(max: u64) -> (u64, u64) {
    let mut magnitude = 1u64;
    loop {
        for factor in [1, 2, 5] {
            let step = factor * magnitude;
            let steps = max.div_ceil(step).max(1);
            if steps <= 5 {
                return (step * steps, step);
            }
        }
        magnitude = magnitude.saturating_mul(10);
    }
}

/// The height of a bar of `value` on an axis topped at `top` (never 0).
fn bar_height(value: u64, top: u64) -> f64 {
    (BASE - TOP) * value as f64 / top as f64
}

/// The trend as an SVG bar chart: per month, a bar of dossiers received by
/// post and a bar of results returned by post, on one value axis.
pub fn trend_svg(lang: Lang, points: &[TrendPoint]) -> Markup {
    let max = points
        .iter()
        .map(|p| p.received_by_post.max(p.returned_by_post))
        .max()
        .unwrap_or(0);
    let (top, step) = axis(max);
    let slot = (RIGHT - LEFT) / points.len().max(1) as f64;
    let bar = (slot * 0.34).min(28.0);
    let received = lang.pick("Nhận hồ sơ qua bưu chính", "Dossiers received by post");
    let returned = lang.pick("Trả kết quả qua bưu chính", "Results returned by post");
    let title = lang.pick(
        "Số hồ sơ nhận và trả kết quả qua bưu chính theo tháng",
        "Dossiers received and results returned by post, by month",
    );
    let described = match (points.first(), points.last()) {
        (Some(first), Some(last)) => format!(
            "{} {} – {}. {}",
            lang.pick("Từ", "From"),
            first.label,
            last.label,
            lang.pick(
                "Cột xanh: nhận hồ sơ; cột cam: trả kết quả. Số liệu ở bảng bên dưới.",
                "Blue bars: dossiers received; orange bars: results returned. The numbers are in the table below."
            )
        ),
        _ => lang.pick("Không có số liệu.", "No figures.").to_owned(),
    };
    html! {
        svg xmlns="http://www.w3.org/2000/svg" viewBox={ "0 0 " (WIDTH) " " (HEIGHT) }
            role="img" aria-labelledby="trend-title trend-desc" {
            title #trend-title { (title) }
            desc #trend-desc { (described) }
            // The legend.
            g font-size="13" fill=(INK) {
                rect x=(LEFT) y="12" width="14" height="14" fill=(RECEIVED_FILL) {}
                text x=(LEFT + 20.0) y="24" { (received) }
                rect x=(LEFT + 300.0) y="12" width="14" height="14" fill=(RETURNED_FILL) {}
                text x=(LEFT + 320.0) y="24" { (returned) }
            }
            // The value axis: a grid line and a label per step.
            g font-size="12" fill=(INK) text-anchor="end" {
                @for tick in (0..=top).step_by(step.max(1) as usize) {
                    @let y = fixed(BASE - bar_height(tick, top));
                    line x1=(LEFT) x2=(RIGHT) y1=(y) y2=(y) stroke=(GRID) {}
                    text x=(LEFT - 6.0) y=(y) dy="4" { (count(lang, tick)) }
                }
            }
            line x1=(LEFT) x2=(RIGHT) y1=(BASE) y2=(BASE) stroke=(INK) {}
            @for (i, p) in points.iter().enumerate() {
                @let middle = LEFT + slot * (i as f64 + 0.5);
                @let h_received = bar_height(p.received_by_post, top);
                @let h_returned = bar_height(p.returned_by_post, top);
                g.month {
                    rect.received x=(fixed(middle - bar - 1.0)) y=(fixed(BASE - h_received))
                        width=(fixed(bar)) height=(fixed(h_received)) fill=(RECEIVED_FILL) {
                        title { (p.label) " — " (received) ": " (count(lang, p.received_by_post)) }
                    }
                    rect.returned x=(fixed(middle + 1.0)) y=(fixed(BASE - h_returned))
                        width=(fixed(bar)) height=(fixed(h_returned)) fill=(RETURNED_FILL) {
                        title { (p.label) " — " (returned) ": " (count(lang, p.returned_by_post)) }
                    }
                    text x=(fixed(middle)) y=(BASE + 18.0) font-size="12" fill=(INK) text-anchor="middle" {
                        (p.label)
                    }
                }
            }
        }
    }
}

/// The trend's numbers as a table: the chart's accessible fallback.
pub fn trend_table(lang: Lang, points: &[TrendPoint]) -> Markup {
    html! {
        div.table-wrap {
            table #trend-table {
                caption { (lang.pick("Số liệu của biểu đồ", "The chart's figures")) }
                thead {
                    tr {
                        th scope="col" { (lang.pick("Tháng", "Month")) }
                        th.num scope="col" { (lang.pick("Nhận hồ sơ qua bưu chính", "Received by post")) }
                        th.num scope="col" { (lang.pick("Trả kết quả qua bưu chính", "Returned by post")) }
                        th.num scope="col" { (lang.pick("Phát đúng hạn", "Delivered on time")) }
                        th.num scope="col" { (lang.pick("Phát trễ hạn", "Delivered late")) }
                        th.num scope="col" { (lang.pick("Tỷ lệ đúng hạn", "On-time share")) }
                    }
                }
                tbody {
                    @for p in points {
                        tr {
                            th scope="row" { (p.label) }
                            td.num { (count(lang, p.received_by_post)) }
                            td.num { (count(lang, p.returned_by_post)) }
                            td.num { (count(lang, p.on_time)) }
                            td.num { (count(lang, p.late)) }
                            td.num { (share(lang, p.on_time, p.late)) }
                        }
                    }
                }
            }
        }
    }
}

/// A coordinate with one decimal: enough for a screen, and stable text.
fn fixed(v: f64) -> String {
    format!("{v:.1}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(label: &str, received: u64, returned: u64) -> TrendPoint {
        TrendPoint {
            label: label.into(),
            received_by_post: received,
            returned_by_post: returned,
            on_time: 0,
            late: 0,
        }
    }

    /// The (class, height) of every bar, in order.
    fn bars(svg: &str) -> Vec<(String, f64)> {
        svg.split("<rect class=\"")
            .skip(1)
            .map(|rest| {
                let class = rest.split('"').next().unwrap().to_owned();
                let height = rest
                    .split("height=\"")
                    .nth(1)
                    .unwrap()
                    .split('"')
                    .next()
                    .unwrap()
                    .parse()
                    .unwrap();
                (class, height)
            })
            .collect()
    }

    #[test]
    fn the_axis_has_whole_steps_and_reaches_the_largest_value() {
        assert_eq!(axis(0), (1, 1));
        assert_eq!(axis(1), (1, 1));
        assert_eq!(axis(3), (3, 1));
        assert_eq!(axis(5), (5, 1));
        assert_eq!(axis(7), (8, 2));
        assert_eq!(axis(10), (10, 2));
        assert_eq!(axis(11), (15, 5));
        assert_eq!(axis(26), (30, 10));
        assert_eq!(axis(1234), (1500, 500));
        for max in 0..2000 {
            let (top, step) = axis(max);
            assert!(
                top >= max && top.is_multiple_of(step) && top / step <= 5,
                "{max}"
            );
        }
    }

    #[test]
    fn bar_heights_are_proportional_to_the_values() {
        let svg =
            trend_svg(Lang::Vi, &[point("10/2026", 10, 5), point("11/2026", 4, 0)]).into_string();
        let bars = bars(&svg);
        assert_eq!(
            bars.iter().map(|(c, _)| c.as_str()).collect::<Vec<_>>(),
            ["received", "returned", "received", "returned"]
        );
        let full = BASE - TOP;
        assert_eq!(
            bars[0].1, full,
            "the largest value reaches the axis top (10)"
        );
        assert_eq!(bars[1].1, full / 2.0);
        assert_eq!(bars[2].1, (full * 0.4 * 10.0).round() / 10.0);
        assert_eq!(bars[3].1, 0.0);
        assert!(svg.contains("role=\"img\""));
        assert!(svg.contains("<title id=\"trend-title\">"));
        assert!(svg.contains("aria-labelledby=\"trend-title trend-desc\""));
        assert!(svg.contains(">10/2026</text>") && svg.contains(">11/2026</text>"));
        assert!(svg.contains("Nhận hồ sơ qua bưu chính"), "the legend");
    }

    #[test]
    fn no_figures_draw_empty_bars_without_dividing_by_zero() {
        let svg =
            trend_svg(Lang::En, &[point("01/2026", 0, 0), point("02/2026", 0, 0)]).into_string();
        assert!(!svg.contains("NaN") && !svg.contains("inf"), "{svg}");
        assert!(bars(&svg).iter().all(|(_, h)| *h == 0.0));
        let none = trend_svg(Lang::En, &[]).into_string();
        assert!(!none.contains("NaN") && !none.contains("inf"), "{none}");
        assert!(none.contains("No figures."));
        let table = trend_table(Lang::En, &[point("01/2026", 0, 0)]).into_string();
        assert!(table.contains("<td class=\"num\">—</td>"), "{table}");
    }

    #[test]
    fn labels_are_escaped() {
        let svg = trend_svg(Lang::Vi, &[point("<b>&\"x\"", 1, 2)]).into_string();
        assert!(!svg.contains("<b>"), "{svg}");
        assert!(svg.contains("&lt;b&gt;&amp;"), "{svg}");
        let table = trend_table(Lang::Vi, &[point("<script>", 1, 2)]).into_string();
        assert!(!table.contains("<script>") && table.contains("&lt;script&gt;"));
    }

    #[test]
    fn the_table_repeats_the_chart_s_numbers() {
        let mut p = point("11/2026", 1200, 3);
        p.on_time = 2;
        p.late = 1;
        let vi = trend_table(Lang::Vi, std::slice::from_ref(&p)).into_string();
        assert!(vi.contains("<td class=\"num\">1.200</td>"), "{vi}");
        assert!(vi.contains("<td class=\"num\">66,7%</td>"), "{vi}");
        let en = trend_table(Lang::En, &[p]).into_string();
        assert!(en.contains("<td class=\"num\">1,200</td>"), "{en}");
        assert!(en.contains("<td class=\"num\">66.7%</td>"), "{en}");
    }
}
