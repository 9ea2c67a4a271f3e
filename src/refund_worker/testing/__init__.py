"""Support for running refund-worker under test: the fault run's machinery (``faults``), used by
the end-to-end tests and by ``bench/fault_run.py`` alike. Not imported by the worker itself."""
