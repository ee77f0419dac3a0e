"""README "Train on your own data", run as written on files of our own: text (folder -> shards ->
tokenizer -> train with validation -> generate -> evaluate -> export -> transformers) and image-text
pairs (folder -> shards -> vocabulary -> CatLIP -> transfer), plus the mistakes a newcomer makes on
the way, each of which must name the setting or file to change.

Each README command runs through its CLI's entry function in this process (the same argument
parsing, errors and exit codes as the console script, without a new interpreter per step), with
only sizes changed (`SIZES`) and a few speed-only options appended, so it takes seconds.
"""

from __future__ import annotations

import importlib.util
import re
import shlex
import subprocess
import sys

import pytest
import torch
from PIL import Image, ImageDraw

from helpers import REPO, assert_one_line_error
from toolkit.cli.common import run_cli

README = (REPO / "README.md").read_text(encoding="utf-8")
TEXT_COMMANDS = [
    "python tools/build_text_shards.py mytext/ data/text/",
    "toolkit-tokenizer train --shards data/text/ --vocab-size 4096 --out tokenizer.model",
    "toolkit-train openelm/tiny.yaml data.train_shards='data/text/train-*.tar' data.tokenizer=tokenizer.model "
    "data.vocab_size=4096 trainer.out_dir=runs/mine",
    'toolkit-generate runs/mine --prompt "Once upon a time" --temperature 0',
    "toolkit-eval perplexity --model runs/mine shards='data/text/val-*.tar'",
    "toolkit-export --format hf runs/mine --out exported/mine",
]
IMAGE_COMMANDS = [
    "python tools/build_image_text_shards.py --folder photos/ --out data/images/",
    "toolkit-catlip-vocab --shards 'data/images/train-*.tar' --out synsets.json",
    "toolkit-train catlip/tiny.yaml data.train_shards='data/images/train-*.tar' "
    "data.val_shards='data/images/val-*.tar' data.vocabulary=synsets.json data.top_k=NUM_SYNSETS "
    "trainer.out_dir=runs/my-catlip",
    "toolkit-train transfer/fashion_mnist.yaml model.init_from=runs/my-catlip trainer.out_dir=runs/my-transfer",
]
SIZES = {"4096": "320"}  # a vocabulary our few files support
FAST = {  # speed only: tiny models, few steps
    "openelm/tiny.yaml": ["model.num_layers=2", "model.model_dim=64", "model.head_dim=16", "data.seq_len=32",
                          "data.batch_size=4", "trainer.max_steps=4", "trainer.eval_every=2",
                          "trainer.eval_batches=2", "trainer.save_every=4", "trainer.progress=false",
                          "schedule.warmup_steps=1"],
    "catlip/tiny.yaml": ["data.image_size=16", "data.batch_size=4", "model.patch_size=4", "model.num_layers=1",
                         "model.hidden_dim=32", "model.num_heads=2", "model.mlp_dim=64", "trainer.max_steps=2",
                         "trainer.save_every=0", "trainer.progress=false", "schedule.warmup_steps=1"],
    "transfer/fashion_mnist.yaml": ["data.image_size=16", "data.train_limit=32", "data.val_limit=32",
                                    "data.batch_size=16", "trainer.max_steps=2", "trainer.eval_every=0",
                                    "trainer.progress=false"],
    "toolkit-generate": ["--max-new-tokens", "12"],
    "toolkit-eval": ["--limit", "4", "--device", "cpu", "--no-progress"],
}
CAPTIONS = ["a red dog on the grass", "a black cat on a chair", "a dog and a ball", "a cat in a box",
            "a bird on a tree", "a dog in the snow", "a tree by a house", "a ball on the beach",
            "a cat and a bird", "a house with a red door", "a bird in the sky", "a dog with a hat"]


def readme_block(heading: str) -> str:
    """The first ```bash block after `heading` in the README."""
    after = README[README.index(heading):]
    return re.search(r"```bash\n(.*?)```", after, re.S).group(1)


