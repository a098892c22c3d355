# Sourced by scripts/serve and scripts/test: make ./.venv match requirements.lock.
# The venv is rebuilt only when the lock file changes (its hash is stamped in the venv).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/.venv"
python="${BASTION_PYTHON:-python3}"
stamp="$venv/.lock-sha256"
want="$(sha256sum "$root/requirements.lock" "$root/pyproject.toml" | sha256sum | cut -d' ' -f1)"
if [ ! -x "$venv/bin/python" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    echo "bastion: preparing $venv from requirements.lock (once per lock change)" >&2
    "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
        || { echo "bastion: Python 3.11 or newer is required" >&2; exit 1; }
    "$python" -m venv "$venv"
    # (grep drops this machine's notes about absent local package mirrors)
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
        --require-hashes --no-deps -r "$root/requirements.lock" 2>&1 | { grep -v 'is ignored' || true; } >&2
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
        --no-deps -e "$root" 2>&1 | { grep -v 'is ignored' || true; } >&2
    "$venv/bin/python" -c 'import bastion' \
        || { echo "bastion: installing into $venv failed" >&2; exit 1; }
    echo "$want" > "$stamp"
fi
export PATH="$venv/bin:$PATH"
