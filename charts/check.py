#!/usr/bin/env python3
"""Lints the batchctl chart with real Helm (through the PyPI package helm-python-sdk) in strict
mode, for the default values and for ci/single-replica-values.yaml, then renders both and checks
what was rendered. Writes the rendered resources.yaml (what the servers apply at start) to the
directory given, so the caller can have the real server validate it.

Usage: check.py OUTPUT_DIR. Exit status 0 when every check passes; each failure is printed."""

import json
import os
import shutil
import subprocess
import sys

import helm_python
import yaml

CHART = os.path.join(os.path.dirname(os.path.abspath(__file__)), "batchctl")
NAMESPACE = "batch-system"
failures = []


def check(condition, what):
    if not condition:
        failures.append(what)


def lint(name, values, expect_clean=True):
    report = helm_python.lint(CHART, values, strict=True, namespace=NAMESPACE)
    # Helm's severities: 1 info, 2 warning, 3 error. Strict mode fails on warnings too.
    serious = [m for m in report["messages"] if m["severity"] >= 2]
    if expect_clean:
        check(not report["errors"] and not serious, f"lint {name}: {report}")
    return report


def render(values):
    chart = helm_python.Chart.load(CHART)
    try:
        rendered = chart.render(values, name="batchctl", namespace=NAMESPACE, is_install=True)
    finally:
        chart.close()
    documents = []
    for path, text in rendered.items():
        if path.endswith("NOTES.txt"):
            continue
        documents.extend(d for d in yaml.safe_load_all(text) if d)
    return documents


def checkov(documents, output_dir):
    """Runs PyPI's checkov over the rendered chart: no check may fail; the chart skips the few
    that do not fit, each with a one-line reason in an annotation."""
    if shutil.which("checkov") is None:
        if os.environ.get("CI") == "true":
            failures.append("CI=true but checkov is missing: pip install checkov")
        else:
            print("\n!!! SKIPPING the checkov scan of the chart: checkov is not installed (pip install checkov) !!!\n")
        return
    path = os.path.join(output_dir, "chart-rendered.yaml")
    with open(path, "w") as f:
        yaml.safe_dump_all(documents, f)
    ran = subprocess.run(["checkov", "-f", path, "--framework", "kubernetes", "--compact",
                          "-o", "json", "--skip-download"], capture_output=True, text=True)
    try:
        report = json.loads(ran.stdout)
    except json.JSONDecodeError:
        failures.append(f"checkov did not report: {ran.stdout[-2000:]} {ran.stderr[-2000:]}")
        return
    reports = report if isinstance(report, list) else [report]
    failed = [(c["check_id"], c["resource"]) for r in reports for c in r.get("results", {}).get("failed_checks", [])]
    skipped = {c["check_id"] for r in reports for c in r.get("results", {}).get("skipped_checks", [])}
    check(not failed, f"checkov finds failed checks in the chart: {failed}")
    # Each skip is an annotation `checkov.io/skipN: CHECK=why`: none without its why.
    reasons = {}
    for document in documents:
        for key, value in (document["metadata"].get("annotations") or {}).items():
            if key.startswith("checkov.io/skip"):
                check_id, _, why = str(value).partition("=")
                reasons[check_id] = why.strip()
    check(all(reasons.get(check_id) for check_id in skipped), f"every skipped check says why: {skipped} {reasons}")
    print(f"checkov: {sum(r.get('summary', {}).get('passed', 0) for r in reports)} passed, {len(failed)} failed, {len(skipped)} skipped with a reason")


def by_kind(documents, kind):
    return [d for d in documents if d["kind"] == kind]


