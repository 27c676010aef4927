"""One typed configuration object that flows from the CLI to every part.

Every section forbids unknown keys, so a typo in a YAML file fails loudly with the key's dotted
path instead of silently running with a default. Defaults run on a laptop: bundled digits, the
compact CNN, ``buffer_size`` 16, margin sampling with exploration ``p`` 0.9.

Example:
    >>> cfg = Config()
    >>> cfg.training.buffer_size, cfg.sampling.sampler, cfg.sampling.explore_p
    (16, 'margin', 0.9)
    >>> cfg.with_overrides({"sampling.k": 8}).sampling.k
    8
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from activestream.errors import ConfigError
from activestream.models.transforms import InputTransform


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


class StorageConfig(_Section):
    """How to reach ``s3://`` paths (through s3fs); empty means the AWS defaults."""

    endpoint_url: str | None = None
    anon: bool = False
    key: str | None = None
    secret: str | None = None
    connect_timeout: float = Field(
        5.0,
        gt=0,
        description="Seconds to wait for a connection to the S3 endpoint before trying again.",
    )
    retries: int = Field(
        3,
        ge=1,
        description="Attempts per S3 request, so a stopped endpoint fails in seconds, not minutes.",
    )


class DataConfig(_Section):
    """Where the unlabeled pool and the held-out test split live."""

    dataset: str = Field(
        "digits",
        description="'digits' for the bundled set, or a path / s3:// prefix of Parquet shards "
        "or an image folder.",
    )
    cache_dir: str = Field("data/cache", description="Where bundled data is written as shards.")
    shards: int = Field(4, ge=1, description="Shards for the bundled digits pool.")
    test_fraction: float = Field(0.25, gt=0.0, lt=1.0)


class ModelConfig(_Section):
    """Which classifier to build, from which weights, trained how, fed what."""

    factory: str = Field(
        "digits_cnn",
        description="A registered model name (activestream.models.model_names) or "
        "'package.module:function' returning a torch.nn.Module, called with the number of "
        "classes and model.kwargs.",
    )
    kwargs: dict[str, Any] = Field(
        default_factory=dict, description="Keyword arguments for the factory."
    )
    dropout: float = Field(0.25, ge=0.0, lt=1.0)
    init_weights: str | None = Field(
        None,
        description="Path or s3:// URI of a state dict the trainer loads and publishes as "
        "version 0 (scorers never read the file).",
    )
    train: Literal["all", "head"] = Field(
        "all", description="'head' freezes everything but the final linear layer."
    )
    resize: tuple[int, int] | None = Field(
        None, description="(H, W) every image is resized to; an int means a square."
    )
    channels: Literal[1, 3] | None = Field(
        None, description="Channels the model takes (grayscale repeated to RGB or averaged)."
    )
    normalize: Literal["none", "imagenet"] = "none"

    @field_validator("factory")
    @classmethod
    def _known_factory(cls, name: str) -> str:
        from activestream.models.registry import model_names, resolve

        if name not in model_names():  # a registered name imports its torch code when built
            resolve(name)  # an import string imports now, so a typo fails before anything starts
        return name

    @field_validator("resize", mode="before")
    @classmethod
    def _square(cls, value: Any) -> Any:
        return (value, value) if isinstance(value, int) else value

    @field_validator("resize")
    @classmethod
    def _positive(cls, value: tuple[int, int] | None) -> tuple[int, int] | None:
        if value is not None and min(value) < 1:
            raise ValueError(f"resize {list(value)} must be positive")
        return value

    def transform(self) -> InputTransform:
        """The input transform every part applies before the model (training, scoring, Serve)."""
        return InputTransform(resize=self.resize, channels=self.channels, normalize=self.normalize)


