"""End-to-end self-scheduling: the schedule_task tool, a real NATS server, the IPC
bridge and the Schedule Router, against a SQLite store."""
