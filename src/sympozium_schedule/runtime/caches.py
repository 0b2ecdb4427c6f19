"""What the controller knows: four informers and the indexes it decides from.

Schedules, runs, instances and memory ConfigMaps are cached by informers; on
top of them, runs by schedule and schedules by instance (so a run finishing or
an instance changing marks exactly the schedules it concerns), and per version
the parsed view of each schedule and the run template of each instance, so a
decision parses nothing that has not changed. Writes of the controller itself
are applied here at once (write-through), before any watch reports them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

from sympozium_schedule.core.decide import Decision
from sympozium_schedule.core.model import (
    LABEL_SCHEDULE,
    MEMORY_KEY,
    Kind,
    RunView,
    ScheduleView,
    memory_configmap_name,
)
from sympozium_schedule.core.runs import RunTemplate
from sympozium_schedule.ports.store import EventType, Labels, Obj, Store
from sympozium_schedule.runtime.informer import Informer, Key, key_of


class Inputs(NamedTuple):
    """What a decision about one schedule reads besides the schedule itself."""

    runs: list[RunView]
    instance: RunTemplate | None
    memory: str | None


class Caches:
    def __init__(self, store: Store, *, namespaces: tuple[str, ...] | None,
                 run_labels: Labels | None, memory_labels: Labels | None,
                 mark: Callable[[Key], None], forget: Callable[[Key, Obj], None]):
        self._mark = mark
        self._forget = forget
        self.schedules = Informer(store, Kind.SCHEDULE, namespaces=namespaces,
                                  on_change=self._on_schedule)
        self.runs = Informer(store, Kind.AGENT_RUN, namespaces=namespaces, labels=run_labels,
                             on_change=self._on_run)
        self.instances = Informer(store, Kind.INSTANCE, namespaces=namespaces,
                                  on_change=self._on_instance)
        self.memory = Informer(store, Kind.CONFIG_MAP, namespaces=namespaces, labels=memory_labels)
        self.informers = (self.schedules, self.runs, self.instances, self.memory)
        self._runs_by_schedule: dict[Key, set[str]] = {}
        self._instance_of: dict[Key, Key] = {}
        self._schedules_by_instance: dict[Key, set[Key]] = {}
        self._views: dict[Key, tuple[str, ScheduleView]] = {}
        self._run_views: dict[Key, tuple[str, RunView]] = {}
        self._templates: dict[Key, tuple[str, RunTemplate]] = {}

    # --- informer handlers: keep the indexes, mark what changed --------------------------

    def _on_schedule(self, change: EventType, obj: Obj) -> None:
        key = key_of(obj)
        old_instance = self._instance_of.pop(key, None)
        if old_instance is not None:
            self._schedules_by_instance.get(old_instance, set()).discard(key)
        if change is EventType.DELETED:
            self._views.pop(key, None)
            self._forget(key, obj)
            return
        ref = (obj.get("spec") or {}).get("instanceRef")
        if isinstance(ref, str):
            instance = (key[0], ref)
            self._instance_of[key] = instance
            self._schedules_by_instance.setdefault(instance, set()).add(key)
        self._mark(key)

    def _on_run(self, change: EventType, obj: Obj) -> None:
        key = self._index_run(change, obj)
        if key is not None:
            self._mark(key)

    def _index_run(self, change: EventType, obj: Obj) -> Key | None:
        """Keep runs-by-schedule current; returns the schedule's key."""
        meta = obj.get("metadata") or {}
        schedule = (meta.get("labels") or {}).get(LABEL_SCHEDULE)
        if not schedule:
            return None
        ns = meta.get("namespace") or "default"
        name = str(meta.get("name") or "")
        key = (ns, schedule)
        names = self._runs_by_schedule.get(key)
        if names is None:
            names = self._runs_by_schedule[key] = set()
        if change is EventType.DELETED:
            names.discard(name)
            self._run_views.pop((ns, name), None)
        else:
            names.add(name)
        return key

    def _on_instance(self, change: EventType, obj: Obj) -> None:
        if change is EventType.DELETED:
            self._templates.pop(key_of(obj), None)
        for key in list(self._schedules_by_instance.get(key_of(obj), ())):
            self._mark(key)

    # --- this process's own writes -----------------------------------------------------------

    def observe_run(self, run: Obj) -> None:
        self.runs.observe(run, notify=False)
        self._index_run(EventType.ADDED, run)

    def forget_run(self, namespace: str, name: str) -> None:
        gone = self.runs.get(namespace, name)
        self.runs.forget(namespace, name, notify=False)
        if gone is not None:
            self._index_run(EventType.DELETED, gone)

    def wrote_status(self, key: Key, written: Obj, view: ScheduleView, decision: Decision) -> None:
        """The schedule as its status write left it, and its view from the decision
        itself: the next decision about it then parses nothing."""
        self.schedules.observe(written, notify=False)
        written_meta = written.get("metadata") or {}
        if decision.status_view is None or written_meta.get("generation") != view.meta.generation:
            self._views.pop(key, None)  # the spec changed meanwhile (pauseOnFailure): parse it
            return
        # The metadata view is kept as it was (its resourceVersion is not decided on: the
        # cache's key says which version the view is of).
        self._views[key] = (str(written_meta.get("resourceVersion")),
                            ScheduleView(view.meta, view.spec, view.spec_error,
                                         decision.status_view, view.timetable))

    def forget_schedule(self, key: Key) -> None:
        self._views.pop(key, None)

    # --- what a decision reads -------------------------------------------------------------

    def view(self, key: Key, obj: Obj) -> ScheduleView:
        version = str((obj.get("metadata") or {}).get("resourceVersion"))
        cached = self._views.get(key)
        if cached is not None and cached[0] == version:
            return cached[1]
        view = ScheduleView.of(obj, previous=cached[1] if cached is not None else None)
        self._views[key] = (version, view)
        return view

    def template(self, namespace: str, name: str) -> RunTemplate | None:
        """What the instance gives every run, derived once per instance version."""
        instance = self.instances.get(namespace, name)
        if instance is None:
            return None
        version = str((instance.get("metadata") or {}).get("resourceVersion"))
        cached = self._templates.get((namespace, name))
        if cached is not None and cached[0] == version:
            return cached[1]
        template = RunTemplate.of(instance)
        self._templates[(namespace, name)] = (version, template)
        return template

    def _run_view(self, namespace: str, name: str, run: Obj) -> RunView:
        version = str((run.get("metadata") or {}).get("resourceVersion"))
        cached = self._run_views.get((namespace, name))
        if cached is not None and cached[0] == version:
            return cached[1]
        view = RunView.of(run)
        self._run_views[(namespace, name)] = (version, view)
        return view

    def inputs(self, key: Key, view: ScheduleView) -> Inputs:
        ns = key[0]
        runs = []
        for name in self._runs_by_schedule.get(key, ()):
            run = self.runs.get(ns, name)
            if run is not None:
                runs.append(self._run_view(ns, name, run))
        instance = memory = None
        if view.spec is not None:
            instance = self.template(ns, view.spec.instance_ref)
            cm = self.memory.get(ns, memory_configmap_name(view.spec.instance_ref))
            data = (cm or {}).get("data") or {}
            value = data.get(MEMORY_KEY) if isinstance(data, dict) else None
            memory = value if isinstance(value, str) else None
        return Inputs(runs, instance, memory)
