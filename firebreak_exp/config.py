"""Typed schemas for the Hydra config groups.

Each dataclass mirrors one group under ``conf/``; ``register_configs`` puts the
root schema in Hydra's ConfigStore so that a wrong key or a wrong type fails at
start-up with its name. The schemas hold types only: every value lives in the
YAML under ``conf/`` (the one place defaults are set), and the constructors named
by ``_target_`` take those values without defaults of their own.
"""
from dataclasses import dataclass, field, fields
from typing import Any, Dict, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING


@dataclass
class LandscapeConfig:
    """Where tiles come from (firebreak_exp.landscape.load_landscapes)."""
    _target_: str = MISSING
    source: str = MISSING                      # "synthetic" or "landfire"
    raster_dir: Optional[str] = MISSING        # folder of LANDFIRE GeoTIFFs (source=landfire)
    layer_patterns: Optional[Dict[str, str]] = MISSING  # layer -> glob under raster_dir; None = LANDFIRE names
    grid_size: int = MISSING                   # tile side, cells
    num_landscapes: Optional[int] = MISSING    # cap on training tiles; None = all
    heldout_fraction: float = MISSING          # eastern share of tiles kept for evaluation
    synthetic_rows: Optional[int] = MISSING    # size of the generated raster, cells (source=synthetic)
    synthetic_cols: Optional[int] = MISSING
    seed: Optional[int] = MISSING              # seed of the synthetic generator
    cache_dir: Optional[str] = MISSING         # where generated rasters are written


@dataclass
class ScenarioConfig:
    """Fire weather (firebreak_exp.fire.scenario.Scenario)."""
    _target_: str = MISSING
    wind_speed: float = MISSING                # km/h at 10 m
    wind_direction: float = MISSING            # degrees clockwise from north the wind blows from
    fuel_moisture_dead_1hr: float = MISSING    # kg/kg
    fuel_moisture_dead_10hr: float = MISSING
    fuel_moisture_dead_100hr: float = MISSING
    fuel_moisture_live_herbaceous: float = MISSING
    fuel_moisture_live_woody: float = MISSING
    foliar_moisture: float = MISSING
    burn_duration: float = MISSING             # minutes


@dataclass
class SimulatorConfig:
    """Fire physics backend; built per tile as ``instantiate(cfg)(tile=..., scenario=...)``."""
    _target_: str = MISSING
    _partial_: bool = MISSING


@dataclass
class EnvConfig:
    """The fuel-break MDP (firebreak_exp.environment.FuelBreakEnv)."""
    _target_: str = MISSING
    _partial_: bool = MISSING
    budget_percent: float = MISSING            # fuel breaks per episode, % of burnable cells
    percentage_increment: float = MISSING      # reward evaluated every this % of burnable cells broken
    num_ignitions: int = MISSING               # fires shown per episode (and planning fires of the baselines)
    reward_ignitions: Optional[int] = MISSING  # unseen fires the reward is measured on; None = the shown ones


@dataclass
class ParallelConfig:
    """Vectorized environment backend (firebreak_exp.factory.vector_env)."""
    _target_: str = MISSING
    _partial_: bool = MISSING
    backend: str = MISSING                     # sequential | thread | process | joblib | dask (or their aliases)
    num_envs: Any = MISSING                    # a positive integer, or "auto" (the benchmark's recommendation)
    max_workers: Optional[int] = MISSING       # None = min(num_envs, cores); dask with an address: its worker count
    address: Optional[str] = MISSING           # dask only: scheduler of a running cluster, e.g. tcp://10.0.0.5:8786;
                                               # None = a LocalCluster on 127.0.0.1 for the run
    share_fires: bool = MISSING                # process only: workers burn each other's fires
    step_timeout_s: Optional[float] = MISSING  # process, joblib, dask: seconds a worker may take to start or to
                                               # step its environments before it is stopped with an error naming it


@dataclass
class AgentConfig:
    """Deep Q-learning learner (firebreak_exp.rl.dqn.DQNAgent)."""
    _target_: str = MISSING
    _partial_: bool = MISSING
    channels: int = MISSING                    # conv width of the Q-network
    num_layers: int = MISSING                  # conv layers (dilations 1, 2, 4, ... widen the view)
    lr: float = MISSING
    gamma: float = MISSING
    epsilon_start: float = MISSING
    epsilon_end: float = MISSING
    epsilon_decay_steps: int = MISSING         # env steps from start to end epsilon (linear)
    batch_size: int = MISSING                  # transitions per update
    double_q: bool = MISSING
    target_update_interval: int = MISSING      # learner updates between target-network copies
    max_grad_norm: float = MISSING
    reward_scale: float = MISSING              # rewards x this in the TD target: % of burnable cells, Q-values O(1)
    n_step: Optional[int] = MISSING            # rewards summed per transition before bootstrapping; None: Monte Carlo
    expert_loss_weight: float = MISSING        # DQfD margin loss on expert memories (0 = TD loss only)
    expert_margin: float = MISSING             # how far (Q units) the expert's cell must out-value the others
    device: str = MISSING                      # cpu | cuda | auto
    num_threads: Optional[int] = MISSING       # torch CPU threads of the learner; None = torch's default (all cores)


