#!/usr/bin/env bash
# Regenerate requirements.lock from requirements.txt: `make lock` (or `UPGRADE=1 make lock`).
#
# requirements.txt holds the direct pins, readable; requirements.lock pins every package of the resolved environment
# (direct and transitive, plus pip and the build backend setuptools) with the sha256 of every file PyPI has for that
# release. `make setup` installs the lock with `pip install --require-hashes --no-deps`.
#
# How: pip-tools' pip-compile (pip's own resolver) in a throwaway virtualenv, on requirements.txt plus pip and
# pyproject.toml's [build-system] requires. Existing pins in requirements.lock are kept unless a direct pin forces a
# change; UPGRADE=1 re-resolves every transitive package to its newest allowed release.
# The `# no-deps:` lines of requirements.txt (keras-hub) are not resolved (their declared dependencies would pull in
# tensorflow-text and the full tensorflow wheel); each is added as a locked, hashed line of its own.
# The result is for Linux x86_64 and CPython 3.11 (the CUDA wheels torch needs there are in it).
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
PIP_TOOLS=pip-tools==7.6.2   # the lock tooling, pinned too
LOCK=requirements.lock

"$PYTHON" -c 'import sys; assert sys.version_info[:2] == (3, 11), f"Python 3.11 required, found {sys.version.split()[0]}; set PYTHON=python3.11"'

work=$(mktemp -d "${TMPDIR:-/tmp}/lock.XXXXXX")
trap 'rm -rf "$work"' EXIT
"$PYTHON" -m venv "$work/venv"
"$work/venv/bin/python" -m pip install --quiet --upgrade pip "$PIP_TOOLS"

# pip-compile annotates each line with the input that asked for it, so the inputs get stable names in $work.
cp requirements.txt "$work/requirements.txt"
{
	echo pip
	"$PYTHON" -c 'import tomllib; print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["build-system"]["requires"]))'
} > "$work/installer-and-build-backend.in"
# Keep existing pins (pip-compile reads its output file); without the no-deps lines, which are added again below.
if [ -f "$LOCK" ] && [ -z "${UPGRADE:-}" ]; then
	"$PYTHON" - "$LOCK" "$work/compiled.lock" <<'EOF'
import sys
src, dst = sys.argv[1:]
text = open(src).read().split("\n# Installed with --no-deps")[0]
open(dst, "w").write(text)
EOF
fi

(
	cd "$work"
	CUSTOM_COMPILE_COMMAND="make lock" venv/bin/pip-compile --quiet --generate-hashes --allow-unsafe --strip-extras \
		--no-emit-index-url --no-emit-find-links --newline=LF ${UPGRADE:+--upgrade} \
		--output-file compiled.lock requirements.txt installer-and-build-backend.in
)

# Hash each `# no-deps:` requirement from the wheel pip picks for it here.
mkdir "$work/no-deps"
: > "$work/no-deps.txt"
for req in $(sed -n 's/^# no-deps: //p' requirements.txt); do
	rm -f "$work"/no-deps/*
	"$work/venv/bin/python" -m pip download --quiet --no-deps --only-binary=:all: -d "$work/no-deps" "$req"
	{
		echo "$req \\"
		for f in "$work"/no-deps/*; do
			echo "    --hash=sha256:$(sha256sum "$f" | cut -d' ' -f1) \\"
		done | sed '$ s/ \\$//'
		echo "    # via -r requirements.txt (# no-deps: line)"
	} >> "$work/no-deps.txt"
done

{
	cat <<'EOF'
# requirements.lock: every package of the book's environment, pinned, with hashes. Generated: do not edit by hand.
# Edit requirements.txt (the direct pins), then run `make lock`; tests/test_lock.py checks that the two agree.
# Install with `pip install --require-hashes --no-deps -r requirements.lock` (what `make setup` does): the lock is
# complete, and --no-deps keeps keras-hub's declared tensorflow-text (full tensorflow wheel) out.
# Resolved for Linux x86_64, CPython 3.11.
EOF
	cat "$work/compiled.lock"
	echo
	echo "# Installed with --no-deps (requirements.txt's \`# no-deps:\` lines); their declared dependencies are not resolved."
	cat "$work/no-deps.txt"
} > "$LOCK"

echo "wrote $LOCK: $(grep -c '^[A-Za-z0-9]' "$LOCK") packages"
