"""The operators' command line: `corpsale`."""
