"""The worker that runs the corporate sale process, and the embedded stack for development."""
