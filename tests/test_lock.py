"""requirements.lock agrees with requirements.txt (text only: no network, no installed packages).

requirements.txt holds the direct pins; requirements.lock, written by `make lock` (scripts/lock.sh), pins every
package of the environment with hashes and is what `make setup` installs. `make setup` runs this file as a script
(standard library only) before installing, so a pin changed in requirements.txt without `make lock` stops there.
"""

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REQUIREMENTS = ROOT / "requirements.txt"
LOCK = ROOT / "requirements.lock"
LEFT_OUT = {"tensorflow-text", "tensorflow"}  # keras-hub's declared dependencies, kept out on purpose
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)")


def normalize(name):
    return re.sub(r"[-_.]+", "-", name).lower()


def direct_pins(text):
    """{name: version} of requirements.txt: its requirement lines and its `# no-deps:` lines."""
    pins = {}
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("# no-deps:"):
            line = line[len("# no-deps:") :].strip()
        elif not line or line.startswith("#"):
            continue
        match = PIN.match(line)
        assert match, f"requirements.txt: not an exact pin (name==version): {line!r}"
        pins[normalize(match[1])] = match[2]
    return pins


def locked(text):
    """{name: (version, [sha256 hashes])} of a pip-compile style lock (continuation lines with --hash)."""
    entries = {}
    current = None
    for line in text.replace("\\\n", " ").splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        match = PIN.match(line)
        assert match, f"requirements.lock: not an exact pin (name==version): {line!r}"
        current = normalize(match[1])
        assert current not in entries, f"requirements.lock: {current} appears twice"
        entries[current] = (match[2], re.findall(r"--hash=sha256:([0-9a-f]{64})\b", line))
    return entries


def problems(requirements_text, lock_text):
    """Every way the lock disagrees with the direct pins, as readable lines (empty when consistent)."""
    pins, lock = direct_pins(requirements_text), locked(lock_text)
    found = []
    for name, version in sorted(pins.items()):
        if name not in lock:
            found.append(f"{name}=={version} is in requirements.txt but not in requirements.lock")
        elif lock[name][0] != version:
            found.append(f"{name}: requirements.txt pins {version}, requirements.lock has {lock[name][0]}")
    for name, (version, hashes) in sorted(lock.items()):
        if not hashes:
            found.append(f"{name}=={version} has no --hash in requirements.lock")
        if name in LEFT_OUT:
            found.append(f"{name} is in requirements.lock; it must stay out (see requirements.txt)")
    for name in ("pip", "setuptools"):  # the installer and pyproject.toml's build backend are locked too
        if name not in lock:
            found.append(f"{name} is missing from requirements.lock")
    return found


def test_lock_agrees_with_requirements():
    assert problems(REQUIREMENTS.read_text(), LOCK.read_text()) == []


def test_lock_is_a_complete_environment():
    lock = locked(LOCK.read_text())
    # a resolved environment, not just the direct pins: the packages that used to float are in it
    for name in ("scipy", "sphinx", "myst-nb", "pyyaml", "keras-hub", "protobuf"):
        assert name in lock, name
    assert len(lock) > 2 * len(direct_pins(REQUIREMENTS.read_text()))


def test_problems_are_reported():
    requirements = "# comment\ntorch==2.14.1\n# no-deps: keras-hub==0.32.0\n"
    lock = "torch==2.14.0 \\\n    --hash=sha256:" + "a" * 64 + "\n    # via -r requirements.txt\nscipy==1.0\n"
    assert problems(requirements, lock) == [
        "keras-hub==0.32.0 is in requirements.txt but not in requirements.lock",
        "torch: requirements.txt pins 2.14.1, requirements.lock has 2.14.0",
        "scipy==1.0 has no --hash in requirements.lock",
        "pip is missing from requirements.lock",
        "setuptools is missing from requirements.lock",
    ]


if __name__ == "__main__":
    found = problems(REQUIREMENTS.read_text(), LOCK.read_text())
    for line in found:
        print(f"lock check: {line}", file=sys.stderr)
    if found:
        sys.exit("requirements.lock does not match requirements.txt: run `make lock` (scripts/lock.sh)")
    print(f"lock check: requirements.lock agrees with requirements.txt ({len(locked(LOCK.read_text()))} packages)")
