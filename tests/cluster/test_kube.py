"""deployment/ and seamless_dask.cluster.kube, checked offline (nothing here can reach a Kubernetes cluster).

Manifests are validated against the DaskCluster / DaskJob CRDs shipped in the dask-kubernetes wheel, with
``additionalProperties: false`` injected so that a misspelt field fails instead of being dropped by the API
server (docs/design.md, "Pitfalls").
"""

import copy
import functools
import shlex
from pathlib import Path

import pytest
import yaml

from seamless_dask import OptionError
from seamless_dask import testing as helpers
from seamless_dask.cli import entry as cli
from seamless_dask.cluster.kube import (
    GPU_RESOURCE,
    KubeSpec,
    cluster_spec,
    job_spec,
    network_policy,
    to_yaml,
)

dask_kubernetes = pytest.importorskip("dask_kubernetes")
jsonschema = pytest.importorskip("jsonschema")

DEPLOYMENT = Path(__file__).parents[2] / "deployment"
CHART = (
    Path(dask_kubernetes.__file__).parent
    / "operator"
    / "deployment"
    / "helm"
    / "dask-kubernetes-operator"
)


def strict(schema):
    """The CRD schema with ``additionalProperties: false`` wherever it lists properties and allows no others."""
    schema = copy.deepcopy(schema)

    def walk(node):
        if isinstance(node, dict):
            if (
                "properties" in node
                and "additionalProperties" not in node
                and not node.get("x-kubernetes-preserve-unknown-fields")
            ):
                node["additionalProperties"] = False
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(schema)
    return schema


@functools.cache
def crd_of(kind):
    return yaml.load(
        (CHART / "crds" / f"{kind.lower()}.yaml").read_text(),
        Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader),
    )


def validate(resource):
    if (
        resource["kind"] == "NetworkPolicy"
    ):  # no CRD: the Kubernetes client's own model must keep every field
        import json

        from kubernetes.client import ApiClient

        api = ApiClient()
        try:  # kubernetes 37: (text, type, content type)
            model = api.deserialize(json.dumps(resource), "V1NetworkPolicy", "application/json")
        except TypeError:  # kubernetes <= 36: (a response with .data, type)
            response = type("Response", (), {"data": json.dumps(resource)})()
            model = api.deserialize(response, "V1NetworkPolicy")
        assert api.sanitize_for_serialization(model) == resource, (
            "a field the NetworkPolicy model does not know"
        )
        return
    crd = crd_of(resource["kind"])
    version = crd["spec"]["versions"][0]
    assert resource["apiVersion"] == f"{crd['spec']['group']}/{version['name']}"
    assert resource["kind"] == crd["spec"]["names"]["kind"]
    schema = strict(version["schema"]["openAPIV3Schema"]["properties"]["spec"])
    jsonschema.validate(resource["spec"], schema)


def containers(pod):
    return {c["name"]: c for c in pod["spec"]["containers"]}


def test_cluster_spec_is_a_valid_daskcluster_whose_scheduler_holds_no_gpu():
    spec = cluster_spec(
        KubeSpec(name="scan", gpu_workers=3, worker_threads=4, node_selector={"gpu": "l4"})
    )
    validate(spec)
    worker = spec["spec"]["worker"]
    assert worker["replicas"] == 3
    container = containers(worker)["worker"]
    assert container["resources"]["limits"][GPU_RESOURCE] == "1"
    assert container["args"][:2] == ["dask", "worker"]  # the image has no `dask-worker` script
    args = " ".join(container["args"])
    # each model task needs GPU=1 (segment resources): two share the worker's GPU
    assert "--resources GPU=2" in args and "--nthreads 4" in args
    assert worker["spec"]["nodeSelector"] == {"gpu": "l4"}
    assert any(t["key"] == GPU_RESOURCE for t in worker["spec"]["tolerations"])
    scheduler = containers(spec["spec"]["scheduler"])["scheduler"]
    assert scheduler["args"][:2] == ["dask", "scheduler"]
    # dask-kubernetes' template gives the scheduler the workers' resources, GPU included
    assert GPU_RESOURCE not in str(scheduler["resources"])
    assert "tolerations" not in spec["spec"]["scheduler"]["spec"]


def test_a_misspelt_field_fails_validation():
    spec = cluster_spec()
    # not "resources"
    containers(spec["spec"]["worker"])["worker"]["resource"] = {"limits": {GPU_RESOURCE: "1"}}
    with pytest.raises(jsonschema.ValidationError, match="resource"):
        validate(spec)


