//! The report as one self-contained HTML page: the device x list matrix, lookups per list and
//! per day as inline SVG, and the names behind each list. Nothing is loaded from anywhere (no
//! script, font, stylesheet or image by address: the office network may have no internet, and
//! the page may be attached to a report years later); it prints on paper as it shows.
//!
//! Every string from the store is escaped: query names come from devices on the network, and
//! client names and list names from whoever wrote the config.

use std::{fmt::Write as _, time::SystemTime};

use super::{Report, text::short_time, window::Window};

/// Colours for lists, in matrix order (Tableau 10: distinct in colour and in grey on paper).
const PALETTE: [&str; 10] = [
    "#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7",
    "#9c755f", "#bab0ac",
];

const STYLE: &str = r#"
:root { --ink: #1d2329; --muted: #5b6670; --line: #d5dbe1; --head: #f1f4f7; }
* { box-sizing: border-box; }
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif;
  color: var(--ink); background: #fff; margin: 0 auto; max-width: 1120px; padding: 28px 32px;
  font-size: 14px; line-height: 1.4; }
h1 { font-size: 23px; margin: 0 0 4px; }
h2 { font-size: 17px; margin: 30px 0 10px; padding-bottom: 4px; border-bottom: 2px solid var(--ink); }
h3 { font-size: 15px; margin: 20px 0 6px; }
h3 .meta { font-weight: normal; color: var(--muted); }
p.period { color: var(--muted); margin: 0; }
ul.summary { display: flex; flex-wrap: wrap; gap: 12px; list-style: none; padding: 0; margin: 18px 0 0; }
ul.summary li { border: 1px solid var(--line); border-radius: 6px; padding: 8px 16px; min-width: 120px; color: var(--muted); }
ul.summary b { display: block; font-size: 24px; color: var(--ink); font-variant-numeric: tabular-nums; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; width: 100%; font-variant-numeric: tabular-nums; }
th, td { border: 1px solid var(--line); padding: 5px 8px; text-align: left; vertical-align: top; }
th { background: var(--head); font-weight: 600; }
td.n, th.n { text-align: right; }
td.name { word-break: break-all; }
td.none { color: #aab2ba; text-align: center; }
.matrix td.hit b { font-size: 15px; }
.matrix th.list { min-width: 120px; }
.when, .addr { color: var(--muted); font-size: 12px; }
.when { white-space: nowrap; }
.swatch { display: inline-block; width: 11px; height: 11px; border-radius: 2px; margin-right: 6px; vertical-align: -1px; }
.charts { display: grid; grid-template-columns: minmax(0, 2fr) minmax(0, 3fr); gap: 28px; }
.charts svg { width: 100%; height: auto; display: block; }
.charts svg text { font-family: inherit; font-size: 12px; fill: var(--ink); }
.charts svg .axis { fill: var(--muted); font-size: 11px; }
ul.legend { display: flex; flex-wrap: wrap; gap: 4px 16px; list-style: none; padding: 0; margin: 8px 0 0; color: var(--muted); }
p.empty { padding: 16px; border: 1px dashed var(--line); color: var(--muted); }
footer { margin-top: 36px; padding-top: 8px; border-top: 1px solid var(--line); color: var(--muted); font-size: 12px; }
@media screen and (max-width: 800px) { .charts { grid-template-columns: minmax(0, 1fr); } }
@media print {
  body { max-width: none; padding: 0; font-size: 11px; }
  * { -webkit-print-color-adjust: exact; print-color-adjust: exact; }
  .scroll { overflow: visible; }
  h2, h3 { break-after: avoid; }
  tr, svg, ul.summary, .charts > div { break-inside: avoid; }
}
@page { margin: 14mm; }
"#;

/// The whole page.
pub fn html(report: &Report) -> String {
    let mut out = String::with_capacity(32 * 1024);
    let period = period(report);
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>hushd evidence: {}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n",
        esc(&period)
    );
    let _ = write!(
        out,
        "<header>\n<h1>Which devices contact which vendors</h1>\n<p class=\"period\">{} UTC &middot; generated {} UTC{}</p>\n",
        esc(&period),
        esc(&short_time(&report.generated)),
        filters(report)
    );
    let m = &report.matrix;
    let _ = write!(
        out,
        "<ul class=\"summary\"><li><b>{}</b>devices</li><li><b>{}</b>lists matched</li><li><b>{}</b>lookups</li><li><b>{}</b>names</li></ul>\n</header>\n",
        m.devices.len(),
        m.lists.len(),
        report.lookups(),
        distinct_names(report)
    );
    if m.devices.is_empty() {
        out.push_str("<p class=\"empty\">No list matches in this period.</p>\n");
    } else {
        matrix(&mut out, report);
        charts(&mut out, report);
        details(&mut out, report);
    }
    let _ = write!(
        out,
        "<footer>hushd {} evidence report &middot; from {} &middot; times in UTC; each day's lookups of a name by a device are stored as one record with its first and last time.</footer>\n</body>\n</html>\n",
        env!("CARGO_PKG_VERSION"),
        esc(&report.stores.join(", "))
    );
    out
}

