"""deploy/ recipes validate offline: ray-cluster.yaml through Ray's own config check (what `ray up`
runs before its first AWS call), rayjob.yaml against KubeRay's v1 CRD schema as the API server
applies it, and every s9tune command in them and in deploy/README.md through the CLI's parser."""

from __future__ import annotations

import argparse
import copy
import math
import os
import re
import shlex
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

import jsonschema
import pytest
import yaml
from packaging.requirements import Requirement
from packaging.version import Version

from s9tune.cli import build_parser
from s9tune.errors import UsageError

REPO = Path(__file__).resolve().parents[1]
DEPLOY = REPO / "deploy"
# CI clones the repository as a sibling of shared/, so this path holds there as well as here
SCHEMAS = Path(__file__).resolve().parents[2] / "shared" / "schemas"
# the CRDs are 1-1.4 MB of YAML: the pure-Python loader takes seconds on a slow core
LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def load(path: Path) -> Any:
    return yaml.load(path.read_text(), Loader=LOADER)


@pytest.fixture(scope="module")
def cluster() -> dict[str, Any]:
    return load(DEPLOY / "ray-cluster.yaml")


@pytest.fixture(scope="module")
def job() -> dict[str, Any]:
    return load(DEPLOY / "rayjob.yaml")


def space_resources(space_file: Path, argv: list[str] | None = None) -> tuple[float, float]:
    """(cpus, gpus) per trial of a search: the space file's, overridden by the command's flags."""
    res = load(space_file)["resources"]
    cpus, gpus = float(res["cpus_per_trial"]), float(res["gpus_per_trial"])
    if argv is not None:
        args = exact_parser().parse_args(argv)
        cpus = args.cpus_per_trial if args.cpus_per_trial is not None else cpus
        gpus = args.gpus_per_trial if args.gpus_per_trial is not None else gpus
    return cpus, gpus


def trials_per_node(cpus: float, gpus: float, trial_cpus: float, trial_gpus: float) -> int:
    # the same packing as Ray's scheduler (and s9tune's preflight): whole trials per resource
    assert trial_cpus > 0 and trial_gpus > 0, "the recipes are for GPU searches"
    return min(math.floor(cpus / trial_cpus + 1e-9), math.floor(gpus / trial_gpus + 1e-9))


# -- ray-cluster.yaml: the cluster launcher ----------------------------------------------------
def ray_up_check(config: dict[str, Any]) -> dict[str, Any]:
    """What `ray up` does to the file before it contacts AWS (commands._bootstrap_config):
    merge Ray's AWS defaults (prepare_config), then check schema and cross-field rules
    (validate_config). Skipped in between: instance-type resource autodetection (an EC2 call;
    ray-cluster.yaml declares its resources) and bootstrap_aws (IAM, subnets, key pairs)."""
    from ray.autoscaler._private.util import prepare_config, validate_config

    prepared = prepare_config(copy.deepcopy(config))
    validate_config(prepared)
    return prepared


def test_cluster_yaml_passes_ray_up_validation(cluster: dict[str, Any]) -> None:
    prepared = ray_up_check(cluster)
    assert prepared["provider"]["type"] == "aws" and prepared["provider"]["region"]
    types = prepared["available_node_types"]
    assert prepared["head_node_type"] in types
    assert any(t["resources"].get("GPU", 0) >= 1 for t in types.values()), "no GPU worker type"


def test_cluster_yaml_keeps_rays_default_setup_commands_out(cluster: dict[str, Any]) -> None:
    # prepare_config merges the file over Ray's AWS defaults key by key: a missing
    # setup_commands would pull in `which ray || pip install <nightly ray wheel>` and a boto3
    # install on the head, i.e. a different Ray than the image's on some node
    prepared = ray_up_check(cluster)
    for key in ("setup_commands", "head_setup_commands", "worker_setup_commands"):
        assert key in cluster, f"{key} left to Ray's defaults"
    commands = prepared["head_setup_commands"] + prepared["worker_setup_commands"]
    assert not [c for c in commands if "pip install" in c and "ray" in c], commands


