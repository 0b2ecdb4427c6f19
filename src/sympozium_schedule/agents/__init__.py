"""Agent-side programs: the demo agent the local runner starts by default,
and the ``schedule_task`` tool an agent uses to manage its own schedules."""
