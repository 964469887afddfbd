"""Job classes for the queue tests (set JOBS_PACKAGE=tests.jobs_fixture)."""
