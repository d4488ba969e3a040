"""Simulated Hetzner Cloud API for the namespace lab (servers, networks, floating IPs, actions).

Public API: `state.seed`, `state.SeedServer`, `state.SeedFloatingIP`, `server.FakeCloud`,
`server.start`, `server.Listener`, `server.Running`; CLI `python -m lab.fakecloud`.
"""
