"""Fire simulation: burn a landscape tile from point ignitions, with or without fuel breaks.

Two interchangeable simulators share the :class:`~firebreak_exp.fire.simulator.FireSimulator` interface:

* ``pyretechnics`` (:mod:`~firebreak_exp.fire.reference`) is the reference: pyretechnics' Eulerian
  level-set spread model, with crown fire handled as the library does.
* ``travel_time`` (:mod:`~firebreak_exp.fire.travel_time`) is the fast backend used for training: minimum
  travel time over a cell graph built from pyretechnics' own directional spread rates; it adds breaks to a
  running search (an :class:`~firebreak_exp.fire.simulator.IncrementalFireSimulator`).
  :mod:`~firebreak_exp.fire.fidelity` measures how closely it follows the reference.
"""
from firebreak_exp.fire.reference import PyretechnicsSimulator
from firebreak_exp.fire.scenario import Scenario
from firebreak_exp.fire.simulator import FireSimulator, IncrementalFireSimulator
from firebreak_exp.fire.travel_time import TravelTimeSimulator

SIMULATORS = {"pyretechnics": PyretechnicsSimulator, "travel_time": TravelTimeSimulator}

__all__ = ["FireSimulator", "IncrementalFireSimulator", "PyretechnicsSimulator", "SIMULATORS", "Scenario",
           "TravelTimeSimulator"]
