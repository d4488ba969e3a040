"""What is rendered onto hosts: the files' contents from the inventory (pure, no host access)."""
