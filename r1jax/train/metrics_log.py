"""Metrics sinks: workdir/metrics.jsonl (one JSON object per logged step) and TensorBoard."""

from __future__ import annotations

import json
import os


class MetricsLog:
    def __init__(self, workdir: str, *, enabled: bool = True):
        self.enabled = enabled
        if not enabled:
            return
        self.path = os.path.join(workdir, "metrics.jsonl")
        self._file = open(self.path, "a")
        try:
            from tensorboardX import SummaryWriter
            self._tb = SummaryWriter(os.path.join(workdir, "tensorboard"))
        except ImportError:  # TensorBoard events are optional
            self._tb = None

    def write(self, metrics: dict) -> None:
        if not self.enabled:
            return
        self._file.write(json.dumps(metrics) + "\n")
        self._file.flush()
        if self._tb is not None:
            for k, v in metrics.items():
                if k != "step" and isinstance(v, (int, float)):
                    self._tb.add_scalar(k, v, metrics["step"])

    def close(self) -> None:
        if self.enabled:
            self._file.close()
            if self._tb is not None:
                self._tb.close()


def read_metrics(workdir: str) -> list[dict]:
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f if line.strip()]