/// Text for HTML content and attribute values alike.
pub(super) fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c if c.is_control() && c != '\n' && c != '\t' => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    out
}

fn period(report: &Report) -> String {
    format!(
        "{} to {}",
        report
            .since
            .as_deref()
            .map_or("the first record".into(), short_time),
        short_time(&report.until)
    )
}

fn filters(report: &Report) -> String {
    let f = &report.filters;
    [
        ("list", &f.list),
        ("group", &f.group),
        ("client", &f.client),
    ]
    .into_iter()
    .filter_map(|(k, v)| {
        v.as_ref()
            .map(|v| format!(" &middot; only {k} <b>{}</b>", esc(v)))
    })
    .collect()
}

fn distinct_names(report: &Report) -> usize {
    let mut names: Vec<&str> = report
        .lists
        .iter()
        .flat_map(|l| l.devices.iter())
        .flat_map(|d| d.names.iter().map(|n| n.name.as_str()))
        .collect();
    names.sort_unstable();
    names.dedup();
    names.len()
}

fn colour(i: usize) -> &'static str {
    PALETTE[i % PALETTE.len()]
}

fn swatch(i: usize) -> String {
    format!(
        "<span class=\"swatch\" style=\"background:{}\"></span>",
        colour(i)
    )
}

fn matrix(out: &mut String, report: &Report) {
    let m = &report.matrix;
    let max = m
        .devices
        .iter()
        .flat_map(|d| d.cells.iter().flatten())
        .map(|c| c.lookups)
        .max()
        .unwrap_or(1)
        .max(1);
    out.push_str("<section>\n<h2>Devices and the lists they matched</h2>\n<div class=\"scroll\"><table class=\"matrix\">\n<thead><tr><th>Device</th><th>Address</th><th>Group</th>");
    for (i, list) in m.lists.iter().enumerate() {
        let _ = write!(out, "<th class=\"list\">{}{}</th>", swatch(i), esc(list));
    }
    out.push_str("</tr></thead>\n<tbody>\n");
    for d in &m.devices {
        let _ = write!(
            out,
            "<tr><td><b>{}</b></td><td class=\"addr\">{}</td><td>{}</td>",
            esc(&d.device),
            esc(&d.address),
            esc(&d.group)
        );
        for (i, c) in d.cells.iter().enumerate() {
            match c {
                None => out.push_str("<td class=\"none\">&ndash;</td>"),
                Some(c) => {
                    // shaded by how busy the cell is, in the list's colour
                    let alpha = 0.08 + 0.32 * (c.lookups as f64 / max as f64);
                    let _ = write!(
                        out,
                        "<td class=\"hit\" style=\"background:{}{:02x}\"><b>{}</b> lookup{}<br><span class=\"when\">{} &ndash;<br>{}</span></td>",
                        colour(i),
                        (alpha * 255.0).round() as u8,
                        c.lookups,
                        if c.lookups == 1 { "" } else { "s" },
                        esc(&short_time(&c.first_seen)),
                        esc(&short_time(&c.last_seen))
                    );
                }
            }
        }
        out.push_str("</tr>\n");
    }
    out.push_str("</tbody></table></div>\n</section>\n");
}