@dataclass
class ReplayConfig:
    """Experience replay (firebreak_exp.rl.replay.ReplayBuffer)."""
    _target_: str = MISSING
    _partial_: bool = MISSING
    capacity: int = MISSING                    # transitions


@dataclass
class TrainerConfig:
    """The training loop (firebreak_exp.rl.trainer.ParallelFuelBreakTrainer)."""
    episodes: int = MISSING                    # stop after this many finished episodes
    steps_per_collection: int = MISSING        # vector-env steps between metric logs
    train_frequency: int = MISSING             # experiences per learner update
    learning_starts: int = MISSING             # transitions in the buffer before updates begin
    checkpoint_frequency: int = MISSING        # episodes between periodic checkpoints
    eval_episodes: int = MISSING               # held-out tiles scored at the end (policy vs baselines)
    expert_memories: int = MISSING             # expert episodes turned into replay transitions (0 = none)
    expert_planner: str = MISSING              # the expert: one of EXPERT_PLANNERS
    memory_simulations: int = MISSING          # fires each expert episode shows
    regenerate_memories: bool = MISSING        # rebuild the cached expert memories under outputs/
    pretrain_steps: int = MISSING              # learner updates on expert memories before exploration
    progress: bool = MISSING                   # progress bar (quiet when not on a terminal)
    deterministic: bool = MISSING              # True: bit-identical resumes (turns off oneDNN convolutions, slower)


@dataclass
class TrackingConfig:
    """MLflow tracking (firebreak_exp.commands.tracking.Tracker)."""
    _target_: str = MISSING
    uri: str = MISSING                         # SQLite file or http(s) server
    experiment: str = MISSING
    artifact_location: Optional[str] = MISSING  # for a new experiment; None = outputs/mlartifacts beside a SQLite store


