"""Entry points (thin `main()`s) and the shared library they stand on (`jobs.lib`)."""
