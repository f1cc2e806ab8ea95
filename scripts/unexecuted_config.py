"""Write a copy of _config.yml that builds the book without executing any notebook (`make test`'s HTML check).

jupyter-book 1.x has no command-line switch for execution, but takes another config file with `--config`;
every other setting stays the same as `make book`'s, so the browser test checks the same HTML, minus outputs.
"""

import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent


def main(out: Path) -> None:
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    config["execute"]["execute_notebooks"] = "off"
    # jupyter-book resolves local extension folders against the config file's folder: make them absolute
    extensions = config.get("sphinx", {}).get("local_extensions") or {}
    for name, folder in extensions.items():
        extensions[name] = str(ROOT / folder)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(yaml.safe_dump(config, sort_keys=False))
    print(f"wrote {out} (execute_notebooks: off)")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
