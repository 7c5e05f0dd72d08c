#!/usr/bin/env bash
# Make Fashion-MNIST available: $DATA_DIR, data/ or the Debian package path, else install the
# Debian package (when apt-get and root are there), else torchvision downloads it on first use.
set -euo pipefail
deb=/usr/share/datasets/fashion-mnist
have() { [ -n "$1" ] && ls "$1"/train-images-idx3-ubyte* >/dev/null 2>&1; }
if have "${DATA_DIR:-}" || have data || have data/fashion-mnist || have data/FashionMNIST/raw || have "$deb"; then
  exit 0
fi
if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  echo "installing Fashion-MNIST from Debian (dataset-fashion-mnist)"
  apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist >/dev/null
  have "$deb" && exit 0
fi
echo "Fashion-MNIST not found locally: torchvision will download it into data/ on first use"
