#!/usr/bin/env python3
"""Offline checks of deploy/: Kubernetes manifests, CRD objects, the Grafana dashboard, the compose
file, and the cross-references between them. Run by deploy/check.sh (which also runs promtool);
needs the packages of deploy/requirements.txt.

    check_manifests.py all [--k8s-version 1.31]   every check below
    check_manifests.py k8s FILE...                 validate these manifests (used by the self-test)
    check_manifests.py dashboard-rules OUT         write the dashboard's queries as a rule file, for
                                                   `promtool check rules` to parse them
    check_manifests.py sync-rules                  rewrite k8s/prometheusrule.yaml from
                                                   prometheus/alerts.yml
    check_manifests.py selftest                    prove that the checks above can fail

Exits 1 with one line per problem ("FAIL file: what") when anything is wrong.
"""

from __future__ import annotations

import argparse
import copy
import json
import re
import shutil
import sys
import tempfile
from pathlib import Path

import jsonschema
import yaml
import kubernetes_validate

DEPLOY = Path(__file__).resolve().parent
K8S = DEPLOY / "k8s"
CRD_SCHEMAS = K8S / "crd-schemas"
DEFAULT_K8S_VERSION = "1.31"

# The metrics labeld exports (src/observe.rs). Histograms also have _bucket/_sum/_count series.
COUNTERS = {"labeld_requests_total", "labeld_rejected_requests_total"}
GAUGES = {
    "labeld_queue_depth",
    "labeld_inflight_requests",
    "labeld_inflight_limit",
    "labeld_ready",
    "labeld_model_info",
    "labeld_build_info",
}
HISTOGRAMS = {
    "labeld_request_duration_seconds",
    "labeld_decode_duration_seconds",
    "labeld_queue_duration_seconds",
    "labeld_inference_duration_seconds",
    "labeld_batch_size",
}
LABELD_SERIES = (
    COUNTERS
    | GAUGES
    | {h + suffix for h in HISTOGRAMS for suffix in ("_bucket", "_sum", "_count")}
)
# Series that Prometheus itself makes, allowed in alert rules (not in the dashboard).
PROMETHEUS_SERIES = {"up"}

# CRD kinds that kubernetes-validate has no schema for: (apiVersion, kind) -> schema file.
CRD_KINDS = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"): "servicemonitor-monitoring.coreos.com-v1.json",
    ("monitoring.coreos.com/v1", "PrometheusRule"): "prometheusrule-monitoring.coreos.com-v1.json",
    ("keda.sh/v1alpha1", "ScaledObject"): "scaledobject-keda.sh-v1alpha1.json",
}


class Problems:
    """Collects failures; every check reports here instead of stopping at the first."""

    def __init__(self) -> None:
        self.items: list[str] = []

    def add(self, where: object, what: str) -> None:
        self.items.append(f"{rel(where)}: {what}")

    def __bool__(self) -> bool:
        return bool(self.items)


def rel(path: object) -> str:
    try:
        return str(Path(path).resolve().relative_to(DEPLOY.parent))  # type: ignore[arg-type]
    except (ValueError, TypeError):
        return str(path)


def load_docs(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]


def manifest_files() -> list[Path]:
    """Every Kubernetes manifest under deploy/k8s (the kustomization file is checked apart)."""
    return sorted(
        p for p in K8S.rglob("*.yaml") if p.name != "kustomization.yaml" and "crd-schemas" not in p.parts
    )


# --- Kubernetes objects ---------------------------------------------------------------------


def validate_object(doc: dict, path: Path, version: str, problems: Problems) -> None:
    where = f"{rel(path)} {doc.get('kind', '?')}/{(doc.get('metadata') or {}).get('name', '?')}"
    if not isinstance(doc, dict) or "apiVersion" not in doc or "kind" not in doc:
        problems.add(path, "a document without apiVersion/kind")
        return
    crd = CRD_KINDS.get((doc["apiVersion"], doc["kind"]))
    if crd is not None:
        schema = json.loads((CRD_SCHEMAS / crd).read_text(encoding="utf-8"))
        validator = jsonschema.Draft202012Validator(schema)
        errors = sorted(validator.iter_errors(doc), key=lambda e: list(e.absolute_path))
        for e in errors:
            at = ".".join(str(p) for p in e.absolute_path) or "(top)"
            problems.items.append(f"{where}: {at}: {e.message} [CRD schema {crd}]")
        return
    try:
        kubernetes_validate.validate(doc, version, strict=True)
    except kubernetes_validate.ValidationError as e:
        at = ".".join(str(p) for p in e.absolute_path) or "(top)"
        problems.items.append(f"{where}: {at}: {e.message} [Kubernetes {e.version}, strict]")
    except kubernetes_validate.SchemaNotFoundError as e:
        problems.items.append(f"{where}: {e.message}")


