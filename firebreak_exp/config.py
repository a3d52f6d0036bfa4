"""Typed schemas for the Hydra config groups.

Each dataclass mirrors one group under ``conf/``; ``register_configs`` puts the
root schema in Hydra's ConfigStore so that a wrong key or a wrong type fails at
start-up with its name.
"""
from dataclasses import dataclass, field
from typing import Any, Dict, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING


@dataclass
class LandscapeConfig:
    """Where tiles come from (see firebreak_exp.landscape.load_landscapes)."""
    _target_: str = "firebreak_exp.landscape.load_landscapes"
    source: str = "synthetic"            # "synthetic" or "landfire"
    raster_dir: Optional[str] = None     # folder of LANDFIRE GeoTIFFs (source=landfire)
    layer_patterns: Optional[Dict[str, str]] = None  # layer -> glob under raster_dir; None = LANDFIRE names
    grid_size: int = 25                  # tile side, cells
    num_landscapes: Optional[int] = None # cap on training tiles; None = all
    heldout_fraction: float = 0.2        # eastern share of tiles kept for evaluation
    synthetic_rows: int = 200            # size of the generated raster, cells
    synthetic_cols: int = 200
    seed: int = 0                        # seed of the synthetic generator
    cache_dir: Optional[str] = None      # where generated rasters are written


@dataclass
class ScenarioConfig:
    """Fire weather and evaluation ignitions (firebreak_exp.fire.scenario.Scenario)."""
    _target_: str = "firebreak_exp.fire.scenario.Scenario"
    wind_speed: float = 30.0             # km/h at 10 m
    wind_direction: float = 270.0        # degrees clockwise from north the wind blows from
    fuel_moisture_dead_1hr: float = 0.03 # kg/kg
    fuel_moisture_dead_10hr: float = 0.04
    fuel_moisture_dead_100hr: float = 0.05
    fuel_moisture_live_herbaceous: float = 0.30
    fuel_moisture_live_woody: float = 0.60
    foliar_moisture: float = 0.80
    burn_duration: float = 840.0         # minutes
    num_ignitions: int = 32              # fires shown per episode (and planning fires of the baselines)


@dataclass
class SimulatorConfig:
    """Fire physics backend; built per tile as ``instantiate(cfg)(tile=..., scenario=...)``."""
    _target_: str = "firebreak_exp.fire.travel_time.TravelTimeSimulator"
    _partial_: bool = True


@dataclass
class EnvConfig:
    """The fuel-break MDP (firebreak_exp.environment.FuelBreakEnv)."""
    budget_percent: float = 5.0          # fuel breaks per episode, % of burnable cells
    percentage_increment: float = 1.0    # reward evaluated every this % of burnable cells broken
    reward_ignitions: Optional[int] = None  # unseen fires the reward is measured on; None = the shown ones


@dataclass
class ParallelConfig:
    """Vectorized environment backend (firebreak_exp.vector.env.VectorizedFireEnv)."""
    backend: str = "sequential"          # sequential | thread | process | dask (aliases: threading, multiprocessing)
    num_envs: Any = 1                    # a positive integer, or "auto" (the benchmark's recommendation)
    max_workers: Optional[int] = None    # None = min(num_envs, cores); dask with an address: its worker count
    address: Optional[str] = None        # dask only: scheduler of a running cluster, e.g. tcp://10.0.0.5:8786;
                                         # None = a LocalCluster on 127.0.0.1 for the run
    step_timeout_s: Optional[float] = None  # process, joblib, dask: seconds a worker may take to start or to step its
                                         # environments before it is stopped with an error naming it; None = no limit
    share_fires: bool = True             # process only: workers burn each other's fires (simulators that burn
                                         # every fire anew, e.g. pyretechnics): no core idles while one evaluates


@dataclass
class AgentConfig:
    """Deep Q-learning learner (firebreak_exp.rl.dqn.DQNAgent)."""
    channels: int = 16                   # conv width of the Q-network
    num_layers: int = 5                  # conv layers (dilations 1, 2, 4, ... widen the view)
    lr: float = 1e-3
    gamma: float = 0.99
    epsilon_start: float = 1.0
    epsilon_end: float = 0.05
    epsilon_decay_steps: int = 5000      # env steps from start to end epsilon (linear)
    buffer_size: int = 20000             # transitions
    batch_size: int = 64
    double_q: bool = True
    target_update_interval: int = 200    # learner updates between target-network copies
    max_grad_norm: float = 10.0
    reward_scale: float = 100.0          # rewards x this in the TD target: % of burnable cells, Q-values O(1)
    n_step: Optional[int] = None         # rewards summed per transition before bootstrapping; None: Monte Carlo
    expert_loss_weight: float = 1.0      # DQfD margin loss on expert memories (0 = TD loss only)
    expert_margin: float = 0.8           # how far (Q units) the expert's cell must out-value the others
    device: str = "cpu"                  # cpu | cuda | auto
    num_threads: Optional[int] = 1       # torch CPU threads of the learner; None = torch's default (all cores)