def test_cluster_yaml_gpu_workers_run_the_default_space_at_full_packing(cluster: dict[str, Any]) -> None:
    trial_cpus, trial_gpus = space_resources(REPO / "search_spaces" / "default.yaml")
    workers = {n: t for n, t in cluster["available_node_types"].items() if t["resources"].get("GPU", 0) > 0}
    assert workers
    for name, t in workers.items():
        res = t["resources"]
        # every GPU share gets a trial: CPUs must not be the tighter limit
        assert trials_per_node(res["CPU"], res["GPU"], trial_cpus, trial_gpus) == round(res["GPU"] / trial_gpus), name
        # s9tune sizes the search from the nodes up at launch and refuses to start without a GPU
        # node, so an autoscaling worker type (min < max, or min 0) would idle or fail
        assert 1 <= t["min_workers"] == t["max_workers"], name


_DELETE = object()


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    """An edit that sets (or, with _DELETE, removes) the value at a dotted path; digits index lists."""

    def edit(doc: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node: Any = doc
        for key in parents:
            node = node[int(key)] if isinstance(node, list) else node[key]
        if value is _DELETE:
            del node[last]
        else:
            node[int(last) if isinstance(node, list) else last] = value

    return edit


@pytest.mark.parametrize(
    ("edit", "error", "match"),
    [
        pytest.param(
            _set("available_node_types.gpu_worker.node_config", _DELETE),
            jsonschema.ValidationError,
            "'node_config' is a required property",
            id="worker-without-node_config",
        ),
        pytest.param(
            _set("available_node_types.gpu_worker.min_workers", 3),
            ValueError,
            "max_workers` is smaller than the sum of `min_workers",
            id="min_workers-above-max_workers",
        ),
        pytest.param(
            _set("max_worker", 4), jsonschema.ValidationError, "'max_worker' was unexpected", id="unknown-top-level-key"
        ),
        pytest.param(
            _set("available_node_types.gpu_worker.resources.GPU", 0.5),
            jsonschema.ValidationError,
            "0.5 is not of type 'integer'",
            id="fractional-node-gpu",
        ),
        pytest.param(
            _set("head_node_type", "ray.head.default"), ValueError, "head_node_type", id="head-type-undefined"
        ),
    ],
)
def test_ray_up_validation_rejects_a_broken_cluster_yaml(
    cluster: dict[str, Any], edit: Callable[[dict[str, Any]], None], error: type[Exception], match: str
) -> None:
    broken = copy.deepcopy(cluster)
    edit(broken)
    with pytest.raises(error, match=re.escape(match)):
        ray_up_check(broken)


# -- rayjob.yaml: KubeRay ----------------------------------------------------------------------
def k8s_to_json_schema(node: Any) -> Any:
    """A Kubernetes structural schema (OpenAPI v3 with x-kubernetes-* extensions) as a JSON Schema
    that checks what the API server checks on `kubectl apply` (strict field validation):
    * x-kubernetes-int-or-string: integer or string (quantities: 1 and "1" are both fine);
    * nullable: null allowed (an OpenAPI keyword JSON Schema lacks);
    * an object with declared properties rejects unknown fields unless
      x-kubernetes-preserve-unknown-fields says otherwise (the API server would report them);
    * x-kubernetes-list-type: set means unique items; list-type map keys are checked by
      K8sValidator. CEL rules (x-kubernetes-validations) are not evaluated.
    Only schema positions are rewritten: field names under `properties` and `default`/`enum`
    data stay as they are."""
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key == "properties":
            out[key] = {name: k8s_to_json_schema(sub) for name, sub in value.items()}
        elif key in ("items", "additionalProperties", "not"):
            out[key] = k8s_to_json_schema(value)
        elif key in ("anyOf", "allOf", "oneOf"):
            out[key] = [k8s_to_json_schema(sub) for sub in value]
        else:
            out[key] = value
    if node.get("x-kubernetes-int-or-string"):
        out.setdefault("anyOf", [{"type": "integer"}, {"type": "string"}])
        out.pop("type", None)
    if node.get("nullable") and "type" in out:
        out["type"] = [out["type"], "null"]
    if (
        "properties" in out
        and "additionalProperties" not in out
        and not node.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    if node.get("x-kubernetes-list-type") == "set":
        out["uniqueItems"] = True
    return out


def _list_map_keys(
    validator: Any, keys: list[str], instance: Any, schema: dict[str, Any]
) -> Iterator[jsonschema.ValidationError]:
    """x-kubernetes-list-type: map — no two items share their key fields (two env entries named
    AWS_ACCESS_KEY_ID, two containers named ray-head). A missing key takes its schema default."""
    if not validator.is_type(instance, "array"):
        return
    props = schema.get("items", {}).get("properties", {})
    seen: dict[tuple[Any, ...], int] = {}
    for i, item in enumerate(instance):
        if not isinstance(item, dict):
            continue
        key = tuple(item.get(k, props.get(k, {}).get("default")) for k in keys)
        if key in seen:
            yield jsonschema.ValidationError(
                f"duplicate entry {dict(zip(keys, key, strict=True))}: items {seen[key]} and {i}"
            )
        seen.setdefault(key, i)


# OpenAPI v3.0 schemas use the keywords Draft 7 has (plus the ones translated above)
K8sValidator = jsonschema.validators.extend(jsonschema.Draft7Validator, {"x-kubernetes-list-map-keys": _list_map_keys})


class Crd:
    """The v1 schema of a KubeRay CRD as a validator, with the apiVersion and kind it serves."""

    def __init__(self, file: str) -> None:
        path = SCHEMAS / file
        if not path.is_file():
            if os.environ.get("S9TUNE_REQUIRE_REALDATA"):
                pytest.fail(f"the KubeRay CRD schemas are missing: {path}")
            pytest.skip(f"no KubeRay CRD at {path}")
        crd = load(path)
        version = next(v for v in crd["spec"]["versions"] if v["name"] == "v1")
        self.api_version = f"{crd['spec']['group']}/{version['name']}"
        self.kind = crd["spec"]["names"]["kind"]
        self.validator = K8sValidator(k8s_to_json_schema(version["schema"]["openAPIV3Schema"]))

    def errors(self, doc: Any) -> list[str]:
        return sorted(
            f"{'.'.join(map(str, e.absolute_path)) or '<root>'}: {e.message[:300]}"
            for e in self.validator.iter_errors(doc)
        )


@pytest.fixture(scope="module")
def rayjob_crd() -> Crd:
    return Crd("kuberay-ray.io_rayjobs.yaml")


@pytest.fixture(scope="module")
def raycluster_crd() -> Crd:
    return Crd("kuberay-ray.io_rayclusters.yaml")


def test_rayjob_is_a_valid_ray_io_v1_rayjob(job: dict[str, Any], rayjob_crd: Crd) -> None:
    assert (job["apiVersion"], job["kind"]) == ("ray.io/v1", "RayJob")
    assert (rayjob_crd.api_version, rayjob_crd.kind) == ("ray.io/v1", "RayJob")
    assert rayjob_crd.errors(job) == []


def test_rayjob_cluster_spec_is_a_valid_raycluster(job: dict[str, Any], raycluster_crd: Crd) -> None:
    # the embedded spec, applied on its own as a RayCluster (the object the operator creates)
    cluster = {
        "apiVersion": raycluster_crd.api_version,
        "kind": raycluster_crd.kind,
        "metadata": {"name": job["metadata"]["name"]},
        "spec": job["spec"]["rayClusterSpec"],
    }
    assert raycluster_crd.errors(cluster) == []


@pytest.mark.parametrize("gpus", [1, "1"], ids=["int", "string"])
def test_rayjob_schema_takes_quantities_as_int_or_string(job: dict[str, Any], rayjob_crd: Crd, gpus: int | str) -> None:
    doc = copy.deepcopy(job)
    for group in ("requests", "limits"):
        doc["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["template"]["spec"]["containers"][0]["resources"][group][
            "nvidia.com/gpu"
        ] = gpus
    assert rayjob_crd.errors(doc) == []


WORKER = "spec.rayClusterSpec.workerGroupSpecs.0"
WORKER_CONTAINER = f"{WORKER}.template.spec.containers.0"


@pytest.mark.parametrize(
    ("edit", "where"),
    [
        pytest.param(_set(f"{WORKER}.replicas", "two"), f"{WORKER}.replicas", id="replicas-not-an-integer"),
        pytest.param(_set(f"{WORKER}.minReplica", 1), WORKER, id="unknown-field-in-worker-group"),
        pytest.param(_set("spec.shutdownAfterJobFinish", True), "spec", id="unknown-field-in-spec"),
        pytest.param(
            _set(f"{WORKER}.rayStartParams", {"num-gpus": 1}),
            f"{WORKER}.rayStartParams.num-gpus",
            id="rayStartParams-value-not-a-string",
        ),
        pytest.param(
            lambda d: d["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["template"]["spec"]["containers"][0][
                "resources"
            ]["limits"].update({"nvidia.com/gpu": "one"}),
            f"{WORKER_CONTAINER}.resources.limits.nvidia.com/gpu",
            id="gpu-limit-not-a-quantity",
        ),
        pytest.param(
            lambda d: d["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]["containers"][0]["env"].append(
                {"name": "AWS_DEFAULT_REGION", "value": "eu-west-1"}
            ),
            "spec.rayClusterSpec.headGroupSpec.template.spec.containers.0.env",
            id="duplicate-env-name",
        ),
        pytest.param(_set(f"{WORKER_CONTAINER}.name", _DELETE), WORKER_CONTAINER, id="container-without-name"),
    ],
)
def test_rayjob_schema_rejects_a_broken_rayjob(
    job: dict[str, Any], rayjob_crd: Crd, edit: Callable[[dict[str, Any]], None], where: str
) -> None:
    broken = copy.deepcopy(job)
    edit(broken)
    errors = rayjob_crd.errors(broken)
    assert any(e.startswith(f"{where}: ") for e in errors), errors


def kuberay_operator_errors(job: dict[str, Any]) -> list[str]:
    """The checks of KubeRay's operator (ValidateRayJobMetadata / ValidateRayJobSpec /
    ValidateRayClusterSpec) that a CRD schema cannot express and a recipe can break."""
    errors = []
    name = job["metadata"].get("name", "")
    # the operator appends 6 characters for the RayCluster, whose names stop at 53
    if len(name) > 47 or not re.fullmatch(r"[a-z]([-a-z0-9]*[a-z0-9])?", name):
        errors.append(f"metadata.name {name!r}: a DNS-1035 label of at most 47 characters")
    spec = job["spec"]
    if spec.get("ttlSecondsAfterFinished", 0) > 0 and not spec.get("shutdownAfterJobFinishes"):
        errors.append("ttlSecondsAfterFinished needs shutdownAfterJobFinishes: true")
    if not spec.get("rayClusterSpec") and not spec.get("clusterSelector"):
        errors.append("one of rayClusterSpec or clusterSelector must be set")
    rc = spec.get("rayClusterSpec", {})
    for group in [rc.get("headGroupSpec", {}), *rc.get("workerGroupSpecs", [])]:
        label = group.get("groupName", "head")
        if not group.get("template", {}).get("spec", {}).get("containers"):
            errors.append(f"{label}: no container")
        params = group.get("rayStartParams", {})
        if group.get("resources") and any(params.get(k) for k in ("num-cpus", "num-gpus", "memory", "resources")):
            errors.append(f"{label}: resources in both rayStartParams and resources")
        if "labels" in params:
            errors.append(f"{label}: rayStartParams['labels'] is not supported")
    return errors


def test_rayjob_passes_the_operators_own_checks(job: dict[str, Any]) -> None:
    assert kuberay_operator_errors(job) == []


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        pytest.param(_set("metadata.name", "s9tune_search"), "DNS-1035", id="name-with-underscore"),
        pytest.param(_set("metadata.name", "s9tune-" + "x" * 41), "DNS-1035", id="name-too-long"),
        pytest.param(
            _set("spec.shutdownAfterJobFinishes", False), "ttlSecondsAfterFinished", id="ttl-without-shutdown"
        ),
    ],
)
def test_operator_checks_reject_a_broken_rayjob(
    job: dict[str, Any], edit: Callable[[dict[str, Any]], None], match: str
) -> None:
    broken = copy.deepcopy(job)
    edit(broken)
    assert any(match in e for e in kuberay_operator_errors(broken))


