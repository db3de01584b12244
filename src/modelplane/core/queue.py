"""Team queues: nominal quota per accelerator model, cohorts that lend idle quota, queue kinds."""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field, field_validator

ANY_MODEL = "*"


class QueueKind(StrEnum):
    TRAINING = "training"  # reserved: an admitted run keeps its resources
    INFERENCE = "inference"  # elastic: replicas come and go
    BATCH = "batch"  # preemptible, may run on spot


class QueueSpec(BaseModel):
    """A queue as written in YAML or sent to the API.

    ``quota`` and ``borrowingLimit`` count accelerators (0.5 = half a device) per accelerator model
    ("resource flavor" in Kueue's words); ``*`` stands for any model not named.
    """

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    name: str = Field(min_length=1, max_length=63, pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    kind: QueueKind = QueueKind.BATCH
    team: str = "default"
    cohort: str | None = None
    quota: dict[str, float] = Field(default_factory=dict)
    borrowing_limit: dict[str, float] | None = Field(default=None, alias="borrowingLimit")
    lending_limit: dict[str, float] | None = Field(default=None, alias="lendingLimit")
    priority: int = Field(default=0, description="added to every job's priority in this queue")
    weight: float = Field(default=1.0, gt=0, description="fair-share weight inside the cohort")

    @field_validator("quota", "borrowing_limit", "lending_limit")
    @classmethod
    def _non_negative(cls, v: dict[str, float] | None) -> dict[str, float] | None:
        if v is not None:
            for model, amount in v.items():
                if amount < 0:
                    raise ValueError(f"{model}: must not be negative, got {amount}")
        return v

    def quota_milli(self) -> dict[str, int]:
        return {m: round(v * 1000) for m, v in self.quota.items()}

    def borrowing_limit_milli(self) -> dict[str, int] | None:
        if self.borrowing_limit is None:
            return None
        return {m: round(v * 1000) for m, v in self.borrowing_limit.items()}

    def lending_limit_milli(self) -> dict[str, int] | None:
        if self.lending_limit is None:
            return None
        return {m: round(v * 1000) for m, v in self.lending_limit.items()}
