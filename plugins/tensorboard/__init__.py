"""The TensorBoard plugin: registers the `tensorboard` trainer callback.

Enable it from a recipe::

    callbacks:
      - name: tensorboard
        every: 10

and watch the run with `tensorboard --logdir <run_dir>/tensorboard`. Importing this plugin does
not import tensorboard; building the callback without it installed raises a `PluginError` whose
hint names `pip install tensorboard`.
"""

from __future__ import annotations

from plugins.tensorboard.callback import TensorBoardCallback, TensorBoardConfig, build_tensorboard
from toolkit import hookimpl

__all__ = ["TensorBoardCallback", "TensorBoardConfig", "build_tensorboard"]


@hookimpl
def register_callbacks(register):
    register("tensorboard", build_tensorboard, config=TensorBoardConfig)
