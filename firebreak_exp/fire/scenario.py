"""Fire weather, the fuels that do not burn, and ignitions.

Fuel breaks turn cells into non-burnable fuel model 99 (NB9, bare ground) for the simulation only; the
tile itself is never modified.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict

import numpy as np

#: Scott & Burgan 40 non-burnable codes (NB1 urban, NB2 snow/ice, NB3 agriculture, NB8 water, NB9 bare).
NONBURNABLE_FUEL_MODELS = (91, 92, 93, 98, 99)
#: Fuel model written into fuel-break cells (NB9, bare ground).
BREAK_FUEL_MODEL = 99


@dataclass(frozen=True)
class Scenario:
    """Fire weather.

    Units: ``wind_speed`` km/h at 10 m; ``wind_direction`` degrees clockwise from north the wind blows
    FROM (pyretechnics' ``upwind_direction``; 270 = westerly wind, fires run east); fuel and foliar
    moistures kg water / kg oven-dry fuel; ``burn_duration`` minutes each fire burns.

    The values come from the config (``conf/scenario/``); ``dry_summer`` is a dry, windy late-summer day with
    cured herbaceous fuel. LANDFIRE's northern-hardwood timber-litter fuels (TL5/TL6, most of Worcester, VT)
    spread at well under 1 m/min under their canopy even then, so fires burn for a long shift (14 h) to cover
    a substantial share of a tile of 30 m cells. Measured (mean burned fraction of the tile's burnable cells
    over random burnable ignitions): Worcester 25 x 25 tiles 0.43 (1800 fires, travel-time backend; 0.46 over
    60 reference fires), Worcester 50 x 50 tiles 0.15; the synthetic landscape's more flammable fuels 0.63 (25
    x 25) and 0.6 (50 x 50), many fires there burning the whole tile unless breaks stop them.
    """

    wind_speed: float
    wind_direction: float
    fuel_moisture_dead_1hr: float
    fuel_moisture_dead_10hr: float
    fuel_moisture_dead_100hr: float
    fuel_moisture_live_herbaceous: float
    fuel_moisture_live_woody: float
    foliar_moisture: float
    burn_duration: float

    def __post_init__(self) -> None:
        if not self.wind_speed >= 0.0:
            raise ValueError(f"Scenario.wind_speed must be >= 0 km/h, got {self.wind_speed!r}")
        if not math.isfinite(self.wind_direction):
            raise ValueError(f"Scenario.wind_direction must be finite, got {self.wind_direction!r}")
        for name in ("fuel_moisture_dead_1hr", "fuel_moisture_dead_10hr", "fuel_moisture_dead_100hr",
                     "fuel_moisture_live_herbaceous", "fuel_moisture_live_woody", "foliar_moisture"):
            value = getattr(self, name)
            if not value > 0.0:
                raise ValueError(f"Scenario.{name} must be > 0 kg/kg, got {value!r}")
        if not self.burn_duration > 0.0:
            raise ValueError(f"Scenario.burn_duration must be > 0 minutes, got {self.burn_duration!r}")

    def pyretechnics_weather(self) -> Dict[str, float]:
        """The scenario as pyretechnics' constant weather inputs (cube name -> value)."""
        return {
            "wind_speed_10m": float(self.wind_speed),
            "upwind_direction": float(self.wind_direction) % 360.0,
            "fuel_moisture_dead_1hr": float(self.fuel_moisture_dead_1hr),
            "fuel_moisture_dead_10hr": float(self.fuel_moisture_dead_10hr),
            "fuel_moisture_dead_100hr": float(self.fuel_moisture_dead_100hr),
            "fuel_moisture_live_herbaceous": float(self.fuel_moisture_live_herbaceous),
            "fuel_moisture_live_woody": float(self.fuel_moisture_live_woody),
            "foliar_moisture": float(self.foliar_moisture),
        }


def burnable_mask(fuel_model: np.ndarray) -> np.ndarray:
    """bool: the cells whose fuel model burns (not one of :data:`NONBURNABLE_FUEL_MODELS`)."""
    return ~np.isin(np.asarray(fuel_model), NONBURNABLE_FUEL_MODELS)


def random_ignitions(tile, count: int, rng: np.random.Generator) -> np.ndarray:
    """int (count, 2) (row, col) of burnable cells, drawn without replacement while there are enough."""
    cells = np.argwhere(burnable_mask(tile.fuel_model))
    if len(cells) == 0:
        raise ValueError(f"tile {getattr(tile, 'name', '?')!r} has no burnable cells")
    pick = rng.choice(len(cells), size=count, replace=count > len(cells))
    return cells[pick].astype(np.int64)
