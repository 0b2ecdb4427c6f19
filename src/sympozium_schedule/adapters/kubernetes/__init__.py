"""The Kubernetes API: the production store, Events and leader election."""
