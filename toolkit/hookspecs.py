"""Hook specifications: the whole contract between the toolkit core and a plugin.

A plugin is a module (or object) with functions decorated by `toolkit.hookimpl`, declared in the
`toolkit` entry-point group of its package::

    [project.entry-points.toolkit]
    my_plugin = "my_package.toolkit_plugin"

Each `register_*` hook receives a `register(name, factory, config=ConfigDataclass)` callable. The
recipe section that names the component is validated against `config` (a dataclass; every field
needs a default) and the factory is called with the resulting instance. The factory signatures for
each kind are given in the hook docstrings below.
"""

from __future__ import annotations

import pluggy

hookspec = pluggy.HookspecMarker("toolkit")
hookimpl = pluggy.HookimplMarker("toolkit")


@hookspec
def register_models(register):
    """Register model families.

    `factory(config) -> torch.nn.Module`. The factory must work under `with torch.device("meta"):`
    so dry runs allocate nothing. What else a model may offer the engine is a Protocol in
    `toolkit.capabilities`, checked on the model the factory built (never on a wrapper):
    `training_flops_per_item(sequence_length)` (TrainingFlops: MFU), `fsdp_units()`
    (ShardingUnits: FSDP2 shards these one at a time), `layer_summary()` (LayerSummary:
    `toolkit-train --dry-run`) and `run_files()` (RunFiles: files copied into the run directory;
    a dataset may offer it too, for its tokenizer or synset vocabulary).
    """


@hookspec
def register_losses(register):
    """Register losses. `factory(config) -> callable` (usually an `nn.Module`); the task calls it."""


@hookspec
def register_datasets(register):
    """Register datasets.

    `factory(config, split: str, shard: toolkit.data.ShardInfo) -> toolkit.data.BatchSource`.
    `split` is "train" or "val". The returned object yields ready batches for this rank's
    share of each global batch, and saves/restores its position with `state_dict()` /
    `load_state_dict()` so that a resumed run sees exactly the batches it would have seen.
    The core provides the plumbing: `toolkit.data.order` (a resumable training order and a
    validation pass, with `OrderedTrainSource` / `OrderedValidationSource` to build on),
    `toolkit.data.shards` (shard patterns, reading webdataset shards) and `toolkit.data.cache`
    (the cache root, content hashes, build-once under a lock).
    """


@hookspec
def register_tasks(register):
    """Register tasks.

    `factory(config, loss) -> toolkit.task.Task`, where `loss` is the built loss component or
    None when the recipe has no `loss` section. A task turns (model, batch) into a
    `toolkit.task.StepOutput` (loss, item count, metrics, sequence length). Optional Protocols in
    `toolkit.capabilities`: `item_unit` (ItemUnit: tokens/s, images/s), `val_perplexity`
    (ReportsPerplexity), `model_roles` (ManyModels: the task uses several named models, each
    `toolkit.task.Role.trained` or `.frozen`, and its steps receive a name -> model mapping;
    the recipe names them under `models:`) and `train_step(context)` (CustomLoop: the task runs
    its own inner loop, several updates per batch, through the trainer's
    `toolkit.engine.loop.StepContext` services).
    """


@hookspec
def register_rewards(register):
    """Register rewards for reinforcement learning from feedback.

    `factory(config) -> reward`, an object with `score(samples) -> sequence of N floats` for N
    samples, each with `prompt` (str), `completion` (the generated text, str) and `reference`
    (the data's reference answer, or None). Programmatic checks (an exact final number) and
    learned reward models are both rewards; an RL task names one in its config. A reward that
    raises is reported as one line naming it and its plugin; a non-finite score skips the step.
    """


@hookspec
def register_routers(register):
    """Register routers (token- or layer-level compute routing, as in Duo-LLM).

    `factory(config) -> torch.nn.Module`; models that accept a router look it up themselves.
    """


@hookspec
def register_decoders(register):
    """Register decoding paths: other ways to run a loaded model's forward pass (sparse FFNs, say).

    `factory(config, model) -> torch.nn.Module`: the model wrapped to compute the same function
    another way, with the model's own `forward(input_ids)` and, when the model has them,
    `make_cache` / `forward_step` (KV-cache decoding), so samplers and evaluators run it unchanged.
    `toolkit-generate --decoder NAME --decoder-options YAML` and `toolkit-eval --decoder ...` apply
    one, so quality is measured on the path that is timed. A model that does not fit raises a
    ToolkitError (one line). The wrapper may offer `decoding_report() -> str`: one line of what
    the path did (tokens/s, bytes read); the commands print it to stderr (and eval keeps it in
    results.json's notes).
    """


@hookspec
def register_optimizers(register):
    """Register optimizers. `factory(config, model: nn.Module) -> torch.optim.Optimizer`.

    The factory decides parameter groups (for example no weight decay on norms and biases).
    """


@hookspec
def register_schedulers(register):
    """Register learning-rate schedules.

    `factory(config, optimizer, max_steps: int) -> torch.optim.lr_scheduler.LRScheduler`,
    stepped once per optimizer step.
    """


@hookspec
def register_evaluators(register):
    """Register evaluators run by `toolkit-eval`. `factory(config) -> evaluator`."""


@hookspec
def register_callbacks(register):
    """Register trainer callbacks. `factory(config) -> toolkit.engine.callbacks.Callback`.

    Callbacks observe the run (train start, step ends, evaluations, saves, train end); they never
    change the loop. A recipe enables them as a list: `callbacks: [{name: tensorboard, every: 10}]`.
    """


@hookspec
def register_model_importers(register):
    """Register readers of foreign checkpoint formats: `register(name, importer)`.

    `importer` is an object with the `toolkit.importers.ModelImporter` shape: a `description`
    string naming the format ("a Hugging Face OpenELM directory"), `recognizes(path) -> bool`
    (cheap: small metadata files only, False for anything foreign) and `load(path) -> nn.Module`
    (the model in the toolkit's own implementation, on the CPU in eval mode; `CheckpointError`
    when the files are in the format but broken). Commands that take a model path
    (`toolkit-generate --model`, `toolkit-eval --model`) ask the importers before their generic
    loaders, so a plugin that implements a family natively also serves that family's published
    checkpoints. A path two importers recognise is refused with both names.
    """


@hookspec
def register_recipe_dirs(register):
    """Register directories holding recipes: `register(path, namespace="")`.

    Ship the recipes inside your package (as package data, so a wheel carries them) and register
    their folder under your family's name::

        @hookimpl
        def register_recipe_dirs(register):
            register(Path(__file__).with_name("recipes"), namespace="myfamily")

    `toolkit-train myfamily/small.yaml` then reads `recipes/small.yaml` of your package. A
    namespace belongs to one plugin (a second plugin claiming it is an error naming both).
    `register(path)` without a namespace looks every name up in `path` as given.

    Recipe names on the command line and in `base:` are looked up after the current directory
    (and, for `base:`, the folder of the recipe that names it), so one family's recipe can build
    on another's: `base: catlip/tiny.yaml`.
    """