def check_k8s_files(files: list[Path], version: str, problems: Problems) -> int:
    count = 0
    for path in files:
        try:
            docs = load_docs(path)
        except yaml.YAMLError as e:
            problems.add(path, f"YAML: {e}")
            continue
        if not docs:
            problems.add(path, "no documents")
        for doc in docs:
            count += 1
            validate_object(doc, path, version, problems)
    return count


def check_kustomization(problems: Problems) -> None:
    path = K8S / "kustomization.yaml"
    k = load_docs(path)[0]
    if k.get("kind") != "Kustomization":
        problems.add(path, "kind is not Kustomization")
    listed = k.get("resources") or []
    for r in listed:
        if not (K8S / r).is_file():
            problems.add(path, f"resource {r} does not exist")
    # Every top-level manifest is either in the base or deliberately left out of it.
    left_out = {"prometheus-adapter-rules.yaml"}  # installed with the adapter, in its namespace
    for p in sorted(K8S.glob("*.yaml")):
        if p.name != "kustomization.yaml" and p.name not in listed and p.name not in left_out:
            problems.add(path, f"{p.name} is neither in resources nor known to be left out")
    allowed = {"apiVersion", "kind", "resources", "images", "namespace", "labels", "commonLabels",
               "patches", "configMapGenerator", "secretGenerator", "components", "replicas"}
    for key in k:
        if key not in allowed:
            problems.add(path, f"unexpected key {key!r}")


def objects(path: Path, kind: str) -> list[dict]:
    return [d for d in load_docs(path) if d.get("kind") == kind]


def env_of(container: dict) -> dict[str, object]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}


