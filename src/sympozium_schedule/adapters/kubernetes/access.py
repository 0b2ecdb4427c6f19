"""TokenReview and SubjectAccessReview: asking the cluster who a token belongs to and
whether that person may do something, so the console never does what kubectl would not.

The ServiceAccount needs ``create`` on ``tokenreviews.authentication.k8s.io`` and
``subjectaccessreviews.authorization.k8s.io`` (what the built-in
``system:auth-delegator`` ClusterRole grants).
"""

from __future__ import annotations

from lightkube import AsyncClient
from lightkube.core.exceptions import ApiError
from lightkube.models.authentication_v1 import TokenReviewSpec
from lightkube.models.authorization_v1 import ResourceAttributes, SubjectAccessReviewSpec
from lightkube.resources.authentication_v1 import TokenReview
from lightkube.resources.authorization_v1 import SubjectAccessReview

from sympozium_schedule.ports.access import Check, Principal, Review


class AccessReviews:
    def __init__(self, client: AsyncClient):
        self.client = client

    async def review_token(self, token: str) -> Review:
        try:
            done = await self.client.create(TokenReview(spec=TokenReviewSpec(token=token)))
        except ApiError as exc:
            raise RuntimeError(f"TokenReview failed: {exc.status.message or exc.status.code} "
                               "(the ServiceAccount needs create on tokenreviews)") from exc
        status = done.status
        if status is None or not status.authenticated or status.user is None:
            return Review(False, error=(status.error or "") if status is not None else "")
        user = status.user
        return Review(True, Principal(
            name=user.username or "", groups=tuple(user.groups or ()), uid=user.uid or "",
            extra={k: tuple(v) for k, v in (user.extra or {}).items()}))

    async def may(self, who: Principal, check: Check) -> tuple[bool, str]:
        attributes = ResourceAttributes(
            verb=check.verb, group=check.group, resource=check.resource,
            subresource=check.subresource or None, namespace=check.namespace or None,
            name=check.name or None)
        review = SubjectAccessReview(spec=SubjectAccessReviewSpec(
            user=who.name, groups=list(who.groups), uid=who.uid or None,
            extra={k: list(v) for k, v in who.extra.items()} or None,
            resourceAttributes=attributes))
        try:
            done = await self.client.create(review)
        except ApiError as exc:
            raise RuntimeError(f"SubjectAccessReview failed: {exc.status.message or exc.status.code} "
                               "(the ServiceAccount needs create on subjectaccessreviews)") from exc
        status = done.status
        if status is None:
            return False, "no answer from the authorizer"
        return bool(status.allowed) and not bool(status.denied), status.reason or ""