class TrainingConfig(_Section):
    """The online trainer's knobs (the seed's open questions, made explicit)."""

    buffer_size: int = Field(16, ge=1, description="Labels to wait for before a training step.")
    policy: Literal["new_only", "replay", "full"] = "replay"
    steps_per_update: int = Field(
        30, ge=1, description="Optimizer steps per buffer_size labels (a burst gets as many)."
    )
    update_seconds: float | None = Field(
        2.0,
        gt=0.0,
        description="Service: the longest one update's optimizer steps run before it publishes. "
        "Under load each label gets fewer steps rather than the version waiting; None: no limit "
        "(the simulator never limits, so its curves do not depend on the machine).",
    )
    publish_seconds: float = Field(
        5.0,
        gt=0.0,
        description="Service: labels waiting this long are trained on and published even when "
        "the buffer is not full, so versions keep coming at any label rate.",
    )
    batch_size: int = Field(32, ge=1)
    lr: float = Field(1e-3, gt=0.0)
    weight_decay: float = Field(1e-4, ge=0.0)
    replay_ratio: float = Field(
        0.5, ge=0.0, le=1.0, description="Share of each replay minibatch drawn from older labels."
    )
    replay_capacity: int = Field(10_000, ge=1, description="Reservoir size of older labels.")
    recency_half_life: float | None = Field(
        None, gt=0.0, description="Labels; when set, newer labels weigh more in replay draws."
    )
    head_fit: Literal["lbfgs", "sgd"] = Field(
        "lbfgs",
        description="With model.train: head, how the final layer learns at each version: "
        "'lbfgs' fits it to convergence on every label held (logistic regression on the "
        "frozen features, warm started); 'sgd' takes steps_per_update minibatch steps.",
    )
    head_l2: float = Field(
        1.0, gt=0.0, description="L2 strength of the 'lbfgs' head fit (scikit-learn's 1 / C)."
    )
    head_class_weight: Literal["none", "balanced"] = Field(
        "none", description="Class weighting of the 'lbfgs' head fit."
    )
    head_max_iter: int = Field(100, ge=1, description="L-BFGS iterations per head fit at most.")
    semi_supervised: Literal["auto", "none", "pseudo_label", "label_propagation"] = Field(
        "auto",
        description="With the 'lbfgs' head fit, also train on unlabeled pool items: the "
        "model's own confident predictions (pseudo_label) or labels spread over a kNN graph "
        "of the embedding (label_propagation). Never written to the label log. 'auto': "
        "pseudo_label with the fitted head, none otherwise (the study's choice).",
    )

    def semi_supervised_for(self, model: ModelConfig) -> str:
        """The semi-supervised method in effect for ``model`` ('auto' resolved)."""
        fitted = model.train == "head" and self.head_fit == "lbfgs"
        if self.semi_supervised == "auto":
            return "pseudo_label" if fitted else "none"
        return self.semi_supervised

    pseudo_threshold: float = Field(
        0.9, gt=0.0, le=1.0, description="Confidence a pseudo-label needs to be trained on."
    )
    pseudo_weight: float = Field(
        0.3, gt=0.0, le=1.0, description="Loss weight of a pseudo-label (a label weighs 1)."
    )
    unlabeled_sample: int = Field(
        5000, ge=1, description="Unlabeled pool items the semi-supervised fit draws from."
    )
    num_gpus: float | None = Field(
        None, ge=0.0, description="GPUs for the trainer; None picks 1 when the cluster has one."
    )
    nice: int | None = Field(
        None,
        ge=0,
        le=19,
        description="Lower CPU priority of the training thread. None: 10 when it shares every "
        "core with serving, 5 when serving keeps cores of its own (serve.reserved_cpus): then "
        "mostly scoring (nice 19) competes with it, and a label's version should come first.",
    )
    resources: dict[str, float] = Field(
        default_factory=dict,
        description="Custom Ray resources the trainer asks for, e.g. {'accelerator': 1} to pin "
        "it to a node type.",
    )


class ScoringConfig(_Section):
    """The Ray Data scorer pool."""

    batch_size: int = Field(256, ge=1)
    num_scorers: int = Field(2, ge=1, description="Actors in the scorer pool.")
    threads_per_scorer: int = Field(1, ge=1, description="torch threads inside each scorer.")
    cpus_per_scorer: float = Field(0.5, gt=0.0, description="Logical CPUs each scorer reserves.")
    gpus_per_scorer: float | None = Field(
        None, ge=0.0, description="GPU share per scorer; None picks a share when GPUs exist."
    )
    read_cpus: float = Field(0.25, gt=0.0, description="Logical CPUs each read task reserves.")
    read_concurrency: int | None = Field(
        4,
        ge=1,
        description="Read tasks in flight; each holds a decoded shard, so this bounds memory "
        "whatever the pool size. None: as many as the logical CPUs allow.",
    )
    shards_per_round: int | None = Field(
        None, ge=1, description="Rotate over this many shards per round; None scores all."
    )
    rescore_every: int = Field(1, ge=1, description="Start a scoring round every M versions.")
    resources: dict[str, float] = Field(
        default_factory=dict, description="Custom Ray resources each scorer asks for."
    )
    object_store_mb: int | None = Field(
        512,
        ge=16,
        description="Object store memory a scoring pass may hold in flight (read blocks, "
        "scores); bounds memory whatever the pool size. None lets Ray Data decide.",
    )
    stream_rounds: int = Field(
        20,
        ge=1,
        description="Rounds one streaming pass may score back to back while new versions keep "
        "coming (warm scorers; fewer for a pool so large that planning them would cost, see "
        "pipelines.scoring.pass_rounds); 1 starts a fresh pass per round.",
    )
    linger_seconds: float = Field(
        10.0,
        ge=0.0,
        description="How long a streaming pass waits for a new version after a round before "
        "it ends and releases the scorers. Longer than training.publish_seconds, so scorers "
        "stay warm while any labels arrive, however slowly.",
    )
    pool_check_seconds: float = Field(
        5.0,
        gt=0.0,
        description="How often the loop looks for new files under the pool while it waits for "
        "a version; new files start a round with the current model at once.",
    )
    nice: int = Field(
        19,
        ge=0,
        le=19,
        description="Lower CPU priority of scorer processes: below Serve and the trainer "
        "(a training step that waits for a core delays the version every annotator waits for).",
    )