def check_deployment_semantics(problems: Problems) -> None:
    """What the schema can't say: probes, drain arithmetic, names that must match."""
    path = K8S / "deployment.yaml"
    dep = objects(path, "Deployment")[0]
    pod = dep["spec"]["template"]["spec"]
    c = pod["containers"][0]
    env = env_of(c)

    # Both probe kinds, with the service names labeld registers.
    probes = {k: c.get(k) for k in ("startupProbe", "readinessProbe", "livenessProbe")}
    for k, p in probes.items():
        if not p:
            problems.add(path, f"{k} missing")
    kinds = {next(iter(set(p) & {"grpc", "httpGet", "exec", "tcpSocket"}), None) for p in probes.values() if p}
    if not {"grpc", "httpGet"} <= kinds:
        problems.add(path, f"probes should use both grpc and httpGet, got {sorted(k for k in kinds if k)}")
    for k, p in probes.items():
        if p and "grpc" in p and p["grpc"].get("service", "") not in ("", "labeld.v1.ImageLabels"):
            problems.add(path, f"{k}: gRPC health service {p['grpc']['service']!r} is not one labeld serves")
        if p and "httpGet" in p and p["httpGet"]["path"] not in ("/health/live", "/health/ready"):
            problems.add(path, f"{k}: {p['httpGet']['path']} is not a labeld health endpoint")
    if (probes.get("livenessProbe") or {}).get("httpGet", {}).get("path") == "/health/ready":
        problems.add(path, "livenessProbe on /health/ready would kill draining pods")
    sp = probes.get("startupProbe") or {}
    budget = sp.get("periodSeconds", 10) * sp.get("failureThreshold", 3)
    if budget < 120:
        problems.add(path, f"startupProbe allows only {budget}s for the warm-up (want >= 120)")

    # Grace period >= preStop sleep + drain timeout.
    pre = c.get("lifecycle", {}).get("preStop", {})
    sleep_s = int(pre.get("sleep", {}).get("seconds", 0)) or int(next(
        (a for a in pre.get("exec", {}).get("command", []) if str(a).isdigit()), 0))
    drain = int(env.get("LABELD_DRAIN_TIMEOUT_SECS") or 25)
    grace = pod.get("terminationGracePeriodSeconds", 30)
    if sleep_s == 0:
        problems.add(path, "no preStop sleep")
    if grace < sleep_s + drain:
        problems.add(path, f"terminationGracePeriodSeconds {grace} < preStop {sleep_s} + drain {drain}")

    # Listening on the pod IP: API keys from a (required) Secret, never anonymous.
    keys = env.get("LABELD_API_KEYS")
    ref = keys.get("secretKeyRef") if isinstance(keys, dict) else None
    if not ref or ref.get("optional") is True:
        problems.add(path, "LABELD_API_KEYS must come from a required secretKeyRef to listen on 0.0.0.0")
    if env.get("LABELD_ALLOW_ANONYMOUS") == "true":
        problems.add(path, "LABELD_ALLOW_ANONYMOUS on a pod IP opens gRPC and POST /v1/labels to anyone")
    for name in ("LABELD_ACCESS_KEY_ID", "LABELD_ACCESS_KEY_SECRET"):
        ref = (env.get(name) or {}).get("secretKeyRef") if isinstance(env.get(name), dict) else None
        if not ref or ref.get("optional") is not True:
            problems.add(path, f"{name} should come from an optional secretKeyRef")

    # Security context.
    sc = c.get("securityContext", {})
    if not (sc.get("readOnlyRootFilesystem") and sc.get("capabilities", {}).get("drop") == ["ALL"]
            and sc.get("allowPrivilegeEscalation") is False):
        problems.add(path, "container securityContext: want readOnlyRootFilesystem, drop ALL, no privilege escalation")
    psc = pod.get("securityContext", {})
    if not (psc.get("runAsNonRoot") and psc.get("seccompProfile", {}).get("type") == "RuntimeDefault"):
        problems.add(path, "pod securityContext: want runAsNonRoot and seccomp RuntimeDefault")

    # Ports: the Service's targetPorts and the ServiceMonitor's port name exist.
    cports = {p["name"]: p["containerPort"] for p in c.get("ports", [])}
    if cports != {"grpc": 50051, "http": 8080, "metrics": 9090}:
        problems.add(path, f"container ports {cports}")
    svc_path = K8S / "service.yaml"
    svcs = objects(svc_path, "Service")
    svc = next(s for s in svcs if s["metadata"]["name"] == "labeld")
    for p in svc["spec"]["ports"]:
        if p.get("targetPort") not in cports and p.get("targetPort") not in cports.values():
            problems.add(svc_path, f"port {p['name']}: targetPort {p.get('targetPort')} is no container port")
        if p["name"] == "grpc" and p.get("appProtocol") != "grpc":
            problems.add(svc_path, "grpc port without appProtocol: grpc")
    pod_labels = dep["spec"]["template"]["metadata"]["labels"]
    for s in svcs:
        if not set(s["spec"]["selector"].items()) <= set(pod_labels.items()):
            problems.add(svc_path, f"{s['metadata']['name']}: selector matches no labeld pod")
    sm_path = K8S / "servicemonitor.yaml"
    sm = objects(sm_path, "ServiceMonitor")[0]
    selected = [s for s in svcs if set(sm["spec"]["selector"]["matchLabels"].items()) <= set(s["metadata"].get("labels", {}).items())]
    if [s["metadata"]["name"] for s in selected] != ["labeld"]:
        problems.add(sm_path, f"selects Services {[s['metadata']['name'] for s in selected]}, want exactly labeld")
    for ep in sm["spec"]["endpoints"]:
        if ep.get("port") not in {p["name"] for p in svc["spec"]["ports"]}:
            problems.add(sm_path, f"port {ep.get('port')} is not a port of Service labeld")
    pdb_path = K8S / "pdb.yaml"
    pdb = objects(pdb_path, "PodDisruptionBudget")[0]
    if not set(pdb["spec"]["selector"]["matchLabels"].items()) <= set(pod_labels.items()):
        problems.add(pdb_path, "selector matches no labeld pod")
    if dep["spec"]["selector"]["matchLabels"] != {k: pod_labels[k] for k in dep["spec"]["selector"]["matchLabels"] if k in pod_labels}:
        problems.add(path, "selector does not match the pod template labels")


def check_autoscaling(problems: Problems) -> None:
    hpa_path = K8S / "hpa.yaml"
    hpa = objects(hpa_path, "HorizontalPodAutoscaler")[0]
    names = [m["pods"]["metric"]["name"] for m in hpa["spec"]["metrics"] if m["type"] == "Pods"]
    if names != ["labeld_inflight_requests"]:
        problems.add(hpa_path, f"Pods metrics {names}, want labeld_inflight_requests")
    if hpa["spec"]["scaleTargetRef"]["name"] != "labeld":
        problems.add(hpa_path, "scaleTargetRef is not the labeld Deployment")
    # The adapter rule must serve the metric the HPA asks for, from a series labeld exports.
    ad_path = K8S / "prometheus-adapter-rules.yaml"
    cm = objects(ad_path, "ConfigMap")[0]
    config = yaml.safe_load(cm["data"]["config.yaml"])
    served = set()
    for r in config.get("rules", []):
        series = re.match(r"\s*([a-zA-Z_:][a-zA-Z0-9_:]*)", r["seriesQuery"]).group(1)
        if series not in LABELD_SERIES:
            problems.add(ad_path, f"seriesQuery on {series}, which labeld does not export")
        served.add(r.get("name", {}).get("as", series))
        for needed in ("<<.Series>>", "<<.LabelMatchers>>", "<<.GroupBy>>"):
            if needed not in r["metricsQuery"]:
                problems.add(ad_path, f"metricsQuery lacks {needed}")
        overrides = r.get("resources", {}).get("overrides", {})
        if {"namespace", "pod"} - set(overrides):
            problems.add(ad_path, "a Pods metric needs namespace and pod resource overrides")
    for n in names:
        if n not in served:
            problems.add(hpa_path, f"{n} is not served by prometheus-adapter-rules.yaml")
    ko_path = K8S / "optional" / "keda-scaledobject.yaml"
    for so in objects(ko_path, "ScaledObject"):
        for t in so["spec"]["triggers"]:
            if t["type"] == "prometheus":
                for m in promql_metrics(t["metadata"]["query"]):
                    if m not in LABELD_SERIES:
                        problems.add(ko_path, f"query uses {m}, which labeld does not export")