@dataclass
class Config:
    """The composed configuration of a training job."""
    landscape: LandscapeConfig = field(default_factory=LandscapeConfig)
    scenario: ScenarioConfig = field(default_factory=ScenarioConfig)
    simulator: SimulatorConfig = field(default_factory=SimulatorConfig)
    env: EnvConfig = field(default_factory=EnvConfig)
    parallel: ParallelConfig = field(default_factory=ParallelConfig)
    agent: AgentConfig = field(default_factory=AgentConfig)
    replay: ReplayConfig = field(default_factory=ReplayConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    planners: Dict[str, Any] = MISSING   # name -> planner config (``_target_`` and its settings)
    seed: int = MISSING
    experiment_name: Optional[str] = MISSING  # set by experiment presets, logged as a tag
    resume: Optional[str] = MISSING      # run folder or MLflow run id of a run to continue, or "auto"


def register_configs() -> None:
    """Register the root schema as ``config_schema`` (conf/config.yaml extends it)."""
    ConfigStore.instance().store(name="config_schema", node=Config)


def register_command_schema(name: str, schema: type) -> tuple:
    """Register a command's schema (a subclass of :class:`Config`) as ``name`` beside the root schema;
    returns the command's own top-level keys (those the training schema lacks)."""
    register_configs()
    ConfigStore.instance().store(name=name, node=schema)
    training = {f.name for f in fields(Config)}
    return tuple(f.name for f in fields(schema) if f.name not in training)


def validate(cfg: Any, schema: type = Config, check_ranges: bool = True) -> Any:
    """Merge ``cfg`` (without ``hydra``) onto the typed ``schema`` (a command's: :class:`Config` or a subclass)
    and, with ``check_ranges``, range-check the training keys (:func:`check_values`): unknown keys and wrong
    types raise with their name."""
    from omegaconf import OmegaConf
    plain = OmegaConf.to_container(cfg, resolve=False) if OmegaConf.is_config(cfg) else cfg
    plain = {k: v for k, v in plain.items() if k != "hydra"}
    merged = OmegaConf.merge(OmegaConf.structured(schema), plain)
    if check_ranges:
        check_values(merged)
    return merged


#: Ceilings on counts whose absurd values would otherwise run for ever or exhaust memory before any check.
UPPER_LIMITS = {"trainer.steps_per_collection": 100_000, "env.num_ignitions": 100_000,
                "env.reward_ignitions": 100_000, "landscape.grid_size": 100_000, "replay.capacity": 10_000_000,
                "agent.channels": 4096, "agent.num_layers": 16, "trainer.memory_simulations": 100_000}
LIMIT_REASONS = {"trainer.steps_per_collection": "vector steps between metric logs; the run ends between them",
                 "env.num_ignitions": "fires an episode shows", "env.reward_ignitions": "fires each reward burns",
                 "landscape.grid_size": "tile side in cells", "replay.capacity": "transitions held in memory",
                 "agent.channels": "conv width of the Q-network",
                 "agent.num_layers": "conv layers; the 16th has a dilation of 32,768 cells",
                 "trainer.memory_simulations": "fires each expert episode shows"}
MAX_NUM_ENVS = 4096
#: planners (``planners.<name>``) that can play the expert memories: those that plan without a trained agent
EXPERT_PLANNERS = ("flow", "domirank", "flow_search", "local_search")
#: Accepted side of the generated raster (source=synthetic), cells: 5,000 cells are 150 km at 30 m.
SYNTHETIC_SIDE_RANGE = (2, 5000)


def check_values(cfg: Any) -> None:
    """Range checks the types cannot express; ValueError names the key, the value and what is expected."""
    num_envs = cfg.parallel.num_envs
    if num_envs != "auto" and (isinstance(num_envs, bool) or not isinstance(num_envs, int) or num_envs <= 0):
        raise ValueError(f"parallel.num_envs={num_envs}: expected a positive integer or 'auto'")
    if num_envs != "auto" and num_envs > MAX_NUM_ENVS:
        raise ValueError(f"parallel.num_envs={num_envs}: expected at most {MAX_NUM_ENVS:,} environments")
    positive = {"landscape.grid_size": cfg.landscape.grid_size,
                "trainer.episodes": cfg.trainer.episodes, "agent.batch_size": cfg.agent.batch_size,
                "replay.capacity": cfg.replay.capacity, "env.num_ignitions": cfg.env.num_ignitions,
                "trainer.steps_per_collection": cfg.trainer.steps_per_collection,
                "trainer.train_frequency": cfg.trainer.train_frequency,
                "trainer.checkpoint_frequency": cfg.trainer.checkpoint_frequency,
                "env.reward_ignitions": cfg.env.get("reward_ignitions"), "agent.channels": cfg.agent.channels,
                "agent.num_layers": cfg.agent.num_layers,
                "trainer.memory_simulations": cfg.trainer.get("memory_simulations")}
    for key, value in positive.items():
        if value is not None and value > UPPER_LIMITS.get(key, float("inf")):
            raise ValueError(f"{key}={value}: expected at most {UPPER_LIMITS[key]:,} ({LIMIT_REASONS[key]})")
        if value is not None and value <= 0:
            raise ValueError(f"{key}={value}: expected a positive integer")
    if cfg.landscape.grid_size == 1:
        raise ValueError("landscape.grid_size=1: expected at least 2 (tile side, cells)")
    if cfg.agent.get("num_threads") is not None and cfg.agent.num_threads <= 0:
        raise ValueError(f"agent.num_threads={cfg.agent.num_threads}: expected a positive integer or null")
    timeout = cfg.parallel.get("step_timeout_s")
    if timeout is not None and not 0 < timeout < float("inf"):
        raise ValueError(f"parallel.step_timeout_s={timeout}: expected a positive number of seconds or null")
    if cfg.parallel.max_workers is not None and cfg.parallel.max_workers <= 0:
        raise ValueError(f"parallel.max_workers={cfg.parallel.max_workers}: expected a positive integer or null")
    for key in ("budget_percent", "percentage_increment"):
        value = cfg.env[key]
        if not 0 < value <= 100:
            raise ValueError(f"env.{key}={value}: expected a percentage in (0, 100]")
    if cfg.trainer.expert_planner not in EXPERT_PLANNERS:
        raise ValueError(f"trainer.expert_planner={cfg.trainer.expert_planner}: expected one of {EXPERT_PLANNERS}")
    if not 0 <= cfg.landscape.heldout_fraction < 1:
        raise ValueError(f"landscape.heldout_fraction={cfg.landscape.heldout_fraction}: expected a value in [0, 1)")
    if cfg.landscape.source == "synthetic":
        check_synthetic_size(cfg.landscape)


def check_synthetic_size(landscape: Any) -> None:
    """The generated raster's sides within SYNTHETIC_SIDE_RANGE (cells), and a tile (grid_size) that fits."""
    low, high = SYNTHETIC_SIDE_RANGE
    for key in ("synthetic_rows", "synthetic_cols"):
        if landscape[key] is None or not low <= landscape[key] <= high:
            shown = "null" if landscape[key] is None else landscape[key]
            raise ValueError(f"landscape.{key}={shown}: expected an integer in [{low}, {high:,}] (a side "
                             f"of the generated raster, cells)")
    side = min(landscape.synthetic_rows, landscape.synthetic_cols)
    if landscape.grid_size > side:
        raise ValueError(f"landscape.grid_size={landscape.grid_size}: expected at most {side} cells, the shorter "
                         f"side of the generated raster (landscape.synthetic_rows={landscape.synthetic_rows}, "
                         f"landscape.synthetic_cols={landscape.synthetic_cols})")


def resolve_hydra_values(cfg: Any) -> None:
    """Replace, in place, every string value that interpolates ``${hydra:...}`` by its resolved value (other
    interpolations stay, so ``trainer.memory_simulations`` still follows ``env.num_ignitions``)."""
    from omegaconf import OmegaConf
    for key in list(cfg.keys()):
        node = cfg._get_node(key)
        if OmegaConf.is_dict(node):
            resolve_hydra_values(node)
        elif OmegaConf.is_interpolation(cfg, key) and "${hydra:" in str(node._value()):
            cfg[key] = cfg[key]
