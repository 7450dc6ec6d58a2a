"""Public test harness: check any bijector's contract against brute force.

``check_bijector`` needs only torch. ``flowkit.testing.strategies`` holds hypothesis strategies
for shapes, seeds and values (it imports hypothesis, a test dependency).
"""

from flowkit.testing.harness import Tolerance, check_bijector, default_tolerance

__all__ = ["Tolerance", "check_bijector", "default_tolerance"]