def ray_containers(job: dict[str, Any]) -> list[dict[str, Any]]:
    rc = job["spec"]["rayClusterSpec"]
    groups = [rc["headGroupSpec"], *rc["workerGroupSpecs"]]
    return [c for g in groups for c in g["template"]["spec"]["containers"]]


def test_rayjob_gives_every_pod_the_storage_credentials(job: dict[str, Any]) -> None:
    # trials on the workers write checkpoints to --storage themselves, not through the head
    args = exact_parser().parse_args(s9tune_argvs(job["spec"]["entrypoint"])[0])
    assert args.storage.startswith("s3://"), "a local --storage is not shared between pods"
    for container in ray_containers(job):
        env = {e["name"]: e for e in container.get("env", [])}
        for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
            assert "secretKeyRef" in env.get(var, {}).get("valueFrom", {}), (container["name"], var)


def test_rayjob_retrains_what_it_searched_where_every_pod_writes(job: dict[str, Any]) -> None:
    search, retrain = (exact_parser().parse_args(a) for a in s9tune_argvs(job["spec"]["entrypoint"]))
    assert (search.command, retrain.command) == ("search", "retrain")
    assert retrain.experiment == f"{search.storage}/{search.name}" and retrain.address == "auto"
    assert retrain.out.startswith(f"{search.storage}/"), "the seeds on the workers write to --out themselves"
    groups = job["spec"]["rayClusterSpec"]["workerGroupSpecs"]
    limits = [g["template"]["spec"]["containers"][0]["resources"]["limits"] for g in groups]
    gpus = sum(g["replicas"] * int(lim.get("nvidia.com/gpu", 0)) for g, lim in zip(groups, limits, strict=True))
    assert retrain.seeds <= gpus, "the seeds run at once, one GPU each"