class SamplingConfig(_Section):
    """How scores become queries."""

    sampler: str = Field(
        "margin",
        description="A registered sampler, 'auto' (a bandit over them) or "
        "'package.module:function'.",
    )
    explore_p: float = Field(0.9, ge=0.0, le=1.0, description="Probability a slot exploits.")
    k: int = Field(16, ge=1, description="Queries handed out per request by default.")
    candidates: int = Field(
        256, ge=1, description="Best-scored rows a scoring round keeps (the global top-k)."
    )
    lease_seconds: float = Field(300.0, gt=0.0)
    mc_samples: int = Field(
        8, ge=1, description="Stochastic passes T per batch for samplers over MC-dropout samples."
    )
    auto_gamma: float = Field(
        0.3,
        gt=0.0,
        le=1.0,
        description="Stream mode's 'auto' (simulate --mode stream): the EXP3 bandit's "
        "exploration share (each arm keeps at least auto_gamma / arms of the draws). Pool "
        "'auto' needs none: random slots judge every arm at once.",
    )
    cold_start: bool = Field(
        True,
        description="Ask at random until the model proves ready (prequential accuracy over "
        "the last warmup_labels reaches warmup_accuracy, or warmup_max_labels are in).",
    )
    cold_start_strategy: Literal["random", "typiclust", "maxherding"] = Field(
        "maxherding",
        description="How cold-start queries are picked: uniformly, or from the pool's "
        "embedding (typical points of uncovered clusters, or greatest kernel coverage).",
    )
    cold_start_embedding: Literal["pretrained", "any"] = Field(
        "pretrained",
        description="'pretrained': cold-start queries come from the embedding only when it "
        "comes from trained weights (train: head, model.init_weights, a pretrained factory "
        "such as efficientnet_lite0, or embedding_model), uniformly otherwise. 'any': from a "
        "model's own layer even at its random initialization; the study measured that 4.4 and "
        "5.9 SE below random (Fashion-MNIST and gratings from scratch). A factory that loads "
        "its own pretrained weights sets 'any'.",
    )
    embedding_model: ModelConfig | None = Field(
        None,
        description="A frozen network whose features embed the pool for cold starts and "
        "diversity samplers (e.g. {factory: efficientnet_lite0, resize: 64, normalize: "
        "imagenet} for a classifier trained from scratch); computed once per pool file. None: "
        "the model's own features. Gradient-embedding samplers (badge) always use the model.",
    )
    warmup_labels: int = Field(
        20, ge=1, description="Fewest random labels before the model may choose queries."
    )
    warmup_accuracy: float = Field(
        0.5,
        ge=0.0,
        le=1.01,
        description="Prequential accuracy that ends the cold start; above 1 keeps it for "
        "warmup_max_labels (a fixed warm-up).",
    )
    warmup_max_labels: int = Field(
        200, ge=1, description="Labels after which the cold start ends whatever the evidence."
    )


class RayConfig(_Section):
    """How to reach or start Ray; logical CPUs let Serve, trainer and scorers coexist."""

    address: str | None = Field(None, description="Existing cluster; None starts a local one.")
    num_cpus: int | None = Field(
        None, ge=1, description="Logical CPUs for a local cluster; None = max(8, 4 x cores)."
    )
    arrow_allocator: Literal["jemalloc", "mimalloc", "system"] = Field(
        "jemalloc",
        description="Arrow's memory pool in every Ray worker (ARROW_DEFAULT_MEMORY_POOL). Ray "
        "keeps read workers alive, idle, with what their allocator kept: after a Parquet read "
        "pass they held less than half as much with jemalloc as with Arrow's default, mimalloc "
        "(docs/allocator.md).",
    )