fn charts(out: &mut String, report: &Report) {
    out.push_str("<section class=\"charts\">\n<div>\n<h2>Lookups per list</h2>\n");
    out.push_str(&bars(report));
    out.push_str("</div>\n<div>\n<h2>Lookups per day</h2>\n");
    out.push_str(&timeline(report));
    out.push_str("<ul class=\"legend\">");
    for (i, list) in report.matrix.lists.iter().enumerate() {
        let _ = write!(out, "<li>{}{}</li>", swatch(i), esc(list));
    }
    out.push_str("</ul>\n</div>\n</section>\n");
}

/// One horizontal bar per list, busiest first, labelled with lookups and devices.
fn bars(report: &Report) -> String {
    let lists = &report.matrix.lists;
    let mut order: Vec<(usize, &super::ListDetail)> = report
        .lists
        .iter()
        .map(|l| (lists.iter().position(|n| *n == l.list).unwrap_or(0), l))
        .collect();
    order.sort_by(|a, b| b.1.lookups.cmp(&a.1.lookups).then(a.1.list.cmp(&b.1.list)));
    let max = order.first().map_or(1, |(_, l)| l.lookups.max(1));
    let (width, row, label, note) = (400.0, 30.0, 100.0, 110.0);
    let plot = width - label - note;
    let height = row * order.len() as f64 + 8.0;
    let mut svg = format!(
        "<svg viewBox=\"0 0 {width} {height}\" role=\"img\" aria-label=\"Lookups per list\">\n"
    );
    for (k, (i, l)) in order.iter().enumerate() {
        let y = 4.0 + row * k as f64;
        let w = (plot * l.lookups as f64 / max as f64).max(2.0);
        let devices = l.devices.len();
        let _ = writeln!(
            svg,
            "<g><title>{name}: {lookups} lookups by {devices} device{s}</title>\
             <text x=\"{lx}\" y=\"{ty}\" text-anchor=\"end\">{name}</text>\
             <rect x=\"{label}\" y=\"{ry}\" width=\"{w:.1}\" height=\"{bh}\" rx=\"2\" fill=\"{fill}\"/>\
             <text x=\"{nx:.1}\" y=\"{ty}\" class=\"axis\">{lookups} &middot; {devices} device{s}</text></g>",
            name = esc(&l.list),
            lookups = l.lookups,
            s = if devices == 1 { "" } else { "s" },
            lx = label - 8.0,
            ty = y + row / 2.0 + 2.0,
            ry = y + 5.0,
            bh = row - 10.0,
            fill = colour(*i),
            nx = label + w + 6.0,
        );
    }
    svg.push_str("</svg>\n");
    svg
}

