"""Request and response bodies of the HTTP API (they make its OpenAPI spec)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from modelsafe.runtime.generate import MAX_TRUE_CFG

# No control characters in names, refs and paths (a NUL would reach the filesystem).
Ref = Annotated[
    str,
    Field(
        min_length=1,
        max_length=4096,
        # no control characters anywhere (\S alone let one NUL through), and not only spaces
        pattern=r"^[^\x00-\x1f\x7f]*[^\x00-\x20\x7f][^\x00-\x1f\x7f]*$",
    ),
]
Text = Annotated[str, Field(max_length=20000, pattern=r"^[^\x00]*$")]


class ErrorBody(BaseModel):
    """Every error: what went wrong and what to do; validation errors name the field."""

    error: str
    hint: str = ""
    field: str | None = None
    detail: list[dict[str, Any]] | None = None


class ModelPage(BaseModel):
    total: int
    limit: int
    offset: int
    items: list[dict[str, Any]]


class CompatibleItem(BaseModel):
    model: dict[str, Any]
    status: str
    reasons: list[dict[str, Any]]


class LoraRef(BaseModel):
    model_config = ConfigDict(extra="forbid")
    ref: Ref
    weight: float = Field(default=1.0, ge=-10.0, le=10.0)


class EmbeddingRef(BaseModel):
    model_config = ConfigDict(extra="forbid")
    ref: Ref
    token: Annotated[str, Field(min_length=1, max_length=200, pattern=r"^[^\x00-\x1f\x7f\s]+$")]


class SetRequest(BaseModel):
    """A set to check: every ref is a catalog model (name, hash prefix, or a cataloged path)."""

    model_config = ConfigDict(extra="forbid")
    checkpoint: Ref
    loras: list[LoraRef] = Field(default_factory=list, max_length=16)
    vae: Ref | None = None
    embeddings: list[Ref] = Field(default_factory=list, max_length=16)
    controlnets: list[Ref] = Field(default_factory=list, max_length=8)
    text_encoders: list[Ref] = Field(default_factory=list, max_length=4)


class PlanRequest(SetRequest):
    vram: Annotated[str, Field(min_length=1, max_length=40, pattern=r"^[0-9][0-9A-Za-z. ]*$")]
    width: int | None = Field(default=None, ge=8, le=8192, multiple_of=8)
    height: int | None = Field(default=None, ge=8, le=8192, multiple_of=8)
    batch: int = Field(default=1, ge=1, le=64)
    bf16: bool = True
    attention: Literal["sdpa", "naive"] = "sdpa"


class JobSpec(BaseModel):
    """A generation job (the keys of docs/deploy.md#job-spec)."""

    model_config = ConfigDict(extra="forbid")
    checkpoint: Ref
    prompt: Text
    negative_prompt: Text | None = None
    seed: int | None = Field(default=None, ge=0, le=2**32 - 1)
    batch_size: int | None = Field(default=None, ge=1, le=8)
    steps: int | None = Field(default=None, ge=1, le=200)
    cfg: float | None = Field(default=None, ge=0.0, le=100.0)
    clip_skip: int | None = Field(default=None, ge=1, le=12)
    true_cfg: float | None = Field(default=None, ge=1.0, le=MAX_TRUE_CFG)
    width: int | None = Field(default=None, ge=8, le=4096, multiple_of=8)
    height: int | None = Field(default=None, ge=8, le=4096, multiple_of=8)
    scheduler: Ref | None = None
    loras: list[LoraRef] | None = Field(default=None, max_length=16)

    @field_validator("scheduler")
    @classmethod
    def _known_scheduler(cls, value: str | None) -> str | None:
        # (the schedulers the built-in backend runs; jobs are run by it)
        from modelsafe.plugins.builtin.backend_diffusers import SCHEDULERS

        if value is not None and value not in SCHEDULERS:
            raise ValueError(f"unknown scheduler; one of {', '.join(SCHEDULERS)}")
        return value

    vae: Ref | None = None
    embeddings: list[EmbeddingRef] | None = Field(default=None, max_length=16)
    family: Literal["sd1", "sd2", "sdxl", "sd3", "sd3.5", "flux1"] | None = None
    tokenizers: Ref | None = None
    config_dir: Ref | None = None
    vram: Annotated[str, Field(max_length=40, pattern=r"^[0-9][0-9A-Za-z. ]*$")] | None = None
    device: Literal["cpu", "cuda"] | None = None


JobStatus = Literal["queued", "running", "cancelling", "done", "failed", "cancelled"]


class Job(BaseModel):
    """A job: ``queued`` -> ``running`` -> ``done`` | ``failed``; a cancel makes it
    ``cancelled`` (a running one is ``cancelling`` until its worker stops at its next step)."""

    id: str
    status: JobStatus
    spec: dict[str, Any]
    error: dict[str, Any] | None
    output_ids: list[int]
    worker: str | None
    attempts: int
    created_at: str
    started_at: str | None
    finished_at: str | None
    vram_need: int | None = None
    queue: str | None = None
    cancelled_by: str | None = None
    cancelled_at: str | None = None


class OutputItem(BaseModel):
    id: int
    sha256: str | None
    checkpoint_id: int | None
    created_at: str | None
    image_url: str
    exists: bool
    recipe: dict[str, Any]


class OutputPage(BaseModel):
    total: int
    limit: int
    offset: int
    items: list[OutputItem]