def test_job_spec_is_a_valid_daskjob_running_the_cli_against_its_own_cluster():
    segment_args = [
        "s3://bucket/scene.tif",
        "s3://bucket/labels.zarr",
        "--model",
        "my_models:build",
        "--resume",
    ]
    job = job_spec(segment_args, KubeSpec(image="registry.example/seamless:1"))
    validate(job)
    pod = job["spec"]["job"]["spec"]
    args = containers(job["spec"]["job"])["job"]["args"]
    assert args[:2] == ["seamless-dask", "segment"]
    assert args[args.index("--scheduler") + 1] == "$(DASK_SCHEDULER_ADDRESS)"  # set by the operator
    assert pod["restartPolicy"] == "Never"
    # the arguments are the CLI's own: they parse
    parsed = cli.parser().parse_args(args[1:])
    assert (parsed.input, parsed.target, parsed.model) == (
        segment_args[0],
        segment_args[1],
        "my_models:build",
    )
    assert {
        c["image"]
        for c in [
            *pod["containers"],
            *job["spec"]["cluster"]["spec"]["worker"]["spec"]["containers"],
        ]
    } == {"registry.example/seamless:1"}


@pytest.mark.parametrize(
    ("make", "words"),
    [
        (
            lambda: job_spec(["a.tif", "b.zarr", "--scheduler", "tcp://x:8786"]),
            ["DaskJob", "--scheduler"],
        ),
        (lambda: job_spec(["--model", "m:f"]), ["INPUT OUTPUT", "--model"]),
        (lambda: KubeSpec(name="Seamless_Cluster"), ["name", "DNS label", "'Seamless_Cluster'"]),
        (lambda: KubeSpec(gpu_workers=-1), ["gpu_workers", "-1"]),
        (lambda: KubeSpec(worker_threads=0), ["worker_threads", "0"]),
        (lambda: KubeSpec(model_tasks_per_gpu=0), ["model_tasks_per_gpu", "0"]),
        (
            lambda: KubeSpec(worker_threads=2, model_tasks_per_gpu=3),
            ["model_tasks_per_gpu=3", "worker_threads=2", "worker_threads >= 5"],
        ),
    ],
)
def test_bad_kubernetes_options_name_rule_value_and_fix(make, words):
    with helpers.raises_mentioning(OptionError, words):
        make()


def command_in_header(path):
    """The CLI arguments in the manifest's first line, which made it (the file must not drift from the code)."""
    first = path.read_text().splitlines()[0]
    assert first.startswith("# seamless-dask k8s "), first
    return shlex.split(first.removeprefix("# seamless-dask ").split(" > ")[0])


@pytest.mark.parametrize("name", ["daskcluster.yaml", "daskjob.yaml"])
def test_deployment_manifests_are_what_the_cli_prints_and_valid(name, capsys):
    path = DEPLOYMENT / name
    assert cli.main(command_in_header(path)) == 0
    printed = capsys.readouterr().out
    body = (
        "\n".join(line for line in path.read_text().splitlines() if not line.startswith("#")) + "\n"
    )
    assert body == printed, f"{path} is out of date: rerun the command in its first line"
    for resource in yaml.safe_load_all(printed):
        validate(resource)


def test_cli_k8s_prints_yaml_and_rejects_bad_pairs(capsys):
    assert cli.main(["k8s", "--gpu-workers", "1", "--env", "AWS_REGION=eu-west-1"]) == 0
    resource, policy = yaml.safe_load_all(capsys.readouterr().out)
    assert resource["kind"] == "DaskCluster" and policy["kind"] == "NetworkPolicy"
    assert {"name": "AWS_REGION", "value": "eu-west-1"} in containers(resource["spec"]["worker"])[
        "worker"
    ]["env"]
    assert cli.main(["k8s", "--env", "AWS_REGION"]) == 2
    assert "--env takes NAME=VALUE, got 'AWS_REGION'" in capsys.readouterr().err


def test_to_yaml_round_trips_several_resources():
    a, b = cluster_spec(KubeSpec(name="a")), cluster_spec(KubeSpec(name="b"))
    assert list(yaml.safe_load_all(to_yaml(a, b))) == [a, b]


def test_operator_values_only_use_keys_of_the_chart():
    chart = yaml.safe_load((CHART / "values.yaml").read_text())
    ours = yaml.safe_load((DEPLOYMENT / "operator-values.yaml").read_text())

    def unknown(mine, theirs, path=""):
        if not isinstance(mine, dict) or not isinstance(theirs, dict) or not theirs:
            return []  # a leaf, or a free-form map such as resources/affinity ({} in the chart)
        missing = [f"{path}{key}" for key in mine if key not in theirs]
        return missing + [
            m for key in mine if key in theirs for m in unknown(mine[key], theirs[key], f"{key}.")
        ]

    assert unknown(ours, chart) == []


