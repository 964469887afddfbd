"""The fault harness's own app: one route and one job that count outside the framework.

Loaded by the processes the harness starts through `ROUTES_PACKAGE=benchmarks.faults.probe.routes`
and `JOBS_PACKAGE=benchmarks.faults.probe.jobs`, the way tests load tests/fixture_routes.
"""