/// Lookups per day, one stacked bar a day, one colour a list, over the report's whole window
/// (a day without matches is an empty slot, so quiet days show).
fn timeline(report: &Report) -> String {
    let window = Window {
        since: report.since.as_deref().and_then(parse_time),
        until: parse_time(&report.until).unwrap_or_else(SystemTime::now),
    };
    let days = window.days(report.days.first().map(|d| d.day.as_str()));
    let lists = &report.matrix.lists;
    let totals: Vec<u64> = days
        .iter()
        .map(|day| {
            report
                .days
                .iter()
                .filter(|d| d.day == *day)
                .map(|d| d.lookups)
                .sum()
        })
        .collect();
    let top = nice_ceiling(totals.iter().copied().max().unwrap_or(0));
    let (width, height, left, right, top_pad, bottom) = (640.0, 240.0, 46.0, 8.0, 10.0, 34.0);
    let (plot_w, plot_h) = (width - left - right, height - top_pad - bottom);
    let slot = plot_w / days.len().max(1) as f64;
    let bar = (slot * 0.72).max(1.0);
    let y_of = |v: f64| top_pad + plot_h - plot_h * v / top as f64;
    let mut svg = format!(
        "<svg viewBox=\"0 0 {width} {height}\" role=\"img\" aria-label=\"Lookups per day\">\n"
    );
    for step in 0..=5 {
        let v = top as f64 * f64::from(step) / 5.0;
        let y = y_of(v);
        let _ = writeln!(
            svg,
            "<line x1=\"{left}\" x2=\"{x2}\" y1=\"{y:.1}\" y2=\"{y:.1}\" stroke=\"{stroke}\" stroke-width=\"1\"/>\
             <text x=\"{tx}\" y=\"{ty:.1}\" text-anchor=\"end\" class=\"axis\">{v}</text>",
            x2 = width - right,
            stroke = if step == 0 { "#5b6670" } else { "#e3e7eb" },
            tx = left - 6.0,
            ty = y + 4.0,
            v = v.round() as u64,
        );
    }
    // about eight date labels, whatever the window's length
    let every = days.len().div_ceil(8).max(1);
    for (k, day) in days.iter().enumerate() {
        let x = left + slot * k as f64 + (slot - bar) / 2.0;
        let mut base = 0.0;
        for (i, list) in lists.iter().enumerate() {
            let Some(d) = report
                .days
                .iter()
                .find(|d| d.day == *day && d.list == *list)
            else {
                continue;
            };
            let (y0, y1) = (y_of(base), y_of(base + d.lookups as f64));
            base += d.lookups as f64;
            let _ = writeln!(
                svg,
                "<rect x=\"{x:.1}\" y=\"{y1:.1}\" width=\"{bar:.1}\" height=\"{h:.1}\" fill=\"{fill}\"><title>{day} {list}: {n} lookups by {dev} device{s}</title></rect>",
                h = (y0 - y1).max(0.5),
                fill = colour(i),
                day = esc(day),
                list = esc(list),
                n = d.lookups,
                dev = d.devices,
                s = if d.devices == 1 { "" } else { "s" },
            );
        }
        if k % every == 0 {
            let label = if k == 0 { day.as_str() } else { &day[5..] };
            let _ = writeln!(
                svg,
                "<text x=\"{cx:.1}\" y=\"{ty}\" text-anchor=\"middle\" class=\"axis\">{}</text>",
                esc(label),
                cx = x + bar / 2.0,
                ty = height - bottom + 16.0,
            );
        }
    }
    svg.push_str("</svg>\n");
    svg
}

fn parse_time(s: &str) -> Option<SystemTime> {
    humantime::parse_rfc3339(s).ok()
}

/// The smallest 1, 2 or 5 times a power of ten at or above `n`, and at least 5: the axis is
/// drawn in fifths, which are then whole numbers.
fn nice_ceiling(n: u64) -> u64 {
    let mut power = 1u64;
    loop {
        for m in [1, 2, 5] {
            let v = power.saturating_mul(m);
            if v >= n.max(5) || v == u64::MAX {
                return v;
            }
        }
        power = power.saturating_mul(10);
    }
}

