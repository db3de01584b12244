"""Accelerator families: one small class each, as Ray's AcceleratorManager does.

A family names the resource its Kubernetes device plugin advertises, the variable that limits a
process to its devices, and which accelerator model names belong to it. Adding a vendor is adding
a class and registering it.
"""

from __future__ import annotations

from dataclasses import dataclass

from modelplane.core.errors import InvalidSpec


@dataclass(frozen=True)
class AcceleratorFamily:
    """A vendor's accelerator family."""

    name: str
    vendor: str
    resource_key: str
    visibility_env: str
    model_prefixes: tuple[str, ...]
    supports_fractions: bool = True
    extra_visibility_envs: tuple[str, ...] = ()

    def matches(self, model: str) -> bool:
        low = model.lower()
        return any(low.startswith(p.lower()) for p in self.model_prefixes)

    def visibility(self, device_indices: list[int]) -> dict[str, str]:
        """Environment that restricts a process to the given devices of this family."""
        value = ",".join(str(i) for i in device_indices)
        env = {self.visibility_env: value}
        for extra in self.extra_visibility_envs:
            env[extra] = value
        return env


NVIDIA = AcceleratorFamily(
    name="nvidia",
    vendor="NVIDIA",
    resource_key="nvidia.com/gpu",
    visibility_env="CUDA_VISIBLE_DEVICES",
    # openb trace models (V100M16, P100, T4, A10, G2, G3) are NVIDIA parts.
    model_prefixes=("NVIDIA", "A100", "H100", "H200", "V100", "P100", "T4", "A10", "G2", "G3", "L4", "L40"),
)
AMD = AcceleratorFamily(
    name="amd",
    vendor="AMD",
    resource_key="amd.com/gpu",
    visibility_env="HIP_VISIBLE_DEVICES",
    extra_visibility_envs=("ROCR_VISIBLE_DEVICES",),
    model_prefixes=("AMD", "MI"),
)
ASCEND = AcceleratorFamily(
    name="ascend",
    vendor="Huawei",
    resource_key="huawei.com/Ascend910",
    visibility_env="ASCEND_RT_VISIBLE_DEVICES",
    model_prefixes=("Ascend",),
    supports_fractions=False,
)
GAUDI = AcceleratorFamily(
    name="gaudi",
    vendor="Intel",
    resource_key="habana.ai/gaudi",
    visibility_env="HABANA_VISIBLE_MODULES",
    model_prefixes=("Gaudi", "Intel-Gaudi", "HL-"),
    supports_fractions=False,
)

_FAMILIES: dict[str, AcceleratorFamily] = {}


def register_family(family: AcceleratorFamily) -> AcceleratorFamily:
    _FAMILIES[family.name] = family
    return family


for _f in (NVIDIA, AMD, ASCEND, GAUDI):
    register_family(_f)


def families() -> list[AcceleratorFamily]:
    return list(_FAMILIES.values())


def family_by_name(name: str) -> AcceleratorFamily:
    try:
        return _FAMILIES[name]
    except KeyError:
        raise InvalidSpec(
            f"unknown accelerator family {name!r}",
            hint=f"use one of: {', '.join(sorted(_FAMILIES))}",
            field="family",
        ) from None


def family_of_model(model: str) -> AcceleratorFamily:
    """The family an accelerator model belongs to; unknown model names are NVIDIA's by default.

    Checked longest prefix first, so that 'AMD-MI250' is AMD and not caught by a shorter rule.
    """
    best: tuple[int, AcceleratorFamily] | None = None
    for fam in _FAMILIES.values():
        for prefix in fam.model_prefixes:
            if model.lower().startswith(prefix.lower()) and (best is None or len(prefix) > best[0]):
                best = (len(prefix), fam)
    return best[1] if best else NVIDIA


def family_of_resource_key(key: str) -> AcceleratorFamily | None:
    for fam in _FAMILIES.values():
        if fam.resource_key == key:
            return fam
    return None
