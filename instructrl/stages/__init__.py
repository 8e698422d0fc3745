"""One module per stage, each with `run(cfg) -> Path`."""
