"""The example app's own tests: its routes and jobs, with no server at all."""
