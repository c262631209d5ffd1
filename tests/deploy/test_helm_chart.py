"""The Helm chart, rendered by Helm's own Go library (helm-python-sdk), read as a
specification of what an SRE gets from ``helm install``.

Every rendered object is validated against the Kubernetes schemas
(kubernetes-validate, strict: unknown fields are errors); the Prometheus Operator
and KEDA objects, which have no schema there, against the fields their operators
document (below), and the alert expressions with a PromQL parser.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import itertools
import json
import operator
import re
import subprocess
import sys
import textwrap
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import helm_python as helm
import helm_python._native as helm_native
import jsonschema
import kubernetes_validate
import promql_parser
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "deploy" / "helm" / "inferwatch"
CI_VALUES = sorted((CHART / "ci").glob("*-values.yaml"))
KUBE_VERSION = "1.30.0"  # the oldest Kubernetes minor still commonly run; the chart needs >= 1.25
RELEASE, NAMESPACE = "iw", "monitoring"

PROD: dict[str, Any] = yaml.safe_load((CHART / "ci" / "postgresql-values.yaml").read_text())
TRIAL: dict[str, Any] = yaml.safe_load((CHART / "ci" / "sqlite-values.yaml").read_text())


@pytest.fixture(scope="module")
def chart() -> Iterator[helm.Chart]:
    with helm.Chart.load(CHART) as c:
        yield c


def merged(base: dict[str, Any], **overrides: Any) -> dict[str, Any]:
    """``base`` with dotted-key overrides, e.g. ``merged(PROD, **{"store.type": "sqlite"})``."""
    out = copy.deepcopy(base)
    for dotted, value in overrides.items():
        node = out
        *parents, last = dotted.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    return out


def render_files(chart: helm.Chart, values: dict[str, Any],
                 kube: str | None = None) -> dict[str, str]:
    """``helm template``; ``kube``: the cluster's version as ``.Capabilities`` sees it
    (by default the Helm library's own, a recent one). ``Chart.render`` has no
    parameter for it, so that case calls the library's render with the option
    helm-c-sdk's render takes (``kube_version``)."""
    if kube is None:
        return chart.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)
    opts = {"name": RELEASE, "namespace": NAMESPACE, "is_install": True,
            "kube_version": f"v{kube}"}
    rendered = helm_native.call_string("helm_render", chart._raw(), json.dumps(values),
                                       json.dumps(opts))
    files: dict[str, str] = json.loads(rendered)
    return files


def render(chart: helm.Chart, values: dict[str, Any],
           kube: str | None = None) -> list[dict[str, Any]]:
    objs = []
    for path, text in render_files(chart, values, kube).items():
        if path.endswith("NOTES.txt"):
            continue
        objs.extend(doc for doc in yaml.safe_load_all(text) if doc)
    return objs


def kinds(objs: list[dict[str, Any]]) -> set[str]:
    return {o["kind"] for o in objs}


