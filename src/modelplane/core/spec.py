"""Job manifests in the Kubernetes style: ``apiVersion: modelplane/v1``, ``kind``, ``metadata``, ``spec``.

A manifest is validated here once; everything downstream works on typed objects. Validation errors
name the field path (``spec.template.resources.cpu``) and the fix.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from types import MappingProxyType
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from modelplane.core.affinity import Affinity, Toleration
from modelplane.core.errors import InvalidSpec
from modelplane.core.quantity import parse_accelerators, parse_cpu_milli, parse_memory_mib
from modelplane.core.workload import PodSet, TaskRequest, Workload

API_VERSION = "modelplane/v1"
JOB_KINDS = ("TrainingJob", "InferenceDeployment", "Pipeline", "FederatedJob")
NAME_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class Metadata(_Spec):
    name: str = Field(min_length=1, max_length=63, pattern=NAME_PATTERN)
    team: str = "default"
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)


class ResourceRequest(_Spec):
    cpu: str | int | float = "1"
    memory: str | int = "1Gi"
    accelerators: str | int | float = Field(
        default=0, description="devices per task: whole (2) or a share of one device (0.5)"
    )
    accelerator_model: str | None = Field(
        default=None,
        alias="acceleratorModel",
        description="acceptable models separated by '|', e.g. 'NVIDIA-A100|V100M32'",
    )

    def to_request(self, path: str) -> TaskRequest:
        count, milli = parse_accelerators(self.accelerators, f"{path}.accelerators")
        models = tuple(m.strip() for m in (self.accelerator_model or "").split("|") if m.strip())
        return TaskRequest(
            cpu_milli=parse_cpu_milli(self.cpu, f"{path}.cpu"),
            memory_mib=parse_memory_mib(self.memory, f"{path}.memory"),
            gpu_count=count,
            gpu_milli=milli,
            gpu_models=models,
        )


class TaskTemplate(_Spec):
    """What one task runs. ``command`` is an argv list run by the backend."""

    command: Annotated[list[str], Field(min_length=1)]
    env: dict[str, str] = Field(default_factory=dict)
    working_dir: str | None = Field(default=None, alias="workingDir")
    image: str | None = Field(default=None, description="container image for the Kubernetes backend")
    resources: ResourceRequest = Field(default_factory=ResourceRequest)


class Scheduling(_Spec):
    """Placement constraints shared by every kind."""

    affinity: Affinity | None = None
    tolerations: list[Toleration] = Field(default_factory=list)
    node_selector: dict[str, str] = Field(default_factory=dict, alias="nodeSelector")
    tee: str | None = Field(default=None, description="run only on TEE nodes: 'any', 'sgx', 'tdx', 'sev-snp'")


class RestartPolicy(_Spec):
    max_restarts: int = Field(default=0, ge=0, alias="maxRestarts")


class _JobSpecBase(Scheduling):
    queue: str = Field(min_length=1)
    priority: int | None = Field(default=None, description="overrides the computed priority")
    deadline: datetime | None = None
    estimated_duration: float | None = Field(
        default=None, gt=0, alias="estimatedDurationSeconds", description="runtime estimate in seconds"
    )
    restart_policy: RestartPolicy = Field(default_factory=RestartPolicy, alias="restartPolicy")
    datasets: list[Annotated[str, Field(min_length=1, max_length=1024)]] = Field(
        default_factory=list, max_length=1000, description="dataset URIs this job reads (absolute paths or URLs); "
        "a sensitive one needs spec.tee and is refused at apply otherwise")


class ParallelismSpec(_Spec):
    """Hybrid-parallel degrees, as the seed writes them; ``modelplane plan`` recommends them."""

    data: int = Field(default=1, ge=1)
    tensor: int = Field(default=1, ge=1)
    pipeline: int = Field(default=1, ge=1)
    micro_batch_size: int = Field(default=1, ge=1, alias="microBatchSize")

    @property
    def world_size(self) -> int:
        return self.data * self.tensor * self.pipeline


PRIVACY_SPEC_ENV = "MODELPLANE_PRIVACY_SPEC"
"""The job controller hands ``spec.privacy`` to every rank as JSON here; ``modelplane.train.make_private`` reads it."""


class DifferentialPrivacySpec(_Spec):
    """DP-SGD (Opacus): per-example clipping to ``maxGradNorm`` plus Gaussian noise, the budget
    epsilon at ``delta`` tracked by an accountant and reported each epoch; training stops before an
    epoch that would spend more than ``targetEpsilon``. Without ``noiseMultiplier`` the noise is
    calibrated so that exactly ``epochs`` epochs spend ``targetEpsilon``."""

    target_epsilon: float = Field(alias="targetEpsilon", description="the budget: epsilon never exceeds it")
    delta: float = Field(description="probability of failure of the epsilon guarantee; below 1/training examples")
    max_grad_norm: float = Field(default=1.0, alias="maxGradNorm", description="per-example gradient clipping bound")
    noise_multiplier: float | None = Field(default=None, alias="noiseMultiplier",
                                           description="noise std / maxGradNorm; omitted: calibrated from epochs")
    epochs: int | None = Field(default=None, description="planned epochs (needed without noiseMultiplier)")
    accountant: Literal["prv", "rdp", "gdp"] = "prv"

    @model_validator(mode="after")
    def _check(self) -> DifferentialPrivacySpec:
        # Plain comparisons instead of Field(gt=...) so that each message says what to write.
        if not self.target_epsilon > 0:
            raise ValueError(f"targetEpsilon must be > 0, got {self.target_epsilon} (typical budgets are 1-10)")
        if not 0 < self.delta < 1:
            raise ValueError(f"delta must be in (0, 1), got {self.delta}; use less than 1/number of training "
                             "examples, e.g. 1e-5")
        if not self.max_grad_norm > 0:
            raise ValueError(f"maxGradNorm must be > 0, got {self.max_grad_norm} (e.g. 1.0)")
        if self.noise_multiplier is not None and not self.noise_multiplier > 0:
            raise ValueError(f"noiseMultiplier must be > 0, got {self.noise_multiplier} (typical values 0.5-2), "
                             "or leave it out to calibrate it from targetEpsilon and epochs")
        if self.epochs is not None and self.epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {self.epochs}")
        if self.noise_multiplier is None and self.epochs is None:
            raise ValueError("set epochs (the noise is then calibrated so that this many epochs spend "
                             "targetEpsilon) or noiseMultiplier (training stops when the budget runs out)")
        return self


class AdversarialSpec(_Spec):
    """Adversarial training (Madry et al.): each batch is also attacked inside an L-infinity ball of
    radius ``epsilon`` and the loss mixes clean and attacked examples, ``ratio`` the attacked share."""

    method: Literal["fgsm", "pgd"]
    epsilon: float = Field(description="L-infinity radius of the attack, in input units")
    alpha: float | None = Field(default=None, description="PGD step size; default 2.5 x epsilon / steps")
    steps: int | None = Field(default=None, description="PGD iterations; default 7")
    ratio: float = Field(default=0.5, description="share of the loss from attacked examples, in (0, 1]")

    @model_validator(mode="after")
    def _check(self) -> AdversarialSpec:
        if not self.epsilon > 0:
            raise ValueError(f"epsilon must be > 0, got {self.epsilon} (e.g. 0.1 for inputs in [0, 1])")
        if not 0 < self.ratio <= 1:
            raise ValueError(f"ratio must be in (0, 1], got {self.ratio} (0.5: half clean, half attacked)")
        if self.method == "fgsm" and (self.alpha is not None or self.steps is not None):
            raise ValueError("alpha and steps apply to method: pgd only (FGSM takes one step of size epsilon); "
                             "remove them or use method: pgd")
        if self.alpha is not None and not self.alpha > 0:
            raise ValueError(f"alpha must be > 0, got {self.alpha}")
        if self.steps is not None and self.steps < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps}")
        return self


class PrivacySpec(_Spec):
    """Privacy options of a TrainingJob; the training script applies them with
    ``modelplane.train.make_private`` (a no-op when the job has none)."""

    differential_privacy: DifferentialPrivacySpec | None = Field(default=None, alias="differentialPrivacy")
    adversarial: AdversarialSpec | None = None

    @model_validator(mode="after")
    def _not_empty(self) -> PrivacySpec:
        if self.differential_privacy is None and self.adversarial is None:
            raise ValueError("privacy needs differentialPrivacy and/or adversarial; remove the empty block")
        return self


class TrainingJobSpec(_JobSpecBase):
    replicas: int = Field(default=1, ge=1, le=100_000)
    template: TaskTemplate
    gang: bool = True
    parallelism: ParallelismSpec | None = None
    privacy: PrivacySpec | None = None

    @model_validator(mode="after")
    def _privacy_single_rank(self) -> TrainingJobSpec:
        # Multi-rank DP-SGD needs Opacus' distributed wrapper and a shared accountant; refuse rather
        # than report an epsilon that does not hold.
        if self.privacy is not None and self.privacy.differential_privacy is not None and self.replicas != 1:
            raise ValueError(f"privacy.differentialPrivacy runs with replicas: 1 only (got {self.replicas}); "
                             "set replicas: 1")
        return self

    @model_validator(mode="after")
    def _parallelism_matches_ranks(self) -> TrainingJobSpec:
        p = self.parallelism
        if p is not None and p.world_size != self.replicas:
            raise ValueError(
                f"parallelism data x tensor x pipeline = {p.data} x {p.tensor} x {p.pipeline} = {p.world_size} "
                f"must equal replicas ({self.replicas}), one rank per replica"
            )
        return self


class AutoscalingSpec(_Spec):
    min_replicas: int = Field(default=1, ge=0, alias="minReplicas")
    max_replicas: int = Field(default=1, ge=1, alias="maxReplicas")
    target_concurrency: float = Field(default=2.0, gt=0, alias="targetConcurrency")


class GuardsSpec(_Spec):
    """Guards the gateway runs on this deployment's requests (``serve/guards``): an input filter
    against prompt injection and an output monitor for personal data and deny-listed terms."""

    input: list[Literal["injection"]] = Field(default_factory=list)
    output: list[Literal["pii"]] = Field(default_factory=list)
    pii_engine: Literal["presidio", "regex"] = Field(default="presidio", alias="piiEngine")
    pii_action: Literal["redact", "flag", "block"] = Field(default="redact", alias="piiAction")
    deny_list: list[str] = Field(default_factory=list, alias="denyList")


def _rollout_bound(value: int | str, field: str) -> int | str:
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"{field} must be >= 0, got {value}")
        return value
    text = value.strip()
    if text.isdigit():
        return int(text)
    if not (text.endswith("%") and text[:-1].isdigit() and int(text[:-1]) <= 100):
        raise ValueError(f"{field} must be a count (1) or a percentage of the desired replicas (25%), got {value!r}")
    return text


class RolloutStrategy(_Spec):
    """How a changed deployment replaces its replicas (Kubernetes' RollingUpdate): while new
    replicas start, at most ``maxSurge`` above the desired count; while old ones drain, at most
    ``maxUnavailable`` below it. Counts or percentages of the desired count (surge rounds up,
    unavailable down). A rollout that has not finished after ``progressDeadlineSeconds`` stops and
    the old replicas keep serving."""

    max_surge: int | str = Field(default=1, alias="maxSurge")
    max_unavailable: int | str = Field(default=0, alias="maxUnavailable")
    progress_deadline_s: float = Field(default=600.0, gt=0, alias="progressDeadlineSeconds")

    @model_validator(mode="after")
    def _can_progress(self) -> RolloutStrategy:
        self.max_surge = _rollout_bound(self.max_surge, "maxSurge")
        self.max_unavailable = _rollout_bound(self.max_unavailable, "maxUnavailable")
        if self.max_surge in (0, "0%") and self.max_unavailable in (0, "0%"):
            raise ValueError("maxSurge and maxUnavailable cannot both be 0: a rollout could never replace a replica")
        return self

    def bounds(self, desired: int) -> tuple[int, int]:
        """(surge, unavailable) as replica counts for ``desired`` replicas; never both zero."""
        def count(v: int | str, round_up: bool) -> int:
            if isinstance(v, int):
                return v
            share = int(v[:-1]) * desired
            return -(-share // 100) if round_up else share // 100
        surge, unavailable = count(self.max_surge, True), count(self.max_unavailable, False)
        return (1, 0) if surge == unavailable == 0 else (surge, unavailable)


class InferenceDeploymentSpec(_JobSpecBase):
    model: str = Field(min_length=1, description="model URI or registry name:version")
    replicas: int = Field(default=1, ge=0, le=10_000)
    template: TaskTemplate
    autoscaling: AutoscalingSpec | None = None
    guards: GuardsSpec | None = None
    strategy: RolloutStrategy = Field(default_factory=RolloutStrategy)


PIPELINE_SPEC_ENV = "MODELPLANE_PIPELINE_SPEC"
PIPELINE_COMMAND = ("python", "-m", "modelplane.data.pipeline", "run", "--from-env")


class PipelineSpec(_JobSpecBase):
    template: TaskTemplate = Field(description="default: run spec.pipeline with modelplane.data.pipeline")
    workers: int = Field(default=1, ge=1)
    pipeline: dict[str, Any] = Field(
        default_factory=dict, description="the pipeline definition (sources, schema, transforms, sinks, "
        "deadLetter, options); see data/README.md")

    @model_validator(mode="before")
    @classmethod
    def _default_template(cls, data: Any) -> Any:
        # Without a template the task runs the definition itself, handed over as JSON in the env
        # (the task does not see the manifest). Only plain values reach here, so json is enough.
        if isinstance(data, dict) and "template" not in data:
            import json

            body = data.get("pipeline") or {}
            data = {**data, "template": {"command": list(PIPELINE_COMMAND),
                                         "env": {PIPELINE_SPEC_ENV: json.dumps(body, sort_keys=True, default=str)}}}
        return data


class PartySpec(_Spec):
    name: str = Field(min_length=1, max_length=63, pattern=NAME_PATTERN)
    template: TaskTemplate
    node_selector: dict[str, str] = Field(default_factory=dict, alias="nodeSelector")


class FederatedJobSpec(_JobSpecBase):
    server: TaskTemplate
    parties: Annotated[list[PartySpec], Field(min_length=2)]
    rounds: int = Field(default=3, ge=1)


class _ManifestBase(_Spec):
    api_version: Literal["modelplane/v1"] = Field(alias="apiVersion")
    metadata: Metadata


class TrainingJob(_ManifestBase):
    kind: Literal["TrainingJob"]
    spec: TrainingJobSpec


class InferenceDeployment(_ManifestBase):
    kind: Literal["InferenceDeployment"]
    spec: InferenceDeploymentSpec


class Pipeline(_ManifestBase):
    kind: Literal["Pipeline"]
    spec: PipelineSpec


class FederatedJob(_ManifestBase):
    kind: Literal["FederatedJob"]
    spec: FederatedJobSpec


Manifest = TrainingJob | InferenceDeployment | Pipeline | FederatedJob
_BY_KIND: dict[str, type[_ManifestBase]] = {
    "TrainingJob": TrainingJob,
    "InferenceDeployment": InferenceDeployment,
    "Pipeline": Pipeline,
    "FederatedJob": FederatedJob,
}


def invalid_spec_from(exc: ValidationError, prefix: str = "") -> InvalidSpec:
    """The first pydantic error as an InvalidSpec naming the field path and a fix."""
    err = exc.errors()[0]
    path = prefix + ".".join(str(p) for p in err["loc"]) or "(document)"
    msg = err["msg"]
    if err["type"] == "extra_forbidden":
        hint = "remove the field or check its spelling (field names are camelCase, as in Kubernetes)"
    elif err["type"] == "missing":
        hint = "add the field"
    else:
        hint = "see the examples/ folder for a valid manifest"
    more = len(exc.errors()) - 1
    suffix = f" (and {more} more problem{'s' if more > 1 else ''})" if more > 0 else ""
    return InvalidSpec(f"{path}: {msg}{suffix}", hint=hint, field=path)


def parse_manifest(doc: Any) -> Manifest:
    """Validate one manifest document (a mapping read from YAML or JSON)."""
    if not isinstance(doc, Mapping):
        raise InvalidSpec(
            "a manifest must be a mapping with apiVersion, kind, metadata and spec",
            hint="start the file with 'apiVersion: modelplane/v1' and 'kind: TrainingJob'",
            field="(document)",
        )
    if doc.get("apiVersion") != API_VERSION:
        raise InvalidSpec(
            f"apiVersion: expected {API_VERSION!r}, got {doc.get('apiVersion')!r}",
            hint=f"set 'apiVersion: {API_VERSION}'",
            field="apiVersion",
        )
    kind = doc.get("kind")
    cls = _BY_KIND.get(str(kind))
    if cls is None:
        raise InvalidSpec(
            f"kind: unknown kind {kind!r}",
            hint=f"use one of: {', '.join(JOB_KINDS)}",
            field="kind",
        )
    try:
        manifest = cls.model_validate(dict(doc))
    except ValidationError as exc:
        raise invalid_spec_from(exc) from None
    # Quantities are checked now, so a bad one is refused at submission and never reaches a controller.
    to_workload(manifest, job_id="validate", created_at=0.0)  # type: ignore[arg-type]
    return manifest  # type: ignore[return-value]


def _pod_set(name: str, count: int, tmpl: TaskTemplate, sched: Scheduling, path: str,
             extra_selector: Mapping[str, str] | None = None) -> PodSet:
    selector = dict(sched.node_selector)
    if extra_selector:
        selector.update(extra_selector)
    return PodSet(
        name=name,
        count=count,
        request=tmpl.resources.to_request(f"{path}.resources"),
        affinity=sched.affinity.node_affinity if sched.affinity else None,
        tolerations=tuple(sched.tolerations),
        node_selector=MappingProxyType(selector),
        tee=sched.tee,
    )


def to_workload(manifest: Manifest, job_id: str, created_at: float, priority: int = 0) -> Workload:
    """Turn a manifest into the scheduler's Workload (pod sets, gang, spread)."""
    spec = manifest.spec
    pod_sets: list[PodSet]
    gang = True
    spread = False
    if isinstance(manifest, TrainingJob):
        s = manifest.spec
        pod_sets = [_pod_set("worker", s.replicas, s.template, s, "spec.template")]
        gang = s.gang
    elif isinstance(manifest, InferenceDeployment):
        d = manifest.spec
        pod_sets = [_pod_set("replica", d.replicas, d.template, d, "spec.template")] if d.replicas else []
        gang = False
        spread = True
    elif isinstance(manifest, Pipeline):
        p = manifest.spec
        pod_sets = [_pod_set("runner", p.workers, p.template, p, "spec.template")]
    else:
        f = manifest.spec
        pod_sets = [_pod_set("server", 1, f.server, f, "spec.server")]
        for i, party in enumerate(f.parties):
            pod_sets.append(
                _pod_set(f"party-{party.name}", 1, party.template, f, f"spec.parties.{i}.template", party.node_selector)
            )
    deadline = spec.deadline.timestamp() if spec.deadline else None
    return Workload(
        job_id=job_id,
        name=manifest.metadata.name,
        queue=spec.queue,
        kind=manifest.kind,
        pod_sets=tuple(pod_sets),
        priority=priority,
        gang=gang,
        spread=spread,
        created_at=created_at,
        estimated_duration_s=spec.estimated_duration,
        deadline=deadline,
        team=manifest.metadata.team,
    )


def template_for(manifest: Manifest, pod_set: str) -> TaskTemplate:
    """The task template a pod set of this manifest runs."""
    if isinstance(manifest, FederatedJob):
        if pod_set == "server":
            return manifest.spec.server
        for party in manifest.spec.parties:
            if pod_set == f"party-{party.name}":
                return party.template
        raise KeyError(pod_set)
    return manifest.spec.template
