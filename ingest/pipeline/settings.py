"""The pipeline's settings: registry and state folders, the utility's clock, batching, health, the write spool."""

from __future__ import annotations

from pathlib import Path
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, Field, field_validator


class PipelineSettings(BaseModel):
    registry: Path = Field(Path("./registry"), description="registry folder of CSV files")
    state_dir: Path = Field(Path("./.cistern"), description="checkpoints, write spool, dead letters")
    timezone: str = Field("Asia/Shanghai", description="the utility's clock for calendar days")
    batch_max_messages: int = Field(5000, ge=1, le=100_000, description="messages decoded and written together")
    batch_max_bytes: int = Field(2 << 20, ge=0, description="payload bytes a batch holds at most (0: no limit); "
                                                            "a batch of daily uploads is cut there, so memory and "
                                                            "write size follow the readings")
    batch_max_wait_s: float = Field(0.25, gt=0, le=60, description="longest a message waits for its batch, seconds")
    health_interval_s: float = Field(30.0, gt=0, description="seconds between health lines in the log")
    tick_interval_s: float = Field(5.0, gt=0, description="wall-clock seconds between detector clock ticks (live)")
    flood_max_per_device: int = Field(2000, ge=0, description="most messages one device may have in a batch; the "
                                                             "excess is dead-lettered so a flood cannot starve the "
                                                             "others (0: no limit)")
    write_lanes: int = Field(2, ge=1, le=8, description="concurrent write requests a large batch is split into, "
                                                        "by device (InfluxDB parses each request on its own core)")
    replay_workers: int = Field(-1, ge=-1, le=64, description="processes that decode ahead for cistern replay: "
                                                              "-1 one fewer than the processors for a capture "
                                                              "over 16 MB, 0 none (all in one process)")
    spool_max_bytes: int = Field(1 << 30, ge=0, description="disk spool for writes while InfluxDB is down, bytes "
                                                            "(0: off)")
    registry_check_interval_s: float = Field(10.0, ge=0, description="seconds between looks at the registry files "
                                                                     "while running: a change that stays the same "
                                                                     "for one look is reloaded without a restart "
                                                                     "(0: only on SIGHUP)")
    registry_reload_max_removed_share: float = Field(0.1, ge=0, le=1, description="a reload noticed by its files "
                                                                                  "that would remove more than this "
                                                                                  "share of the meters (or buildings, "
                                                                                  "rooms, tanks) is refused as a "
                                                                                  "likely mistake; SIGHUP applies it")
    detect: bool = Field(True, description="run the detectors (turn off on extra ingesters of a shared "
                                           "subscription group: each sees only part of every meter's traffic)")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field("INFO", description="log level")

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: str) -> str:
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {v!r} (use an IANA name such as Asia/Shanghai)") from None
        return v
