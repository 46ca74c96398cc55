"""The hand-curated part of the caption lexicon (the WordNet-derived part is ``coco_wordnet.json``).

- ``SYNONYMS``: words per COCO category that WordNet misses or files elsewhere (informal words, "people" as the
  plural of person, makes and spellings) plus the words of the first, hand-written table. Singular forms; plurals
  are derived.
- ``GENERIC``: words that can name several categories ("bike": a bicycle or a motorcycle; "animal"). A generic word
  names a category only in an image where exactly one of its categories is annotated.
- ``HEADS``: nouns that, right after a category word, make it a modifier ("pizza box", "tennis court"), beside the
  ones derived from WordNet's compounds; clothing is here for colour words ("an orange shirt").
"""

from __future__ import annotations

SYNONYMS: dict[str, tuple[str, ...]] = {
    "person": ("people", "man", "woman", "boy", "girl", "child", "kid", "guy", "lady", "player", "men", "women",
               "children", "skier", "surfer", "skateboarder", "snowboarder", "rider", "pedestrian", "adult", "baby",
               "toddler", "gentleman", "teenager", "batter", "catcher", "pitcher", "tennis player",
               # groups, which WordNet files under social groups rather than person.n.01
               "crowd", "audience", "team", "family", "couple", "crew", "folk", "folks", "everyone", "someone",
               "somebody", "commuter", "fans", "barista", "driver", "biker"),
    "bicycle": ("bmx",),  # "bike" and "cycle" are GENERIC: a bicycle or a motorcycle
    "car": ("automobile", "sedan", "taxi", "suv", "minivan", "cab"),
    "motorcycle": ("motorbike", "motor bike", "scooter", "moped", "harley", "vespa", "dirt bike"),
    "airplane": ("plane", "aeroplane", "jet", "aircraft", "airliner", "jetliner", "jumbo jet", "airbus", "boeing"),
    "bus": ("double decker", "double-decker"),
    "train": ("locomotive", "tram", "subway", "steam engine"),
    "truck": ("lorry", "pickup", "pickup truck", "semi", "semi truck", "18 wheeler"),
    "boat": ("ship", "sailboat", "canoe", "kayak", "yacht", "ferry", "schooner", "gondola"),
    "traffic light": ("stoplight", "stop light", "traffic signal", "red light"),
    "fire hydrant": ("hydrant",),
    "stop sign": ("sign",),  # COCO annotates no other signs, so "sign" means this box
    "parking meter": ("meter",),
    "bench": (),
    "bird": ("seagull", "gull", "pigeon", "duck", "parrot", "goose"),
    "cat": ("kitten", "kitty"),
    "dog": ("puppy", "pup", "labrador", "lab puppy"),
    "horse": ("pony", "foal"),
    "sheep": ("lamb", "ram"),
    "cow": ("cattle", "calf", "bull", "ox"),
    "elephant": (),
    "bear": ("panda", "panda bear"),
    "zebra": (),
    "giraffe": (),
    "backpack": ("back pack", "rucksack"),
    "umbrella": ("parasol",),
    "handbag": ("purse", "hand bag"),
    "tie": ("necktie",),
    "suitcase": ("suit case",),  # "luggage" is GENERIC
    "frisbee": ("disc", "flying disc"),
    "skis": ("ski",),
    "snowboard": ("snow board",),
    "sports ball": ("ball", "soccer ball", "football", "baseball", "tennis ball", "basketball", "volleyball",
                    "softball", "beach ball"),
    "kite": (),
    "baseball bat": ("bat",),
    "baseball glove": ("glove", "mitt"),
    "skateboard": ("skate board",),
    "surfboard": ("surf board", "shortboard"),
    "tennis racket": ("racket", "racquet"),
    "bottle": (),
    "wine glass": ("goblet", "glass of wine"),
    "cup": ("mug", "teacup", "coffee mug"),
    "fork": (),
    "knife": (),
    "spoon": ("teaspoon", "tablespoon"),
    "bowl": (),
    "banana": (),
    "apple": (),
    "sandwich": ("burger", "hamburger", "sub", "panini", "sub sandwich"),
    "orange": ("tangerine", "clementine", "mandarin orange"),
    "broccoli": (),
    "carrot": (),
    "hot dog": ("hotdog", "bratwurst"),
    "pizza": ("pizza slice",),
    "donut": ("doughnut", "cruller"),
    "cake": ("cupcake",),
    "chair": ("stool",),
    "couch": ("sofa",),
    "potted plant": ("houseplant", "house plant", "plant pot", "bonsai"),
    "bed": (),
    "dining table": ("table",),
    "toilet": (),
    "tv": ("television", "monitor", "tv screen"),
    "laptop": ("notebook computer", "macbook", "netbook", "laptop computer"),
    "mouse": (),
    "remote": ("remote control", "controller"),
    "keyboard": (),
    "cell phone": ("phone", "cellphone", "smartphone", "mobile phone", "iphone", "flip phone"),
    "microwave": (),
    "oven": ("stove",),
    "toaster": (),
    "sink": (),
    "refrigerator": ("fridge",),
    "book": (),
    "clock": (),
    "vase": (),
    "scissors": (),
    "teddy bear": ("stuffed animal", "teddy", "stuffed bear", "plush toy", "stuffed toy"),
    "hair drier": ("hair dryer", "hairdryer", "blow dryer"),
    "toothbrush": ("tooth brush",),
}  # fmt: skip

