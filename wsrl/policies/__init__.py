"""Reference policies: the published baselines a learned policy has to beat, by registry name.

Every policy implements :class:`wsrl.pipeline.policy.Policy` (``name``, ``reset``, ``decide``) on
``[hosts, guests]`` arrays and runs through the one control stack (allocator and rails,
:class:`wsrl.pipeline.control.ControlStack`; :func:`make_stack` builds it with its fallback).
``docs/policies.md`` describes each one, its source and how it maps onto wsrl's snapshots.

========================  ================================================================
``static``                no overcommit: provisioned sizes
``senpai``                Meta's Senpai script (TMO, ASPLOS'22): PSI-driven ``memory.high``
``senpai-reclaim``        oomd's Senpai, immediate-backoff mode: 1 % reclaim while PSI is low
``far-memory``            Google far memory (ASPLOS'19): cold age threshold under a promotion SLO
``wmo``                   WSR benchmark policy: every 40 s reclaim memory idle for over 10 s
``vpa``                   Kubernetes VPA recommender: p90 of window peaks + 15 %
``esx-idle-tax``          VMware ESX (OSDI'02): share-based allocation with an idle memory tax
``oracle``                simulation only: future demand spending half the SLO budget, the upper bound
``oracle-zero``           simulation only: next-step demand, the upper bound with zero refaults
========================  ================================================================

Teachers are registered too, for ``wsrl bc --policy NAME``, but are not reference policies (no card
or leaderboard measures a learned policy against them):

========================  ================================================================
``oracle-steady``         simulation only: the oracle on steady guests, vpa's hold on bursty ones
========================  ================================================================
"""

from __future__ import annotations

from collections.abc import Callable

from wsrl.errors import WsrlError
from wsrl.pipeline.control import ControlSpec, ControlStack
from wsrl.pipeline.policy import Policy
from wsrl.policies.esx import EsxIdleTaxPolicy
from wsrl.policies.far_memory import FarMemoryPolicy
from wsrl.policies.oracle import OraclePolicy, ZeroRefaultOraclePolicy
from wsrl.policies.senpai import SenpaiPolicy, SenpaiReclaimPolicy
from wsrl.policies.static import StaticPolicy
from wsrl.policies.teacher import SteadyOracleTeacher
from wsrl.policies.vpa import VpaPolicy
from wsrl.policies.wmo import WmoPolicy

_REFERENCES: dict[str, Callable[..., Policy]] = {
    "static": StaticPolicy,
    "senpai": SenpaiPolicy,
    "senpai-reclaim": SenpaiReclaimPolicy,
    "far-memory": FarMemoryPolicy,
    "wmo": WmoPolicy,
    "vpa": VpaPolicy,
    "esx-idle-tax": EsxIdleTaxPolicy,
    "oracle": OraclePolicy,
    "oracle-zero": ZeroRefaultOraclePolicy,
}
TEACHER_POLICIES: dict[str, Callable[..., Policy]] = {"oracle-steady": SteadyOracleTeacher}
"""Policies that exist to be cloned (``wsrl bc``), not to be measured against."""
POLICIES: dict[str, Callable[..., Policy]] = {**_REFERENCES, **TEACHER_POLICIES}
"""Registry: policy name -> factory taking the policy's keyword parameters."""
REFERENCE_POLICIES: tuple[str, ...] = tuple(_REFERENCES)
"""The published controllers (and the oracle bound) every learned policy is measured against."""


def make_policy(name: str, **params: object) -> Policy:
    """A new policy by registry name, with keyword parameters overriding its published defaults.

    Raises:
        WsrlError: the name is not registered (the message lists the known ones), or a parameter
            is unknown or out of range.

    """
    factory = POLICIES.get(name)
    if factory is None:
        known = ", ".join(sorted(POLICIES))
        raise WsrlError(f"unknown policy {name!r}; known policies: {known}")
    try:
        return factory(**params)
    except (TypeError, ValueError) as exc:
        raise WsrlError(f"policy {name!r}: {exc}") from None


def make_stack(policy: Policy | str, spec: ControlSpec | None = None) -> ControlStack:
    """The one control stack for ``policy`` (an object or a registry name), its fallback from ``spec``.

    Raises:
        WsrlError: an unknown policy or fallback name, or a bad parameter.

    """
    spec = spec or ControlSpec()
    acting = make_policy(policy) if isinstance(policy, str) else policy
    return ControlStack(acting, make_policy(spec.fallback, **dict(spec.fallback_params)), spec)


__all__ = [
    "POLICIES",
    "REFERENCE_POLICIES",
    "TEACHER_POLICIES",
    "EsxIdleTaxPolicy",
    "FarMemoryPolicy",
    "OraclePolicy",
    "SenpaiPolicy",
    "SenpaiReclaimPolicy",
    "StaticPolicy",
    "SteadyOracleTeacher",
    "VpaPolicy",
    "WmoPolicy",
    "ZeroRefaultOraclePolicy",
    "make_policy",
    "make_stack",
]
