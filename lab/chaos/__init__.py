"""The chaos rig (`chem-persistence chaos`); see lab.chaos.run."""

from lab.chaos.faults import FAULT_KINDS
from lab.chaos.run import run_chaos
from lab.chaos.stream import expected_event, flow_id_of

__all__ = ["FAULT_KINDS", "expected_event", "flow_id_of", "run_chaos"]
