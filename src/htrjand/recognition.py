"""Inference on PyTorch: a trained checkpoint as a `LineReader` (htrjand.runtime)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .charset import Charset
from .checkpoint import CheckpointError, read_checkpoint
from .model import HTRNet, ModelConfig, count_parameters
from .runtime import LineOutput, LineReader, Result, load

__all__ = ["LineOutput", "Recognizer", "Result", "load"]


class Recognizer(LineReader):
    """An HTRNet in eval mode with its charset and preprocessing."""

    engine = "torch"

    def __init__(self, model: HTRNet, charset: Charset, meta: dict | None = None, device: str = "cpu"):
        self.model = model.eval().to(device)
        self.device = device
        super().__init__(charset, meta or {}, model.config.height, model.config.width_stride)

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str = "cpu") -> "Recognizer":
        ckpt = read_checkpoint(path)
        hp = ckpt["hyper_parameters"]
        try:
            config = ModelConfig.from_dict(hp["model"])
            charset = Charset(hp["charset"])
            model = HTRNet(config, charset.num_classes)
            state = {k.removeprefix("model."): v for k, v in ckpt["state_dict"].items() if k.startswith("model.")}
            model.load_state_dict(state)
        except (KeyError, TypeError, ValueError, RuntimeError) as err:
            raise CheckpointError(f"{path}: checkpoint does not match this htrjand's model ({err})".splitlines()[0]) from None
        meta = {**hp.get("htrjand", {}), "preset": hp.get("preset", ""), "model": hp["model"],
                "metrics": ckpt.get("metrics", {}), "epoch": ckpt.get("epoch"), "step": ckpt.get("global_step"),
                "path": str(path)}
        return cls(model, charset, meta, device)

    @property
    def parameters(self) -> int:
        return count_parameters(self.model)

    @torch.inference_mode()
    def run(self, images: np.ndarray, widths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        logits, lengths = self.model(torch.from_numpy(images).to(self.device), torch.from_numpy(widths).to(self.device))
        return logits.float().cpu().numpy(), lengths.cpu().numpy()