GENERIC: dict[str, tuple[str, ...]] = {
    "bike": ("bicycle", "motorcycle"),
    "cycle": ("bicycle", "motorcycle"),
    "van": ("car", "truck"),
    "vehicle": ("car", "truck", "bus", "motorcycle", "bicycle", "train", "airplane", "boat"),
    "animal": ("bird", "cat", "dog", "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe"),
    "creature": ("bird", "cat", "dog", "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe"),
    "critter": ("bird", "cat", "dog", "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe"),
    "beast": ("horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe"),
    "herd": ("horse", "sheep", "cow", "elephant", "zebra", "giraffe"),
    "flock": ("bird", "sheep"),
    "pet": ("cat", "dog"),
    "screen": ("tv", "laptop", "cell phone"),
    "display": ("tv", "laptop", "cell phone"),
    "computer": ("laptop", "tv"),
    "device": ("cell phone", "laptop", "remote", "tv", "mouse", "keyboard"),
    "gadget": ("cell phone", "laptop", "remote", "mouse"),
    "electronics": ("cell phone", "laptop", "remote", "tv", "mouse", "keyboard"),
    "machine": ("microwave", "oven", "toaster", "refrigerator", "parking meter", "laptop"),
    "appliance": ("microwave", "oven", "toaster", "refrigerator"),
    "food": ("sandwich", "hot dog", "pizza", "donut", "cake", "broccoli", "carrot", "banana", "apple", "orange"),
    "meal": ("sandwich", "hot dog", "pizza", "broccoli", "carrot"),
    "snack": ("sandwich", "hot dog", "donut", "cake", "banana", "apple", "orange", "carrot"),
    "fruit": ("banana", "apple", "orange"),
    "vegetable": ("broccoli", "carrot"),
    "veggie": ("broccoli", "carrot"),
    "dessert": ("cake", "donut"),
    "pastry": ("cake", "donut"),
    "treat": ("cake", "donut"),
    "utensil": ("fork", "knife", "spoon"),
    "silverware": ("fork", "knife", "spoon"),
    "cutlery": ("fork", "knife", "spoon"),
    "flatware": ("fork", "knife", "spoon"),
    "board": ("surfboard", "skateboard", "snowboard"),
    "plant": ("potted plant",),
    "glass": ("wine glass", "cup"),
    "vessel": ("boat", "bowl", "cup", "vase", "bottle"),
    "luggage": ("suitcase", "backpack", "handbag"),
    "furniture": ("chair", "couch", "bed", "dining table", "bench"),
    "bag": ("handbag", "backpack", "suitcase"),
    "seat": ("chair", "couch", "bench"),
}

HEADS = (
    "stop", "station", "stand", "box", "court", "track", "lot", "field", "shop", "store", "stall", "pen", "lane",
    "depot", "terminal", "yard", "stadium", "park", "ride", "race", "show", "game", "match", "area", "aisle",
    "parlor", "restaurant", "sauce", "juice", "peel", "peels", "tree", "trees", "crate", "carrier", "kennel",
    "cage", "food", "toy", "toys", "treat", "treats", "leash", "collar", "dish", "feeder", "house", "rack",
    "tracks", "rail", "rails", "platform", "cart", "route", "sign", "shelter", "tour", "pass", "fare", "ticket",
    "cutter", "dough", "sticker", "magnet", "print", "pattern", "shaped", "themed", "costume", "sculpture",
    "statue", "figurine", "ornament", "painting", "picture", "photo", "poster", "logo", "decal", "team",
    "uniform", "jersey", "player", "players", "net", "lesson", "class", "school", "instructor", "lift", "slope",
    "resort", "trail", "run", "shirt", "jacket", "hat", "vest", "helmet", "cap", "coat", "dress", "sweater",
    "shorts", "pants", "hoodie", "top", "socks", "shoes", "scarf", "wall", "walls", "building", "sky",
    "background", "color", "colored", "paint", "festival", "trailer", "ramp", "dealership", "wash", "holder",
    "block", "place", "enclosure", "cushion", "bread", "sheet",
)  # fmt: skip


# Plurals that adding -s / -es gets wrong, and words that are their own plural.
IRREGULAR_PLURALS = {"person": "people", "man": "men", "woman": "women", "child": "children", "mouse": "mice",
              "knife": "knives", "sheep": "sheep", "skis": "skis", "scissors": "scissors", "ox": "oxen",
              "calf": "calves", "bus": "buses", "cattle": "cattle", "luggage": "luggage", "broccoli": "broccoli",
              "goose": "geese", "people": "people", "men": "men", "women": "women", "children": "children",
              "pup": "pups", "sub": "subs", "tooth brush": "tooth brushes"}  # fmt: skip


def plural(phrase: str) -> str:
    """English plural of a (possibly multi-word) noun phrase: the last word is inflected."""
    head, _, last = phrase.rpartition(" ")
    if phrase in IRREGULAR_PLURALS:
        return IRREGULAR_PLURALS[phrase]
    if last in IRREGULAR_PLURALS:
        inflected = IRREGULAR_PLURALS[last]
    elif last.endswith(("s", "x", "z", "ch", "sh")):
        inflected = last + "es"
    elif last.endswith("y") and last[-2:-1] not in "aeiou":
        inflected = last[:-1] + "ies"
    else:
        inflected = last + "s"
    return f"{head} {inflected}" if head else inflected


def fuzzy_targets() -> set[str]:
    """The words a misspelling (of five letters or more) is corrected to: curated and generic words of four letters or
    more, and their plurals."""
    words = {w for c, t in SYNONYMS.items() for w in (c, *t)} | set(GENERIC)
    forms = {f for w in words for f in (w, plural(w))}
    return {f for f in forms if len(f) >= 4 and f.isalpha()}