class ServeConfig(_Section):
    """HTTP limits of the Serve app."""

    max_body_bytes: int = Field(1 << 20, ge=1024, description="Larger bodies get HTTP 413.")
    reserved_cpus: int | None = Field(
        None,
        ge=0,
        description="Cores (the lowest-numbered of each machine) the training thread and the "
        "scorers never run on, kept for Serve and the actors answering requests; 0 shares all. "
        "Unset: 1 while serving (on 2 cores a scoring pass and a training step otherwise stall "
        "requests for seconds), 0 for batch scoring and the simulator.",
    )

    @property
    def cores_kept(self) -> int:
        """Cores kept off limits to training and scoring: ``reserved_cpus``, unset counting 0."""
        return self.reserved_cpus or 0

    request_timeout: float = Field(
        1.0,
        gt=0.0,
        description="Seconds a request waits for the query queue or the label ledger before "
        "it is answered 503 with Retry-After (overload is an answer, not a wait).",
    )
    max_waiting: int = Field(
        32,
        ge=1,
        description="Requests one replica lets wait on the query queue or the label ledger at "
        "once; the next is answered 503 with Retry-After at once, so past what the machine "
        "holds a request is refused in milliseconds instead of waiting for request_timeout.",
    )
    direct_ingress: bool = Field(
        True,
        description="Requests go straight to the replica's own HTTP server on the service's "
        "port (Ray Serve's direct ingress, with its throughput-optimized settings) instead of "
        "through the proxy, a hop that costs more than the work of a request on a small "
        "machine. Applies where `activestream serve` starts its own local cluster (Serve reads "
        "these settings when Ray starts); on a cluster it connects to, the proxy answers "
        "unless the cluster was started with them.",
    )


class DurabilityConfig(_Section):
    """Where the label log and trainer checkpoints live, and how the trainer catches up."""

    dir: str | None = Field(
        None, description="Local directory or s3:// prefix; None = <data.cache_dir>/state."
    )
    checkpoint_every: int = Field(10, ge=1, description="Checkpoint every N model versions.")
    keep_checkpoints: int = Field(3, ge=1, description="Newest checkpoints to keep.")
    forward_timeout: float = Field(
        2.0, gt=0.0, description="Seconds a label request waits for the trainer (then degraded)."
    )
    sync_seconds: float = Field(
        1.0, gt=0.0, description="How often the ledger checks that the trainer has every label."
    )


class LabelStudioConfig(_Section):
    """Label Studio as the annotation front end (``/label-studio`` is its ML backend URL).

    Address and key default to Label Studio's own variables, read where the config is built
    (the CLI or ``serve run``), so they travel to the actors inside this config.
    """

    url: str | None = Field(
        default_factory=lambda: os.environ.get("LABEL_STUDIO_URL") or None,
        description="Label Studio's base URL (default: $LABEL_STUDIO_URL, else the hostname "
        "Label Studio sends in /setup).",
    )
    api_key: str | None = Field(
        default_factory=lambda: os.environ.get("LABEL_STUDIO_API_KEY") or None,
        description="Its API token (default: $LABEL_STUDIO_API_KEY, else the project "
        "creator's token sent in /setup).",
        repr=False,
    )
    sync_seconds: float = Field(
        2.0, gt=0.0, description="How often new model versions are written back as scores."
    )
    reconcile_seconds: float = Field(
        30.0,
        gt=0.0,
        description="How often every task's annotations are compared with the label log "
        "(catches webhooks Label Studio never sent).",
    )
    batch: int = Field(100, ge=1, le=1000, description="Predictions per request to Label Studio.")
    exact_top: int = Field(
        100,
        ge=1,
        description="Label Studio's first N tasks are always activestream's first N, in order, "
        "after each new version.",
    )
    score_tolerance: float = Field(
        0.02,
        ge=0.0,
        le=1.0,
        description="A new version rewrites the score of a task behind the first exact_top "
        "only when it moved by more than this (0: every change), so a large project takes a "
        "few requests per version instead of one per batch of every task.",
    )
    sampling: Literal["Uncertainty sampling"] | None = Field(
        "Uncertainty sampling",
        description="Set the project's task sampling to this with every new version (Label "
        "Studio's Community UI cannot pick it; its API can); null leaves the project's own.",
    )


