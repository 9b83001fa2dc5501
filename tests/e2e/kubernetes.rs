//! runtimeclass/: every manifest parses into its typed Kubernetes object and
//! says what the bank requires; the Gatekeeper policy admits and rejects
//! the right pods (evaluated with regorus); containerd maps the handler.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{Namespace, PersistentVolumeClaim, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::node::v1::RuntimeClass;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use std::path::PathBuf;

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../runtimeclass")
}

fn read(name: &str) -> String {
    std::fs::read_to_string(dir().join(name)).unwrap()
}

fn parse<T: serde::de::DeserializeOwned>(name: &str) -> T {
    serde_yaml_ng::from_str(&read(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

const APP: (&str, &str) = ("app.kubernetes.io/name", "teller");

#[test]
fn runtime_class_and_containerd_handler_match() {
    let rc: RuntimeClass = parse("runtimeclass.yaml");
    assert_eq!(rc.metadata.name.as_deref(), Some("wasmedge"));
    assert_eq!(rc.handler, "wasmedge");
    let selector = rc.scheduling.unwrap().node_selector.unwrap();
    assert_eq!(
        selector.get("runtime.teller/wasmedge").map(String::as_str),
        Some("true")
    );

    let containerd: toml::Value = toml::from_str(&read("containerd/config.toml")).unwrap();
    let runtime = &containerd["plugins"]["io.containerd.grpc.v1.cri"]["containerd"]["runtimes"]
        [rc.handler.as_str()];
    assert_eq!(
        runtime["runtime_type"].as_str(),
        Some("io.containerd.wasmedge.v1")
    );
}

#[test]
fn deployment_is_highly_available_and_locked_down() {
    let d: Deployment = parse("deployment.yaml");
    assert_eq!(d.metadata.namespace.as_deref(), Some("bank-core"));
    let spec = d.spec.unwrap();
    assert_eq!(spec.replicas, Some(10));
    let strategy = spec.strategy.unwrap();
    assert_eq!(strategy.type_.as_deref(), Some("RollingUpdate"));
    let rolling = strategy.rolling_update.unwrap();
    assert_eq!(rolling.max_surge, Some(IntOrString::Int(2)));
    assert_eq!(rolling.max_unavailable, Some(IntOrString::Int(1)));

    let pod = spec.template.spec.unwrap();
    assert_eq!(pod.runtime_class_name.as_deref(), Some("wasmedge"));
    let anti = pod.affinity.unwrap().pod_anti_affinity.unwrap();
    let terms = anti
        .preferred_during_scheduling_ignored_during_execution
        .unwrap();
    assert!(
        terms
            .iter()
            .any(|t| t.pod_affinity_term.topology_key == "kubernetes.io/hostname")
    );

    let pod_security = pod.security_context.unwrap();
    assert_eq!(pod_security.run_as_non_root, Some(true));
    let container = &pod.containers[0];
    let security = container.security_context.clone().unwrap();
    assert_eq!(security.read_only_root_filesystem, Some(true));
    assert_eq!(security.allow_privilege_escalation, Some(false));
    assert_eq!(security.capabilities.unwrap().drop.unwrap(), ["ALL"]);

    let resources = container.resources.clone().unwrap();
    for key in ["cpu", "memory"] {
        assert!(
            resources.requests.as_ref().unwrap().contains_key(key),
            "request {key}"
        );
        assert!(
            resources.limits.as_ref().unwrap().contains_key(key),
            "limit {key}"
        );
    }
    let probe_path =
        |p: Option<k8s_openapi::api::core::v1::Probe>| p.unwrap().http_get.unwrap().path;
    assert_eq!(
        probe_path(container.liveness_probe.clone()).as_deref(),
        Some("/healthz")
    );
    assert_eq!(
        probe_path(container.readiness_probe.clone()).as_deref(),
        Some("/readyz")
    );

    // teller reads its settings from TELLER_* variables; they must be ones
    // `teller serve` knows.
    let env: Vec<_> = container.env.clone().unwrap();
    let value = |name: &str| {
        env.iter()
            .find(|e| e.name == name)
            .and_then(|e| e.value.clone())
            .unwrap_or_else(|| panic!("{name} not set"))
    };
    assert_eq!(value("TELLER_LISTEN"), "0.0.0.0:8080");
    let audit_log = value("TELLER_AUDIT_DIR");
    let mounts = container.volume_mounts.clone().unwrap();
    let audit = mounts.iter().find(|m| m.name == "audit").unwrap();
    assert!(
        audit_log.starts_with(&audit.mount_path),
        "{audit_log} outside {}",
        audit.mount_path
    );
    assert_eq!(
        audit.sub_path_expr.as_deref(),
        Some("$(POD_NAME)"),
        "one chain per pod"
    );
    let volumes = pod.volumes.unwrap();
    let audit_volume = volumes.iter().find(|v| v.name == "audit").unwrap();
    let claim: PersistentVolumeClaim = parse("audit-volume.yaml");
    assert_eq!(
        audit_volume
            .persistent_volume_claim
            .as_ref()
            .unwrap()
            .claim_name,
        claim.metadata.name.unwrap()
    );
    let key = volumes.iter().find(|v| v.name == "audit-key").unwrap();
    assert_eq!(
        key.secret.as_ref().unwrap().secret_name.as_deref(),
        Some("teller-audit-key")
    );
    let key_mount = mounts.iter().find(|m| m.name == "audit-key").unwrap();
    assert_eq!(key_mount.read_only, Some(true));
    assert!(value("TELLER_AUDIT_KEY_FILE").starts_with(&key_mount.mount_path));

    let help = crate::support::teller()
        .args(["serve", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    for var in [
        "TELLER_LISTEN",
        "TELLER_AUDIT_DIR",
        "TELLER_AUDIT_KEY_FILE",
        "TELLER_CACHE_DIR",
    ] {
        assert!(help.contains(var), "teller serve does not read {var}");
    }
}

#[test]
fn service_budget_autoscaler_and_network_policy_select_teller() {
    let labels_match = |m: Option<std::collections::BTreeMap<String, String>>| {
        assert_eq!(m.unwrap().get(APP.0).map(String::as_str), Some(APP.1));
    };
    let service: Service = parse("service.yaml");
    let spec = service.spec.unwrap();
    labels_match(spec.selector);
    assert_eq!(
        spec.ports.unwrap()[0].target_port,
        Some(IntOrString::String("http".into()))
    );

    let pdb: PodDisruptionBudget = parse("pdb.yaml");
    let spec = pdb.spec.unwrap();
    labels_match(spec.selector.unwrap().match_labels);
    assert_eq!(spec.min_available, Some(IntOrString::Int(8)));

    let hpa: HorizontalPodAutoscaler = parse("hpa.yaml");
    let spec = hpa.spec.unwrap();
    assert_eq!(spec.scale_target_ref.kind, "Deployment");
    assert_eq!(spec.scale_target_ref.name, "teller");
    assert_eq!(
        spec.min_replicas,
        Some(10),
        "never below the 10 replicas of the Deployment"
    );
    assert!(spec.max_replicas >= 10);

    let np: NetworkPolicy = parse("networkpolicy.yaml");
    let spec = np.spec.unwrap();
    labels_match(spec.pod_selector.unwrap().match_labels);
    assert_eq!(spec.policy_types.unwrap(), ["Ingress", "Egress"]);
    // Egress only to Redis (the daily totals) and to DNS.
    let egress = spec.egress.unwrap();
    assert_eq!(egress.len(), 2);
    let to = |i: usize| {
        let rule = &egress[i];
        let peer = &rule.to.as_ref().unwrap()[0];
        let pods = peer.pod_selector.clone().unwrap().match_labels.unwrap();
        let ports: Vec<_> = rule
            .ports
            .as_ref()
            .unwrap()
            .iter()
            .map(|p| (p.protocol.clone().unwrap(), p.port.clone().unwrap()))
            .collect();
        (pods, ports)
    };
    let (redis, ports) = to(0);
    assert_eq!(redis["app.kubernetes.io/name"], "redis");
    assert_eq!(ports, [("TCP".to_string(), IntOrString::Int(6379))]);
    let (dns, ports) = to(1);
    assert_eq!(dns["k8s-app"], "kube-dns");
    assert!(ports.iter().all(|(_, p)| *p == IntOrString::Int(53)));
    // The replicas share one Redis, named by a Secret (it may hold the
    // password) that teller reads at start-up.
    let secret: k8s_openapi::api::core::v1::Secret = parse("state.yaml");
    let url = &secret.string_data.unwrap()["url"];
    assert!(
        url.starts_with("redis://") && url.ends_with(":6379/0"),
        "{url}"
    );
    let deployment: Deployment = parse("deployment.yaml");
    let env = deployment
        .clone()
        .spec
        .unwrap()
        .template
        .spec
        .unwrap()
        .containers[0]
        .env
        .clone()
        .unwrap();
    let state = env.iter().find(|e| e.name == "TELLER_STATE").unwrap();
    let from = state
        .value_from
        .as_ref()
        .unwrap()
        .secret_key_ref
        .as_ref()
        .unwrap();
    assert_eq!(
        (from.name.as_str(), from.key.as_str()),
        ("teller-state", "url")
    );
    assert!(env.iter().any(|e| e.name == "TELLER_STATE_TIMEOUT_MS"));
    // The drain delay outlasts the readiness probe's failures, and the
    // grace period the delay plus teller's 10 s drain of in-flight work.
    let pod = deployment.spec.unwrap().template.spec.unwrap();
    let container = &pod.containers[0];
    let ready = container.readiness_probe.as_ref().unwrap();
    let probe_ms = ready.period_seconds.unwrap() * ready.failure_threshold.unwrap() * 1000;
    let delay: i32 = env
        .iter()
        .find(|e| e.name == "TELLER_DRAIN_DELAY_MS")
        .and_then(|e| e.value.as_deref())
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        delay > probe_ms,
        "drain delay {delay} ms, probe {probe_ms} ms"
    );
    let grace = pod.termination_grace_period_seconds.unwrap() * 1000;
    assert!(grace >= i64::from(delay) + 10_000, "grace {grace} ms");
    let ingress = spec.ingress.unwrap();
    assert_eq!(
        ingress[0].ports.as_ref().unwrap()[0].port,
        Some(IntOrString::Int(8080))
    );

    let ns: Namespace = parse("namespace.yaml");
    assert_eq!(ns.metadata.name.as_deref(), Some("bank-core"));
}

#[test]
fn kustomization_lists_every_workload_manifest() {
    let k: serde_yaml_ng::Value = parse("kustomization.yaml");
    let listed: Vec<&str> = k["resources"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    for entry in std::fs::read_dir(dir()).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        if name.ends_with(".yaml") && name != "kustomization.yaml" {
            assert!(
                listed.contains(&name.as_str()),
                "{name} is not in kustomization.yaml"
            );
        }
    }
}

/// Gatekeeper's verdict on `object`: the violation messages.
fn gatekeeper(object: serde_json::Value) -> Vec<String> {
    let template: serde_yaml_ng::Value = parse("gatekeeper/constrainttemplate.yaml");
    let constraint: serde_yaml_ng::Value = parse("gatekeeper/constraint.yaml");
    let rego = template["spec"]["targets"][0]["rego"].as_str().unwrap();
    let parameters: serde_json::Value =
        serde_json::to_value(&constraint["spec"]["parameters"]).unwrap();
    let mut engine = regorus::Engine::new();
    engine.set_rego_v0(true);
    engine
        .add_policy("template.rego".into(), rego.into())
        .unwrap();
    let input = serde_json::json!({"review": {"object": object}, "parameters": parameters});
    engine.set_input(regorus::Value::from_json_str(&input.to_string()).unwrap());
    let violations = engine
        .eval_rule("data.k8srequiredruntimeclass.violation".into())
        .unwrap();
    let json: serde_json::Value = serde_json::from_str(&violations.to_json_str().unwrap()).unwrap();
    json.as_array()
        .map(|a| {
            a.iter()
                .map(|v| v["msg"].as_str().unwrap().to_string())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn gatekeeper_admits_wasmedge_pods_and_rejects_the_rest() {
    let constraint: serde_yaml_ng::Value = parse("gatekeeper/constraint.yaml");
    let ns: Namespace = parse("namespace.yaml");
    let wanted = &constraint["spec"]["match"]["namespaceSelector"]["matchLabels"];
    let labels = ns.metadata.labels.unwrap();
    for (k, v) in wanted.as_mapping().unwrap() {
        assert_eq!(
            labels.get(k.as_str().unwrap()).map(String::as_str),
            v.as_str(),
            "bank-core is matched"
        );
    }

    let deployment: serde_json::Value = serde_json::to_value(
        serde_yaml_ng::from_str::<serde_yaml_ng::Value>(&read("deployment.yaml")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        gatekeeper(deployment.clone()),
        Vec::<String>::new(),
        "teller's own Deployment"
    );

    let pod = |runtime: Option<&str>| {
        let mut p = serde_json::json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "payments-1", "namespace": "bank-core"},
            "spec": {"containers": [{"name": "app", "image": "payments:1"}]},
        });
        if let Some(r) = runtime {
            p["spec"]["runtimeClassName"] = r.into();
        }
        p
    };
    assert!(gatekeeper(pod(Some("wasmedge"))).is_empty());
    let rejected = gatekeeper(pod(None));
    assert_eq!(rejected.len(), 1);
    assert!(
        rejected[0].contains("payments-1") && rejected[0].contains("wasmedge"),
        "{rejected:?}"
    );
    assert_eq!(gatekeeper(pod(Some("runc"))).len(), 1);

    let mut other = deployment;
    other["spec"]["template"]["spec"]["runtimeClassName"] = "runc".into();
    assert_eq!(
        gatekeeper(other).len(),
        1,
        "a Deployment's pod template is checked too"
    );
}