def test_dockerfile_builds_one_image_from_this_checkout():
    text = (DEPLOYMENT / "Dockerfile").read_text()
    lines = [line for line in text.splitlines() if line and not line.startswith("#")]
    root = DEPLOYMENT.parent
    for line in lines:
        if line.startswith("COPY "):
            for source in line.split()[1:-1]:
                assert (root / source).exists(), f"COPY {source}: not in the repository"
    install = next(line for line in lines if "pip install" in line)
    # the extra that brings dask-kubernetes, with torch left as it is
    assert '".[kubernetes]"' in install
    assert any(line.startswith("USER ") and "root" not in line for line in lines)  # not root
    ignore = (DEPLOYMENT / "Dockerfile.dockerignore").read_text().splitlines()
    # nothing but the package reaches the build (no .venv)
    assert ignore[1] == "*" and "!seamless_dask/" in ignore


# ---- Safe in the field, class 12: locked-down pods, secrets by reference, TLS, a NetworkPolicy


def all_pods(resource):
    spec = resource["spec"]
    cluster = spec["cluster"]["spec"] if resource["kind"] == "DaskJob" else spec
    pods = [cluster["scheduler"]["spec"], cluster["worker"]["spec"]]
    return pods + ([spec["job"]["spec"]] if resource["kind"] == "DaskJob" else [])


@pytest.mark.parametrize(
    "make", [cluster_spec, lambda s: job_spec(["a.tif", "b.zarr", "--model", "m:f"], s)]
)
def test_every_pod_is_non_root_without_privilege_escalation_on_a_read_only_root(make):
    resource = make(KubeSpec())
    validate(resource)
    for pod in all_pods(resource):
        assert (
            pod["securityContext"]["runAsNonRoot"] is True
            and pod["securityContext"]["runAsUser"] == 1000
        )
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        for container in pod["containers"]:
            context = container["securityContext"]
            assert context == {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                               "capabilities": {"drop": ["ALL"]}}  # fmt: skip
            # writable scratch
            assert {"name": "scratch", "mountPath": "/tmp"} in container["volumeMounts"]


def test_secrets_come_from_kubernetes_secrets_never_from_the_manifest_text(capsys):
    spec = KubeSpec(
        secret_env={"AWS_SECRET_ACCESS_KEY": "s3:secret"}, env_from=("more-credentials",)
    )
    resource = cluster_spec(spec)
    validate(resource)
    for pod in all_pods(resource):
        container = pod["containers"][0]
        ref = {
            "name": "AWS_SECRET_ACCESS_KEY",
            "valueFrom": {"secretKeyRef": {"name": "s3", "key": "secret"}},
        }
        assert ref in container["env"] and container["envFrom"] == [
            {"secretRef": {"name": "more-credentials"}}
        ]
    for name in ("AWS_SECRET_ACCESS_KEY", "GITHUB_TOKEN", "DB_PASSWORD", "MY_API_KEY"):
        with helpers.raises_mentioning(
            OptionError, [name, "plain text", "--secret-env", "--env-from-secret"]
        ):
            KubeSpec(env={name: "hunter2"})
        assert cli.main(["k8s", "--env", f"{name}=hunter2"]) == 2
        assert "hunter2" not in capsys.readouterr().out
    with helpers.raises_mentioning(OptionError, ["SECRET:KEY"]):
        KubeSpec(secret_env={"A": "no-key"})


def test_tls_mounts_the_secret_and_configures_every_member():
    resource = job_spec(["a.tif", "b.zarr", "--model", "m:f"], KubeSpec(tls_secret="seamless-tls"))
    validate(resource)
    for pod in all_pods(resource):
        assert {
            "name": "tls",
            "secret": {"secretName": "seamless-tls", "defaultMode": 0o400},
        } in pod["volumes"]
        env = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
        assert env["DASK_DISTRIBUTED__COMM__REQUIRE_ENCRYPTION"] == "True"
        assert env["DASK_DISTRIBUTED__COMM__TLS__CA_FILE"] == "/etc/dask/tls/ca.crt"
        # the operator's tcp:// not used
        assert env["DASK_SCHEDULER_ADDRESS"] == "tls://seamless-scheduler:8786"
    assert KubeSpec(tls_secret="x").scheduler_address.startswith("tls://")


def test_the_network_policy_admits_only_the_cluster_its_clients_and_the_operator():
    policy = network_policy(KubeSpec(name="scan", client_labels={"app": "notebook"}))
    validate(policy)
    assert policy["spec"]["podSelector"] == {"matchLabels": {"dask.org/cluster-name": "scan"}}
    sources = policy["spec"]["ingress"][0]["from"]
    assert {"podSelector": {"matchLabels": {"dask.org/cluster-name": "scan"}}} in sources
    assert {"podSelector": {"matchLabels": {"app": "notebook"}}} in sources
    assert {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "dask-operator"}}
    } in sources
    assert len(sources) == 3 and policy["spec"]["policyTypes"] == ["Ingress"]
    broken = copy.deepcopy(policy)
    broken["spec"]["ingres"] = broken["spec"].pop("ingress")
    with pytest.raises(AssertionError, match="does not know"):
        validate(broken)
