"""The research simulator: thousands of peers in virtual time, from a scenario and a seed.

``circles simulate SCENARIO.toml --seed S --out DIR`` and this API run the
production :class:`circles.Node` on the in-memory network under trio's virtual
clock, and write per-circle metrics (CSV), a summary (JSON) and plots (PNG).
The same scenario and seed give byte-identical CSV and JSON.
"""

from ._records import BuyerRecord as BuyerRecord
from ._records import CircleRecord as CircleRecord
from ._records import PricePoint as PricePoint
from ._records import SimulationResult as SimulationResult
from ._records import VendorRecord as VendorRecord
from ._runner import EPOCH as EPOCH
from ._runner import run as run
from ._scenario import BuyerPopulation as BuyerPopulation
from ._scenario import Distribution as Distribution
from ._scenario import Formation as Formation
from ._scenario import NetworkModel as NetworkModel
from ._scenario import Partition as Partition
from ._scenario import Scenario as Scenario
from ._scenario import ScenarioError as ScenarioError
from ._scenario import StrategySpec as StrategySpec
from ._scenario import VendorGroup as VendorGroup
from ._scenario_toml import load_scenario as load_scenario
from ._scenario_toml import parse_scenario as parse_scenario
from ._signatures import modelled_signatures as modelled_signatures
from ._writers import write_csv as write_csv
from ._writers import write_outputs as write_outputs
from ._writers import write_plots as write_plots
from ._writers import write_summary as write_summary

__all__ = [
    "BuyerPopulation",
    "BuyerRecord",
    "CircleRecord",
    "Distribution",
    "EPOCH",
    "Formation",
    "load_scenario",
    "modelled_signatures",
    "NetworkModel",
    "parse_scenario",
    "Partition",
    "PricePoint",
    "run",
    "Scenario",
    "ScenarioError",
    "SimulationResult",
    "StrategySpec",
    "VendorGroup",
    "VendorRecord",
    "write_csv",
    "write_outputs",
    "write_plots",
    "write_summary",
]
