"""The `openelm-hf` model importer: Hugging Face OpenELM directories (Apple's `apple/OpenELM-*` layout,
or what `toolkit-export` writes) read into the toolkit's own OpenELM, so the KV-cache path serves them.
"""

from __future__ import annotations

import json
from pathlib import Path

from torch import nn

CONFIG_FILE = "config.json"


class HFOpenELMImporter:
    """Recognises an OpenELM `config.json` and loads the directory's weights bit-identically."""

    description = "a Hugging Face OpenELM directory"

    def recognizes(self, path: Path) -> bool:
        config_path = Path(path) / CONFIG_FILE
        if not config_path.is_file():
            return False
        try:
            config = json.loads(config_path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            return False  # not ours to judge: the generic loader reports unreadable configs
        if not isinstance(config, dict):
            return False
        # Apple's configs say model_type "openelm"; exported ones may only carry OpenELM's own keys.
        return str(config.get("model_type", "")).lower() == "openelm" or "num_transformer_layers" in config

    def load(self, path: Path) -> nn.Module:
        from plugins.openelm.convert import import_openelm  # torch-heavy; only when a directory is ours

        model, _ = import_openelm(path)
        return model.eval()
