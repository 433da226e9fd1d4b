"""Small helpers for demos and tests; no layer imports them."""