def cpu_quantity(q: int | str) -> float:
    return float(q[:-1]) / 1000 if isinstance(q, str) and q.endswith("m") else float(q)


def test_rayjob_gpu_workers_run_its_search_at_full_packing(job: dict[str, Any]) -> None:
    argv = s9tune_argvs(job["spec"]["entrypoint"])[0]
    space = image_path_in_repo(exact_parser().parse_args(argv).space)
    trial_cpus, trial_gpus = space_resources(space, argv)
    rc = job["spec"]["rayClusterSpec"]
    assert not rc.get("enableInTreeAutoscaling"), "s9tune sizes the search from the pods up at launch"
    for group in rc["workerGroupSpecs"]:
        assert 1 <= group["minReplicas"] == group["replicas"] == group["maxReplicas"], group["groupName"]
        limits = group["template"]["spec"]["containers"][0]["resources"]["limits"]
        params = group.get("rayStartParams", {})
        # KubeRay passes the container limits to `ray start` unless rayStartParams overrides them
        cpus = cpu_quantity(params.get("num-cpus", limits["cpu"]))
        gpus = float(params.get("num-gpus", limits.get("nvidia.com/gpu", 0)))
        if gpus:
            assert trials_per_node(cpus, gpus, trial_cpus, trial_gpus) == round(gpus / trial_gpus), group["groupName"]


