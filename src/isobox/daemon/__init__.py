"""``isoboxd``: the Docker Engine API over the engine."""
