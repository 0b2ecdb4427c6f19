"""Access reviews: who a bearer token names, and whether they may do something.

The console's Kubernetes mode asks the cluster both questions (TokenReview and
SubjectAccessReview, in adapters.kubernetes.access) so that it never lets a
person do what kubectl would not. These plain values are what crosses the port.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol


@dataclass(frozen=True, slots=True)
class Principal:
    name: str
    groups: tuple[str, ...] = ()
    uid: str = ""
    extra: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    def key(self) -> tuple[object, ...]:
        return (self.name, self.uid, self.groups, tuple(sorted(self.extra.items())))


@dataclass(frozen=True, slots=True)
class Check:
    """One request as Kubernetes RBAC sees it."""

    verb: str  # get, list, watch, create, patch, delete
    resource: str  # the plural: sympoziumschedules, agentruns, ...
    group: str = "sympozium.ai"
    namespace: str | None = None  # None: every namespace
    name: str | None = None
    subresource: str = ""

    @property
    def mutating(self) -> bool:
        return self.verb in ("create", "update", "patch", "delete")

    def __str__(self) -> str:
        what = self.resource + (f"/{self.subresource}" if self.subresource else "")
        named = f" {self.name!r}" if self.name else ""
        where = f' in namespace "{self.namespace}"' if self.namespace else " in every namespace"
        return f"{self.verb} {what}{named}{where}"


@dataclass(frozen=True, slots=True)
class Review:
    """What the cluster said about a token."""

    authenticated: bool
    user: Principal | None = None
    error: str = ""


class Reviewer(Protocol):
    async def review_token(self, token: str) -> Review: ...

    async def may(self, who: Principal, check: Check) -> tuple[bool, str]:
        """Whether ``who`` may do ``check``, and the authorizer's reason."""
        ...