def check_examples(problems: Problems) -> None:
    # The sharded Job: N is written three times and must agree; args use only defined variables.
    path = K8S / "examples" / "label-bucket-job.yaml"
    job = objects(path, "Job")[0]
    spec = job["spec"]
    c = spec["template"]["spec"]["containers"][0]
    env = env_of(c)
    if spec.get("completionMode") != "Indexed":
        problems.add(path, "completionMode is not Indexed")
    if str(spec.get("completions")) != str(env.get("SHARD_COUNT")):
        problems.add(path, f"completions {spec.get('completions')} != SHARD_COUNT {env.get('SHARD_COUNT')}")
    if spec.get("parallelism", 1) > spec.get("completions", 1):
        problems.add(path, "parallelism > completions")
    for arg in c.get("args", []):
        for var in re.findall(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", arg):
            if var not in env:
                problems.add(path, f"args use $({var}), not defined in the container's env")
    idx = env.get("JOB_COMPLETION_INDEX")
    if not (isinstance(idx, dict) and "batch.kubernetes.io/job-completion-index" in idx.get("fieldRef", {}).get("fieldPath", "")):
        problems.add(path, "JOB_COMPLETION_INDEX should come from the completion-index annotation")
    args = c.get("args", [])
    for flag in ("--shard", "--output", "--format"):
        if flag not in args:
            problems.add(path, f"labeld label without {flag}")
    mounts = {m["name"]: m for m in c.get("volumeMounts", [])}
    if not mounts.get("photos", {}).get("readOnly"):
        problems.add(path, "the photos volume should be mounted read-only")

    # The sidecar: native sidecar, loopback only, probes that work on loopback.
    path = K8S / "examples" / "sidecar.yaml"
    dep = objects(path, "Deployment")[0]
    inits = dep["spec"]["template"]["spec"].get("initContainers", [])
    side = next((i for i in inits if i["name"] == "labeld"), None)
    if not side or side.get("restartPolicy") != "Always":
        problems.add(path, "labeld should be a native sidecar (initContainer with restartPolicy: Always)")
    else:
        senv = env_of(side)
        for var in ("LABELD_GRPC_ADDR", "LABELD_HTTP_ADDR"):
            if not str(senv.get(var, "")).startswith("127.0.0.1:"):
                problems.add(path, f"sidecar {var} should be a loopback address")
        if "LABELD_ALLOW_ANONYMOUS" in senv:
            problems.add(path, "a loopback-only sidecar needs no LABELD_ALLOW_ANONYMOUS")
        for k in ("startupProbe", "livenessProbe", "readinessProbe"):
            p = side.get(k)
            if p and ("httpGet" in p or "grpc" in p):
                problems.add(path, f"sidecar {k} probes the pod IP, where a loopback server isn't")

    # The GPU example.
    path = K8S / "examples" / "gpu.yaml"
    dep = objects(path, "Deployment")[0]
    pod = dep["spec"]["template"]["spec"]
    c = pod["containers"][0]
    if not c["image"].endswith("-cuda"):
        problems.add(path, "image should be the -cuda build")
    if env_of(c).get("LABELD_DEVICE") != "cuda":
        problems.add(path, "LABELD_DEVICE should be cuda")
    if str(c["resources"].get("limits", {}).get("nvidia.com/gpu")) != "1":
        problems.add(path, "limits nvidia.com/gpu: 1 missing")
    if not any(t.get("key") == "nvidia.com/gpu" and t.get("effect") == "NoSchedule" for t in pod.get("tolerations", [])):
        problems.add(path, "no nvidia.com/gpu NoSchedule toleration")


def check_prometheusrule_sync(problems: Problems) -> None:
    alerts = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text(encoding="utf-8"))
    path = K8S / "prometheusrule.yaml"
    pr = objects(path, "PrometheusRule")[0]
    if pr["spec"]["groups"] != alerts["groups"]:
        problems.add(path, "groups differ from prometheus/alerts.yml: run `deploy/.venv/bin/python deploy/check_manifests.py sync-rules`")
    for g in alerts["groups"]:
        for r in g["rules"]:
            for m in promql_metrics(r["expr"]):
                if m not in LABELD_SERIES | PROMETHEUS_SERIES:
                    problems.add(DEPLOY / "prometheus" / "alerts.yml", f"{r.get('alert')}: unknown metric {m}")
            if "alert" in r and not ({"summary", "description"} <= set(r.get("annotations", {}))
                                     and "severity" in r.get("labels", {})):
                problems.add(DEPLOY / "prometheus" / "alerts.yml", f"{r['alert']}: needs summary, description and severity")


