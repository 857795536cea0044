"""Label vocabularies of the FER datasets and the mappings between them.

Every vocabulary is an ordered tuple of class names; a model's output index i means
vocabulary[i]. Mappings are dicts from a source class name to a target class name
(or None when the class has no counterpart and its samples must be dropped).
"""

from __future__ import annotations

from edge_fer.errors import UserError

# FER2013 label order (emotion column of fer2013.csv).
FER2013 = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
# AffectNet's 8 discrete expressions (its own index order).
AFFECTNET8 = ("neutral", "happy", "sad", "surprise", "fear", "disgust", "angry", "contempt")
# CMU Multi-PIE expressions.
MULTIPIE6 = ("neutral", "smile", "surprise", "squint", "disgust", "scream")
# The six basic emotions without disgust (and contempt).
GROUPED6 = ("angry", "fear", "happy", "sad", "surprise", "neutral")
# Valence groups.
GROUPED3 = ("negative", "neutral", "positive")

VOCABULARIES: dict[str, tuple[str, ...]] = {
    "fer2013": FER2013,
    "affectnet8": AFFECTNET8,
    "multipie6": MULTIPIE6,
    "grouped6": GROUPED6,
    "grouped3": GROUPED3,
}

# Spellings seen in folder layouts and other datasets, folded onto our canonical names.
SYNONYMS = {
    "anger": "angry",
    "disgusted": "disgust",
    "fearful": "fear",
    "scared": "fear",
    "happiness": "happy",
    "joy": "happy",
    "sadness": "sad",
    "surprised": "surprise",
    "neutrality": "neutral",
    "contemptuous": "contempt",
}

_TO_GROUPED3 = {
    "happy": "positive",
    "smile": "positive",
    "neutral": "neutral",
    "surprise": "neutral",
    "angry": "negative",
    "disgust": "negative",
    "fear": "negative",
    "sad": "negative",
    "contempt": "negative",
    "squint": "negative",
    "scream": "negative",
}


def canonical(name: str) -> str:
    """A class name folded onto edge-fer's spelling (case, spaces, synonyms)."""
    if not isinstance(name, str):  # None (a missing class) was an AttributeError on .strip
        raise UserError(f"must be a class name (a string), got {name!r}", param="name")
    key = name.strip().lower()
    return SYNONYMS.get(key, key)


def vocabulary(name: str) -> tuple[str, ...]:
    """The vocabulary called `name` (a key of VOCABULARIES, any case)."""
    if not isinstance(name, str):  # None was an AttributeError on .lower
        raise UserError(
            f"must be a label set's name ({', '.join(VOCABULARIES)}), got {name!r}", param="name"
        )
    try:
        return VOCABULARIES[name.lower()]
    except KeyError:
        raise UserError(
            f"{name!r} is an unknown label set; choose one of {', '.join(VOCABULARIES)}",
            param="name",
        ) from None


def is_grouped(vocab) -> bool:
    """A vocabulary of valence groups (all or some of GROUPED3, with a group that is not also an
    emotion name)."""
    names = set(vocab)
    return bool(names) and names <= set(GROUPED3) and bool(names & {"negative", "positive"})


def mapping(src: tuple[str, ...], dst: tuple[str, ...]) -> dict[str, str | None]:
    """Map each class of `src` to a class of `dst` (None: no counterpart, drop the sample).

    Names are compared after `canonical` (synonyms such as anger/angry); a group vocabulary
    (GROUPED3 or part of it) receives every class through its valence group; happy and smile
    stand for each other. The targets are `dst`'s own names (on both sides: a `dst` of
    ("Happiness", "Anger") used to receive nothing)."""
    src, dst = _class_names(src, "src"), _class_names(dst, "dst")
    out: dict[str, str | None] = {}
    dst_set = set(dst)
    by_key: dict[str, str] = {}  # canonical name -> dst's own spelling (the first one)
    for d in dst:
        by_key.setdefault(canonical(d), d)
    grouped = is_grouped(tuple(by_key))
    for name in src:
        key = canonical(name)
        if name in dst_set:
            out[name] = name
        elif key in by_key:
            out[name] = by_key[key]
        elif grouped:
            out[name] = by_key.get(_TO_GROUPED3.get(key, ""))
        elif key == "smile":
            out[name] = by_key.get("happy")
        elif key == "happy":
            out[name] = by_key.get("smile")
        else:
            out[name] = None
    return out


def shared_vocabulary(data_classes, model_classes) -> tuple[str, ...]:
    """The dataset's classes (in its order) that at least one model class maps onto: the
    classes a cross-dataset evaluation can compare."""
    data_classes = _class_names(data_classes, "data_classes")
    model_classes = _class_names(model_classes, "model_classes")
    data = tuple(canonical(c) for c in data_classes)
    reached = {t for t in mapping(model_classes, data).values() if t is not None}
    return tuple(c for c in data if c in reached)


def index_map(src: tuple[str, ...], dst: tuple[str, ...]) -> list[int]:
    """Index form of `mapping`: for each source index the target index, or -1 to drop."""
    src, dst = _class_names(src, "src"), _class_names(dst, "dst")
    m = mapping(src, dst)
    return [dst.index(m[c]) if m[c] is not None else -1 for c in src]  # type: ignore[arg-type]


def _class_names(v, param: str) -> tuple[str, ...]:
    """`v` (a sequence of class names) as a tuple; a string is refused (its letters became the
    classes), and so are None and names that are not strings (AttributeErrors deep inside)."""
    if isinstance(v, str):  # its letters would become the classes (was a bare TypeError)
        raise UserError(f"must be a sequence of class names, not a string ({v!r})", param=param)
    try:
        names = tuple(v)
    except TypeError:
        raise UserError(f"must be a sequence of class names, got {v!r}", param=param) from None
    bad = [c for c in names if not isinstance(c, str)]
    if bad:
        raise UserError(f"must hold class names (strings), got {bad[0]!r}", param=param)
    return names