def one(objs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = [o for o in objs if o["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, got {len(found)}"
    return found[0]


def container(objs: list[dict[str, Any]]) -> dict[str, Any]:
    (c,) = one(objs, "Deployment")["spec"]["template"]["spec"]["containers"]
    return c


def env_of(objs: list[dict[str, Any]]) -> dict[str, str]:
    return {e["name"]: e.get("value", "") for e in container(objs)["env"]}


def refused(chart: helm.Chart, values: dict[str, Any]) -> str:
    with pytest.raises(helm.HelmError) as info:
        render_files(chart, values)
    return str(info.value)


# -- schemas of the operator objects (the fields their documentation defines) ------

_LABELS = {"type": "object", "additionalProperties": {"type": "string"}}
_META = {"type": "object", "required": ["name", "namespace"],
         "properties": {"name": {"type": "string"}, "namespace": {"type": "string"},
                        "labels": _LABELS}}
_DURATION = {"type": "string", "pattern": r"^([0-9]+(ms|s|m|h|d|w|y))+$"}


def _object(api: str, kind: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "required": ["apiVersion", "kind", "metadata", "spec"],
            "additionalProperties": False,
            "properties": {"apiVersion": {"const": api}, "kind": {"const": kind},
                           "metadata": _META, "spec": spec}}


OPERATOR_SCHEMAS = {
    "ServiceMonitor": _object("monitoring.coreos.com/v1", "ServiceMonitor", {
        "type": "object", "required": ["selector", "endpoints"], "additionalProperties": False,
        "properties": {
            "selector": {"type": "object", "required": ["matchLabels"],
                         "properties": {"matchLabels": _LABELS}},
            "namespaceSelector": {"type": "object", "additionalProperties": False,
                                  "properties": {"matchNames": {"type": "array",
                                                                "items": {"type": "string"}}}},
            "endpoints": {"type": "array", "minItems": 1, "items": {
                "type": "object", "additionalProperties": False, "required": ["port"],
                "properties": {"port": {"type": "string"}, "path": {"type": "string"},
                               "interval": _DURATION, "scrapeTimeout": _DURATION,
                               "relabelings": {"type": "array"},
                               "metricRelabelings": {"type": "array"}}}},
        }}),
    "PrometheusRule": _object("monitoring.coreos.com/v1", "PrometheusRule", {
        "type": "object", "required": ["groups"], "additionalProperties": False,
        "properties": {"groups": {"type": "array", "minItems": 1, "items": {
            "type": "object", "required": ["name", "rules"], "additionalProperties": False,
            "properties": {"name": {"type": "string"}, "rules": {"type": "array", "items": {
                "type": "object", "required": ["alert", "expr"], "additionalProperties": False,
                "properties": {"alert": {"type": "string", "pattern": "^[A-Za-z][A-Za-z0-9]*$"},
                               "expr": {"type": "string"}, "for": _DURATION,
                               "labels": _LABELS, "annotations": _LABELS}}}}}}}}),
    "ScaledObject": _object("keda.sh/v1alpha1", "ScaledObject", {
        "type": "object", "required": ["scaleTargetRef", "triggers"], "additionalProperties": False,
        "properties": {
            "scaleTargetRef": {"type": "object", "required": ["name"],
                               "properties": {"apiVersion": {"type": "string"},
                                              "kind": {"type": "string"},
                                              "name": {"type": "string"}}},
            "minReplicaCount": {"type": "integer", "minimum": 0},
            "maxReplicaCount": {"type": "integer", "minimum": 1},
            "pollingInterval": {"type": "integer"}, "cooldownPeriod": {"type": "integer"},
            "triggers": {"type": "array", "minItems": 1, "items": {
                "type": "object", "required": ["type", "metadata"], "additionalProperties": False,
                "properties": {
                    "type": {"const": "kafka"},
                    # KEDA refuses non-string metadata values.
                    "metadata": {"type": "object", "additionalProperties": {"type": "string"},
                                 "required": ["bootstrapServers", "consumerGroup", "topic"]},
                    "authenticationRef": {"type": "object", "required": ["name"]}}}},
        }}),
}

EVERYTHING_ON = merged(PROD, **{"keda.enabled": True, "keda.authenticationRef": "kafka-sasl",
                                "kafkaTls.existingSecret": "kafka-ca",
                                "secrets.kafkaSaslPassword.enabled": True,
                                "podDisruptionBudget.minAvailable": 1,
                                "networkPolicy.metricsFrom": [
                                    {"namespaceSelector": {"matchLabels": {
                                        "kubernetes.io/metadata.name": "prometheus"}}}],
                                "networkPolicy.kafka.to": [{"ipBlock": {"cidr": "10.20.0.0/16"}}],
                                "resources": {"requests": {"cpu": "1", "memory": "512Mi"},
                                              "limits": {"memory": "1Gi"}}})
RENDER_CASES = {**{p.name: yaml.safe_load(p.read_text()) for p in CI_VALUES},
                "everything-on": EVERYTHING_ON,
                "generated-secret": merged(TRIAL, **{"store.type": "postgresql",
                                                     "secrets.databaseUrl.value": "postgresql://x@db/x",
                                                     "reports.persistence.enabled": False})}


# -- lint and schema validity -------------------------------------------------------

@pytest.mark.parametrize("values_file", CI_VALUES, ids=lambda p: p.name)
def test_chart_lints_clean_in_strict_mode(values_file: Path) -> None:
    report = helm.lint(CHART, yaml.safe_load(values_file.read_text()), strict=True,
                       namespace=NAMESPACE, kube_version=f"v{KUBE_VERSION}")
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert report["errors"] == [] and problems == [], report


@pytest.mark.parametrize("kube", ["1.25.0", kubernetes_validate.latest_version()])
@pytest.mark.parametrize("case", sorted(RENDER_CASES))
def test_every_rendered_object_is_valid_for_kubernetes(chart: helm.Chart, case: str,
                                                       kube: str) -> None:
    """From the oldest Kubernetes the chart supports (Chart.yaml kubeVersion) to the
    newest, each rendered as Helm would for that cluster."""
    objs = render(chart, RENDER_CASES[case], kube)
    assert {"Deployment", "ConfigMap", "Service", "ServiceAccount"} <= kinds(objs)
    for obj in objs:
        where = f"{obj['kind']}/{obj['metadata']['name']}"
        assert obj["metadata"]["namespace"] == NAMESPACE, where
        labels = obj["metadata"]["labels"]
        assert labels["app.kubernetes.io/instance"] == RELEASE, where
        assert labels["app.kubernetes.io/name"] == "inferwatch", where
        assert labels["app.kubernetes.io/managed-by"] == "Helm", where
        if obj["kind"] in OPERATOR_SCHEMAS:
            jsonschema.validate(obj, OPERATOR_SCHEMAS[obj["kind"]])
        else:
            kubernetes_validate.validate(obj, kube, strict=True)


def histogram_of(series: str, exported: set[str]) -> str:
    """The metric a series belongs to: a histogram's ``_count``/``_sum``/``_bucket`` series
    to the histogram."""
    stem = re.sub(r"_(count|sum|bucket)$", "", series)
    return stem if stem in exported else series


def test_alert_rules_are_valid_promql_on_the_daemons_metrics(chart: helm.Chart) -> None:
    rule = one(render(chart, merged(PROD, **{"prometheusRule.enabled": True})), "PrometheusRule")
    rules = rule["spec"]["groups"][0]["rules"]
    names = {r["alert"] for r in rules}
    assert {"InferwatchNoEvents", "InferwatchConsumerLagGrowing", "InferwatchJobOverdue"} <= names
    # Every metric a rule reads is one the daemon exports (a renamed metric would
    # silently turn an alert off).
    exported = set()
    for source in [*(ROOT / "monitor").glob("*.py"), *(ROOT / "alerts").glob("*.py")]:
        exported |= set(re.findall(r'"(inferwatch_[a-z_]+)"', source.read_text()))
    for r in rules:
        promql_parser.parse(r["expr"])  # raises on a syntax error
        assert f'namespace="{NAMESPACE}"' in r["expr"], r["alert"]
        used = {histogram_of(m, exported) for m in re.findall(r"\b(inferwatch_[a-z_]+)\{", r["expr"])}
        assert used <= exported, (r["alert"], used - exported)
    # Without scheduled jobs there is no job to be overdue.
    no_jobs = merged(PROD, **{"prometheusRule.enabled": True, "config.jobs": {"enabled": False}})
    rules = one(render(chart, no_jobs), "PrometheusRule")["spec"]["groups"][0]["rules"]
    assert "InferwatchJobOverdue" not in {r["alert"] for r in rules}


def test_alert_rules_select_the_job_that_scrapes_the_pods(chart: helm.Chart) -> None:
    """The rules select the scrape's ``job`` label. The chart's ServiceMonitor gives
    the full name; without it (an SRE's own PodMonitor) nothing carries that job, and
    InferwatchNoEvents' absent() branch would fire for good while every other rule
    stayed silent: the job is then named, or the chart refuses."""
    def jobs(values: dict[str, Any]) -> set[str]:
        rules = one(render(chart, values), "PrometheusRule")["spec"]["groups"][0]["rules"]
        return {job for r in rules for job in re.findall(r'\bjob="([^"]*)"', r["expr"])}

    assert jobs(PROD) == {"iw-inferwatch"} == {
        one(render(chart, PROD), "Service")["metadata"]["name"]}
    own = merged(PROD, **{"serviceMonitor.enabled": False,
                          "prometheusRule.jobLabel": "monitoring/inferwatch"})
    assert jobs(own) == {"monitoring/inferwatch"}
    assert "ServiceMonitor" not in kinds(render(chart, own))
    message = refused(chart, merged(own, **{"prometheusRule.jobLabel": ""}))
    assert "prometheusRule.jobLabel is required when serviceMonitor.enabled is false" in message


# A pod's counters as Prometheus would hold them: metric -> {pod: [(t, value), ...]}.
Series = dict[str, dict[str, list[tuple[float, float]]]]


def evaluate(node: Any, series: Series, t: float) -> dict[str, float]:
    """The instant vector of a rule expression at ``t``, by pod: the subset of PromQL
    the rules below use (``sum by (pod)``, ``increase``, comparisons with a number,
    ``and`` / ``unless on (pod)``). Matchers are not applied (one pod's series only);
    ``increase`` is last minus first sample of the range, without Prometheus'
    extrapolation, which scales a rise but never turns one into none or back."""
    kind = type(node).__name__
    if kind == "ParenExpr":
        return evaluate(node.expr, series, t)
    if kind == "AggregateExpr":
        assert str(node.op) == "sum" and list(node.modifier.labels) == ["pod"], node
        return evaluate(node.expr, series, t)  # one series per pod already
    if kind == "Call":
        assert node.func.name == "increase", node
        (matrix,) = node.args
        since = t - matrix.range.total_seconds()
        out = {}
        for pod, samples in series.get(matrix.vector_selector.name, {}).items():
            window = [v for at, v in samples if since < at <= t]
            if len(window) >= 2:
                out[pod] = sum(b - a if b >= a else b for a, b in itertools.pairwise(window))
        return out
    assert kind == "BinaryExpr", node
    op = str(node.op)
    if op in ("and", "unless"):
        assert list(node.modifier.matching.labels) == ["pod"], node
        left, right = evaluate(node.lhs, series, t), evaluate(node.rhs, series, t)
        return {pod: v for pod, v in left.items() if (pod in right) == (op == "and")}
    compare = {">": operator.gt, "==": operator.eq, "<": operator.lt}[op]
    bound = node.rhs.val
    return {pod: v for pod, v in evaluate(node.lhs, series, t).items() if compare(v, bound)}


def firing_since(rule: dict[str, Any], series: Series, until: float) -> float | None:
    """When the rule first fires (its expression holds at every 30 s evaluation for its
    ``for``), evaluated from 0 to ``until`` seconds; None if it never does."""
    expr = promql_parser.parse(rule["expr"])
    hold = int(rule["for"].rstrip("m")) * 60
    pending = None
    for t in range(0, int(until) + 1, 30):
        if evaluate(expr, series, t):
            pending = t if pending is None else pending
            if t - pending >= hold:
                return t
        else:
            pending = None
    return None


def checkpoint_counters(attempts: list[tuple[float, bool]], until: float) -> Series:
    """Scrapes every 30 s of the two counters a run of checkpoint attempts (time, ok) moves."""
    failed: list[tuple[float, float]] = []
    done: list[tuple[float, float]] = []
    for scrape in range(0, int(until) + 1, 30):
        failed.append((scrape, sum(1.0 for at, ok in attempts if at <= scrape and not ok)))
        done.append((scrape, sum(1.0 for at, ok in attempts if at <= scrape and ok)))
    return {"inferwatch_checkpoint_failures_total": {"iw-0": failed},
            "inferwatch_checkpoint_seconds_count": {"iw-0": done}}


def test_checkpoint_alert_pages_on_a_lasting_failure_not_on_one(chart: helm.Chart) -> None:
    """InferwatchCheckpointsFailing is critical: it must not page for one failed
    checkpoint (a store blip, dead-letter records Kafka acknowledged after the 2 s
    wait: the next attempt succeeds seconds later), and must page when checkpoints
    keep failing (the daemon retries with backoff up to checkpoint.retry_max_s)."""
    rules = one(render(chart, PROD), "PrometheusRule")["spec"]["groups"][0]["rules"]
    (rule,) = [r for r in rules if r["alert"] == "InferwatchCheckpointsFailing"]
    hour = 3600.0
    healthy = [(float(t), True) for t in range(0, int(hour), 5)]  # checkpoint.interval_s
    # One failure, and one every few minutes: the store answers in between.
    for failures in ([600.0], [float(t) for t in range(300, int(hour), 240)]):
        attempts = sorted([a for a in healthy if a[0] not in failures]
                          + [(t, False) for t in failures])
        assert firing_since(rule, checkpoint_counters(attempts, hour), hour) is None
    # The store goes away at 10 min for 30 min: attempts back off 1, 2, 4 ... 30 s.
    outage, back = 600.0, 2400.0
    attempts, t, delay = [a for a in healthy if a[0] < outage], outage, 1.0
    while t < back:
        attempts.append((t, False))
        t, delay = t + delay, min(delay * 2, 30.0)
    attempts += [a for a in healthy if a[0] >= t]
    fired = firing_since(rule, checkpoint_counters(attempts, hour), hour)
    assert fired is not None and fired - outage <= 16 * 60, fired
    description = rule["annotations"]["description"]
    assert "store" in description and "dead-letter" in description


# -- the workload ---------------------------------------------------------------------

def test_pods_run_hardened_by_default(chart: helm.Chart) -> None:
    objs = render(chart, PROD)
    pod = one(objs, "Deployment")["spec"]["template"]["spec"]
    c = container(objs)
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    sc = c["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["privileged"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False
    assert one(objs, "ServiceAccount")["automountServiceAccountToken"] is False
    # The only writable places are volumes: /tmp scratch and the reports directory.
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
    assert "emptyDir" in volumes[mounts["/tmp"]]
    assert env_of(objs)["HOME"] == "/tmp"
    assert all(m.get("readOnly") for m in c["volumeMounts"]
               if m["name"] in ("config", "secrets"))


@pytest.mark.parametrize("case", sorted(RENDER_CASES))
def test_pods_meet_the_restricted_pod_security_standard(chart: helm.Chart, case: str) -> None:
    """What Kubernetes' "restricted" Pod Security admission checks, so the chart
    installs into a namespace labelled pod-security.kubernetes.io/enforce=restricted."""
    pod = one(render(chart, RENDER_CASES[case]), "Deployment")["spec"]["template"]["spec"]
    allowed = {"configMap", "secret", "emptyDir", "persistentVolumeClaim", "projected",
               "downwardAPI", "csi", "ephemeral"}
    for vol in pod["volumes"]:
        assert set(vol) - {"name"} <= allowed, vol
    for key in ("hostNetwork", "hostPID", "hostIPC"):
        assert not pod.get(key)
    for c in pod["containers"] + pod.get("initContainers", []):
        sc = c["securityContext"]
        assert sc["allowPrivilegeEscalation"] is False
        assert sc["capabilities"]["drop"] == ["ALL"] and not sc["capabilities"].get("add")
        assert sc.get("runAsNonRoot", pod["securityContext"].get("runAsNonRoot")) is True
        assert sc.get("runAsUser", pod["securityContext"].get("runAsUser")) != 0
        profile = sc.get("seccompProfile", pod["securityContext"].get("seccompProfile"))
        assert profile["type"] in ("RuntimeDefault", "Localhost")
        assert not any("hostPort" in p for p in c.get("ports", []))


def test_probes_watch_the_daemons_health_and_readiness(chart: helm.Chart) -> None:
    objs = render(chart, merged(PROD, **{"config.http": {"port": 9200}}))
    c = container(objs)
    assert c["ports"] == [{"name": "http", "containerPort": 9200, "protocol": "TCP"}]
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert c["command"] == ["inferwatch"]
    assert c["args"] == ["run", "--config", "/etc/inferwatch/config.yaml"]
    svc = one(objs, "Service")
    assert svc["spec"]["ports"][0]["targetPort"] == "http"
    # Scrape pods that are not ready too: they are the ones whose metrics matter.
    assert svc["spec"]["publishNotReadyAddresses"] is True


@pytest.mark.parametrize("http", [{"enabled": False}, {"host": "127.0.0.1"}])
def test_schema_keeps_the_probes_port_reachable(chart: helm.Chart, http: dict[str, Any]) -> None:
    assert "/config/http/" in refused(chart, merged(PROD, **{"config.http": http}))


def test_grace_period_outlasts_the_daemons_longest_stop(chart: helm.Chart) -> None:
    """After SIGTERM the daemon (monitor/daemon.py ``_shutdown``) makes one checkpoint
    attempt: 2 s of dead-letter wait, the store write (30 s at worst), the offset
    commit (a session timeout, kafka-python); then the alert sends
    (``send_budget_s``) and those in flight (Slack's timeout), leaving the group
    (a session timeout) and the jobs thread (10 s). Kubernetes kills the pod after
    terminationGracePeriodSeconds: it must outlast all of that."""
    def grace(values: dict[str, Any]) -> int:
        pod = one(render(chart, values), "Deployment")["spec"]["template"]["spec"]
        return int(pod["terminationGracePeriodSeconds"])

    assert grace(PROD) > 2 + 30 + 10 + 2 + 10 + 10 + 10  # the defaults' 74 s
    message = refused(chart, merged(PROD, terminationGracePeriodSeconds=74))
    assert "terminationGracePeriodSeconds (74) must exceed the daemon's longest stop, 74 s" in message
    assert "kafka.session_timeout_ms" in message and "alerts.slack.timeout_s" in message
    # A longer session timeout counts twice (commit and leave), Slack's timeout once.
    slow = {"config.kafka.session_timeout_ms": 45_000, "config.alerts.slack": {"timeout_s": 30}}
    assert "longest stop, 164 s" in refused(chart, merged(PROD, **slow))
    assert grace(merged(PROD, terminationGracePeriodSeconds=165, **slow)) == 165
    # confluent-kafka's commit is part of leaving; without jobs there is no thread to join.
    lean = merged(PROD, **{"config.kafka.client": "confluent-kafka", "config.jobs": {"enabled": False}})
    assert "longest stop, 54 s" in refused(chart, merged(lean, terminationGracePeriodSeconds=54))
    assert grace(merged(lean, terminationGracePeriodSeconds=55)) == 55
    # The store's retry backoff is not part of a stop: a stop ends it at once.
    assert grace(merged(PROD, **{"config.checkpoint": {"retry_max_s": 300}})) == grace(PROD)


def test_config_change_rolls_the_pods_and_nothing_else_does(chart: helm.Chart) -> None:
    def checksum(values: dict[str, Any]) -> str:
        dep = one(render(chart, values), "Deployment")
        return dep["spec"]["template"]["metadata"]["annotations"]["checksum/config"]

    base = checksum(PROD)
    cm_text = render_files(chart, PROD)["inferwatch/templates/configmap.yaml"]
    assert base == hashlib.sha256(cm_text.encode()).hexdigest()
    assert checksum(merged(PROD, **{"config.kafka.topics": ["other-topic"]})) != base
    assert checksum(merged(PROD, **{"config.logging.level": "DEBUG"})) != base
    assert checksum(merged(PROD, **{"replicaCount": 2})) == base
    assert checksum(merged(PROD, **{"resources": {"limits": {"memory": "1Gi"}}})) == base


def test_replicas_share_one_consumer_group(chart: helm.Chart) -> None:
    objs = render(chart, PROD)
    assert one(objs, "Deployment")["spec"]["replicas"] == 3
    config = yaml.safe_load(one(objs, "ConfigMap")["data"]["config.yaml"])
    assert config["kafka"]["group_id"] == "inferwatch"
    # instance_id stays unset so each pod is itself (HOSTNAME = the pod name).
    assert "instance_id" not in config
    # A rollout replaces one member at a time without a surge pod: with as many
    # replicas as partitions a surge pod would own none, never be ready, and stall it.
    assert one(objs, "Deployment")["spec"]["strategy"] == {
        "type": "RollingUpdate", "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1}}


# -- secrets ---------------------------------------------------------------------------

def test_existing_secret_is_mounted_as_files_and_none_is_generated(chart: helm.Chart) -> None:
    objs = render(chart, merged(PROD, **{"secrets.kafkaSaslPassword.enabled": True}))
    assert "Secret" not in kinds(objs)
    pod = one(objs, "Deployment")["spec"]["template"]["spec"]
    (vol,) = [v for v in pod["volumes"] if v["name"] == "secrets"]
    assert vol["secret"]["secretName"] == "inferwatch-secrets"
    assert [i["key"] for i in vol["secret"]["items"]] == [
        "database-url", "kafka-sasl-password", "slack-token"]
    env = env_of(objs)
    assert env["INFERWATCH_STORE__URL_FILE"] == "/var/run/secrets/inferwatch/database-url"
    assert env["INFERWATCH_KAFKA__SASL_PASSWORD_FILE"] == (
        "/var/run/secrets/inferwatch/kafka-sasl-password")
    assert env["INFERWATCH_ALERTS__SLACK__TOKEN_FILE"] == "/var/run/secrets/inferwatch/slack-token"
    # An operator-managed Secret is not hashed into the pod template.
    assert "checksum/secret" not in pod.get("metadata", {}).get("annotations", {})


def test_generated_secret_for_trials_never_leaks_into_config_or_env(chart: helm.Chart) -> None:
    url = "postgresql://inferwatch:s3cr3t-pw@db:5432/inferwatch"
    token = "xoxb-not-a-real-token-123"
    values = merged(PROD, **{"secrets.existingSecret": "", "secrets.databaseUrl.value": url,
                             "secrets.slackToken.value": token})
    files = render_files(chart, values)
    objs = render(chart, values)
    secret = one(objs, "Secret")
    assert secret["metadata"]["name"] == "iw-inferwatch-secrets"
    assert yaml.safe_load(files["inferwatch/templates/secret.yaml"])["data"]["database-url"]
    assert base64.b64decode(secret["data"]["database-url"]).decode() == url
    assert base64.b64decode(secret["data"]["slack-token"]).decode() == token
    for path, text in files.items():
        if not path.endswith("secret.yaml"):
            assert "s3cr3t-pw" not in text and token not in text, path
    pod = one(objs, "Deployment")["spec"]["template"]
    (vol,) = [v for v in pod["spec"]["volumes"] if v["name"] == "secrets"]
    assert vol["secret"]["secretName"] == "iw-inferwatch-secrets"
    # A changed token rolls the pods (the daemon reads it once).
    before = pod["metadata"]["annotations"]["checksum/secret"]
    again = render(chart, merged(values, **{"secrets.slackToken.value": "xoxb-rotated"}))
    assert one(again, "Deployment")["spec"]["template"]["metadata"]["annotations"][
        "checksum/secret"] != before


def test_extra_secret_keys_are_mounted_for_webhook_receivers(chart: helm.Chart) -> None:
    values = merged(PROD, **{"secrets.extraKeys": ["slack-webhook-ml"]})
    objs = render(chart, values)
    (vol,) = [v for v in one(objs, "Deployment")["spec"]["template"]["spec"]["volumes"]
              if v["name"] == "secrets"]
    assert "slack-webhook-ml" in [i["key"] for i in vol["secret"]["items"]]
    generated = merged(values, **{"secrets.existingSecret": "",
                                  "secrets.databaseUrl.value": "postgresql://x@db/x",
                                  "secrets.slackToken.value": "xoxb-1"})
    assert "secrets.extraValues.slack-webhook-ml is required" in refused(chart, generated)
    generated["secrets"]["extraValues"] = {"slack-webhook-ml": "https://hooks.example/T/B/x"}
    secret = one(render(chart, generated), "Secret")
    assert base64.b64decode(secret["data"]["slack-webhook-ml"]).decode().startswith("https://")


def test_kafka_tls_files_are_mounted_read_only(chart: helm.Chart) -> None:
    values = merged(PROD, **{"kafkaTls.existingSecret": "kafka-ca",
                             "config.kafka.security_protocol": "SSL",
                             "config.kafka.ssl_cafile":
                                 "/var/run/secrets/inferwatch-kafka-tls/ca.crt"})
    objs = render(chart, values)
    pod = one(objs, "Deployment")["spec"]["template"]["spec"]
    (vol,) = [v for v in pod["volumes"] if v["name"] == "kafka-tls"]
    assert vol["secret"]["secretName"] == "kafka-ca"
    (mount,) = [m for m in container(objs)["volumeMounts"] if m["name"] == "kafka-tls"]
    assert mount == {"name": "kafka-tls", "mountPath": "/var/run/secrets/inferwatch-kafka-tls",
                     "readOnly": True}
    assert "kafka-tls" not in {v["name"] for v in
                               one(render(chart, PROD), "Deployment")["spec"]["template"]["spec"][
                                   "volumes"]}


def test_generated_secret_needs_its_values(chart: helm.Chart) -> None:
    no_url = merged(PROD, **{"secrets.existingSecret": ""})
    assert "secrets/databaseUrl/value" in refused(chart, no_url)
    no_token = merged(no_url, **{"secrets.databaseUrl.value": "postgresql://x@db/x"})
    assert "secrets.slackToken.value is required" in refused(chart, no_token)


@pytest.mark.parametrize("key", ["store.url", "kafka.sasl_password", "kafka.ssl_password",
                                 "alerts.slack.token", "alerts.receivers.ml.webhook_url",
                                 "alerts.receivers.hook.url"])
def test_schema_refuses_secrets_written_into_the_config(chart: helm.Chart, key: str) -> None:
    message = refused(chart, merged(PROD, **{f"config.{key}": "hunter2"}))
    assert "/config/" + key.rsplit(".", 1)[0].replace(".", "/") in message


# -- state -------------------------------------------------------------------------------

def test_schema_refuses_sqlite_with_two_replicas(chart: helm.Chart) -> None:
    message = refused(chart, merged(TRIAL, replicaCount=2))
    assert "/replicaCount" in message and "maximum" in message
    assert "keda/enabled" in refused(chart, merged(TRIAL, **{"keda.enabled": True}))


@pytest.mark.parametrize("scaling", [{"replicaCount": 2},
                                     {"keda.enabled": True, "keda.maxReplicaCount": 12}],
                         ids=["replicas", "keda"])
def test_replicas_never_share_a_read_write_once_reports_volume(chart: helm.Chart,
                                                              scaling: dict[str, Any]) -> None:
    """Every replica mounts the reports volume: a ReadWriteOnce claim attaches to one
    node, and a pod scheduled on another hangs in ContainerCreating (Multi-Attach)."""
    rwo = merged(PROD, **{"reports.persistence.accessModes": ["ReadWriteOnce"], **scaling})
    message = refused(chart, rwo)
    assert "reports.persistence" in message and "ReadWriteMany" in message
    assert "Multi-Attach" in message
    # ReadWriteMany, an operator's own claim, or no claim at all: installed.
    for fixed in ({"reports.persistence.accessModes": ["ReadWriteMany"]},
                  {"reports.persistence.existingClaim": "reports-nfs"},
                  {"reports.persistence.enabled": False}):
        pod = one(render(chart, merged(rwo, **fixed)), "Deployment")["spec"]["template"]["spec"]
        assert "reports" in {v["name"] for v in pod["volumes"]}
    notes = render_files(chart, merged(rwo, **{"reports.persistence.existingClaim": "reports-nfs"}))
    assert "reports-nfs: it must be\n      ReadWriteMany" in notes["inferwatch/templates/NOTES.txt"]
    # One replica (and KEDA capped at one) may keep a ReadWriteOnce claim.
    one_pod = merged(rwo, replicaCount=1, **{"keda.maxReplicaCount": 1})
    claims = [o for o in render(chart, one_pod) if o["kind"] == "PersistentVolumeClaim"]
    assert [c["spec"]["accessModes"] for c in claims] == [["ReadWriteOnce"]]


def test_sqlite_trial_gets_one_replica_a_volume_and_no_secret(chart: helm.Chart) -> None:
    objs = render(chart, TRIAL)
    dep = one(objs, "Deployment")
    assert dep["spec"]["replicas"] == 1
    assert dep["spec"]["strategy"] == {"type": "Recreate"}  # one SQLite writer at a time
    assert "Secret" not in kinds(objs)
    assert env_of(objs)["INFERWATCH_STORE__URL"] == "sqlite:////var/lib/inferwatch/data/inferwatch.db"
    claims = {o["metadata"]["name"]: o for o in objs if o["kind"] == "PersistentVolumeClaim"}
    assert set(claims) == {"iw-inferwatch-data", "iw-inferwatch-reports"}
    mounts = {m["name"]: m["mountPath"] for m in container(objs)["volumeMounts"]}
    assert mounts["data"] == "/var/lib/inferwatch/data"
    assert mounts["reports"] == "/var/lib/inferwatch/reports"
    assert env_of(objs)["INFERWATCH_JOBS__REPORTS_DIR"] == "/var/lib/inferwatch/reports"


@pytest.mark.parametrize("bootstrap", [[], "", "kafka", ["kafka"], None])
def test_schema_refuses_an_empty_or_portless_kafka_bootstrap(chart: helm.Chart,
                                                             bootstrap: Any) -> None:
    values = merged(PROD, **{"config.kafka.bootstrap_servers": bootstrap})
    if bootstrap is None:
        del values["config"]["kafka"]["bootstrap_servers"]
    assert "bootstrap_servers" in refused(chart, values)


def test_schema_accepts_a_comma_separated_bootstrap_string(chart: helm.Chart) -> None:
    values = merged(PROD, **{"config.kafka.bootstrap_servers": "k0:9092, k1:9092",
                             "keda.enabled": True})
    scaled = one(render(chart, values), "ScaledObject")
    assert scaled["spec"]["triggers"][0]["metadata"]["bootstrapServers"] == "k0:9092, k1:9092"


@pytest.mark.parametrize("typo", [{"replicas": 3}, {"serviceMonitor": {"enable": True}},
                                  {"secrets": {"existingSecrets": "x"}}])
def test_schema_refuses_misspelt_settings(chart: helm.Chart, typo: dict[str, Any]) -> None:
    values = copy.deepcopy(PROD)
    for key, value in typo.items():
        values[key] = {**values.get(key, {}), **value} if isinstance(value, dict) else value
    assert "additional properties" in refused(chart, values).lower()


def test_default_values_demand_a_kafka_bootstrap_and_a_database(chart: helm.Chart) -> None:
    message = refused(chart, {})
    assert "bootstrap_servers" in message and "databaseUrl" in message


# -- the objects around it -------------------------------------------------------------------

@pytest.mark.parametrize(("flag", "kind"), [
    ("serviceMonitor.enabled", "ServiceMonitor"),
    ("podDisruptionBudget.enabled", "PodDisruptionBudget"),
    ("networkPolicy.enabled", "NetworkPolicy"),
    ("prometheusRule.enabled", "PrometheusRule"),
    ("keda.enabled", "ScaledObject"),
])
def test_flags_turn_optional_objects_on_and_off(chart: helm.Chart, flag: str, kind: str) -> None:
    off = merged(PROD, **{"serviceMonitor.enabled": False, "podDisruptionBudget.enabled": False,
                          "networkPolicy.enabled": False, "prometheusRule.enabled": False,
                          "prometheusRule.jobLabel": "monitoring/inferwatch"})
    assert kind not in kinds(render(chart, off))
    assert kind in kinds(render(chart, merged(off, **{flag: True})))


def test_service_monitor_scrapes_the_metrics_port(chart: helm.Chart) -> None:
    values = merged(PROD, **{"serviceMonitor.labels": {"release": "kube-prometheus-stack"}})
    objs = render(chart, values)
    sm = one(objs, "ServiceMonitor")
    assert sm["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert sm["spec"]["endpoints"][0]["port"] == "http"
    assert sm["spec"]["endpoints"][0]["path"] == "/metrics"
    assert sm["spec"]["selector"]["matchLabels"] == one(objs, "Service")["spec"]["selector"]


def test_network_policy_lets_out_only_dns_kafka_database_and_slack(chart: helm.Chart) -> None:
    objs = render(chart, EVERYTHING_ON)
    spec = one(objs, "NetworkPolicy")["spec"]
    assert spec["policyTypes"] == ["Ingress", "Egress"]
    assert spec["podSelector"]["matchLabels"] == one(objs, "Service")["spec"]["selector"]
    ports = [sorted((p["port"], p["protocol"]) for p in rule["ports"]) for rule in spec["egress"]]
    assert ports == [[(53, "TCP"), (53, "UDP")], [(9092, "TCP")], [(5432, "TCP")],
                     [(443, "TCP")]]
    kafka = spec["egress"][1]
    assert kafka["to"] == [{"ipBlock": {"cidr": "10.20.0.0/16"}}]
    slack = spec["egress"][3]["to"][0]["ipBlock"]
    assert "10.0.0.0/8" in slack["except"]  # not a way into the cluster's own network
    assert all(rule.get("ports") for rule in spec["egress"])  # no rule opens every port
    (ingress,) = spec["ingress"]
    assert ingress["ports"] == [{"port": "http", "protocol": "TCP"}]
    assert ingress["from"][0]["namespaceSelector"]
    # With SQLite there is no database to reach.
    sqlite = one(render(chart, merged(TRIAL, **{"networkPolicy.enabled": True})), "NetworkPolicy")
    assert [r["ports"][0]["port"] for r in sqlite["spec"]["egress"]] == [53, 9092, 443]


def test_pdb_keeps_all_but_one_pod_by_default(chart: helm.Chart) -> None:
    pdb = one(render(chart, PROD), "PodDisruptionBudget")
    assert pdb["spec"] == {"maxUnavailable": 1, "unhealthyPodEvictionPolicy": "AlwaysAllow",
                           "selector": {"matchLabels": {"app.kubernetes.io/name": "inferwatch",
                                                        "app.kubernetes.io/instance": RELEASE}}}
    pdb = one(render(chart, merged(PROD, **{"podDisruptionBudget.minAvailable": 2})),
              "PodDisruptionBudget")
    assert pdb["spec"]["minAvailable"] == 2 and "maxUnavailable" not in pdb["spec"]


@pytest.mark.parametrize("kube", ["1.27.0", KUBE_VERSION, kubernetes_validate.latest_version()])
def test_pdb_never_blocks_a_drain_on_pods_that_are_not_ready(chart: helm.Chart,
                                                             kube: str) -> None:
    """Every pod is not ready while the store is away (/readyz), and so is a replica
    without a partition: with the default policy (IfHealthyBudget) the API refuses to
    evict them and a node drain hangs. AlwaysAllow lets them go."""
    pdb = one(render(chart, PROD, kube), "PodDisruptionBudget")
    assert pdb["spec"]["unhealthyPodEvictionPolicy"] == "AlwaysAllow"
    kubernetes_validate.validate(pdb, kube, strict=True)
    # Before 1.27 the field is off by default (alpha in 1.26, unknown in 1.25): not rendered.
    for older in ("1.25.0", "1.26.5"):
        pdb = one(render(chart, PROD, older), "PodDisruptionBudget")
        assert "unhealthyPodEvictionPolicy" not in pdb["spec"]
        kubernetes_validate.validate(pdb, older, strict=True)


def test_keda_scales_the_deployment_on_the_groups_lag(chart: helm.Chart) -> None:
    values = merged(PROD, **{"keda.enabled": True,
                             "config.kafka.topics": ["logs-a", "logs-b"]})
    objs = render(chart, values)
    assert "replicas" not in one(objs, "Deployment")["spec"]  # KEDA owns the count
    scaled = one(objs, "ScaledObject")
    assert scaled["spec"]["scaleTargetRef"]["name"] == one(objs, "Deployment")["metadata"]["name"]
    triggers = scaled["spec"]["triggers"]
    assert [t["metadata"]["topic"] for t in triggers] == ["logs-a", "logs-b"]
    assert {t["metadata"]["consumerGroup"] for t in triggers} == {"inferwatch"}
    assert triggers[0]["metadata"]["bootstrapServers"] == "kafka-0.kafka:9092,kafka-1.kafka:9092"
    assert triggers[0]["metadata"]["allowIdleConsumers"] == "false"


def test_large_thresholds_render_as_whole_numbers(chart: helm.Chart) -> None:
    """Helm reads values as float64: a million would print as 1e+06, which KEDA
    refuses as a lagThreshold and which reads badly in an alert's text."""
    values = merged(PROD, **{"keda.enabled": True, "keda.lagThreshold": 1_000_000,
                             "keda.cooldownPeriod": 1_000_000,
                             "prometheusRule.lagThreshold": 1_000_000,
                             "prometheusRule.noEventsMinutes": 1_000_000,
                             "prometheusRule.jobOverdueHours": 1_000_000})
    objs = render(chart, values)
    scaled = one(objs, "ScaledObject")["spec"]
    assert {t["metadata"]["lagThreshold"] for t in scaled["triggers"]} == {"1000000"}
    assert scaled["cooldownPeriod"] == 1_000_000
    rules = {r["alert"]: r for r in one(objs, "PrometheusRule")["spec"]["groups"][0]["rules"]}
    lag = rules["InferwatchConsumerLagGrowing"]
    assert "> 1000000)" in lag["expr"] and "above 1000000 records" in lag["annotations"]["description"]
    assert "[1000000m]" in rules["InferwatchNoEvents"]["expr"]
    assert "> 3600000000" in rules["InferwatchJobOverdue"]["expr"]
    assert all("e+" not in r["expr"] for r in rules.values())
    # A string, as KEDA's own examples write it, is still taken; a non-number is not.
    scaled = one(render(chart, merged(values, **{"keda.lagThreshold": "20000"})), "ScaledObject")
    assert scaled["spec"]["triggers"][0]["metadata"]["lagThreshold"] == "20000"
    assert "/keda/lagThreshold" in refused(chart, merged(values, **{"keda.lagThreshold": "20k"}))


def test_notes_tell_the_operator_what_to_check(chart: helm.Chart) -> None:
    notes = render_files(chart, PROD)["inferwatch/templates/NOTES.txt"]
    assert "port-forward deployment/iw-inferwatch 9108:9108" in notes
    assert "/metrics" in notes and "/readyz" in notes
    assert "/var/lib/inferwatch/reports" in notes
    trial = render_files(chart, merged(TRIAL, **{"store.type": "postgresql",
                                                 "secrets.databaseUrl.value": "postgresql://x@d/x"}))
    assert "generated Secret" in trial["inferwatch/templates/NOTES.txt"]


# -- the chart against the daemon ----------------------------------------------------------------

def _inferwatch() -> list[str]:
    script = Path(sys.executable).with_name("inferwatch")
    return [str(script)] if script.exists() else [sys.executable, "-m", "monitor.cli"]


CHECK_CONFIG_CASES = {
    "postgresql": merged(PROD, **{"secrets.slackToken.enabled": False,
                                  "secrets.kafkaSaslPassword.enabled": True,
                                  "config.kafka.security_protocol": "SASL_SSL",
                                  "config.kafka.sasl_mechanism": "SCRAM-SHA-512",
                                  "config.kafka.sasl_username": "inferwatch"}),
    "sqlite": TRIAL,
    "keda-sasl-tls": yaml.safe_load((CHART / "ci" / "keda-values.yaml").read_text()),
    "slack": merged(PROD, **{
        "secrets.extraKeys": ["slack-webhook-ml"],
        "config.alerts.receivers": {"ml": {
            "webhook_url_file": "/var/run/secrets/inferwatch/slack-webhook-ml"}}}),
}


def check_config(objs: list[dict[str, Any]], tmp_path: Path) -> dict[str, Any]:
    """Run the real ``inferwatch check-config --show`` the way the pod would: the
    ConfigMap's file, the Deployment's environment, the Secrets' files (each mount
    path moved into tmp_path: a Secret's listed items, and for a whole Secret mounted,
    the files the config names there). Returns the effective (redacted) config."""
    volumes = {v["name"]: v["secret"] for v in
               one(objs, "Deployment")["spec"]["template"]["spec"]["volumes"] if "secret" in v}
    text = one(objs, "ConfigMap")["data"]["config.yaml"]
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    env |= {k: v for k, v in env_of(objs).items() if k.startswith("INFERWATCH_")}
    for m in container(objs)["volumeMounts"]:
        secret = volumes.get(m["name"])
        if secret is None:
            continue
        mount, here = m["mountPath"].rstrip("/") + "/", tmp_path / m["name"]
        here.mkdir()
        files = {i["path"]: i["key"] for i in secret.get("items", [])}
        for named in re.findall(re.escape(mount) + r"([\w.-]+)", text + " ".join(env.values())):
            files.setdefault(named, named)
        for path, key in files.items():
            fake = ("postgresql://u:p@db:5432/x" if key == "database-url"
                    else "https://hooks.example/s3cr3t" if "webhook" in key else "s3cr3t")
            (here / path).write_text(fake + "\n")
        text = text.replace(mount, f"{here}/")
        env = {k: v.replace(mount, f"{here}/") for k, v in env.items()}
    config_file = tmp_path / "config.yaml"
    config_file.write_text(text)
    result = subprocess.run([*_inferwatch(), "check-config", "--config", str(config_file),
                             "--show"], env=env, capture_output=True, text=True, timeout=60,
                            check=False)
    assert result.returncode == 0, result.stderr
    assert "s3cr3t" not in result.stdout and "u:p@" not in result.stdout
    return yaml.safe_load(result.stdout.splitlines()[-1])


@pytest.mark.parametrize("case", sorted(CHECK_CONFIG_CASES))
def test_rendered_configmap_and_env_pass_inferwatch_check_config(
        chart: helm.Chart, case: str, tmp_path: Path) -> None:
    effective = check_config(render(chart, CHECK_CONFIG_CASES[case]), tmp_path)
    bootstrap = CHECK_CONFIG_CASES[case]["config"]["kafka"]["bootstrap_servers"]
    if isinstance(bootstrap, str):
        bootstrap = [b.strip() for b in bootstrap.split(",")]
    assert effective["kafka"]["bootstrap_servers"] == bootstrap
    # The secret files were found and read (shown redacted; unset would be null).
    if case in ("postgresql", "keda-sasl-tls"):
        assert effective["kafka"]["sasl_password"] == "**********"
    if case == "slack":
        assert effective["alerts"]["slack"]["token"] == "**********"
        assert effective["alerts"]["receivers"]["ml"]["webhook_url"] == "**********"


def test_the_readmes_example_values_install_as_described(chart: helm.Chart,
                                                         tmp_path: Path) -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Deploying with Helm", 1)[1].split("\n## ", 1)[0]
    (example,) = re.findall(r"```yaml\n(.*?)```", section, flags=re.S)
    values = yaml.safe_load(textwrap.dedent(example))
    objs = render(chart, values)
    for obj in objs:
        if obj["kind"] in OPERATOR_SCHEMAS:
            jsonschema.validate(obj, OPERATOR_SCHEMAS[obj["kind"]])
        else:
            kubernetes_validate.validate(obj, KUBE_VERSION, strict=True)
    assert {"ServiceMonitor", "PrometheusRule", "PodDisruptionBudget",
            "NetworkPolicy"} <= kinds(objs)
    assert "Secret" not in kinds(objs)
    effective = check_config(objs, tmp_path)
    assert effective["alerts"]["slack"]["token"] == "**********"


def test_chart_app_version_follows_the_package_version() -> None:
    meta = yaml.safe_load((CHART / "Chart.yaml").read_text())
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert meta["appVersion"] == project["version"]


def test_every_values_key_is_commented() -> None:
    """prometheus-community style: every setting in values.yaml has a ``# --`` comment
    above it (a mapping like ``podSecurityContext`` may be documented as a whole)."""
    lines = (CHART / "values.yaml").read_text().splitlines()
    undocumented = []
    stack: list[tuple[int, bool]] = []  # (indent, documented) of the enclosing keys
    for n, line in enumerate(lines):
        stripped = line.strip()
        if not stripped or stripped.startswith(("#", "-")):
            continue
        indent = len(line) - len(line.lstrip())
        while stack and stack[-1][0] >= indent:
            stack.pop()
        block = []
        k = n - 1
        while k >= 0 and lines[k].strip().startswith("#"):
            block.append(lines[k].strip())
            k -= 1
        documented = any(c.startswith("# --") for c in block)
        following = next((x.strip() for x in lines[n + 1:] if x.strip()
                          and not x.strip().startswith("#")), "")
        leaf = bool(stripped.partition(":")[2].strip()) or following.startswith("-")
        if leaf and not documented and not any(d for _, d in stack):
            undocumented.append(f"values.yaml:{n + 1}: {stripped}")
        stack.append((indent, documented))
    assert undocumented == []
