"""The Helm chart (deploy/helm/minnow): `helm lint`, `helm template`, every rendered manifest validated against the
Kubernetes schemas (kubernetes-validate) and KEDA's / the Prometheus Operator's CRD schemas (deploy/helm/schemas),
and the chart's own rules: replicas never beyond partitions, secrets never in ConfigMaps, grace beyond the drain.

No cluster is needed; `helm` is (deploy/helm/install-helm.sh installs it): without it these tests fail, they do
not skip.
"""

from __future__ import annotations

import base64
import copy
import importlib
import os
import shutil
import subprocess
import typing
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import jsonschema
import pytest
import yaml

from pipeline.settings import InputFamily, environment_variables
from pipeline.stream import names

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
HELM = ROOT / "deploy" / "helm"
CHART = HELM / "minnow"
SECURE = HELM / "examples" / "values-secure.yaml"
# The Kubernetes release the manifests are checked against (kubernetes-validate bundles its schemas).
KUBERNETES_VERSION = "1.33.0"
FAMILIES = ("feed", "transcript", "iot", "ticket")
# What the chart's comments and docs/deploy.md (Helm) cite from docs/benchmarks.md (engine peak RSS, minnow-graph-4).
MEASURED_ENGINE_RSS_MB = 408.3

Manifest = dict[str, Any]


def _helm() -> str:
    path = shutil.which("helm")
    if path is None:
        pytest.fail("helm is not installed: run deploy/helm/install-helm.sh (needs Go)", pytrace=False)
    return path


def _kubernetes_validate() -> ModuleType:
    try:
        return importlib.import_module("kubernetes_validate")
    except ImportError:
        pytest.fail("kubernetes-validate is not installed: pip install -e '.[dev]'", pytrace=False)


def _values_file(tmp_path: Path, values: dict[str, Any]) -> Path:
    path = tmp_path / f"values-{len(list(tmp_path.iterdir()))}.yaml"
    path.write_text(yaml.safe_dump(values))
    return path


def _run_template(*files: Path) -> subprocess.CompletedProcess[str]:
    command = [_helm(), "template", "minnow", str(CHART), "--namespace", "minnow"]
    for file in files:
        command += ["-f", str(file)]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)


def render(*files: Path) -> list[Manifest]:
    """The manifests `helm template` renders with these values files (hooks included)."""
    done = _run_template(*files)
    assert done.returncode == 0, done.stderr
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


def render_error(*files: Path) -> str:
    """What a render that must fail prints (helm's error line, then its hint about --debug)."""
    done = _run_template(*files)
    assert done.returncode != 0, "the render should have failed"
    return done.stderr.strip()


def of_kind(docs: list[Manifest], kind: str) -> dict[str, Manifest]:
    return {doc["metadata"]["name"]: doc for doc in docs if doc["kind"] == kind}


def container_env(deployment: Manifest) -> dict[str, Any]:
    """Name -> value (or valueFrom) of the one container's env."""
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return {item["name"]: item.get("value", item.get("valueFrom")) for item in container.get("env", [])}


def spec_partitions() -> dict[str, int]:
    """Partitions of each family's input topic, from the topic specs in topics/."""
    counts = {}
    for family, logical in names.INPUT_TOPICS.items():
        spec = yaml.safe_load((ROOT / "topics" / f"{logical}.yaml").read_text())
        counts[family] = int(spec["partitions"])
    return counts


