"""The engine: Docker semantics over images, runtimes and networks; the only orchestrator."""
