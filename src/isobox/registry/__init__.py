"""OCI distribution client: pull into the content store, push from it."""