# Values that switch on every optional part with credentials held by the chart: mTLS with an encrypted key,
# SCRAM, config files, KEDA, the ServiceMonitor. Secret values are distinctive so a leak can be searched for.
SECRET_VALUES = {"sasl": "sasl-Pa55-9f1c", "key": "key-Pa55-77ab", "api": "sk-api-Pa55-3e0d"}
EVERYTHING: dict[str, Any] = {
    "kafka": {
        "bootstrapServers": "kafka-1:9093,kafka-2:9093",
        "securityProtocol": "SASL_SSL",
        "sasl": {"mechanism": "SCRAM-SHA-256", "username": "minnow", "password": SECRET_VALUES["sasl"]},
        "tls": {"caSecret": "kafka-ca", "clientSecret": "kafka-client", "keyPassword": SECRET_VALUES["key"]},
    },
    "topics": {"replicationFactor": "3", "names": {"feeds_enriched": "posts.scored"}},
    "config": {
        "labels": "feed:\n  labels: [a, b]\n",
        "inputs": "inputs:\n  - topic: social.posts.v2\n    map: social-posts.map.yaml\n",
        "files": {"social-posts.map.yaml": "kind: feed\nfields:\n  id: post_id\n"},
        "fileSettings": {"MINNOW_ROUTING__THRESHOLDS_FILE": "/etc/minnow/config/thresholds.yaml"},
    },
    "env": {
        "MINNOW_LANGUAGE__ENABLED": "false",
        "MINNOW_REGISTRY__URL": "https://registry.example:8081",
        "MINNOW_REGISTRY__USERNAME": "minnow",
    },
    "secretEnv": [{"name": "MINNOW_REGISTRY__PASSWORD", "secret": "registry-auth", "key": "password"}],
    "workerDefaults": {"autoscaling": {"enabled": True}},
    "workers": {"feed": {"inputTopics": ["social.posts.v2"], "partitions": 12}},
    "escalator": {"apiKey": SECRET_VALUES["api"]},
    "serviceMonitor": {"enabled": True},
}


@pytest.fixture(scope="module")
def variants(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[Manifest]]:
    """The default values, the secured-cluster example, and everything switched on, rendered once."""
    tmp = tmp_path_factory.mktemp("helm")
    return {
        "default": render(),
        "secure": render(SECURE),
        "everything": render(_values_file(tmp, EVERYTHING)),
    }


def test_helm_lint_passes_for_default_and_secure_values() -> None:
    """`helm lint --strict` accepts the chart with its defaults and with the secured-cluster example."""
    for extra in ([], ["-f", str(SECURE)]):
        done = subprocess.run(
            [_helm(), "lint", "--strict", str(CHART), *extra], capture_output=True, text=True, timeout=120, check=False
        )
        assert done.returncode == 0, done.stdout + done.stderr


def _crd_schemas() -> dict[tuple[str, str], dict[str, Any]]:
    """(apiVersion, kind) -> the OpenAPI v3 schema of the vendored CRDs, closed against unknown fields."""
    schemas = {}
    for path in sorted((HELM / "schemas").glob("*.yaml")):
        crd = yaml.safe_load(path.read_text())
        for version in crd["spec"]["versions"]:
            api_version = f"{crd['spec']['group']}/{version['name']}"
            schemas[(api_version, crd["spec"]["names"]["kind"])] = _closed(version["schema"]["openAPIV3Schema"])
    return schemas