def sync_rules() -> None:
    alerts = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text(encoding="utf-8"))
    doc = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {"name": "labeld", "labels": {"app.kubernetes.io/name": "labeld"}},
        "spec": {"groups": alerts["groups"]},
    }

    class Dumper(yaml.SafeDumper):
        pass

    def text(dumper: yaml.SafeDumper, s: str) -> yaml.Node:
        style = "|" if "\n" in s else None
        return dumper.represent_scalar("tag:yaml.org,2002:str", s, style=style)

    Dumper.add_representer(str, text)
    header = (
        "# GENERATED from deploy/prometheus/alerts.yml by `check_manifests.py sync-rules`: edit\n"
        "# alerts.yml (tested by alerts_test.yml), then regenerate; deploy/check.sh fails when they differ.\n"
        "# The alert rules for the Prometheus Operator. Your Prometheus selects PrometheusRules by\n"
        "# label (kube-prometheus-stack: release: <name>); add that label here if it does.\n"
    )
    body = yaml.dump(doc, Dumper=Dumper, sort_keys=False, width=100, allow_unicode=True)
    (K8S / "prometheusrule.yaml").write_text(header + body, encoding="utf-8")


# --- PromQL and the dashboard ---------------------------------------------------------------

PROMQL_WORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless",
    "offset", "inf", "nan", "start", "end", "atan2",
}


def promql_metrics(expr: str) -> set[str]:
    """Metric names an expression selects (not functions, keywords or label names)."""
    s = re.sub(r'"(?:\\.|[^"\\])*"|\'(?:\\.|[^\'\\])*\'|`[^`]*`', '""', expr)  # strings
    s = re.sub(r"\$\{[^}]*\}|\$[A-Za-z_]\w*", "x", s)  # Grafana variables
    s = re.sub(r"\{[^}]*\}", " ", s)  # label matchers
    s = re.sub(r"\[[^\]]*\]", " ", s)  # ranges and subqueries
    s = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", s)
    s = re.sub(r"\b\d+(\.\d+)?([eE][+-]?\d+)?[smhdwy]?\b", " ", s)  # numbers and durations
    names = set()
    for m in re.finditer(r"(?<![\w.])([A-Za-z_:][A-Za-z0-9_:]*)\s*(\()?", s):
        word, call = m.group(1), m.group(2)
        if call or word.lower() in PROMQL_WORDS:
            continue
        names.add(word)
    return names


def dashboard_panels(dash: dict) -> list[dict]:
    out = []
    for p in dash.get("panels", []):
        out.append(p)
        out.extend(p.get("panels", []))  # collapsed rows
    return out


GRAFANA_VARS = {"__rate_interval": "5m", "__interval": "1m", "__range": "1h"}


def grafana_to_promql(expr: str) -> str:
    """Substitutes Grafana's variables so that promtool can parse the query."""

    def var(m: re.Match) -> str:
        name = (m.group(1) or m.group(2)).split(":")[0]
        return GRAFANA_VARS.get(name, ".*")

    return re.sub(r"\$\{([^}]*)\}|\$([A-Za-z_]\w*)", var, expr)


