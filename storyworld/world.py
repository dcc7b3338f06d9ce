"""storyworld's vocabulary, scene specs and caption grammar. Pure data: no drawing here.

Caption grammar (docs/storyworld.md has the full table)::

    caption := "a" COLOUR SHAPE MOTION PLACE TIME [ "while a person" ACTION ] [ "as the camera pans" DIR ]

e.g. "a red circle bounces on a beach at dusk while a person waves as the camera pans left".
Every caption the grammar admits maps to exactly one `SceneSpec` and back (`caption_of` /
`parse_caption` are inverses), so a prompt can be checked against what the analyzers read.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Object colours: saturated and emissive (never darkened by the time of day), at least ~110 apart in
# RGB from one another and ~80 from every background pixel, so that the nearest palette colour of a
# pixel names its object even through noise, blur and video compression (tests check the margins).
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 20, 30),
    "orange": (255, 125, 0),
    "yellow": (250, 235, 20),
    "green": (0, 190, 50),
    "cyan": (0, 215, 225),
    "blue": (25, 60, 235),
    "purple": (145, 40, 215),
    "pink": (255, 70, 175),
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star", "ring", "cross")
MOTIONS: tuple[str, ...] = ("rests", "moves left", "moves right", "bounces", "grows", "spins")
# Place name -> its phrase in a caption.
PLACES: dict[str, str] = {
    "beach": "on a beach",
    "forest": "in a forest",
    "city": "in a city",
    "desert": "in a desert",
    "snow field": "on a snow field",
}
TIMES: dict[str, str] = {"day": "by day", "dusk": "at dusk", "night": "at night"}
ACTIONS: tuple[str, ...] = ("stands", "waves", "walks", "dances", "jumps")
PANS: tuple[str, ...] = ("left", "right")

# Shapes that look the same at every angle: random scenes never ask them to spin (the caption would
# describe nothing visible), though a parsed caption may.
ROTATION_INVARIANT = frozenset({"circle", "ring"})

_FIGURE_INTRO = ("while", "a", "person")
_PAN_INTRO = ("as", "the", "camera", "pans")


class CaptionError(ValueError):
    """A caption outside the storyworld grammar; the message names the word and what was expected."""


@dataclass(frozen=True)
class SceneSpec:
    """What one caption says: the scene's semantics. Layout details (where the object starts, which
    side the figure stands on, speeds) are not in the caption; the generator draws them from a seed."""

    place: str
    time: str
    colour: str
    shape: str
    motion: str
    action: str | None = None  # None: no figure in the scene
    pan: str | None = None  # None: the camera holds still

    def __post_init__(self) -> None:
        checks = (("place", self.place, tuple(PLACES)), ("time", self.time, tuple(TIMES)),
                  ("colour", self.colour, tuple(COLOURS)), ("shape", self.shape, SHAPES),
                  ("motion", self.motion, MOTIONS))
        for name, value, allowed in checks:
            if value not in allowed:
                raise ValueError(f"SceneSpec.{name} must be one of {', '.join(allowed)}; got {value!r}")
        if self.action is not None and self.action not in ACTIONS:
            raise ValueError(f"SceneSpec.action must be None or one of {', '.join(ACTIONS)}; got {self.action!r}")
        if self.pan is not None and self.pan not in PANS:
            raise ValueError(f"SceneSpec.pan must be None or one of {', '.join(PANS)}; got {self.pan!r}")

    @property
    def caption(self) -> str:
        return caption_of(self)


def caption_of(spec: SceneSpec) -> str:
    """The one caption of `spec` in the grammar."""
    words = ["a", spec.colour, spec.shape, spec.motion, PLACES[spec.place], TIMES[spec.time]]
    if spec.action is not None:
        words += [*_FIGURE_INTRO, spec.action]
    if spec.pan is not None:
        words += [*_PAN_INTRO, spec.pan]
    return " ".join(words)


def _phrases(options: dict[str, str] | tuple[str, ...]) -> list[tuple[str, tuple[str, ...]]]:
    """(value, words) pairs, longest phrase first so "snow field" wins over any shorter prefix."""
    items = options.items() if isinstance(options, dict) else ((v, v) for v in options)
    return sorted(((value, tuple(phrase.split())) for value, phrase in items), key=lambda kv: -len(kv[1]))


_SLOTS: list[tuple[str, list[tuple[str, tuple[str, ...]]]]] = [
    ("colour", _phrases(tuple(COLOURS))),
    ("shape", _phrases(SHAPES)),
    ("motion", _phrases(MOTIONS)),
    ("place", _phrases(PLACES)),
    ("time", _phrases(TIMES)),
]


def _tokens(text: str) -> list[str]:
    if not isinstance(text, str):
        raise CaptionError(f"a caption must be a string, got {type(text).__name__}")
    return text.lower().replace(",", " ").strip().rstrip(".").split()


def parse_caption(text: str) -> SceneSpec:
    """The SceneSpec a caption describes. Case, commas and a final full stop are ignored.

    Raises:
        CaptionError: naming the first word that leaves the grammar and the words allowed there.
    """
    words = _tokens(text)
    pos = 0

    def expect(what: str, options: list[tuple[str, tuple[str, ...]]]) -> str:
        nonlocal pos
        for value, phrase in options:
            if tuple(words[pos:pos + len(phrase)]) == phrase:
                pos += len(phrase)
                return value
        got = repr(words[pos]) if pos < len(words) else "the end of the caption"
        allowed = " | ".join(" ".join(p) for _, p in options)
        raise CaptionError(f"caption {text!r}: expected {what} ({allowed}) at word {pos + 1}, got {got}")

    expect("the article", [("a", ("a",))])
    fields = {name: expect(name, options) for name, options in _SLOTS}
    action = pan = None
    if tuple(words[pos:pos + 3]) == _FIGURE_INTRO:
        pos += 3
        action = expect("an action", _phrases(ACTIONS))
    if tuple(words[pos:pos + 4]) == _PAN_INTRO:
        pos += 4
        pan = expect("a pan direction", _phrases(PANS))
    if pos != len(words):
        raise CaptionError(f"caption {text!r}: unexpected {words[pos]!r} at word {pos + 1}; a caption may end "
                           f"with 'while a person <action>' and then 'as the camera pans <left|right>'")
    return SceneSpec(action=action, pan=pan, **fields)


def _vocabulary() -> list[str]:
    words = {"a", *_FIGURE_INTRO, *_PAN_INTRO, *COLOURS, *SHAPES, *ACTIONS, *PANS}
    for phrase in (*MOTIONS, *PLACES.values(), *TIMES.values()):
        words.update(phrase.split())
    return sorted(words)


VOCABULARY: list[str] = _vocabulary()


def random_scene(seed: int | np.random.Generator, *, figure_prob: float = 0.75, pan_prob: float = 0.3) -> SceneSpec:
    """A random SceneSpec, the same for the same seed.

    Args:
        seed: int seed or a numpy Generator (then it advances).
        figure_prob: chance (float, default 0.75) that a person is in the scene.
        pan_prob: chance (float, default 0.3) that the camera pans.
    """
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    shape = SHAPES[rng.integers(len(SHAPES))]
    motions = [m for m in MOTIONS if not (m == "spins" and shape in ROTATION_INVARIANT)]
    return SceneSpec(
        place=list(PLACES)[rng.integers(len(PLACES))],
        time=list(TIMES)[rng.integers(len(TIMES))],
        colour=list(COLOURS)[rng.integers(len(COLOURS))],
        shape=shape,
        motion=motions[rng.integers(len(motions))],
        action=ACTIONS[rng.integers(len(ACTIONS))] if rng.random() < figure_prob else None,
        pan=PANS[rng.integers(len(PANS))] if rng.random() < pan_prob else None,
    )


def random_caption(seed: int | np.random.Generator, **kw) -> str:
    """A random caption in the grammar (see `random_scene` for the options)."""
    return caption_of(random_scene(seed, **kw))
