"""Benchmarks and harnesses: each module a thin ``main()`` over the project's own functions, run by a make target
(see bench/README.md). Not part of the product: jobs/ holds what a user runs."""
