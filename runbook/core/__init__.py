"""The engine and what every step uses: plan → apply → verify, targets, resources, console."""
