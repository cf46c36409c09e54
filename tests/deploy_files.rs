//! The operations kit under `deploy/` stays consistent with the server: the
//! Grafana dashboard is valid JSON, every query in it and every alert
//! expression parses as PromQL, every Chatsubo metric they name is one the
//! server exports, and every alert has the labels, annotations and runbook
//! section that operators rely on. (`scripts/ops-checks.sh` runs promtool,
//! amtool and systemd-analyze on the same files.)

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use promql_parser::parser::{self, Expr};
use serde::Deserialize;
use serde_json::Value;

fn repo_file(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repo_file(path)).unwrap_or_else(|e| panic!("cannot read {path}: {e}"))
}

/// The alerts docs/runbook.md documents, with their severities.
const ALERTS: &[(&str, &str)] = &[
    ("ChatsuboDown", "critical"),
    ("ChatsuboHighErrorRate", "warning"),
    ("ChatsuboRoomCapacityRejections", "warning"),
    ("ChatsuboReconnectionStorm", "critical"),
    ("ChatsuboWebSocketFlood", "critical"),
    ("ChatsuboConnectionsHigh", "warning"),
    ("ChatsuboConnectionsCritical", "critical"),
    ("ChatsuboRoomsHigh", "warning"),
    ("ChatsuboAnalyticsDropping", "warning"),
    ("ChatsuboStorageErrors", "critical"),
];

#[derive(Deserialize)]
struct RuleFile {
    groups: Vec<RuleGroup>,
}

#[derive(Deserialize)]
struct RuleGroup {
    rules: Vec<Rule>,
}

#[derive(Deserialize)]
struct Rule {
    alert: Option<String>,
    expr: String,
    #[serde(rename = "for")]
    hold: Option<String>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
}

fn alert_rules() -> Vec<Rule> {
    let file: RuleFile = serde_norway::from_str(&read("deploy/prometheus/alerts.yml"))
        .expect("alerts.yml is valid YAML of the rule-file shape");
    file.groups.into_iter().flat_map(|g| g.rules).collect()
}