class Config(_Section):
    """Everything a run needs; build it with :func:`load_config` or ``Config()``."""

    task: Literal["classification", "detection"] = Field(
        "classification",
        description="What a label is: one class per item, or the boxes on an image (a list "
        "of {bbox: [x, y, w, h], label}). Detection data (COCO, YOLO, Parquet with an objects "
        "column, or a pool make-detection wrote) is served only with task: detection. There, "
        "sampling.sampler names a detection sampler (box_entropy_max ... box_presence_clusters, "
        "flip_consistency) or random; a class sampler's name, such as the default margin, "
        "ranks images by the service's detection default.",
    )
    seed: int = 0
    data: DataConfig = DataConfig()
    storage: StorageConfig = StorageConfig()
    model: ModelConfig = ModelConfig()
    training: TrainingConfig = TrainingConfig()
    scoring: ScoringConfig = ScoringConfig()
    sampling: SamplingConfig = SamplingConfig()
    ray: RayConfig = RayConfig()
    serve: ServeConfig = ServeConfig()
    durability: DurabilityConfig = DurabilityConfig()
    label_studio: LabelStudioConfig = Field(default_factory=LabelStudioConfig)

    @model_validator(mode="after")
    def _known_sampler(self) -> Config:
        # A detection sampler is the detection task's to check (pipelines/task.py): its
        # registry is loaded only where boxes are served, never for a class pool.
        if self.task == "classification":
            from activestream import samplers

            try:  # registered, or an import string that imports
                samplers.spec(self.sampling.sampler)
            except ValueError as err:
                hint = "" if ":" in self.sampling.sampler else "; box samplers need task: detection"
                raise ValueError(f"sampling.sampler: {err}{hint}") from None
        return self

    @model_validator(mode="after")
    def _dropout_for_mc_samplers(self) -> Config:
        from activestream import samplers

        if self.task != "classification":
            return self
        if samplers.spec(self.sampling.sampler).inputs != ("samples",):
            return self
        if self.model.dropout <= 0:
            raise ValueError(
                f"sampler {self.sampling.sampler!r} draws MC-dropout passes: model.dropout "
                "must be > 0"
            )
        return self

    @model_validator(mode="after")
    def _semi_supervised_needs_a_fitted_head(self) -> Config:
        fitted = self.model.train == "head" and self.training.head_fit == "lbfgs"
        if self.training.semi_supervised not in ("auto", "none") and not fitted:
            raise ValueError(
                f"training.semi_supervised {self.training.semi_supervised!r} trains on the "
                "frozen embedding: set model.train: head and training.head_fit: lbfgs"
            )
        return self

    @property
    def state_dir(self) -> str:
        """Label log and checkpoints: ``durability.dir``, else under the data cache."""
        return self.durability.dir or f"{self.data.cache_dir.rstrip('/')}/state"

    def with_overrides(self, overrides: dict[str, Any]) -> Config:
        """Return a copy with dotted keys replaced (``{"training.buffer_size": 8}``).

        ``None`` values are skipped so CLI flags that were not given keep the file's value.
        """
        raw = self.model_dump()
        for dotted, value in overrides.items():
            if value is None:
                continue
            node = raw
            *parents, leaf = dotted.split(".")
            for part in parents:
                if not isinstance(node.get(part), dict):
                    raise ConfigError(f"config key {dotted!r}: unknown section {part!r}")
                node = node[part]
            node[leaf] = value
        return config_from_dict(raw)


def _format_error(err: ValidationError) -> str:
    first = err.errors()[0]
    if not first["loc"]:  # a check across sections: its message names the keys
        return f"config: {first['msg'].removeprefix('Value error, ')}"
    key = ".".join(str(p) for p in first["loc"])
    if first["type"] == "extra_forbidden":
        return f"config key {key!r} is not a known setting"
    return f"config key {key!r}: {first['msg']}"


def config_from_dict(raw: dict[str, Any]) -> Config:
    """Validate a plain dict; raise :class:`ConfigError` naming the first bad key."""
    try:
        return Config.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(_format_error(err)) from None


def load_config(path: str | Path | None) -> Config:
    """Load YAML (``None`` gives the defaults); raise :class:`ConfigError` on any problem."""
    if path is None:
        return Config()
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except OSError as err:
        raise ConfigError(f"cannot read config {path}: {err.strerror}") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"config {path} is not valid YAML: {err}".splitlines()[0]) from None
    if not isinstance(raw, dict):
        raise ConfigError(f"config {path} must be a mapping of sections, got {type(raw).__name__}")
    return config_from_dict(raw)
