"""The task-state hook of checkpoints (toolkit.capabilities.TaskState): a task's own JSON state is
saved and restored exactly, a checkpoint without the file leaves the task as built, and a state
that is not JSON-able or does not fit the task is one clear error. (An RL run resumed with an
adaptive KL coefficient, through the trainer, is tests/plugins/rlhf/test_rl_task.py.)"""

from __future__ import annotations

import pytest
import torch

from toolkit.capabilities import TaskState
from toolkit.engine.checkpoint import write_file
from toolkit.engine.state import TaskStateFile, load_states
from toolkit.errors import CheckpointError, TrainingError


class Adaptive:
    def __init__(self, coefficient=0.05) -> None:
        self.coefficient = coefficient

    def task_state_dict(self):
        return {"coefficient": self.coefficient, "history": [1, 2]}

    def load_task_state_dict(self, state):
        self.coefficient = state["coefficient"]


def test_a_task_state_round_trips_through_its_json_file_exactly(tmp_path):
    task = Adaptive(0.05 * 0.8 * 1.0000001)  # a float with all its bits in use
    assert isinstance(task, TaskState) and not isinstance(object(), TaskState)
    write_file(tmp_path / "task_state.json", TaskStateFile(task, "toy").state_dict())
    resumed = Adaptive()
    load_states(tmp_path, {"task_state.json": TaskStateFile(resumed, "toy")})
    assert resumed.coefficient == task.coefficient  # bit for bit


def test_a_checkpoint_without_the_file_leaves_the_task_as_built(tmp_path):
    task = Adaptive(0.125)
    load_states(tmp_path, {"task_state.json": TaskStateFile(task, "toy")})
    assert task.coefficient == 0.125


def test_a_state_that_is_not_json_is_refused_when_saved():
    with pytest.raises(TrainingError) as error:
        TaskStateFile(Adaptive(torch.tensor(0.5)), "toy").state_dict()
    assert error.value.message.startswith("task 'toy': task_state_dict() is not JSON-able (Object of type Tensor")


def test_a_state_that_does_not_fit_the_task_names_the_file(tmp_path):
    (tmp_path / "task_state.json").write_text('{"other": 1}')
    with pytest.raises(CheckpointError) as error:
        load_states(tmp_path, {"task_state.json": TaskStateFile(Adaptive(), "toy")})
    assert error.value.message == f"{tmp_path}/task_state.json: does not match task 'toy' (KeyError: 'coefficient')"
