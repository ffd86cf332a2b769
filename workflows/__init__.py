"""The corporate sale process as Temporal workflows, and the data they interpret."""
