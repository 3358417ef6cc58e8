//! The shipped Grafana dashboard: valid JSON, an `instance` variable, and every query filtered
//! by it, so that with several hushd (docs/scale-out.md) each panel shows the instances picked.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a dashboard that cannot be read fails the test

mod support;

use serde_json::Value;

fn dashboard() -> Value {
    let path = support::project_root().join("grafana/hushd-dashboard.json");
    let text = std::fs::read_to_string(&path).unwrap();
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every PromQL expression of every panel (rows nest their panels when collapsed).
fn exprs(panels: &[Value], out: &mut Vec<(String, String)>) {
    for panel in panels {
        let title = panel["title"].as_str().unwrap_or("").to_string();
        for target in panel["targets"].as_array().into_iter().flatten() {
            if let Some(expr) = target["expr"].as_str() {
                out.push((title.clone(), expr.to_string()));
            }
        }
        exprs(panel["panels"].as_array().map_or(&[], Vec::as_slice), out);
    }
}

/// Each `hushd_*` metric an expression selects, with its `{...}` matchers ("" without).
fn selectors(expr: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = expr;
    while let Some(at) = rest.find("hushd_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        let (name, after) = tail.split_at(end);
        let matchers = match after.strip_prefix('{') {
            Some(m) => &m[..m.find('}').expect("unclosed {")],
            None => "",
        };
        out.push((name.to_string(), matchers.to_string()));
        rest = &after[matchers.len()..];
    }
    out
}

#[test]
fn the_instance_variable_picks_one_or_more_hushd() {
    let d = dashboard();
    let vars = d["templating"]["list"].as_array().expect("templating.list");
    let instance = vars
        .iter()
        .find(|v| v["name"] == "instance")
        .expect("an `instance` template variable");
    assert_eq!(instance["type"], "query");
    assert_eq!(instance["multi"], true, "several instances at once");
    assert_eq!(instance["includeAll"], true, "and all of them");
    let query = instance["query"].as_str().unwrap();
    assert!(
        query.starts_with("label_values(hushd_") && query.ends_with(", instance)"),
        "{query}"
    );
}

#[test]
fn every_panel_query_is_filtered_by_instance() {
    let d = dashboard();
    let mut all = Vec::new();
    exprs(d["panels"].as_array().expect("panels"), &mut all);
    assert!(all.len() > 20, "only {} expressions found", all.len());
    for (title, expr) in &all {
        let found = selectors(expr);
        assert!(!found.is_empty(), "{title}: no hushd metric in {expr}");
        for (metric, matchers) in found {
            assert!(
                matchers.contains("instance=~\"$instance\""),
                "{title}: {metric} is not filtered by instance=~\"$instance\" in {expr}"
            );
        }
    }
}

#[test]
fn every_metric_the_dashboard_uses_is_documented() {
    let readme = std::fs::read_to_string(support::project_root().join("README.md")).unwrap();
    let d = dashboard();
    let mut all = Vec::new();
    exprs(d["panels"].as_array().unwrap(), &mut all);
    let variable = d["templating"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "instance")
        .map(|v| v["query"].as_str().unwrap().to_string())
        .unwrap();
    all.push(("instance variable".into(), variable));
    for (title, expr) in all {
        for (metric, _) in selectors(&expr) {
            // a histogram's series are named after its family
            let family = metric
                .strip_suffix("_bucket")
                .or_else(|| metric.strip_suffix("_sum"))
                .or_else(|| metric.strip_suffix("_count"))
                .unwrap_or(&metric);
            assert!(
                readme.contains(&format!("`{family}`")),
                "{title}: {metric} is not in README.md's metrics table"
            );
        }
    }
}

#[test]
fn selectors_are_read_with_their_matchers() {
    assert_eq!(
        selectors(r#"sum(rate(hushd_a_total{instance=~"$instance",x="y"}[5m])) / hushd_b"#),
        vec![
            (
                "hushd_a_total".to_string(),
                r#"instance=~"$instance",x="y""#.to_string()
            ),
            ("hushd_b".to_string(), String::new()),
        ]
    );
}
