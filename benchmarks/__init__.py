"""Speed and memory benchmarks of flowkit against its peers; run ``python -m benchmarks.run``."""