def check_dashboard(problems: Problems, path: Path | None = None) -> list[str]:
    path = path or DEPLOY / "grafana" / "labeld-dashboard.json"
    try:
        dash = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        problems.add(path, f"JSON: {e}")
        return []
    exprs: list[str] = []
    if not dash.get("title") or not dash.get("uid"):
        problems.add(path, "dashboard needs a title and a uid")
    ds_vars = [v for v in dash.get("templating", {}).get("list", []) if v.get("type") == "datasource"]
    if [v["name"] for v in ds_vars] != ["DS_PROMETHEUS"]:
        problems.add(path, "want one datasource variable, DS_PROMETHEUS")
    for v in dash.get("templating", {}).get("list", []):
        if v.get("type") == "query":
            q = v.get("query")
            q = q.get("query") if isinstance(q, dict) else q
            m = re.match(r"\s*label_values\(\s*([^,]+),", q or "")
            for name in promql_metrics(m.group(1) if m else q or ""):
                if name not in LABELD_SERIES:
                    problems.add(path, f"variable {v['name']}: unknown metric {name}")
    ids = set()
    for p in dashboard_panels(dash):
        if p.get("type") == "row":
            continue
        title = p.get("title", "?")
        if p.get("id") in ids:
            problems.add(path, f"panel {title!r}: duplicate id {p.get('id')}")
        ids.add(p.get("id"))
        if (p.get("datasource") or {}).get("uid") != "${DS_PROMETHEUS}":
            problems.add(path, f"panel {title!r}: datasource is not ${{DS_PROMETHEUS}}")
        targets = p.get("targets") or []
        if not targets:
            problems.add(path, f"panel {title!r}: no targets")
        for t in targets:
            expr = t.get("expr", "")
            if not expr.strip():
                problems.add(path, f"panel {title!r}: empty expr")
                continue
            exprs.append(expr)
            names = promql_metrics(expr)
            if not names:
                problems.add(path, f"panel {title!r}: no metric in {expr!r}")
            for name in sorted(names - LABELD_SERIES):
                problems.add(path, f"panel {title!r}: unknown metric {name} in {expr!r}")
    used = set().union(*(promql_metrics(e) for e in exprs)) if exprs else set()
    bases = {re.sub(r"_(bucket|sum|count)$", "", n) if re.sub(r"_(bucket|sum|count)$", "", n) in HISTOGRAMS else n for n in used}
    for missing in sorted((COUNTERS | GAUGES | HISTOGRAMS) - bases):
        problems.add(path, f"no panel shows {missing}")
    return exprs


def write_dashboard_rules(out: Path) -> None:
    problems = Problems()
    exprs = check_dashboard(problems)
    rules = [{"record": f"dashboard:query_{i}", "expr": grafana_to_promql(e)} for i, e in enumerate(exprs)]
    out.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}, sort_keys=False))


# --- compose --------------------------------------------------------------------------------


def expand_default(s: str) -> str:
    """${VAR:-default} -> default, ${VAR} -> '' (compose interpolation, without the environment)."""
    return re.sub(r"\$\{[A-Za-z_]\w*(?::?-([^}]*))?\}", lambda m: m.group(1) or "", s)


def check_compose(problems: Problems) -> None:
    path = DEPLOY / "compose.yaml"
    try:
        compose = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        problems.add(path, f"YAML: {e}")
        return
    services = compose.get("services") or {}
    for name in ("labeld", "prometheus", "grafana"):
        if name not in services:
            problems.add(path, f"no service {name}")
    named_volumes = set(compose.get("volumes") or {})
    for name, svc in services.items():
        build = svc.get("build")
        if build:
            ctx = (path.parent / build.get("context", ".")).resolve()
            if not ctx.is_dir():
                problems.add(path, f"{name}: build context {ctx} missing")
            df = ctx / build.get("dockerfile", "Dockerfile")
            if not df.is_file():
                problems.add(path, f"{name}: dockerfile {df} missing")
        for v in svc.get("volumes", []):
            src = expand_default(v).split(":")[0]
            if src.startswith((".", "/")):
                if not (path.parent / src).exists():
                    problems.add(path, f"{name}: volume source {src} does not exist")
            elif src not in named_volumes:
                problems.add(path, f"{name}: named volume {src} not declared")
        for dep in svc.get("depends_on", []):
            if dep not in services:
                problems.add(path, f"{name}: depends on unknown service {dep}")
    env = services.get("labeld", {}).get("environment", {})
    if env.get("LABELD_ALLOW_ANONYMOUS") != "true":
        problems.add(path, "labeld needs LABELD_ALLOW_ANONYMOUS=true to listen on 0.0.0.0 in the container")
    if not str(env.get("LABELD_BUCKETS", "")).startswith("photos="):
        problems.add(path, "labeld should serve the photos bucket")
    # Prometheus scrapes what compose runs, and loads the alerts.
    prom = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text(encoding="utf-8"))
    targets = [t for j in prom["scrape_configs"] for sc in j.get("static_configs", []) for t in sc["targets"]]
    if "labeld:9090" not in targets:
        problems.add(DEPLOY / "prometheus" / "prometheus.yml", "does not scrape labeld:9090")
    if "alerts.yml" not in prom.get("rule_files", []):
        problems.add(DEPLOY / "prometheus" / "prometheus.yml", "does not load alerts.yml")
    # Grafana provisioning: the datasource the dashboard variable finds, the dashboard folder.
    prov = DEPLOY / "grafana" / "provisioning"
    ds = yaml.safe_load((prov / "datasources" / "prometheus.yaml").read_text(encoding="utf-8"))
    if not any(d.get("type") == "prometheus" and d.get("url") == "http://prometheus:9090" for d in ds["datasources"]):
        problems.add(prov / "datasources" / "prometheus.yaml", "no prometheus datasource at http://prometheus:9090")
    dp = yaml.safe_load((prov / "dashboards" / "labeld.yaml").read_text(encoding="utf-8"))
    paths = [p["options"]["path"] for p in dp["providers"]]
    mounts = [expand_default(v).split(":")[1] for v in services.get("grafana", {}).get("volumes", []) if ":" in v]
    for p in paths:
        if not any(m == p or m.startswith(p.rstrip("/") + "/") for m in mounts):
            problems.add(prov / "dashboards" / "labeld.yaml", f"provider path {p} is not mounted by compose")