def _closed(schema: Any) -> Any:
    """The schema with `additionalProperties: false` wherever it lists properties and allows no unknown fields.

    The API server prunes unknown fields of a custom resource silently; closing the schema makes a misspelled
    field (`maxReplicas` for `maxReplicaCount`) fail here instead of being dropped in the cluster."""
    if isinstance(schema, list):
        return [_closed(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out = {key: _closed(value) for key, value in schema.items()}
    if (
        "properties" in out
        and "additionalProperties" not in out
        and not out.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


def _validate_custom(doc: Manifest, schema: dict[str, Any]) -> None:
    body = copy.deepcopy(doc)
    body["metadata"] = {}  # ObjectMeta is the API server's, not in the CRD's schema
    jsonschema.validate(body, schema)


@pytest.mark.parametrize("variant", ["default", "secure", "everything"])
def test_every_manifest_validates_against_its_schema(variants: dict[str, list[Manifest]], variant: str) -> None:
    """Every rendered manifest is valid for Kubernetes 1.33 (strict: no unknown field), and the ScaledObjects,
    TriggerAuthentications and ServiceMonitor are valid for KEDA 2.20.2 / prometheus-operator 0.85.0."""
    kv = _kubernetes_validate()
    custom = _crd_schemas()
    kinds = set()
    for doc in variants[variant]:
        kinds.add(doc["kind"])
        key = (doc["apiVersion"], doc["kind"])
        try:
            if key in custom:
                _validate_custom(doc, custom[key])
            else:
                kv.validate(doc, KUBERNETES_VERSION, strict=True)
        except jsonschema.ValidationError as exc:
            path = ".".join(str(p) for p in exc.absolute_path)
            pytest.fail(f"{doc['kind']}/{doc['metadata']['name']}: {path}: {exc.message}", pytrace=False)
    expected = {"Deployment", "Service", "ConfigMap", "PodDisruptionBudget", "ServiceAccount", "Job"}
    assert expected <= kinds
    if variant != "default":
        assert {"ScaledObject", "TriggerAuthentication", "ServiceMonitor"} <= kinds


def test_a_misspelled_field_fails_the_crd_check() -> None:
    """The closed CRD schema catches what the API server would silently drop: the check above can fail."""
    schema = _crd_schemas()[("keda.sh/v1alpha1", "ScaledObject")]
    spec: dict[str, Any] = {"scaleTargetRef": {"name": "w"}, "maxReplicaCount": 6}
    spec["triggers"] = [{"type": "kafka", "metadata": {}}]
    good: Manifest = {"apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject", "metadata": {}, "spec": spec}
    _validate_custom(good, schema)
    bad = copy.deepcopy(good)
    bad["spec"]["maxReplicas"] = bad["spec"].pop("maxReplicaCount")
    with pytest.raises(jsonschema.ValidationError, match="maxReplicas"):
        _validate_custom(bad, schema)


def test_chart_families_and_partitions_match_the_code_and_topic_specs() -> None:
    """The chart runs exactly the families the worker consumes (MINNOW_WORKER__FAMILIES), and its default
    `partitions` per family are those of the family's input topic in topics/."""
    assert set(FAMILIES) == set(typing.get_args(InputFamily)) == set(names.INPUT_TOPICS)
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert set(values["workers"]) == set(FAMILIES)
    assert {family: values["workers"][family]["partitions"] for family in FAMILIES} == spec_partitions()


def test_max_replicas_is_the_partition_count(variants: dict[str, list[Manifest]], tmp_path: Path) -> None:
    """Each family's ScaledObject scales at most to its input topics' partitions: by default the topics/ spec's
    count; an override above it is capped, one below it is kept; several topics of one family sum."""
    partitions = spec_partitions()
    scaled = of_kind(variants["secure"], "ScaledObject")
    assert len(scaled) == len(FAMILIES)
    for family in FAMILIES:
        assert scaled[f"minnow-worker-{family}"]["spec"]["maxReplicaCount"] == partitions[family]

    capped = render(
        _values_file(
            tmp_path,
            {
                "workerDefaults": {"autoscaling": {"enabled": True, "maxReplicas": 100}},
                "workers": {
                    "iot": {"autoscaling": {"maxReplicas": 3}},
                    "ticket": {"inputTopics": ["support.a", "support.b"], "partitions": 9},  # 9 and 3 partitions
                },
            },
        )
    )
    scaled = of_kind(capped, "ScaledObject")
    assert scaled["minnow-worker-feed"]["spec"]["maxReplicaCount"] == partitions["feed"]
    assert scaled["minnow-worker-iot"]["spec"]["maxReplicaCount"] == 3
    ticket = scaled["minnow-worker-ticket"]["spec"]
    assert ticket["maxReplicaCount"] == 9
    assert [t["metadata"]["topic"] for t in ticket["triggers"]] == ["support.a", "support.b"]

    error = render_error(
        _values_file(tmp_path, {"workerDefaults": {"autoscaling": {"enabled": True, "minReplicas": 7}}})
    )
    assert "minReplicas (7) exceeds the useful replicas (6" in error


def _busy_consumers(partitions: dict[str, int], consumers: int) -> int:
    """How many of `consumers` group members, all subscribed to these topics, faust's assignor gives a partition."""
    from faust.assignor.client_assignment import ClientAssignment, ClientMetadata
    from faust.assignor.cluster_assignment import ClusterAssignment
    from faust.assignor.copartitioned_assignor import CopartitionedAssignor
    from faust.assignor.partition_assignor import PartitionAssignor

    class Cluster:
        def partitions_for_topic(self, topic: str) -> set[int]:
            return set(range(partitions[topic]))

    subscriptions = {f"member-{i}": list(partitions) for i in range(consumers)}
    cluster = ClusterAssignment()
    for member, subscribed in subscriptions.items():
        fresh = ClientAssignment(actives={}, standbys={})
        cluster.add_client(member, subscribed, ClientMetadata(assignment=fresh, url="", changelog_distribution={}))
    busy = set()
    groups = PartitionAssignor._get_copartitioned_groups(set(partitions), Cluster(), subscriptions)
    for count, topic_groups in sorted(groups.items()):
        for topics in topic_groups:
            assignor = CopartitionedAssignor(
                topics=topics,
                cluster_asgn=cluster.copartitioned_assignments(topics),
                num_partitions=count,
                replicas=0,
            )
            busy |= {member for member, got in assignor.get_assignment().items() if got.actives}
    return len(busy)


def test_useful_replicas_follow_fausts_assignment() -> None:
    """Why maxReplicaCount is the partition count, on the worker's own assignor (faust's, as the worker runs it):
    each partition goes to one member, so members beyond the partition count get nothing; topics of one family
    with equal counts are co-partitioned (partition n of each to one member), so two 6-partition topics still
    keep only 6 busy - the useful replicas are the largest count among a family's topics, not the sum."""
    assert _busy_consumers({"minnow.feeds.in": 6}, 6) == 6
    assert _busy_consumers({"minnow.feeds.in": 6}, 7) == 6
    assert _busy_consumers({"posts.a": 6, "posts.b": 6}, 12) == 6
    assert _busy_consumers({"posts.a": 6, "posts.b": 3}, 9) == 6


def test_keda_measures_the_group_and_topic_each_worker_consumes(variants: dict[str, list[Manifest]]) -> None:
    """A ScaledObject's consumer group is its Deployment's MINNOW_KAFKA__GROUP_ID, its topic the family's input
    topic as the worker names it (prefix + logical name, or MINNOW_TOPICS__*), and it counts from `earliest` as
    the worker does; the Deployment under KEDA has no fixed replicas."""
    docs = variants["secure"]
    deployments = of_kind(docs, "Deployment")
    for name, scaled in of_kind(docs, "ScaledObject").items():
        family = name.removeprefix("minnow-worker-")
        deployment = deployments[scaled["spec"]["scaleTargetRef"]["name"]]
        env = container_env(deployment)
        (trigger,) = scaled["spec"]["triggers"]
        meta = trigger["metadata"]
        assert meta["consumerGroup"] == env["MINNOW_KAFKA__GROUP_ID"] == f"minnow-worker-{family}"
        assert meta["topic"] == f"minnow.{names.INPUT_TOPICS[family]}"
        assert meta["offsetResetPolicy"] == "earliest" and meta["allowIdleConsumers"] == "false"
        assert meta["bootstrapServers"] == env["MINNOW_KAFKA__BOOTSTRAP_SERVERS"]
        assert meta["sasl"] == "scram_sha512" and meta["tls"] == "enable"
        assert trigger["authenticationRef"]["name"] == "minnow-kafka"
        assert "replicas" not in deployment["spec"]
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        assert container["args"] == ["worker", "--families", family]
    auth = of_kind(docs, "TriggerAuthentication")["minnow-kafka"]["spec"]
    refs = {ref["parameter"]: (ref["name"], ref["key"]) for ref in auth["secretTargetRef"]}
    assert refs == {"password": ("minnow-app", "password"), "ca": ("my-cluster-cluster-ca-cert", "ca.crt")}


def _walk_strings(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            yield str(key)
            yield from _walk_strings(value)
    elif isinstance(node, list):
        for item in node:
            yield from _walk_strings(item)
    elif node is not None:
        yield str(node)


def test_secrets_are_only_in_secrets(variants: dict[str, list[Manifest]]) -> None:
    """Credentials given as values land in Secrets only, never in a ConfigMap, a pod spec or a KEDA object (not
    even base64-encoded); pods get them as mounted files or secretKeyRefs."""
    docs = variants["everything"]
    for secret in SECRET_VALUES.values():
        encoded = base64.b64encode(secret.encode()).decode()
        holders = {
            f"{doc['kind']}/{doc['metadata']['name']}"
            for doc in docs
            if any(secret in text or encoded in text for text in _walk_strings(doc))
        }
        assert holders, f"{secret} was not rendered at all"
        assert all(holder.startswith("Secret/") for holder in holders), holders
    credentials = of_kind(docs, "Secret")["minnow-credentials"]["data"]
    assert set(credentials) == {"sasl-password", "ssl-key-password", "api-key"}
    worker = container_env(of_kind(docs, "Deployment")["minnow-worker-feed"])
    assert worker["MINNOW_KAFKA__SASL_PASSWORD_FILE"] == "/etc/minnow/kafka-sasl/password"
    assert worker["MINNOW_KAFKA__SSL_KEY_PASSWORD"] == {
        "secretKeyRef": {"name": "minnow-credentials", "key": "ssl-key-password"}
    }
    # The topics hook runs before the release's Secret exists: it reads its own hook Secret.
    (job,) = of_kind(docs, "Job").values()
    volumes = {v["name"]: v for v in job["spec"]["template"]["spec"]["volumes"]}
    assert volumes["kafka-sasl"]["secret"]["secretName"] == "minnow-topics-credentials"
    assert container_env(job)["MINNOW_KAFKA__SSL_KEY_PASSWORD"]["secretKeyRef"]["name"] == "minnow-topics-credentials"


def test_existing_secrets_make_no_chart_secret(variants: dict[str, list[Manifest]]) -> None:
    """With existingSecret everywhere (the secured example) the chart creates no Secret and mounts the user's."""
    docs = variants["secure"]
    assert of_kind(docs, "Secret") == {}
    escalator = of_kind(docs, "Deployment")["minnow-escalator"]
    volumes = {v["name"]: v for v in escalator["spec"]["template"]["spec"]["volumes"]}
    assert volumes["escalation-key"]["secret"]["secretName"] == "minnow-llm"
    assert volumes["escalation-key"]["secret"]["items"] == [{"key": "api-key", "path": "api-key"}]
    assert volumes["kafka-ca"]["secret"]["secretName"] == "my-cluster-cluster-ca-cert"
    assert volumes["data"]["persistentVolumeClaim"]["claimName"] == "minnow-escalator"


def test_grace_period_exceeds_the_drain(variants: dict[str, list[Manifest]], tmp_path: Path) -> None:
    """Every worker's terminationGracePeriodSeconds exceeds its delivery timeout (the bound of the SIGTERM drain),
    the escalator's exceeds its 30 s wait for records in flight, and a values file that breaks this is refused."""
    from pipeline.stream.escalator import STOP_GRACE_S

    for variant in variants.values():
        for name, deployment in of_kind(variant, "Deployment").items():
            grace = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
            if name.endswith("escalator"):
                assert grace > STOP_GRACE_S
            else:
                assert grace > float(container_env(deployment)["MINNOW_WORKER__DELIVERY_TIMEOUT_S"])
    error = render_error(_values_file(tmp_path, {"workers": {"iot": {"terminationGracePeriodSeconds": 120}}}))
    assert (
        "workers.iot: terminationGracePeriodSeconds (120) must exceed deliveryTimeoutS (120)" in error.splitlines()[0]
    )


def test_every_minnow_variable_is_a_real_setting(variants: dict[str, list[Manifest]]) -> None:
    """Every MINNOW_* variable the chart sets, in pod env or the env ConfigMap, is one Minnow reads
    (docs/configuration.md), so none is a typo that the process would ignore."""
    known = {row[0] for row in environment_variables()}
    for variant in variants.values():
        for doc in variant:
            found: set[str] = set()
            if doc["kind"] == "ConfigMap" and doc["metadata"]["name"].endswith("-env"):
                found |= set(doc.get("data") or {})
            if doc["kind"] in ("Deployment", "Job"):
                found |= set(container_env(doc))
            unknown = {name for name in found if name.startswith("MINNOW_")} - known
            assert not unknown, f"{doc['kind']}/{doc['metadata']['name']}: {sorted(unknown)}"


@pytest.mark.parametrize("variant", ["default", "secure", "everything"])
def test_each_pod_gets_a_configuration_minnow_accepts(
    variants: dict[str, list[Manifest]], variant: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The environment each pod gets (its env ConfigMap, its own env, secrets as placeholder values, the mounted
    files created under a temporary root) loads as Minnow's settings: the security combination, the group and the
    file paths are ones the process accepts at start-up."""
    from pipeline.settings import Settings

    docs = variants[variant]
    shared = next(doc["data"] for doc in docs if doc["kind"] == "ConfigMap" and doc["metadata"]["name"] == "minnow-env")
    for doc in docs:
        if doc["kind"] not in ("Deployment", "Job"):
            continue
        env = dict(shared) if doc["kind"] == "Deployment" else {}
        for name, value in container_env(doc).items():
            env[name] = value if isinstance(value, str) else "placeholder-secret"
        for name in [name for name in list(os.environ) if name.startswith("MINNOW_")]:
            monkeypatch.delenv(name)
        for name, value in env.items():
            local = str(tmp_path / value.removeprefix("/")) if value.startswith("/etc/minnow/") else value
            if local != value and name != "MINNOW_WORKER__INPUTS_FILE":
                Path(local).parent.mkdir(parents=True, exist_ok=True)
                Path(local).write_text("placeholder\n")
            monkeypatch.setenv(name, local)
        settings = Settings()
        assert settings.kafka.bootstrap_servers == env["MINNOW_KAFKA__BOOTSTRAP_SERVERS"]
        if doc["kind"] == "Deployment" and "MINNOW_WORKER__METRICS_PORT" in env:
            assert settings.kafka.group_id.startswith("minnow-worker-")
            if variant != "default":
                assert settings.kafka.password() == "placeholder"


def test_pods_are_probed_secured_and_sized(variants: dict[str, list[Manifest]]) -> None:
    """Every long-running container is probed on /healthz (liveness, startup) and /readyz (readiness) at the
    port its process serves them on; every container runs non-root with a read-only root file system and no
    capabilities; workers request at least the measured engine RSS and set ONNX Runtime's threads."""
    docs = variants["default"]
    pods = [d for d in docs if d["kind"] in ("Deployment", "Job")]
    assert len(pods) == len(FAMILIES) + 2
    for doc in pods:
        pod = doc["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
        assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"]
        if doc["kind"] == "Job":
            assert doc["metadata"]["annotations"]["helm.sh/hook"] == "pre-install,pre-upgrade"
            assert container["args"] == ["topics", "apply", "--yes"]
            continue
        env = container_env(doc)
        port = env.get("MINNOW_WORKER__METRICS_PORT") or env["MINNOW_ESCALATION__METRICS_PORT"]
        assert container["ports"] == [{"name": "health", "containerPort": int(port), "protocol": "TCP"}]
        assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
        assert container["startupProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
        assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "health"}
        if "MINNOW_WORKER__METRICS_PORT" in env:
            memory = container["resources"]["requests"]["memory"]
            assert memory.endswith("Mi") and int(memory[:-2]) * 1.048576 >= MEASURED_ENGINE_RSS_MB
            assert int(env["MINNOW_ENGINE__INTRA_OP_THREADS"]) >= 1
            assert doc["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": 0, "maxUnavailable": 1}
    budgets = of_kind(docs, "PodDisruptionBudget")
    assert len(budgets) == len(FAMILIES) + 1


def test_topics_job_can_be_skipped(tmp_path: Path) -> None:
    """topics.apply=false (topics managed by the platform team) renders no Job and no hook at all."""
    docs = render(_values_file(tmp_path, {"topics": {"apply": False}}))
    assert of_kind(docs, "Job") == {}
    assert not any("helm.sh/hook" in (doc["metadata"].get("annotations") or {}) for doc in docs)


def test_topics_hook_leaves_your_input_topics_alone(variants: dict[str, list[Manifest]]) -> None:
    """With an inputs file of your own topics, the topics hook gets it too (from a hook ConfigMap, since the
    release's does not exist yet), so `minnow topics apply` leaves the input topics out, as the CLI does."""
    docs = variants["everything"]
    (job,) = of_kind(docs, "Job").values()
    assert container_env(job)["MINNOW_WORKER__INPUTS_FILE"] == "/etc/minnow/config/inputs.yaml"
    hook = of_kind(docs, "ConfigMap")["minnow-topics-config"]
    assert hook["metadata"]["annotations"]["helm.sh/hook"] == "pre-install,pre-upgrade"
    assert "social.posts.v2" in hook["data"]["inputs.yaml"]
    volumes = {v["name"]: v for v in job["spec"]["template"]["spec"]["volumes"]}
    assert volumes["config"]["configMap"]["name"] == "minnow-topics-config"


def test_values_schema_refuses_misspelled_keys(tmp_path: Path) -> None:
    """values.schema.json closes the values: a misspelled key or an unknown protocol fails the render instead of
    being silently ignored (a `partiions: 12` would otherwise leave KEDA at the default 6)."""
    error = render_error(_values_file(tmp_path, {"workers": {"feed": {"partiions": 12}}}))
    assert "additional properties 'partiions' not allowed" in error
    error = render_error(_values_file(tmp_path, {"kafka": {"securityProtocol": "SASL"}}))
    assert "/kafka/securityProtocol" in error
    error = render_error(_values_file(tmp_path, {"env": {"KAFKA_BOOTSTRAP": "x"}}))
    assert "'KAFKA_BOOTSTRAP' does not match pattern '^MINNOW_'" in error


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"kafka": {"securityProtocol": "SASL_SSL"}}, "kafka.securityProtocol SASL_SSL needs kafka.sasl.mechanism"),
        (
            {"kafka": {"securityProtocol": "SASL_SSL", "sasl": {"mechanism": "PLAIN", "username": "u"}}},
            "kafka.sasl.mechanism PLAIN needs kafka.sasl.existingSecret",
        ),
        ({"kafka": {"tls": {"caSecret": "ca"}}}, "kafka.tls.* is set but kafka.securityProtocol is PLAINTEXT"),
        (
            {
                "kafka": {
                    "securityProtocol": "SASL_SSL",
                    "sasl": {"mechanism": "OAUTHBEARER", "oauthTokenSecret": "tok"},
                },
                "workerDefaults": {"autoscaling": {"enabled": True}},
            },
            "KEDA cannot read a token file",
        ),
        (
            {"workerDefaults": {"autoscaling": {"enabled": True, "minReplicas": 0}}},
            "workers.transcript.autoscaling.minReplicas must be at least 1",
        ),
    ],
)
def test_settings_that_cannot_work_fail_the_render(tmp_path: Path, values: dict[str, Any], message: str) -> None:
    """Security settings a process would refuse at start-up are refused at render time, with one line."""
    assert message in render_error(_values_file(tmp_path, values))