def load_tool(name: str):
    spec = importlib.util.spec_from_file_location(f"walkthrough_{name}", REPO / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def entry(program: str, first_argument: str):
    """The function behind a README command: a tool's `run`, or a console script's."""
    if program == "python":
        return load_tool(first_argument.removeprefix("tools/").removesuffix(".py")).run
    from plugins.catlip import vocab_cli
    from plugins.lm import generate_cli, tokenizer_cli
    from plugins.openelm import export_cli
    from toolkit.cli import eval as eval_cli
    from toolkit.cli import train as train_cli

    return {"toolkit-tokenizer": tokenizer_cli.run, "toolkit-train": train_cli.main_with_arguments,
            "toolkit-generate": generate_cli.run, "toolkit-eval": eval_cli.main_with_arguments,
            "toolkit-export": export_cli.run, "toolkit-catlip-vocab": vocab_cli.run}[program]


def run(command: str, capsys, fast: bool = True) -> subprocess.CompletedProcess:
    for old, new in SIZES.items():
        command = command.replace(old, new)
    words = shlex.split(command)
    program, arguments = words[0], words[1:]
    if program == "python":
        main, arguments = entry(program, arguments[0]), arguments[1:]
    else:
        main = entry(program, "")
    if fast:
        arguments += FAST.get(arguments[0], []) + FAST.get(program, [])
    code = run_cli(main, arguments)
    captured = capsys.readouterr()
    return subprocess.CompletedProcess(words, code, captured.out, captured.err)


def ok(command: str, capsys) -> subprocess.CompletedProcess:
    result = run(command, capsys)
    assert result.returncode == 0, (command, result.stderr[-2000:])
    return result


def write_own_files(root) -> None:
    (root / "mytext").mkdir()
    words = ("the river runs past a quiet mill where seven old friends share bread and stories every "
             "evening until the lamps go out").split()
    generator = torch.Generator().manual_seed(0)
    for index in range(5):
        picks = torch.randint(len(words), (60, 9), generator=generator).tolist()
        lines = [" ".join(words[i] for i in row).capitalize() + "." for row in picks]
        (root / "mytext" / f"story-{index}.txt").write_text("Once upon a time.\n" + "\n".join(lines) + "\n")
    (root / "photos").mkdir()
    for index, caption in enumerate(CAPTIONS):
        image = Image.new("RGB", (24, 24), (20 * index, 255 - 20 * index, 90))
        ImageDraw.Draw(image).ellipse((2 + index, 3, 20, 12 + index), fill=(250, 30 * (index % 8), 10))
        image.save(root / "photos" / f"photo-{index:02d}.png")
        (root / "photos" / f"photo-{index:02d}.txt").write_text(caption + "\n")


@pytest.mark.slow
def test_the_readme_walkthrough_on_our_own_files(tmp_path, monkeypatch, capsys):
    transformers = pytest.importorskip("transformers")
    assert [line for line in readme_block("### Text: a folder").splitlines() if line] == TEXT_COMMANDS
    assert [line for line in readme_block("### Image-text pairs").splitlines() if line] == IMAGE_COMMANDS
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    write_own_files(tmp_path)

    # Text. The newcomer's first tries name what to do instead.
    mistake = run("toolkit-tokenizer train --shards mytext/ --vocab-size 320 --out tokenizer.model", capsys)
    assert_one_line_error(mistake, "--shards", "tools/build_text_shards.py")
    build, tokenizer = (ok(command, capsys) for command in TEXT_COMMANDS[:2])
    assert "val: 1 documents" in build.stdout and "wrote tokenizer.model: 320 tokens" in tokenizer.stdout
    too_big = run("toolkit-tokenizer train --shards data/text/ --vocab-size 60000 --out big.model", capsys)
    assert_one_line_error(too_big, "Vocabulary size too high", "data.vocab_size", "--vocab-size")
    train = ok(TEXT_COMMANDS[2], capsys)
    assert "note: validating on data/text/val-*.tar" in train.stderr and "val_loss" in train.stdout
    generated = ok(TEXT_COMMANDS[3], capsys).stdout
    assert generated.startswith("Once upon a time") and len(generated) > len("Once upon a time\n")
    ok(TEXT_COMMANDS[4], capsys)
    assert [path.name.rsplit("-", 1)[0] for path in (tmp_path / "eval").iterdir()] == ["perplexity-mine"]
    ok(TEXT_COMMANDS[5], capsys)
    # ... and elsewhere, with transformers alone: the README's snippet, greedy like toolkit-generate.
    model = transformers.AutoModelForCausalLM.from_pretrained("exported/mine", trust_remote_code=True)
    hf_tokenizer = transformers.AutoTokenizer.from_pretrained("exported/mine", trust_remote_code=True)
    inputs = hf_tokenizer("Once upon a time", return_tensors="pt")
    output = model.generate(**inputs, max_new_tokens=12, do_sample=False)
    assert hf_tokenizer.decode(output[0], skip_special_tokens=True) + "\n" == generated
    for line in ('AutoModelForCausalLM.from_pretrained("exported/mine", trust_remote_code=True)',
                 'AutoTokenizer.from_pretrained("exported/mine", trust_remote_code=True)'):
        assert line in README

    # Image-text pairs.
    ok(IMAGE_COMMANDS[0], capsys)
    vocabulary = ok(IMAGE_COMMANDS[1], capsys).stdout
    count = int(re.search(r"wrote synsets.json: (\d+) synsets", vocabulary).group(1))
    forgot = run(IMAGE_COMMANDS[2].replace(" data.top_k=NUM_SYNSETS", ""), capsys)
    assert_one_line_error(forgot, "synsets.json", "data.top_k asks for 384", "set data.top_k", str(count))
    catlip = ok(IMAGE_COMMANDS[2].replace("NUM_SYNSETS", str(count)), capsys)
    assert "val_loss" in catlip.stdout and (tmp_path / "runs" / "my-catlip" / "synsets.json").is_file()
    transfer = ok(IMAGE_COMMANDS[3], capsys)
    assert "val_accuracy" in transfer.stdout and (tmp_path / "runs" / "my-transfer" / "transfer_init.json").is_file()
