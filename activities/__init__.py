"""Temporal activities of the corporate sale process and the PostgreSQL they write to."""
