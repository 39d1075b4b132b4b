"""The ``jupyterhub:`` section of the config file: the budget and limits each hub user's
key gets, and per hub group a key group with its own.

    jupyterhub:
      user:                 # every hub user's own key
        max_budget: 5.00
        budget_duration: monthly
        rpm: 60
      groups:               # hub group -> key group "hub:<group>", shared by its members
        students:
          max_budget: 200.00
          budget_duration: monthly
          user: {max_budget: 2.00}   # members' own keys: these instead of `user`

A user in several configured groups joins the first one listed.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from conduit_tornado.core.schemas import BudgetDuration, PositiveInt, Strict, Usd
from conduit_tornado.core.validation import Problem, first_problem

KEY_PREFIX = "hub:"  # key and key group names: "hub:<user>", "hub:<group>"


class PolicyError(Exception):
    pass


class Limits(Strict):
    rpm: PositiveInt | None = None
    rpd: PositiveInt | None = None
    tpm: PositiveInt | None = None
    max_parallel: PositiveInt | None = None
    max_budget: Usd | None = None
    budget_duration: BudgetDuration | None = None


class UserLimits(Limits):
    """A user's own key: the group limits and which models it may call."""

    allowed_models: list[str] | None = None


class GroupPolicy(Limits):
    user: UserLimits | None = None


class HubPolicy(Strict):
    user: UserLimits = UserLimits()
    groups: dict[str, GroupPolicy] = {}

    def group_of(self, hub_groups: list[str]) -> str | None:
        """The configured hub group a user with these hub groups belongs to (the first
        listed in the config), or None."""
        member = set(hub_groups)
        return next((name for name in self.groups if name in member), None)

    def user_limits(self, group: str | None) -> UserLimits:
        if group is not None:
            own = self.groups[group].user
            if own is not None:
                return own
        return self.user


def load_policy(path: Path | None) -> HubPolicy:
    """The ``jupyterhub`` section of the config file at ``path`` (none: the defaults,
    keys with no budget or limits of their own)."""
    if path is None:
        return HubPolicy()
    text = path.read_text(encoding="utf-8")
    raw: Any = tomllib.loads(text) if path.suffix == ".toml" else yaml.safe_load(text)
    section = (raw or {}).get("jupyterhub") if isinstance(raw, dict) else None
    try:
        return HubPolicy.model_validate(section or {})
    except ValidationError as exc:
        problem = first_problem(exc, HubPolicy)
        where = ".".join(p for p in ("jupyterhub", problem.param) if p)
        raise PolicyError(f"{path}: {Problem(where, problem.text, False).message}") from None
