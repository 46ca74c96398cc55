"""A reader of the WordNet 3.0 database files (``data.noun``, ``index.noun``, ... as Debian's ``wordnet-base`` installs
them in ``/usr/share/wordnet``), just what deriving the caption lexicon needs: synsets with their lemmas, hyponym
links, sense order, and every word form of every part of speech.

The format is WordNet's own (``wndb(5)``): one synset per line of ``data.POS``, ``offset lex_filenum ss_type w_cnt
word lex_id ... p_cnt ptr ... | gloss``; one lemma per line of ``index.POS`` with its synset offsets in sense order.
Synset names are NLTK's (``dog.n.01``: first lemma, part of speech, position among that lemma's senses), which are
also the names Visual Genome's ``synsets`` fields use. NLTK's own reader was not used: it needs a ``lexnames`` file
that ``wordnet-base`` does not ship, and this is one page of code.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

POS_FILES = {"n": "noun", "v": "verb", "a": "adj", "r": "adv"}


@dataclass
class Synset:
    offset: int
    lemmas: list[str]  # as written, "_" between words ("Labrador_retriever")
    hyponyms: list[int] = field(default_factory=list)  # offsets; instance hyponyms (proper names) left out
    hypernyms: list[int] = field(default_factory=list)
    parts: list[int] = field(default_factory=list)  # part meronyms: a car's door, window, wheel
    instance: bool = False  # a named individual ("Heron", the mathematician), not a kind of thing
    name: str = ""  # "dog.n.01"


class WordNet:
    def __init__(self, root: str | Path):
        self.root = Path(root)
        if not (self.root / "data.noun").is_file():
            raise FileNotFoundError(
                f"{self.root}: no WordNet database (data.noun); install Debian's wordnet-base "
                "(apt-get install wordnet-base) or pass --wordnet DIR"
            )
        self.nouns: dict[int, Synset] = {}
        for line in self._lines("data.noun"):
            fields = line.split(" | ", 1)[0].split()
            count = int(fields[3], 16)
            lemmas = fields[4 : 4 + 2 * count : 2]
            rest = 4 + 2 * count
            pointers = fields[rest + 1 : rest + 1 + 4 * int(fields[rest])]
            links: dict[str, list[int]] = {"~": [], "@": [], "%p": [], "@i": []}
            for i in range(0, len(pointers), 4):
                if pointers[i] in links and pointers[i + 2] == "n":
                    links[pointers[i]].append(int(pointers[i + 1]))
            offset = int(fields[0])
            self.nouns[offset] = Synset(offset, lemmas, links["~"], links["@"], links["%p"], bool(links["@i"]))
        self.senses: dict[str, dict[str, list[int]]] = {}  # pos -> lemma (lower case) -> offsets in sense order
        for pos, name in POS_FILES.items():
            table = self.senses[pos] = {}
            for line in self._lines(f"index.{name}"):
                fields = line.split()
                synsets = int(fields[2])
                table[fields[0]] = [int(x) for x in fields[-synsets:]]
        for lemma, offsets in self.senses["n"].items():
            for number, offset in enumerate(offsets, 1):
                synset = self.nouns[offset]
                if not synset.name and synset.lemmas[0].lower() == lemma:
                    synset.name = f"{lemma}.n.{number:02d}"
        self.by_name = {s.name: s for s in self.nouns.values()}
        self.exceptions = {pos: self._exceptions(name) for pos, name in POS_FILES.items()}

    def _lines(self, name: str) -> Iterator[str]:
        with open(self.root / name, encoding="latin-1") as f:
            for line in f:
                if not line.startswith(" "):  # the licence header lines start with spaces
                    yield line.rstrip("\n")

    def _exceptions(self, name: str) -> dict[str, str]:
        """Irregular inflection -> lemma ("mice" -> "mouse"), from ``POS.exc``."""
        path = self.root / f"{name}.exc"
        if not path.is_file():
            return {}
        return {fields[0]: fields[1] for fields in (line.split() for line in self._lines(f"{name}.exc"))}

    def synset(self, name: str) -> Synset:
        try:
            return self.by_name[name]
        except KeyError:
            raise KeyError(f"{name}: no such noun synset in {self.root}") from None

    def closure(self, name: str) -> set[int]:
        """The synset and all its hyponyms, transitively (offsets)."""
        return self._walk([self.synset(name).offset], "hyponyms")

    def ancestors(self, offsets: set[int]) -> set[int]:
        """The synsets and all their hypernyms, transitively."""
        return self._walk(list(offsets), "hypernyms")

    def _walk(self, todo: list[int], link: str) -> set[int]:
        seen = set()
        while todo:
            offset = todo.pop()
            if offset not in seen:
                seen.add(offset)
                todo.extend(getattr(self.nouns[offset], link))
        return seen

    def first_sense(self, lemma: str) -> int | None:
        """The offset of a noun's most frequent sense that is a kind of thing (WordNet orders senses by frequency;
        named individuals are skipped: "heron" is a bird before it is Hero of Alexandria), or None."""
        offsets = self.senses["n"].get(lemma.lower().replace(" ", "_"), [])
        return next((o for o in offsets if not self.nouns[o].instance), None)

    def words(self) -> set[str]:
        """Every lemma of every part of speech, lower case, with "_" turned into spaces, plus irregular forms."""
        found = {lemma.replace("_", " ") for table in self.senses.values() for lemma in table}
        found |= {form.replace("_", " ") for table in self.exceptions.values() for form in table}
        return found