# -- commands, image ---------------------------------------------------------------------------
def s9tune_argvs(shell: str) -> list[list[str]]:
    """The argv after `s9tune` of every s9tune command in shell text: plain, after `ray job
    submit ... --`, or quoted as one argument (`ray exec CFG 's9tune ...'`)."""
    found = []
    for line in shell.replace("\\\n", " ").splitlines():
        words = shlex.split(line, comments=True)
        i = 0
        while i < len(words):
            if words[i] == "s9tune":  # up to the next separator; another command may follow it
                rest = words[i + 1 :]
                end = next((j for j, w in enumerate(rest) if w in ("&&", "||", ";", "|")), len(rest))
                found.append(rest[:end])
                i += end + 1
            elif words[i].startswith("s9tune "):
                found += s9tune_argvs(words[i])
            i += 1
    return found


def readme_shell() -> str:
    text = (DEPLOY / "README.md").read_text()
    return "\n".join(re.findall(r"```(?:bash|sh|shell)\n(.*?)```", text, flags=re.DOTALL))


class Dockerfile(NamedTuple):
    image: str  # the FROM image, ARGs substituted
    workdir: str
    copied: set[str]  # the repository paths COPY takes into the image


def dockerfile() -> Dockerfile:
    args: dict[str, str] = {}
    image = workdir = ""
    copied: set[str] = set()
    for line in (DEPLOY / "Dockerfile").read_text().splitlines():
        instr, _, rest = line.strip().partition(" ")
        if instr == "ARG" and "=" in rest and not image:
            key, _, value = rest.partition("=")
            args[key] = value
        elif instr == "FROM":
            image = re.sub(r"\$\{?(\w+)\}?", lambda m: args[m.group(1)], rest.split()[0])
        elif instr == "WORKDIR":
            workdir = rest
        elif instr == "COPY":
            copied |= {w.removeprefix("./") for w in rest.split()[:-1] if not w.startswith("--")}
    return Dockerfile(image, workdir, copied)