/// Every `expr` of the dashboard (panels, nested rows) with its panel title,
/// plus the selector inside each `label_values(...)` variable query.
fn dashboard_queries(dashboard: &Value) -> Vec<(String, String)> {
    fn walk(panels: &[Value], out: &mut Vec<(String, String)>) {
        for panel in panels {
            let title = panel["title"].as_str().unwrap_or("?").to_string();
            if let Some(targets) = panel["targets"].as_array() {
                for target in targets {
                    if let Some(expr) = target["expr"].as_str() {
                        out.push((title.clone(), expr.to_string()));
                    }
                }
            }
            if let Some(inner) = panel["panels"].as_array() {
                walk(inner, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(dashboard["panels"].as_array().expect("panels"), &mut out);
    for var in dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let query = var["query"]["query"].as_str().or(var["query"].as_str());
        if let Some(inner) = query.and_then(|q| q.strip_prefix("label_values(")) {
            let selector = inner.rsplit_once(',').map_or(inner, |(s, _)| s);
            out.push((
                format!("variable {}", var["name"]),
                selector.trim().to_string(),
            ));
        }
    }
    out
}

/// Replaces Grafana's variables with values PromQL accepts; fails on any
/// variable it does not know, so that a typo cannot hide.
fn substitute_grafana_variables(expr: &str) -> String {
    let text = expr
        .replace("$__rate_interval", "1m")
        .replace("$__interval", "1m")
        .replace("$__range", "1h")
        .replace("${instance}", ".*")
        .replace("$instance", ".*");
    assert!(!text.contains('$'), "unknown Grafana variable in {expr}");
    text
}

fn parse(source: &str, expr: &str) -> Expr {
    parser::parse(expr).unwrap_or_else(|e| panic!("{source}: `{expr}` is not PromQL: {e}"))
}

/// Metric names an expression selects (by name or by `__name__="..."`).
fn metric_names(expr: &Expr, out: &mut BTreeSet<String>) {
    match expr {
        Expr::Aggregate(a) => {
            metric_names(&a.expr, out);
            if let Some(p) = &a.param {
                metric_names(p, out);
            }
        }
        Expr::Unary(u) => metric_names(&u.expr, out),
        Expr::Binary(b) => {
            metric_names(&b.lhs, out);
            metric_names(&b.rhs, out);
        }
        Expr::Paren(p) => metric_names(&p.expr, out),
        Expr::Subquery(s) => metric_names(&s.expr, out),
        Expr::VectorSelector(vs) => {
            out.extend(vs.name.clone());
            out.extend(
                vs.matchers
                    .find_matchers("__name__")
                    .into_iter()
                    .map(|m| m.value),
            );
        }
        Expr::MatrixSelector(ms) => metric_names(&Expr::VectorSelector(ms.vs.clone()), out),
        Expr::Call(c) => c.args.args.iter().for_each(|a| metric_names(a, out)),
        Expr::NumberLiteral(_) | Expr::StringLiteral(_) | Expr::Extension(_) => {}
    }
}

/// Series names in the server's own exposition, with one child of each
/// family that starts empty, so that every family shows.
fn exported_series_names() -> BTreeSet<String> {
    // Built as the server builds them: the hub and the routes make the
    // series of their own label values exist.
    let metrics = std::sync::Arc::new(chatsubo::telemetry::Metrics::new(10));
    let hub = chatsubo::signaling::Hub::new(
        std::sync::Arc::new(chatsubo::Config::defaults()),
        metrics.clone(),
    );
    let _routes = chatsubo::http::routes(hub);
    metrics.reports.client_error("ICE_FAILED");
    metrics
        .render()
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| l.split(['{', ' ']).next().unwrap().to_string())
        .collect()
}

/// GitHub's anchor for a Markdown heading.
fn anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

#[test]
fn dashboard_is_valid_json_and_every_query_parses() {
    let text = read("deploy/grafana/dashboards/chatsubo.json");
    let dashboard: Value = serde_json::from_str(&text).expect("dashboard is valid JSON");
    assert_eq!(dashboard["uid"], "chatsubo");

    let mut ids = BTreeSet::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        let id = panel["id"].as_u64().expect("every panel has a numeric id");
        assert!(ids.insert(id), "panel id {id} used twice");
        if panel["type"] != "row" {
            let targets = panel["targets"].as_array().map_or(0, Vec::len);
            assert!(targets > 0, "panel {} has no query", panel["title"]);
            assert_eq!(
                panel["datasource"]["uid"], "chatsubo-prometheus",
                "panel {} must use the provisioned datasource",
                panel["title"]
            );
        }
    }

    let queries = dashboard_queries(&dashboard);
    assert!(queries.len() >= 40, "only {} queries found", queries.len());
    for (title, expr) in &queries {
        parse(title, &substitute_grafana_variables(expr));
    }
}

#[test]
fn the_provisioned_datasource_is_the_one_the_dashboard_uses() {
    let text = read("deploy/grafana/provisioning/datasources/prometheus.yml");
    let file: serde_norway::Value = serde_norway::from_str(&text).expect("valid YAML");
    let ds = &file["datasources"][0];
    assert_eq!(ds["uid"].as_str(), Some("chatsubo-prometheus"));
    assert_eq!(ds["type"].as_str(), Some("prometheus"));
    let provider: serde_norway::Value =
        serde_norway::from_str(&read("deploy/grafana/provisioning/dashboards/chatsubo.yml"))
            .expect("valid YAML");
    assert_eq!(provider["providers"][0]["type"].as_str(), Some("file"));
}

#[test]
fn every_dashboard_panel_family_is_covered() {
    let text = read("deploy/grafana/dashboards/chatsubo.json");
    let dashboard: Value = serde_json::from_str(&text).unwrap();
    let mut named = BTreeSet::new();
    for (_, expr) in dashboard_queries(&dashboard) {
        metric_names(
            &parse("dashboard", &substitute_grafana_variables(&expr)),
            &mut named,
        );
    }
    // Every family of the telemetry contract has a panel.
    let families = exported_series_names();
    for family in families.iter().filter(|n| n.starts_with("chatsubo_")) {
        let base = family
            .trim_end_matches("_bucket")
            .trim_end_matches("_sum")
            .trim_end_matches("_count");
        let shown = named.iter().any(|n| n == family || n.starts_with(base));
        assert!(shown, "no dashboard panel shows {family}");
    }
    for family in ["process_resident_memory_bytes", "process_cpu_seconds_total"] {
        assert!(named.contains(family), "no dashboard panel shows {family}");
    }
}

#[test]
fn alerts_are_exactly_those_of_the_runbook_with_labels_and_annotations() {
    let rules = alert_rules();
    let runbook = read("docs/runbook.md");
    let anchors: BTreeSet<String> = runbook
        .lines()
        .filter_map(|l| l.strip_prefix("## "))
        .map(anchor)
        .collect();

    let names: Vec<&str> = rules.iter().filter_map(|r| r.alert.as_deref()).collect();
    let expected: Vec<&str> = ALERTS.iter().map(|(n, _)| *n).collect();
    assert_eq!(
        names, expected,
        "alerts.yml must hold exactly the alerts of docs/runbook.md"
    );

    for rule in &rules {
        let name = rule.alert.as_deref().unwrap();
        let severity = ALERTS.iter().find(|(n, _)| *n == name).unwrap().1;
        assert_eq!(
            rule.labels.get("severity").map(String::as_str),
            Some(severity),
            "{name}"
        );
        assert!(rule.hold.is_some(), "{name} has no `for`");
        for key in ["summary", "description", "runbook_url"] {
            assert!(
                rule.annotations
                    .get(key)
                    .is_some_and(|v| !v.trim().is_empty()),
                "{name} has no {key}"
            );
        }
        let url = &rule.annotations["runbook_url"];
        let (doc, fragment) = url.split_once('#').expect("runbook_url has an anchor");
        assert!(doc.ends_with("docs/runbook.md"), "{name}: {url}");
        assert_eq!(
            fragment,
            name.to_lowercase(),
            "{name}: anchor named after the alert"
        );
        assert!(
            anchors.contains(fragment),
            "docs/runbook.md has no section #{fragment}"
        );
    }
}

#[test]
fn every_alert_expression_parses_and_names_exported_metrics() {
    let exported = exported_series_names();
    for rule in alert_rules() {
        let name = rule.alert.unwrap_or_default();
        let expr = parse(&name, &rule.expr);
        let mut names = BTreeSet::new();
        metric_names(&expr, &mut names);
        assert!(!names.is_empty(), "{name} selects no metric");
        for metric in names.iter().filter(|n| n.starts_with("chatsubo_")) {
            assert!(
                exported.contains(metric),
                "{name} uses {metric}, which the server does not export"
            );
        }
    }
}

#[test]
fn every_chatsubo_metric_of_the_dashboard_is_exported() {
    let exported = exported_series_names();
    let text = read("deploy/grafana/dashboards/chatsubo.json");
    let dashboard: Value = serde_json::from_str(&text).unwrap();
    for (title, expr) in dashboard_queries(&dashboard) {
        let mut names = BTreeSet::new();
        metric_names(
            &parse(&title, &substitute_grafana_variables(&expr)),
            &mut names,
        );
        for metric in names
            .iter()
            .filter(|n| n.starts_with("chatsubo_") || n.starts_with("process_"))
        {
            assert!(
                exported.contains(metric),
                "panel {title} uses {metric}, which the server does not export"
            );
        }
    }
}
