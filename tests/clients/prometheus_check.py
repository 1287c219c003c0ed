"""A real Prometheus server scrapes labeld; PromQL must count exactly the requests sent.

run.sh starts Prometheus (Debian's `prometheus`) scraping labeld's /metrics every second. This
script waits until Prometheus has scraped labeld, reads the JSON door's counters through PromQL,
sends a known number of good and bad requests to POST /v1/labels, waits for the next scrapes,
and checks that PromQL now shows exactly that many more, by outcome. It also checks the
readiness and model-info series and that every alert rule Prometheus loaded is healthy.

Exit status 0 when every check passed.
"""

import argparse
import json
import sys
import time
import urllib.parse
import urllib.request

GOOD = ["chelsea.png", "coffee.png", "astronaut.png", "coffee.png"]
BAD_THRESHOLDS = ["2", "-1"]


def query(prometheus, promql):
    """The instant vector of `promql` as {labels-as-tuple: value}."""
    url = prometheus + "/api/v1/query?" + urllib.parse.urlencode({"query": promql})
    with urllib.request.urlopen(url, timeout=10) as resp:
        body = json.load(resp)
    assert body["status"] == "success", body
    return {
        tuple(sorted(r["metric"].items())): float(r["value"][1]) for r in body["data"]["result"]
    }


def scalar(prometheus, promql):
    """The single value of `promql`, or None when it has no series."""
    result = query(prometheus, promql)
    assert len(result) <= 1, result
    return next(iter(result.values()), None)


def wait_for(what, check, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = check()
        except OSError:  # Prometheus not listening yet
            value = None
        if value:
            return value
        time.sleep(0.25)
    sys.exit(f"prometheus_check: gave up after {timeout} s waiting for {what}")


def post(labeld, path, body):
    req = urllib.request.Request(labeld + path, data=body, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return resp.status
    except urllib.error.HTTPError as e:
        return e.code


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--prometheus", required=True, help="http://127.0.0.1:PORT")
    ap.add_argument("--labeld", required=True, help="labeld's HTTP door, http://127.0.0.1:PORT")
    ap.add_argument("--fixtures-dir", required=True)
    ap.add_argument("--timeout", type=float, default=60)
    ap.add_argument("--expect-rules", type=int, default=0, help="alert rules Prometheus must have loaded")
    args = ap.parse_args()
    prom, labeld = args.prometheus.rstrip("/"), args.labeld.rstrip("/")

    wait_for("a first successful scrape of labeld (up == 1)",
             lambda: scalar(prom, 'up{job="labeld"}') == 1.0, args.timeout)
    print("   Prometheus scrapes labeld: up{job=\"labeld\"} = 1")
    ok_q = 'sum(labeld_requests_total{job="labeld",door="json",outcome="ok"}) or vector(0)'
    bad_q = 'sum(labeld_requests_total{job="labeld",door="json",outcome="InvalidArgument"}) or vector(0)'
    ok_before, bad_before = scalar(prom, ok_q), scalar(prom, bad_q)
    # The scrape the baseline came from must be the latest: labeld was idle since run.sh's clients.
    print(f"   before: json ok = {ok_before:g}, json InvalidArgument = {bad_before:g}")

    for name in GOOD:
        with open(f"{args.fixtures_dir}/{name}", "rb") as f:
            status = post(labeld, "/v1/labels", f.read())
        assert status == 200, (name, status)
    with open(f"{args.fixtures_dir}/coffee.png", "rb") as f:
        coffee = f.read()
    for threshold in BAD_THRESHOLDS:
        status = post(labeld, f"/v1/labels?threshold={threshold}", coffee)
        assert status == 400, (threshold, status)
    print(f"   sent {len(GOOD)} good and {len(BAD_THRESHOLDS)} bad requests to POST /v1/labels")

    want_ok, want_bad = ok_before + len(GOOD), bad_before + len(BAD_THRESHOLDS)
    wait_for(f"PromQL to show json ok = {want_ok:g} and InvalidArgument = {want_bad:g}",
             lambda: scalar(prom, ok_q) == want_ok and scalar(prom, bad_q) == want_bad,
             args.timeout)
    print(f"   PromQL {ok_q!r} = {want_ok:g} (+{len(GOOD)})")
    print(f"   PromQL {bad_q!r} = {want_bad:g} (+{len(BAD_THRESHOLDS)})")
    # Counters must not run ahead either: give Prometheus two more scrapes and ask again.
    time.sleep(2.5)
    assert scalar(prom, ok_q) == want_ok and scalar(prom, bad_q) == want_bad

    assert scalar(prom, 'labeld_ready{job="labeld"}') == 1.0
    info = query(prom, 'labeld_model_info{job="labeld"}')
    assert len(info) == 1, info
    labels = dict(next(iter(info)))
    assert labels["model"] == "efficientnet-lite0" and labels["device"] == "cpu", labels
    print(f"   labeld_ready = 1; labeld_model_info model={labels['model']} taxonomy_version={labels['taxonomy_version']}")
    p99 = scalar(prom, 'histogram_quantile(0.99, sum by (le) (labeld_request_duration_seconds_bucket{job="labeld",door="json"}))')
    assert p99 is not None and p99 > 0, p99
    print(f"   histogram_quantile(0.99, json latency) = {p99:.3f} s")

    if args.expect_rules:
        with urllib.request.urlopen(prom + "/api/v1/rules", timeout=10) as resp:
            groups = json.load(resp)["data"]["groups"]
        rules = [r for g in groups for r in g["rules"]]
        unhealthy = [(r["name"], r.get("lastError")) for r in rules if r.get("health") not in ("ok", "unknown")]
        assert len(rules) == args.expect_rules, [r["name"] for r in rules]
        assert not unhealthy, unhealthy
        firing = [r["name"] for r in rules if r.get("state") == "firing"]
        assert not firing, f"alerts firing on a healthy server: {firing}"
        print(f"   {len(rules)} alert rules loaded, healthy, none firing")
    print("prometheus_check: all passed")


if __name__ == "__main__":
    main()