def image_path_in_repo(path: Path) -> Path:
    """Where a file inside the image comes from: the Dockerfile copies the repository's files
    under its WORKDIR, keeping their relative paths."""
    image = dockerfile()
    rel = path.relative_to(image.workdir) if path.is_absolute() else path
    assert rel.parts[0] in image.copied, f"{path}: deploy/Dockerfile does not copy {rel.parts[0]}"
    return REPO / rel


def exact_parser() -> argparse.ArgumentParser:
    """s9tune's parser, minus argparse's prefix matching: `--gpus 1` would pass as
    `--gpus-per-trial 1` and keep a misspelt flag in the docs."""
    parser = build_parser()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                sub.allow_abbrev = False
    return parser


def test_exact_parser_rejects_abbreviated_flags() -> None:
    with pytest.raises(UsageError, match="unrecognized arguments: --gpus 1"):
        exact_parser().parse_args(["search", "--space", "s.yaml", "--gpus", "1"])


def test_every_s9tune_command_parses_with_the_real_cli(job: dict[str, Any]) -> None:
    commands = s9tune_argvs(job["spec"]["entrypoint"]) + s9tune_argvs(readme_shell())
    assert [c[0] for c in commands].count("search") >= 3, commands  # entrypoint + README's
    assert {"results", "retrain"} <= {c[0] for c in commands}
    parser = exact_parser()
    for argv in commands:
        try:
            args = parser.parse_args(argv)
        except UsageError:
            pytest.fail(f"not a valid s9tune command: s9tune {shlex.join(argv)}")
        if args.command == "search":
            assert args.address == "auto", argv  # the driver runs on the head and joins its cluster
            space = image_path_in_repo(args.space)
            assert space.is_file(), f"{args.space} is not in the image: no {space}"


