"""NATS JetStream: the event bus between IPC bridges and the schedule router."""
