"""Building blocks of ``bench/run.py``: server specs, process control, wrk, reporting."""