def main(output_dir):
    with open(os.path.join(CHART, "ci", "single-replica-values.yaml")) as f:
        single = yaml.safe_load(f)

    lint("default values", None)
    lint("single-replica values", single)
    # values.schema.json refuses what it does not know (additionalProperties: false).
    report = lint("an unknown value", {"replicas": 3}, expect_clean=False)
    check(any("replicas" in e and "additional properties" in e.lower() for e in report["errors"]),
          f"an unknown value is refused by the schema: {report}")

    values = {"database": {"url": "postgres://batchctl@db:5432/batchctl"},
              "auth": {"tokens": [{"scope": "admin", "token": "0123456789abcdef0123"}]}}
    documents = render(values)
    [deployment] = by_kind(documents, "Deployment")
    check(deployment["spec"]["replicas"] == 2, "two replicas by default")
    pod = deployment["spec"]["template"]["spec"]
    [container] = pod["containers"]
    check(pod["securityContext"]["runAsNonRoot"] is True, "pods run as non-root")
    check(container["securityContext"] == {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                                           "capabilities": {"drop": ["ALL"]}}, f"restricted container: {container['securityContext']}")
    check(container["readinessProbe"]["httpGet"]["path"] == "/healthz", "readiness probe")
    check(container["livenessProbe"]["httpGet"]["path"] == "/healthz", "liveness probe")
    env = {e["name"]: e for e in container["env"]}
    check(env["BATCHCTL_DATABASE_URL"]["valueFrom"]["secretKeyRef"]["name"] == "batchctl-database", "database URL from a Secret")
    check(env["BATCHCTL_TOKENS"]["valueFrom"]["secretKeyRef"]["name"] == "batchctl-tokens", "tokens from a Secret")
    check(env["BATCHCTL_REPLICA_ID"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name", "replica id is the pod")
    check("--listen=0.0.0.0:7700" in container["args"], "listens on the pod network")
    secrets = {s["metadata"]["name"]: s for s in by_kind(documents, "Secret")}
    check(secrets["batchctl-tokens"]["stringData"]["tokens"].strip() == "admin 0123456789abcdef0123", "tokens file lines")
    check(len(by_kind(documents, "PodDisruptionBudget")) == 1, "a PodDisruptionBudget with two replicas")
    check(not by_kind(documents, "ServiceMonitor"), "no ServiceMonitor unless enabled")
    [role] = by_kind(documents, "Role")
    for rule in role["rules"]:
        for field in ("apiGroups", "resources", "verbs"):
            check("*" not in rule[field], f"no wildcard in the Role: {rule}")
    granted = {(r, v) for rule in role["rules"] for r in rule["resources"] for v in rule["verbs"]}
    check(granted == {("jobs", v) for v in ("create", "get", "list", "watch", "delete")}
          | {("pods", v) for v in ("get", "list", "watch")} | {("pods/log", "get")}
          | {("secrets", v) for v in ("create", "patch", "delete")}
          | {("services", "create")}, f"the Role grants: {sorted(granted)}")
    check(not any(a.startswith("--secret-key-file") for a in container["args"]), "no secret key unless one is named")
    check(not by_kind(documents, "ClusterRole") and not by_kind(documents, "ClusterRoleBinding"), "nothing cluster-wide")
    [configmap] = by_kind(documents, "ConfigMap")
    resources = configmap["data"]["resources.yaml"]
    environment = list(yaml.safe_load_all(resources))[0]
    check(environment["spec"]["namespace"] == NAMESPACE, "jobs run in the release namespace by default")
    check(environment["spec"]["serviceAccountName"] == "batchctl-jobs", "jobs run as their own service account")
    with open(os.path.join(output_dir, "resources.yaml"), "w") as f:
        f.write(resources)
    checkov(documents, output_dir)

    documents = render(single)
    [deployment] = by_kind(documents, "Deployment")
    check(deployment["spec"]["replicas"] == 1, "one replica")
    check(not by_kind(documents, "PodDisruptionBudget"), "no PodDisruptionBudget with one replica")
    check(not by_kind(documents, "Secret"), "existing Secrets are used, none made")
    env = {e["name"]: e for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
    check(env["BATCHCTL_DATABASE_URL"]["valueFrom"]["secretKeyRef"]["name"] == "batchctl-database", "the existing database Secret")
    configmap = [c for c in by_kind(documents, "ConfigMap") if "resources.yaml" in c["data"]][0]
    environment = list(yaml.safe_load_all(configmap["data"]["resources.yaml"]))[0]
    check(environment["spec"]["allowedHostPaths"] == ["/mnt/datasets"], f"allowed host paths: {environment['spec']}")
    check(environment["spec"]["podDefaults"]["nodeSelector"] == {"pool": "batch"}, f"pod defaults: {environment['spec']}")
    with open(os.path.join(output_dir, "single-replica-resources.yaml"), "w") as f:
        f.write(configmap["data"]["resources.yaml"])
    pod = deployment["spec"]["template"]["spec"]
    [container] = pod["containers"]
    check("--secret-key-file=/etc/batchctl-secret-key/key" in container["args"]
          and "--previous-secret-key-file=/etc/batchctl-previous-secret-key/key" in container["args"],
          f"the secret keys are passed: {container['args']}")
    volumes = {v["name"]: v for v in pod["volumes"]}
    check(volumes["secret-key"]["secret"]["secretName"] == "batchctl-secret-key"
          and volumes["secret-key"]["secret"]["items"] == [{"key": "secret.key", "path": "key"}],
          f"the key's volume: {volumes.get('secret-key')}")
    check(volumes["previous-secret-key"]["secret"]["secretName"] == "batchctl-old-secret-key", "the previous key's volume")
    [monitor] = by_kind(documents, "ServiceMonitor")
    check(monitor["spec"]["endpoints"][0]["path"] == "/metrics", "the ServiceMonitor scrapes /metrics")
    dashboards = [c for c in by_kind(documents, "ConfigMap") if c["metadata"]["labels"].get("grafana_dashboard") == "1"]
    check(len(dashboards) == 1, "the Grafana dashboard ConfigMap when enabled")
    dashboard = json.loads(dashboards[0]["data"]["batchctl.json"])
    check(dashboard["uid"] == "batchctl" and len(dashboard["panels"]) >= 8, "the dashboard's panels")

    # Without a database or tokens the chart refuses to render, saying what is missing.
    try:
        render({})
        failures.append("rendering without a database must fail")
    except helm_python.HelmError as error:
        check("database.url or database.existingSecret is required" in str(error), f"missing database: {error}")

    for failure in failures:
        print("FAILED:", failure)
    print(f"chart checks: {len(failures)} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