def test_dockerfile_ray_matches_the_project_and_the_rayjob(job: dict[str, Any]) -> None:
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        tomllib = pytest.importorskip("tomli")
    image, workdir, _ = dockerfile()
    m = re.fullmatch(r"rayproject/ray:(\d+\.\d+\.\d+)-py(\d)(\d+)-(gpu|cu\d+)", image)
    assert m, f"not a Ray GPU image: {image}"
    ray_version, python = Version(m.group(1)), Version(f"{m.group(2)}.{m.group(3)}")
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    ray_req = next(Requirement(d) for d in project["dependencies"] if Requirement(d).name == "ray")
    assert ray_version in ray_req.specifier, f"{image} outside {ray_req}"
    assert python in Requirement(f"python{project['requires-python']}").specifier
    assert job["spec"]["rayClusterSpec"]["rayVersion"] == str(ray_version)
    # the container images of both recipes are the one this Dockerfile builds
    images = {c["image"] for c in ray_containers(job)} | {load(DEPLOY / "ray-cluster.yaml")["docker"]["image"]}
    assert len(images) == 1, images
    assert workdir.startswith("/"), "image paths in the recipes are absolute"


def test_readme_lists_every_placeholder() -> None:
    used = set()
    for name in ("ray-cluster.yaml", "rayjob.yaml", "Dockerfile"):
        used |= set(re.findall(r"YOUR-[A-Z0-9]+(?:-[A-Z0-9]+)*", (DEPLOY / name).read_text()))
    listed = set(re.findall(r"`(YOUR-[A-Z0-9-]+)`", (DEPLOY / "README.md").read_text()))
    assert used and used <= listed, used - listed


# -- who can reach the cluster ----------------------------------------------------------------
def test_cluster_yaml_turns_token_authentication_on(cluster: dict[str, Any]) -> None:
    """The token goes to every node, and every `ray start` runs with it required."""
    assert cluster["file_mounts"].get("~/.ray/auth_token") == "~/.ray/auth_token"
    starts = [c for c in cluster["head_start_ray_commands"] + cluster["worker_start_ray_commands"] if "ray start" in c]
    assert len(starts) == 2
    for command in starts:
        assert re.search(r"export RAY_AUTH_MODE=token;.*ray start", command), command


def test_cluster_yaml_keeps_the_dashboard_off_other_interfaces(cluster: dict[str, Any]) -> None:
    commands = " ".join(cluster["head_start_ray_commands"] + cluster["worker_start_ray_commands"])
    # Ray's default is localhost; `ray dashboard` reaches it over SSH
    assert "--dashboard-host" not in commands and "0.0.0.0" not in commands, commands


def test_rayjob_turns_token_authentication_on(job: dict[str, Any]) -> None:
    assert job["spec"]["rayClusterSpec"]["authOptions"] == {"mode": "token"}


def test_a_dashboard_on_all_interfaces_comes_with_its_firewall(job: dict[str, Any]) -> None:
    """KubeRay binds the head's dashboard to 0.0.0.0 in the pod unless rayStartParams say
    otherwise (its submitter needs it): then the README must say what keeps it in the cluster."""
    host = job["spec"]["rayClusterSpec"]["headGroupSpec"]["rayStartParams"].get("dashboard-host", "0.0.0.0")
    if host in ("0.0.0.0", "::"):
        text = (DEPLOY / "README.md").read_text(encoding="utf-8")
        section = text.split("## Who can reach the cluster", 1)[1].split("\n## ", 1)[0]
        for needed in ("ClusterIP", "LoadBalancer", "NetworkPolicy", "0.0.0.0"):
            assert needed in section, needed