/// Per list, each device and the names it looked up.
fn details(out: &mut String, report: &Report) {
    out.push_str("<section>\n<h2>Behind each list: devices and names</h2>\n");
    for list in &report.lists {
        let i = report
            .matrix
            .lists
            .iter()
            .position(|l| *l == list.list)
            .unwrap_or(0);
        let devices = list.devices.len();
        let _ = write!(
            out,
            "<section class=\"list\">\n<h3>{}{} <span class=\"meta\">({}) &middot; {} device{} &middot; {} lookups</span></h3>\n\
             <table><thead><tr><th>Device</th><th>Name looked up</th><th class=\"n\">Lookups</th><th>Types</th><th>First seen</th><th>Last seen</th></tr></thead><tbody>\n",
            swatch(i),
            esc(&list.list),
            esc(&list.actions.join(", ")),
            devices,
            if devices == 1 { "" } else { "s" },
            list.lookups
        );
        for d in &list.devices {
            for (k, n) in d.names.iter().enumerate() {
                out.push_str("<tr>");
                if k == 0 {
                    let _ = write!(
                        out,
                        "<td rowspan=\"{}\"><b>{}</b><br><span class=\"addr\">{} &middot; {}</span></td>",
                        d.names.len(),
                        esc(&d.device),
                        esc(&d.address),
                        esc(&d.group)
                    );
                }
                let via: Vec<&str> = n
                    .via
                    .iter()
                    .map(String::as_str)
                    .filter(|v| *v != "name")
                    .collect();
                let via = if via.is_empty() {
                    String::new()
                } else {
                    format!(
                        " <span class=\"when\">(via {})</span>",
                        esc(&via.join(", "))
                    )
                };
                let _ = writeln!(
                    out,
                    "<td class=\"name\">{}{via}</td><td class=\"n\">{}</td><td>{}</td><td class=\"when\">{}</td><td class=\"when\">{}</td></tr>",
                    esc(&n.name),
                    n.lookups,
                    esc(&n.qtypes.join(", ")),
                    esc(&short_time(&n.first_seen)),
                    esc(&short_time(&n.last_seen))
                );
            }
        }
        out.push_str("</tbody></table>\n</section>\n");
    }
    out.push_str("</section>\n");
}

#[cfg(test)]
mod tests {
    use super::super::{
        Report,
        tests::{at, office, office_report, selection, stored},
    };
    use super::*;

    #[test]
    fn the_page_loads_nothing_from_anywhere() {
        let page = html(&office_report(false));
        let lower = page.to_ascii_lowercase();
        for outside in [
            "http://", "https://", "//", "<script", "src=", "href=", "@import", "url(", "<link",
            "<iframe", "<object", "<embed", "<img",
        ] {
            assert!(!lower.contains(outside), "the page holds {outside}");
        }
        assert!(page.starts_with("<!DOCTYPE html>"));
        assert!(page.contains("<svg") && page.contains("reception-tv"));
    }

    #[test]
    fn every_string_from_the_store_is_escaped() {
        let mut rows = office();
        rows.push(stored(
            "10.0.0.66",
            "<script>alert(1)</script>\"tv'",
            "<b>iot</b>",
            "x<y",
            "a&b.example",
            "log",
            3,
            "2026-12-02",
            "10:00",
            "10:00",
            "A",
        ));
        let page = html(&Report::build(
            &rows,
            &selection(),
            vec!["/var/lib/<hushd>/evidence.db".into()],
            at("2026-12-03T12:00:00Z"),
        ));
        for raw in ["<script", "<b>iot", "x<y", "a&b", "<hushd>", "\"tv'"] {
            assert!(!page.contains(raw), "{raw} is in the page unescaped");
        }
        assert!(page.contains("&lt;script&gt;alert(1)&lt;/script&gt;&quot;tv&#39;"));
        assert!(page.contains("x&lt;y"));
        assert!(page.contains("a&amp;b.example"));
    }

    #[test]
    fn an_empty_report_says_so() {
        let page = html(&Report::build(
            &[],
            &selection(),
            vec![],
            at("2026-12-03T12:00:00Z"),
        ));
        assert!(page.contains("No list matches in this period."));
        assert!(!page.contains("<svg"));
    }

    #[test]
    fn the_timeline_has_a_slot_for_every_day_of_the_window() {
        let svg = timeline(&office_report(false));
        // three days, four (day, list) bars
        assert_eq!(svg.matches("<rect").count(), 4, "{svg}");
        assert!(svg.contains(">2026-12-01<"));
        assert!(svg.contains(">12-03<"));
    }

    #[test]
    fn axis_tops_are_round() {
        assert_eq!(nice_ceiling(0), 5);
        assert_eq!(nice_ceiling(17), 20);
        assert_eq!(nice_ceiling(31), 50);
        assert_eq!(nice_ceiling(417), 500);
        assert_eq!(nice_ceiling(1001), 2000);
        assert_eq!(nice_ceiling(u64::MAX), u64::MAX);
    }
}