@dataclass
class TrainerConfig:
    """The training loop (firebreak_exp.rl.trainer.ParallelFuelBreakTrainer)."""
    episodes: int = 300                  # stop after this many finished episodes
    steps_per_collection: int = 16       # vector-env steps between metric logs
    train_frequency: int = 8             # experiences per learner update
    learning_starts: int = 500           # transitions in the buffer before updates begin
    checkpoint_frequency: int = 50       # episodes between periodic checkpoints
    eval_episodes: int = 8               # held-out tiles scored at the end (policy vs baselines)
    expert_memories: int = 112           # expert episodes turned into replay transitions (0 = none)
    expert_planner: str = "flow"         # the expert: flow | domirank (the seed's)
    memory_simulations: int = 32         # fires each expert episode shows (conf: scenario.num_ignitions)
    regenerate_memories: bool = False    # rebuild the cached expert memories under outputs/
    pretrain_steps: int = 500            # learner updates on expert memories before exploration
    progress: bool = True                # progress bar (quiet when not on a terminal)
    deterministic: bool = False          # True: bit-identical resumes (turns off oneDNN convolutions, slower)


@dataclass
class TrackingConfig:
    """MLflow tracking."""
    uri: str = MISSING                   # default: SQLite store under outputs/, absolute
    experiment: str = "firebreak_exp"
    artifact_location: Optional[str] = None  # for a new experiment; None = outputs/mlartifacts beside a SQLite store


@dataclass
class Config:
    """The composed configuration of a training job."""
    landscape: LandscapeConfig = field(default_factory=LandscapeConfig)
    scenario: ScenarioConfig = field(default_factory=ScenarioConfig)
    simulator: SimulatorConfig = field(default_factory=SimulatorConfig)
    env: EnvConfig = field(default_factory=EnvConfig)
    parallel: ParallelConfig = field(default_factory=ParallelConfig)
    agent: AgentConfig = field(default_factory=AgentConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    seed: int = 0
    experiment_name: Optional[str] = None  # set by experiment presets, logged as a tag
    resume: Optional[str] = None         # run folder or MLflow run id of a run to continue, or "auto"


def register_configs() -> None:
    """Register the root schema as ``config_schema`` (conf/config.yaml extends it)."""
    ConfigStore.instance().store(name="config_schema", node=Config)


def validate(cfg: Any) -> Any:
    """Merge ``cfg`` onto the typed schema: unknown keys and wrong types raise with their name."""
    from omegaconf import OmegaConf
    schema = OmegaConf.structured(Config)
    plain = OmegaConf.to_container(cfg, resolve=False) if OmegaConf.is_config(cfg) else cfg
    plain = {k: v for k, v in plain.items() if k != "hydra"}
    merged = OmegaConf.merge(schema, plain)
    check_values(merged)
    return merged


def check_values(cfg: Any) -> None:
    """Range checks the types cannot express; ValueError names the key, the value and what is expected."""
    num_envs = cfg.parallel.num_envs
    if num_envs != "auto" and (isinstance(num_envs, bool) or not isinstance(num_envs, int) or num_envs <= 0):
        raise ValueError(f"parallel.num_envs={num_envs}: expected a positive integer or 'auto'")
    positive = {"landscape.grid_size": cfg.landscape.grid_size,
                "trainer.episodes": cfg.trainer.episodes, "agent.batch_size": cfg.agent.batch_size,
                "agent.buffer_size": cfg.agent.buffer_size, "scenario.num_ignitions": cfg.scenario.num_ignitions,
                "trainer.steps_per_collection": cfg.trainer.steps_per_collection,
                "trainer.train_frequency": cfg.trainer.train_frequency,
                "trainer.checkpoint_frequency": cfg.trainer.checkpoint_frequency,
                "env.reward_ignitions": cfg.env.get("reward_ignitions")}
    for key, value in positive.items():
        if value is not None and value <= 0:
            raise ValueError(f"{key}={value}: expected a positive integer")
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
    if cfg.trainer.expert_planner not in ("domirank", "flow"):
        raise ValueError(f"trainer.expert_planner={cfg.trainer.expert_planner}: expected 'domirank' or 'flow'")
    if not 0 <= cfg.landscape.heldout_fraction < 1:
        raise ValueError(f"landscape.heldout_fraction={cfg.landscape.heldout_fraction}: expected a value in [0, 1)")
