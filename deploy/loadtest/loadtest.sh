#!/usr/bin/env bash
# Load-test a deployed dify-gateway from this machine (client only; see README.md beside this file).
# Every argument goes to `python -m bench.run`; --target-url is required.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
python="${PYTHON:-$root/.venv/bin/python}"
[ -x "$python" ] || python="$(command -v python3)"
case " $* " in
  *" --target-url"*) ;;
  *) echo "usage: $0 --target-url http://dify-gateway:8080 --inner-api-key KEY [--llm provider:model ...]" >&2
     exit 2 ;;
esac
cd "$root"
exec "$python" -m bench.run "$@"
