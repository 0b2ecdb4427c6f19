"""The Kubernetes store's watch asks for bookmarks: while nothing it watches changes, the API
server's BOOKMARK events keep its resourceVersion current (the test cluster's etcd reports its
progress every 2 s, where a cluster's does every 10 min), so the watch it re-opens when the
server ends one (every --min-request-timeout) resumes from a recent version, not from the
version of the last change it saw (which a busy cluster's watch cache has long forgotten:
410 Gone, then a relist of everything)."""

from __future__ import annotations

import asyncio
import contextlib
import urllib.parse
from pathlib import Path

from sympozium_schedule.adapters.kubernetes.store import KubernetesStore
from sympozium_schedule.core.model import Kind
from tests import support
from tests.k8s.conftest import SERVICE_ACCOUNT, Cluster, namespace_for
from tests.kube.controlplane import MIN_REQUEST_TIMEOUT


def version_asked(uri: str) -> int:
    return int(urllib.parse.parse_qs(urllib.parse.urlparse(uri).query)["resourceVersion"][0])


async def test_a_reopened_watch_resumes_from_the_last_bookmark(cluster: Cluster, tmp_path: Path) -> None:
    quiet = namespace_for("quiet")
    busy = namespace_for("busy")
    api = cluster.api()
    api.namespace(quiet)
    api.namespace(busy)
    store = KubernetesStore.connect(cluster.kubeconfig(tmp_path / "kubeconfig", user=SERVICE_ACCOUNT))
    mark = cluster.mark()
    listing = await store.list(Kind.SCHEDULE, namespace=quiet)
    events: list[object] = []

    async def watch() -> None:
        async for event in store.watch(Kind.SCHEDULE, resource_version=listing.resource_version,
                                       namespace=quiet):
            events.append(event)

    task = asyncio.create_task(watch())
    try:
        # Elsewhere the cluster moves on; nothing in the watched namespace changes.
        for n in range(5):
            await asyncio.to_thread(api.create, {"apiVersion": "v1", "kind": "ConfigMap",
                                                 "metadata": {"name": f"c{n}", "namespace": busy}})

        def watches() -> list[int]:
            return [version_asked(c.uri) for c in cluster.calls(user=SERVICE_ACCOUNT, since=mark)
                    if c.verb == "watch" and c.namespace == quiet]

        asked = await support.eventually(lambda: (w := watches())[1:] and w, interval=0.2,
                                         timeout=2 * MIN_REQUEST_TIMEOUT + 20,
                                         what="the server to end the watch and lightkube to re-open it")
        assert asked[0] == int(listing.resource_version)
        assert asked[1] > asked[0], "re-opened from the last bookmark's version, not the first one"
        assert events == []
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await store.close()
