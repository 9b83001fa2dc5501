//! `GET /metrics` after known traffic: the counts are exact, and nothing
//! from a request body (account numbers, user ids) appears in it.

use crate::support::{ENGINES, EXAMPLE, Server, doc};

/// The value of the sample `name{labels}` (labels in the order teller
/// writes them), or 0 when it is absent.
fn sample(text: &str, name_and_labels: &str) -> f64 {
    text.lines()
        .find_map(|l| {
            l.strip_prefix(name_and_labels)?
                .strip_prefix(' ')?
                .parse()
                .ok()
        })
        .unwrap_or(0.0)
}

#[test]
fn metrics_count_decisions_errors_audit_and_http_exactly() {
    for engine in ENGINES {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("audit");
        let server = Server::start(engine, &["--audit-dir", log.to_str().unwrap()]);
        for _ in 0..3 {
            assert_eq!(server.post("/v1/transfer/check", EXAMPLE).status, 200);
        }
        for _ in 0..2 {
            let r = server.post(
                "/v1/transfer/check",
                &doc("transfer", 2_000_000, "authorized", Some(true), None),
            );
            assert_eq!(r.json()["verdict"], "deny");
        }
        let r = server.post(
            "/v1/transfer/check",
            &doc("transfer", 2_000_000, "authorized", Some(true), Some(true)),
        );
        assert_eq!(r.json()["verdict"], "review");
        for _ in 0..2 {
            assert_eq!(
                server
                    .post("/v1/transfer/check", r#"{"amount":"6222020200001234567"}"#)
                    .status,
                400
            );
        }
        let event = r#"{"actor":{"id":"ops-77","role":"operator"},"action":"limit.change","resource":["6222020200001234567"],"outcome":"success"}"#;
        assert_eq!(server.post("/v1/audit/events", event).status, 201);

        let r = server.get("/metrics");
        assert_eq!(r.status, 200);
        assert!(
            r.headers.contains("application/openmetrics-text"),
            "{}",
            r.headers
        );
        let m = &r.body;
        let decisions = |verdict: &str| {
            sample(
                m,
                &format!(
                    "teller_decisions_total{{policy=\"transfer-check\",verdict=\"{verdict}\",engine=\"{engine}\"}}"
                ),
            )
        };
        assert_eq!(
            (decisions("allow"), decisions("deny"), decisions("review")),
            (3.0, 2.0, 1.0),
            "{m}"
        );
        assert_eq!(sample(m, "teller_audit_records_total"), 7.0, "{m}");
        assert!(sample(m, "teller_audit_fsync_seconds_count") >= 1.0, "{m}");
        assert_eq!(
            sample(
                m,
                &format!("teller_decision_seconds_count{{engine=\"{engine}\"}}")
            ),
            6.0
        );
        let http = |status: u16| {
            sample(
                m,
                &format!(
                    "teller_http_request_seconds_count{{route=\"/v1/transfer/check\",status=\"{status}\"}}"
                ),
            )
        };
        assert_eq!((http(200), http(400)), (6.0, 2.0), "{m}");
        assert_eq!(sample(m, "teller_audit_queue_depth"), 0.0);
        assert_eq!(sample(m, "teller_guest_instances_in_use"), 0.0);
        let sha = teller_engine::artifact::sha256_hex(if *engine == "wasmtime" {
            teller_policy_artifacts::TRANSFER_CHECK.component
        } else {
            teller_policy_artifacts::TRANSFER_CHECK.module
        });
        assert_eq!(
            sample(
                m,
                &format!(
                    "teller_policy_loaded{{policy=\"transfer-check\",version=\"0.1.0\",sha256=\"{sha}\",engine=\"{engine}\"}}"
                )
            ),
            1.0,
            "{m}"
        );
        assert!(m.contains("teller_build_info{version=\"0.1.0\""), "{m}");
        assert!(
            m.trim_end().ends_with("# EOF"),
            "OpenMetrics ends with # EOF"
        );
        for secret in ["6222020200001234567", "u-17", "ops-77"] {
            assert!(!m.contains(secret), "{secret} in /metrics");
        }
        assert_eq!(server.stop().code(), Some(0));
    }
}

/// The Grafana dashboard in runtimeclass/grafana only asks for metrics
/// teller really exports, with the right kind (counter, histogram, gauge).
#[test]
fn the_grafana_dashboard_uses_only_metrics_teller_exports() {
    let server = Server::start(ENGINES[0], &[]);
    let text = server.get("/metrics").body;
    let families: std::collections::HashMap<&str, &str> = text
        .lines()
        .filter_map(|l| {
            let mut words = l.strip_prefix("# TYPE ")?.split_whitespace();
            Some((words.next()?, words.next()?))
        })
        .collect();
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../runtimeclass/grafana/teller-dashboard.json");
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    assert_eq!(dashboard["uid"], "teller");
    let panels = dashboard["panels"].as_array().unwrap();
    let mut ids = std::collections::HashSet::new();
    let mut used = std::collections::HashSet::new();
    for panel in panels {
        assert!(
            ids.insert(panel["id"].as_u64().unwrap()),
            "duplicate panel id"
        );
        assert_eq!(panel["datasource"]["uid"], "${datasource}");
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap();
            let mut rest = expr;
            while let Some(at) = rest.find("teller_") {
                let name: String = rest[at..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                rest = &rest[at + name.len()..];
                let (family, kind) = if let Some(f) = name.strip_suffix("_total") {
                    (f, "counter")
                } else if let Some(f) = ["_bucket", "_count", "_sum"]
                    .iter()
                    .find_map(|s| name.strip_suffix(s))
                {
                    (f, "histogram")
                } else {
                    (name.as_str(), "gauge")
                };
                assert_eq!(
                    families.get(family).copied(),
                    Some(kind),
                    "panel {:?} uses {name}, which teller does not export as a {kind}",
                    panel["title"]
                );
                used.insert(family.to_string());
            }
        }
    }
    // Every family teller exports has a panel.
    for family in families.keys() {
        assert!(used.contains(*family), "no panel shows {family}");
    }
}
