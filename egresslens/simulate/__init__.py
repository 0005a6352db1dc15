"""Vectorised simulator of Azure Firewall logs for an AKS hub-and-spoke deployment.

Used by the demo, the benchmarks and the tests: it produces the canonical rows *and* the raw log
text a real firewall would have written, together with the ground truth (``truth.json``) and the
policy (``policy.json``), so every later stage can be checked against what really happened.
"""

from egresslens.simulate.estate import simulate_estate_to_dir
from egresslens.simulate.render import simulate_to_dir, write
from egresslens.simulate.scenario import Scenario, generate

__all__ = ["Scenario", "generate", "write", "simulate_estate_to_dir", "simulate_to_dir"]
