"""The web UI: server-rendered pages over the same services as the API (see README, "Web UI")."""
