"""The Hetzner Cloud: the API as a target, its resources, discovery, firewalls."""
