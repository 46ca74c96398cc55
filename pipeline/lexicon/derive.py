"""Derive the caption lexicon (``coco_wordnet.json``) from WordNet 3.0; the JSON is committed, this is how it was made.

    apt-get install wordnet-base   # WordNet 3.0 database files in /usr/share/wordnet
    python -m pipeline.lexicon.derive [--wordnet /usr/share/wordnet] [--out pipeline/lexicon/coco_wordnet.json]
    python -m pipeline.lexicon.derive --review   # print the words a curator should look at, write nothing

What is derived, and the rules (the curation is the tables below; change them and re-run):

- **Words per COCO category**: every lemma of the hyponym closure of the category's root synsets (``ROOTS``), minus
  the subtrees in ``DROP_SUBTREES``, keeping a word only when its *most frequent* noun sense (WordNet's first) lies
  in that closure: "cat" is kept for cat, not for person (cat.n.03, a guy); "mouse" the rodent keeps the word
  "mouse" out of the closure of the computer mouse (the category's own name is added back at run time).
  ``DROP_WORDS`` removes words whose first sense is right but whose everyday use in captions is another thing
  ("pitcher" of water, "queen" bed). A synset in two categories' closures goes to the smaller closure ("hotdog" is
  a sandwich in WordNet, and its own category in COCO). A word curated for one category is not derived for
  another ("hot dog" is also a daredevil in WordNet), and a word two categories derive is left to neither.
- **Synsets**: synset name -> category for every synset kept, so Visual Genome objects (which ship WordNet synset
  names) map to COCO categories without their names.
- **Modifier heads**: the second words of WordNet's two-word nouns whose first word is a category word and which
  name no category ("bus stop", "train station", "dog food"); a category word followed by one of them modifies it.
- **Verb heads**: the modifier heads (derived and curated) that are also verbs: "a dog runs" is not "dog runs" (a
  plural head after a singular word is a verb when a particle follows).
- **Verbs**: object and generic words (not person words) that WordNet also lists as verbs ("ski", "bike", "fork");
  used as verbs (after "to", or with "-s" after a person) they name no object.
- **Near words**: English words (any lemma, plus regular and irregular inflections) one edit from a word the
  misspelling rule corrects to (``curated.fuzzy_targets``: the curated and generic words of five letters or more and
  their plurals): "horse" / "house". The rule never "corrects" them.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from pipeline.lexicon import curated
from pipeline.lexicon.wordnet import WordNet

OUT = Path(__file__).with_name("coco_wordnet.json")

# Root synsets per COCO category (WordNet 3.0 names). A category without roots keeps its curated words only.
ROOTS: dict[str, tuple[str, ...]] = {
    "person": ("person.n.01",),
    "bicycle": ("bicycle.n.01",),
    "car": ("car.n.01", "cab.n.03"),
    "motorcycle": ("motorcycle.n.01", "motor_scooter.n.01"),
    "airplane": ("airplane.n.01", "airliner.n.01", "jet.n.01"),
    "bus": ("bus.n.01",),
    "train": ("train.n.01", "locomotive.n.01", "streetcar.n.01"),
    "truck": ("truck.n.01",),
    "boat": ("boat.n.01", "ship.n.01", "sailing_vessel.n.01", "vessel.n.02"),
    "traffic light": ("traffic_light.n.01",),
    "fire hydrant": ("fireplug.n.01",),
    "stop sign": (),
    "parking meter": ("parking_meter.n.01",),
    "bench": ("bench.n.01",),
    "bird": ("bird.n.01",),
    "cat": ("domestic_cat.n.01", "kitten.n.01"),
    "dog": ("dog.n.01", "puppy.n.01"),
    "horse": ("horse.n.01",),
    "sheep": ("sheep.n.01", "lamb.n.01"),
    "cow": ("cattle.n.01", "cow.n.01", "bull.n.01", "calf.n.01"),
    "elephant": ("elephant.n.01",),
    "bear": ("bear.n.01",),
    "zebra": ("zebra.n.01",),
    "giraffe": ("giraffe.n.01",),
    "backpack": ("backpack.n.01",),
    "umbrella": ("umbrella.n.01",),
    "handbag": ("bag.n.04",),
    "tie": ("necktie.n.01",),
    "suitcase": ("bag.n.06",),
    "frisbee": ("frisbee.n.01",),
    "skis": ("ski.n.01",),
    "snowboard": ("snowboard.n.01",),
    "sports ball": ("ball.n.01",),
    "kite": ("kite.n.03",),
    "baseball bat": ("baseball_bat.n.01",),
    "baseball glove": ("baseball_glove.n.01",),
    "skateboard": ("skateboard.n.01",),
    "surfboard": ("surfboard.n.01",),
    "tennis racket": ("tennis_racket.n.01",),
    "bottle": ("bottle.n.01",),
    "wine glass": ("wineglass.n.01",),
    "cup": ("cup.n.01",),
    "fork": ("fork.n.01",),
    "knife": ("knife.n.01",),
    "spoon": ("spoon.n.01",),
    "bowl": ("bowl.n.01", "bowl.n.03"),
    "banana": ("banana.n.02",),
    "apple": ("apple.n.01",),
    "sandwich": ("sandwich.n.01",),
    "orange": ("orange.n.01",),
    "broccoli": ("broccoli.n.02",),
    "carrot": ("carrot.n.03",),
    "hot dog": ("hotdog.n.02",),
    "pizza": ("pizza.n.01",),
    "donut": ("doughnut.n.02",),
    "cake": ("cake.n.03",),
    "chair": ("chair.n.01",),
    "couch": ("sofa.n.01",),
    "potted plant": ("houseplant.n.01",),
    "bed": ("bed.n.01",),
    "dining table": ("table.n.02",),
    "toilet": ("toilet.n.02",),
    "tv": ("television_receiver.n.01",),
    "laptop": ("laptop.n.01",),
    "mouse": ("mouse.n.04",),
    "remote": ("remote_control.n.01",),
    "keyboard": ("keyboard.n.01",),
    "cell phone": ("cellular_telephone.n.01",),
    "microwave": ("microwave.n.02",),
    "oven": ("oven.n.01",),
    "toaster": ("toaster.n.02",),
    "sink": ("sink.n.01",),
    "refrigerator": ("electric_refrigerator.n.01", "refrigerator.n.01"),
    "book": ("book.n.02",),
    "clock": ("clock.n.01",),
    "vase": ("vase.n.01",),
    "scissors": ("scissors.n.01",),
    "teddy bear": ("teddy.n.01",),
    "hair drier": ("hand_blower.n.01",),
    "toothbrush": ("toothbrush.n.01",),
}

# Subtrees that are not the COCO object although WordNet files them under it.
DROP_SUBTREES: tuple[str, ...] = (
    "submarine.n.01",  # a vessel, never a COCO boat in practice
    "wheelchair.n.01",  # a chair in WordNet, not annotated as one
    # tables that are not dining tables: counters and bars, desks, stands, work and gaming tables
    "counter.n.01", "bar.n.02", "desk.n.01", "writing_desk.n.02", "reception_desk.n.01", "secretary.n.04",
    "davenport.n.02", "stand.n.04", "lectern.n.01", "altar.n.01", "booth.n.01", "pool_table.n.01",
    "operating_table.n.01", "workbench.n.01", "worktable.n.01", "lab_bench.n.01", "drafting_table.n.01",
    "dressing_table.n.01", "gaming_table.n.01", "platen.n.01", "checkout.n.03", "soda_fountain.n.01",
    "commissary.n.02",
    "cookie.n.01", "pancake.n.01", "waffle.n.01", "fritter.n.01", "tortilla.n.01",  # cakes in WordNet, not COCO
    "settle.n.01", "penalty_box.n.01", "cooler.n.01", "ice_machine.n.01",
)  # fmt: skip

# Words kept although another of their senses is a physical thing of another kind ("pony" is also a small glass):
# every other such word is dropped ("mannequin", "maroon", "tumbler" and "hotdog" are person words in WordNet).
# ``python -m pipeline.lexicon.derive --review`` lists the candidates.
KEEP_AMBIGUOUS: dict[str, tuple[str, ...]] = {
    "person": ("adult", "angler", "batter", "boss", "camper", "chap", "client", "coach", "conductor", "diver",
               "engineer", "florist", "graduate", "granny", "guest", "guide", "guy", "hunter", "individual",
               "jockey", "leader", "lumberjack", "man", "member", "mother", "neighbor", "neighbour", "offspring",
               "orphan", "painter", "parent", "peacekeeper", "pupil", "relative", "sailor", "soldier", "spectator",
               "survivor", "supporter", "worker", "rapper", "redhead", "umpire", "driver", "pilot", "biker",
               "cyclist", "hiker", "skater", "swimmer", "vendor", "chef", "cook", "waiter", "farmer", "officer"),
    "car": ("hatchback", "sedan"),
    "airplane": ("plane",),
    "truck": ("pickup",),
    "bird": ("crow", "hawk", "magpie", "parrot", "vulture"),
    "dog": ("puppy",),
    "horse": ("mare", "pony"),
    "sheep": ("lamb",),
    "handbag": ("purse",),
    "baseball glove": ("glove",),
    "sandwich": ("hamburger",),
    "cake": ("cheesecake",),
    "teddy bear": ("teddy",),
}  # fmt: skip

# Words whose only senses are right in WordNet but which captions use for something else.
DROP_WORDS: dict[str, tuple[str, ...]] = {
    "person": ("white", "black", "maroon", "mannequin", "manikin", "mannikin", "hotdog", "taco", "general"),
    "train": ("commuter",),
    "car": ("electric", "loaner", "used-car", "runabout"),
    "bed": ("lower",),
    "sports ball": ("shooter", "punch bag"),
    "truck": ("technical", "transporter", "dumper", "minivan"),  # COCO annotates minivans as cars
    "horse": ("entire", "mudder", "poler", "remount", "stable companion", "stablemate"),
    "apple": ("prima", "jonathan"),
    "spoon": ("tea maker",),
    "traffic light": ("go-ahead",),
}  # fmt: skip


def derive(wn: WordNet, keep: dict[str, tuple[str, ...]] | None = None) -> dict:
    """The lexicon (what coco_wordnet.json holds); ``keep`` replaces ``KEEP_AMBIGUOUS`` (``--review``: empty)."""
    keep = KEEP_AMBIGUOUS if keep is None else keep
    closures = {category: set().union(*(wn.closure(r) for r in roots)) for category, roots in ROOTS.items() if roots}
    dropped = set().union(*(wn.closure(name) for name in DROP_SUBTREES))
    owner: dict[int, str] = {}  # synset -> category; the smaller closure wins a synset in two
    for category in sorted(closures, key=lambda c: len(closures[c]), reverse=True):
        for offset in closures[category] - dropped:
            owner[offset] = category
    physical = wn.closure("physical_entity.n.01")
    words: dict[str, set[str]] = {category: set() for category in ROOTS}
    for offset, category in owner.items():
        for lemma in wn.nouns[offset].lemmas:
            word = lemma.lower().replace("_", " ")
            if not word.replace(" ", "").replace("-", "").replace("'", "").isalpha() or len(word) < 3:
                continue
            if owner.get(wn.first_sense(word)) != category or word in DROP_WORDS.get(category, ()):
                continue
            if _other_things(wn, word, owner, physical) and word not in keep.get(category, ()):
                continue
            words[category].add(word)
    generic = set(curated.GENERIC)
    claimed = {w: c for c, t in curated.SYNONYMS.items() for w in (c, *t)}  # curated words stay where curated
    for category in words:
        words[category] = {w for w in words[category] - generic if claimed.get(w, category) == category}
        words[category].discard(category)
    seen: dict[str, str] = {}
    for category, table in words.items():  # a word two categories derive names neither
        for word in table:
            seen[word] = "" if word in seen else category
    words = {c: {w for w in t if seen[w] == c} for c, t in words.items()}
    single = {w for table in words.values() for w in table if " " not in w} | {
        w for c, table in curated.SYNONYMS.items() for w in (c, *table) if " " not in w
    }
    heads = _heads(wn, owner)
    objects = {w for c, t in words.items() if c != "person" for w in t} | {
        w for c, t in curated.SYNONYMS.items() if c != "person" for w in (c, *t)
    }
    verbs = sorted(w for w in (single & objects) | generic if w in wn.senses["v"])
    return {
        "source": "WordNet 3.0 (Debian wordnet-base 1:3.0); derived by python -m pipeline.lexicon.derive",
        "categories": {category: sorted(table) for category, table in words.items()},
        "synsets": {wn.nouns[o].name: c for o, c in sorted(owner.items(), key=lambda x: wn.nouns[x[0]].name)},
        "heads": heads,
        "verb_heads": sorted(h for h in {*heads, *curated.HEADS} if h in wn.senses["v"]),
        "verbs": verbs,
        "near_words": _near_words(wn, curated.fuzzy_targets()),
    }


def _other_things(wn: WordNet, word: str, owner: dict[int, str], physical: set[int]) -> list[str]:
    """The senses of a one-word noun, after its first, that could be what a caption means instead: for a person
    word any physical thing ("tumbler", "maroon"), for an object word another category's thing. Named individuals
    ("Heron" the mathematician) do not count."""
    if " " in word:
        return []
    senses = [o for o in wn.senses["n"].get(word, []) if not wn.nouns[o].instance]
    category = owner.get(senses[0]) if senses else None
    others = [o for o in senses[1:] if owner.get(o) != category]
    if category != "person":
        others = [o for o in others if o in owner]
    return [wn.nouns[o].name for o in others if o in physical]


def _heads(wn: WordNet, owner: dict[int, str]) -> list[str]:
    """Second words of WordNet's two-word nouns "X Y" whose X is a curated object word (not a person word) and whose
    first sense names no category: "bus stop", "dog food", "pizza parlor"."""
    firsts = {w for c, t in curated.SYNONYMS.items() if c != "person" for w in (c, *t) if " " not in w}
    heads = set()
    for lemma in wn.senses["n"]:
        parts = lemma.split("_")
        if len(parts) == 2 and parts[0] in firsts and parts[1].isalpha() and wn.first_sense(lemma) not in owner:
            heads.add(parts[1])
    # words that also work as adverbs or adjectives ("down", "red") follow a category word in other roles too, as
    # do words in -ing ("a dog running", "a man reading"); a
    # part ("giraffe neck", "car door": a body part, or a part meronym of a category's synset or of its hypernyms)
    # belongs to the object, which is then in the picture
    parts = wn.closure("body_part.n.01") | {p for o in wn.ancestors(set(owner)) for p in wn.nouns[o].parts}
    heads = {h for h in heads if not parts.intersection(wn.senses["n"].get(h, ())) and not h.endswith("ing")}
    return sorted(heads - firsts - set(wn.senses["r"]) - set(wn.senses["a"]))


def _english(wn: WordNet) -> set[str]:
    """Every WordNet word, irregular forms included, with regular inflections by part of speech: plurals of nouns
    (``curated.plural``: "sheep" stays "sheep"), -s, -ed and -ing of verbs, -er and -est of adjectives."""
    found = wn.words()
    for word in wn.senses["n"]:
        found.add(curated.plural(word.replace("_", " ")))
    for word in wn.senses["v"]:
        stem = word[:-1] if word.endswith("e") else word
        found.update((curated.plural(word), stem + "ed", stem + "ing"))
        if word.endswith("y"):
            found.add(word[:-1] + "ied")
    for word in wn.senses["a"]:
        stem = word[:-1] if word.endswith("e") else word
        found.update((stem + "er", stem + "est"))
    return found


def _near_words(wn: WordNet, lexicon: set[str]) -> list[str]:
    english = _english(wn)
    letters = "abcdefghijklmnopqrstuvwxyz"
    near = set()
    for word in lexicon:
        if len(word) < 4 or not word.isalpha():
            continue
        variants = {word[:i] + word[i + 1 :] for i in range(len(word))}
        variants |= {word[:i] + c + word[i + 1 :] for i in range(len(word)) for c in letters}
        variants |= {word[:i] + c + word[i:] for i in range(len(word) + 1) for c in letters}
        variants |= {word[:i] + word[i + 1] + word[i] + word[i + 2 :] for i in range(len(word) - 1)}
        near |= (variants & english) - lexicon
    return sorted(near)


def review(wn: WordNet) -> None:
    """Words the ambiguity rule drops: the candidates for ``KEEP_AMBIGUOUS``."""
    lexicon = derive(wn, keep={})
    owner = {wn.synset(name).offset: c for name, c in lexicon["synsets"].items()}
    physical = wn.closure("physical_entity.n.01")
    for offset, category in sorted(owner.items()):
        for lemma in wn.nouns[offset].lemmas:
            word = lemma.lower()
            if wn.first_sense(word) == offset and (others := _other_things(wn, word, owner, physical)):
                print(f"{category:14} {word:20} also {', '.join(others[:4])}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], prog="python -m pipeline.lexicon.derive")
    parser.add_argument("--wordnet", default="/usr/share/wordnet", help="folder of the WordNet 3.0 database files")
    parser.add_argument("--out", type=Path, default=OUT, help="where to write the lexicon JSON")
    parser.add_argument("--review", action="store_true", help="print words worth a curator's look; write nothing")
    args = parser.parse_args(argv)
    try:
        wn = WordNet(args.wordnet)
    except FileNotFoundError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.review:
        review(wn)
        return 0
    lexicon = derive(wn)
    args.out.write_text(json.dumps(lexicon, indent=0, sort_keys=False) + "\n")
    counts = {c: len(w) for c, w in lexicon["categories"].items()}
    print(f"wrote {args.out}: {sum(counts.values())} words over {len(counts)} categories, "
          f"{len(lexicon['synsets'])} synsets, {len(lexicon['heads'])} modifier heads, "
          f"{len(lexicon['near_words'])} near words")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