# --- self-test ------------------------------------------------------------------------------


def selftest(version: str) -> list[str]:
    """Breaks copies of good files in ways the checks must catch; returns what went uncaught."""
    global K8S  # pointed at a mutated copy for the cross-checks, then restored
    uncaught = []
    tmp = Path(tempfile.mkdtemp(prefix="labeld-deploy-selftest-"))
    try:
        def expect_rejected(name: str, text: str, good: str) -> None:
            if text == good:
                uncaught.append(f"{name}: the mutation did not apply")
                return
            f = tmp / f"{name}.yaml"
            f.write_text(text, encoding="utf-8")
            p = Problems()
            check_k8s_files([f], version, p)
            if not p:
                uncaught.append(f"{name}: accepted")
            else:
                print(f"  rejected as expected ({name}): {p.items[0][:160]}")

        dep = (K8S / "deployment.yaml").read_text(encoding="utf-8")
        # The good file passes first, so that a rejection below is the mutation's doing.
        p = Problems()
        check_k8s_files([K8S / "deployment.yaml"], version, p)
        if p:
            uncaught.append(f"the unmodified deployment.yaml fails: {p.items}")
        expect_rejected("misspelled-field", dep.replace("      containers:", "      contianers:", 1), dep)
        expect_rejected("string-for-int", dep.replace("containerPort: 8080", 'containerPort: "8080"', 1), dep)
        expect_rejected("bad-probe-field", dep.replace("failureThreshold: 30", "failureTreshold: 30", 1), dep)
        sm = (K8S / "servicemonitor.yaml").read_text(encoding="utf-8")
        expect_rejected("crd-misspelled-field", sm.replace("  endpoints:", "  endpoint:", 1), sm)
        expect_rejected("crd-bad-enum", sm.replace("scheme: http", "scheme: tcp", 1), sm)
        so = (K8S / "optional" / "keda-scaledobject.yaml").read_text(encoding="utf-8")
        expect_rejected("crd-int-as-string", so.replace("minReplicaCount: 2", 'minReplicaCount: "2"', 1), so)
        hpa = (K8S / "hpa.yaml").read_text(encoding="utf-8")
        expect_rejected("wrong-api-shape", hpa.replace("          averageValue:", "          averageValues:", 1), hpa)

        # The dashboard check rejects a metric labeld doesn't export.
        dash_path = DEPLOY / "grafana" / "labeld-dashboard.json"
        dash = json.loads(dash_path.read_text(encoding="utf-8"))
        bad = copy.deepcopy(dash)
        target = next(p for p in dashboard_panels(bad) if p.get("targets"))["targets"][0]
        target["expr"] = target["expr"].replace("labeld_", "labeld_nonexistent_", 1)
        f = tmp / "dashboard.json"
        f.write_text(json.dumps(bad), encoding="utf-8")
        p = Problems()
        check_dashboard(p, f)
        if not any("unknown metric labeld_nonexistent_" in i for i in p.items):
            uncaught.append(f"dashboard with an unknown metric: accepted ({p.items})")
        else:
            print("  rejected as expected (dashboard-unknown-metric)")
        f.write_text(json.dumps(dash)[:-10], encoding="utf-8")
        p = Problems()
        check_dashboard(p, f)
        if not p:
            uncaught.append("truncated dashboard JSON: accepted")
        else:
            print("  rejected as expected (dashboard-truncated-json)")

        # The cross-checks: run them on a mutated copy of deploy/k8s.
        real_k8s = K8S
        semantic = [
            ("grace-period-too-short", "deployment.yaml", "terminationGracePeriodSeconds: 35",
             "terminationGracePeriodSeconds: 20", check_deployment_semantics),
            ("liveness-on-ready", "deployment.yaml", "path: /health/live", "path: /health/ready",
             check_deployment_semantics),
            ("servicemonitor-port", "servicemonitor.yaml", "- port: metrics", "- port: metric",
             check_deployment_semantics),
            ("hpa-metric-not-served", "hpa.yaml", "name: labeld_inflight_requests",
             "name: labeld_inflight", check_autoscaling),
            ("shard-count-mismatch", "examples/label-bucket-job.yaml", 'value: "4"   # = completions',
             'value: "3"', check_examples),
            ("undefined-arg-variable", "examples/label-bucket-job.yaml",
             "/results/labels-$(JOB_COMPLETION_INDEX).jsonl", "/results/labels-$(JOB_INDEX).jsonl", check_examples),
            ("prometheusrule-drift", "prometheusrule.yaml", "> 0.8", "> 0.85", check_prometheusrule_sync),
        ]
        try:
            for name, file, old, new, check in semantic:
                K8S = tmp / "k8s"
                shutil.rmtree(K8S, ignore_errors=True)
                shutil.copytree(real_k8s, K8S)
                text = (K8S / file).read_text(encoding="utf-8")
                if old not in text:
                    uncaught.append(f"{name}: the mutation did not apply")
                    continue
                (K8S / file).write_text(text.replace(old, new, 1), encoding="utf-8")
                p = Problems()
                try:
                    check(p)
                except Exception as e:  # noqa: BLE001 - a crash is a rejection too, but say so
                    p.items.append(f"crashed: {type(e).__name__}: {e}")
                if not p:
                    uncaught.append(f"{name}: accepted")
                else:
                    print(f"  rejected as expected ({name}): {p.items[0][:140]}")
        finally:
            K8S = real_k8s

        # The metric extractor itself.
        cases = {
            'sum by (door) (rate(labeld_requests_total{outcome!="ok"}[$__rate_interval]))': {"labeld_requests_total"},
            "histogram_quantile(0.99, sum by (le) (rate(labeld_batch_size_bucket[5m]))) > 2": {"labeld_batch_size_bucket"},
            "a / on (job, instance) group_left b offset 5m": {"a", "b"},
            "up == 0 or absent(up{job=\"labeld\"})": {"up"},
        }
        for expr, want in cases.items():
            got = promql_metrics(expr)
            if got != want:
                uncaught.append(f"promql_metrics({expr!r}) = {got}, want {want}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return uncaught


# --- main -----------------------------------------------------------------------------------


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("command", choices=["all", "k8s", "dashboard-rules", "sync-rules", "selftest"])
    ap.add_argument("paths", nargs="*")
    ap.add_argument("--k8s-version", default=DEFAULT_K8S_VERSION)
    args = ap.parse_intermixed_args()
    problems = Problems()

    if args.command == "sync-rules":
        sync_rules()
        print(f"wrote {rel(K8S / 'prometheusrule.yaml')}")
        return 0
    if args.command == "dashboard-rules":
        write_dashboard_rules(Path(args.paths[0]))
        return 0
    if args.command == "selftest":
        uncaught = selftest(args.k8s_version)
        for u in uncaught:
            print(f"FAIL self-test: {u}")
        return 1 if uncaught else 0
    if args.command == "k8s":
        n = check_k8s_files([Path(p) for p in args.paths], args.k8s_version, problems)
    else:
        files = manifest_files()
        n = check_k8s_files(files, args.k8s_version, problems)
        print(f"  {n} Kubernetes objects in {len(files)} files validated (Kubernetes {args.k8s_version}, strict; CRDs against crd-schemas/)")
        checks = [
            ("kustomization", check_kustomization),
            ("deployment, service, servicemonitor, pdb", check_deployment_semantics),
            ("autoscaling (HPA, adapter rule, KEDA)", check_autoscaling),
            ("examples (job, sidecar, gpu)", check_examples),
            ("alerts.yml = prometheusrule.yaml, metric names", check_prometheusrule_sync),
            ("grafana dashboard", check_dashboard),
            ("compose, prometheus.yml, grafana provisioning", check_compose),
        ]
        for name, check in checks:
            before = len(problems.items)
            try:
                check(problems)
            except Exception as e:  # a missing key is a broken file, not a crash of the checker
                problems.items.append(f"{name}: check crashed on {type(e).__name__}: {e}")
            print(f"  {name}: {'ok' if len(problems.items) == before else 'FAILED'}")
    for item in problems.items:
        print(f"FAIL {item}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
