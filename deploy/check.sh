#!/usr/bin/env bash
# Offline checks of everything under deploy/, from the repository root:
#
#   bash deploy/check.sh
#
# Installs what it lacks (Debian's prometheus package for promtool; a venv at deploy/.venv with
# deploy/requirements.txt), then:
#   - promtool: alerts.yml parses, its unit tests (alerts_test.yml) pass, prometheus.yml is valid;
#   - every Kubernetes manifest under deploy/k8s, all documents, against the Kubernetes JSON
#     schemas (strict: unknown fields are errors); CRDs (ServiceMonitor, PrometheusRule, KEDA
#     ScaledObject) against deploy/k8s/crd-schemas;
#   - cross-checks: probes, grace period >= preStop + drain, ports and selectors, HPA metric =
#     adapter rule, the Job's shard count, alerts.yml = k8s/prometheusrule.yaml;
#   - the Grafana dashboard: JSON, only metrics labeld exports, every query parsed by promtool;
#   - compose.yaml: parses, references files that exist;
#   - a self-test: broken copies of a manifest, a CRD object, the dashboard, a rule file and the
#     alert thresholds must each be rejected, so a check that passes everything is caught.
# Exits non-zero on the first failing step, with the reason. Needs no cluster, Docker or network
# once installed.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

K8S_VERSION="${K8S_VERSION:-1.31}"
VENV=deploy/.venv

fail() { echo "FAIL: $*" >&2; exit 1; }
step() { echo "== $*"; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

step "tools"
if ! command -v promtool >/dev/null; then
  echo "promtool not found: installing Debian's prometheus package"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null
fi
promtool --version 2>&1 | head -n 1
if ! python3 -c 'import venv, ensurepip' 2>/dev/null; then
  echo "python3 with venv not found: installing Debian's python3-venv"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3 python3-venv >/dev/null
fi
if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c 'import kubernetes_validate, yaml, jsonschema' 2>/dev/null \
   || ! cmp -s deploy/requirements.txt "$VENV/.requirements.txt"; then
  echo "creating $VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check --only-binary=:all: -r deploy/requirements.txt
  cp deploy/requirements.txt "$VENV/.requirements.txt"
fi
PY="$VENV/bin/python"
"$PY" -c 'import kubernetes_validate.version as v; print("kubernetes-validate", v.__version__)'

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

step "promtool check rules deploy/prometheus/alerts.yml"
promtool check rules deploy/prometheus/alerts.yml || fail "alerts.yml does not parse"

step "promtool test rules deploy/prometheus/alerts_test.yml"
promtool test rules deploy/prometheus/alerts_test.yml || fail "alert unit tests fail"

step "promtool check config deploy/prometheus/prometheus.yml"
promtool check config deploy/prometheus/prometheus.yml || fail "prometheus.yml is invalid"

step "manifests, dashboard, compose (Kubernetes $K8S_VERSION)"
"$PY" deploy/check_manifests.py all --k8s-version "$K8S_VERSION" || fail "see the FAIL lines above"

step "dashboard queries parse (promtool, as recording rules)"
"$PY" deploy/check_manifests.py dashboard-rules "$tmp/dashboard-rules.yml"
promtool check rules "$tmp/dashboard-rules.yml" || fail "a dashboard query is not valid PromQL"

if command -v kubectl >/dev/null; then
  step "kubectl kustomize deploy/k8s (kubectl is here; optional)"
  kubectl kustomize deploy/k8s >"$tmp/kustomized.yaml" || fail "kustomize build failed"
  "$PY" deploy/check_manifests.py k8s --k8s-version "$K8S_VERSION" "$tmp/kustomized.yaml" \
    || fail "the kustomize output does not validate"
  echo "  $(grep -c '^kind:' "$tmp/kustomized.yaml") objects built and validated"
fi

step "self-test: the checks reject broken input"
"$PY" deploy/check_manifests.py selftest --k8s-version "$K8S_VERSION" || fail "a broken file was accepted"

# promtool must reject a rule file with invalid PromQL ...
sed 's/expr: labeld_inflight_requests \/ labeld_inflight_limit > 0.8/expr: labeld_inflight_requests \/ > 0.8/' \
  deploy/prometheus/alerts.yml >"$tmp/broken-alerts.yml"
cmp -s deploy/prometheus/alerts.yml "$tmp/broken-alerts.yml" && fail "self-test: the rule mutation did not apply"
if promtool check rules "$tmp/broken-alerts.yml" >"$tmp/out" 2>&1; then
  fail "self-test: promtool accepted invalid PromQL"
fi
echo "  rejected as expected (invalid PromQL): $(grep -m1 -i 'error\|could not' "$tmp/out" | cut -c1-140)"

# ... and the unit tests must notice a changed threshold (they test the numbers, not just syntax).
mkdir "$tmp/rules"
sed 's/labeld_inflight_requests \/ labeld_inflight_limit > 0.8/labeld_inflight_requests \/ labeld_inflight_limit > 0.9/' \
  deploy/prometheus/alerts.yml >"$tmp/rules/alerts.yml"
cp deploy/prometheus/alerts_test.yml "$tmp/rules/"
cmp -s deploy/prometheus/alerts.yml "$tmp/rules/alerts.yml" && fail "self-test: the threshold mutation did not apply"
if promtool test rules "$tmp/rules/alerts_test.yml" >"$tmp/out" 2>&1; then
  fail "self-test: the alert tests passed with the saturation threshold moved from 0.8 to 0.9"
fi
echo "  rejected as expected (threshold 0.8 -> 0.9): $(grep -m1 'alertname' "$tmp/out" | sed 's/^ *//' | cut -c1-140)"

# ... and promtool check config must notice a rule file that isn't there.
sed 's/- alerts.yml/- missing-alerts.yml/' deploy/prometheus/prometheus.yml >"$tmp/rules/prometheus.yml"
if promtool check config "$tmp/rules/prometheus.yml" >"$tmp/out" 2>&1; then
  fail "self-test: promtool check config accepted a missing rule file"
fi
echo "  rejected as expected (missing rule file)"

step "all deploy checks passed"
