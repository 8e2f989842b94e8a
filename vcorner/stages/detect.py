"""Centres without clicks: the detector stage that names and places the vertebrae of an image before its patches
are cut (README.md, "Automatic centres").

``detect_centres`` runs inside :func:`vcorner.stages.prepare.prepare` on the pyramid it already built, so a
batch reads every file once. The detected sequence then passes the same checks as clicked centres
(:func:`vcorner.geometry.sequence.checked_record`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np

from vcorner.geometry.letterbox import detector_input, letterbox_affine, to_grid
from vcorner.geometry.sequence import NEAR, checked_record, level_ranks, typical_spacing
from vcorner.geometry.views import AS_IS, View, parse_view, turn_about_centre, view_affine, view_input
from vcorner.io.records import ImageRecord, InputError, Vertebra
from vcorner.models.detector_card import DetectorCard
from vcorner.postprocess.peaks import (
    END_OFFSET,
    SHORT_GAP,
    Detection,
    decode_spaced,
    is_sure,
    run_ends,
    split_confident,
)

Infer = Callable[[np.ndarray], np.ndarray]
"""A runner's ``infer``: (B, 1, S, S) float32 views -> (B, K, S, S) float32 maps."""


@dataclass(frozen=True)
class DetectedCentres:
    """What the detector found in one image.

    Attributes:
        listed: the confident detections as found (every name at or above the card's confidence, and a body cut
            by the film's edge that continues them: :func:`vcorner.postprocess.peaks.continued_ends`, or placed by
            the view finder, :func:`finder_ends`, with the finder's confidence; cranial first): what
            ``centers.detected.csv`` records, with their confidences.
        record: ``listed`` after the centre-sequence checks: the vertebrae that get corners.
        left_out: vertebra name -> why the sequence checks left it out (``errors.csv``).
        dropped: detections below the card's confidence (counted, not used).
        view: the candidate view the detector answered on (:mod:`vcorner.geometry.views`): ``as_is``, or the
            transforms that bring the film to the pose the models learned (``mirrored``, ``turned_180``,
            ``inverted``, joined by ``+``); patches are cut through the same transform.
        naming_margin: how much better the chosen names fit the detector's maps than the same blobs named one
            level up or down, per named vertebra (0-1; NaN when not measured).
        flags: image-level flags every output row of this image carries (``levels_uncertain``,
            ``view_uncertain``; README.md, "Flags").
        second_namer: named by the detector's second namer, since the first was unsure of its levels
            (:func:`second_opinion`; the image is flagged ``levels_uncertain``).
        guessed: names placed one step past an end of the detected run (:func:`run_extension`) or midway between
            two detected names two levels apart (:func:`run_holes`), in ``listed`` and ``record`` until the corner
            model confirms them (:func:`vcorner.stages.finish.confirmed_guesses`), which moves each kept one to the
            middle of its corners and drops the others (``unconfirmed``).
        filled: the guessed names that lie between two detected names (:func:`run_holes`).
        extended: the guessed names the corner model confirmed (set by the finish stage).
        unconfirmed: guessed name -> why the corner model did not confirm it (set by the finish stage; not an error:
            the film is answered as if it had not been guessed, and ``run.json`` counts them).
    """

    listed: ImageRecord
    confidence: dict[str, float]
    record: ImageRecord
    left_out: dict[str, str] = field(default_factory=dict)
    dropped: tuple[Detection, ...] = ()
    view: str = "as_is"
    naming_margin: float = float("nan")
    flags: tuple[str, ...] = ()
    second_namer: bool = False
    guessed: frozenset[str] = frozenset()
    filled: frozenset[str] = frozenset()
    extended: tuple[str, ...] = ()
    unconfirmed: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ViewAnswer:
    """The detector's answer on one candidate view of an image.

    Attributes:
        view: the candidate view.
        found: every channel's detection, image pixels, cranial first.
        margin: the naming margin over the confident names (:func:`vcorner.postprocess.peaks.naming_margin`).
        score: mean confidence over the channels (0-1): how surely a spine stands in this view.
        merged: whether the names rest on a merge of two names on one vertebra.
        placed: names whose detection the view finder gave (:func:`finder_ends`; kept whatever their confidence).
    """

    view: View
    found: list[Detection]
    margin: float
    merged: bool = False
    placed: frozenset[str] = frozenset()

    @property
    def score(self) -> float:
        return float(np.mean([d.confidence for d in self.found])) if self.found else 0.0


Looks = dict[tuple[View, float], ViewAnswer]
"""One detector's answers on one film, by view and turn (degrees, rounded to 1e-6): a film's view search and the
checks after it look at some views at the same turn more than once (:func:`view_answers`)."""

Finder = tuple[DetectorCard, Infer]
"""A view finder: a detector trained on several candidate views (its card and its runner's ``infer``), whose
view search picks the film's view for a detector that names only in the learned pose (README.md, "Orientation,
polarity and naming")."""


def view_answers(pyramid: list[np.ndarray], shape: tuple[int, int], card: DetectorCard, infer: Infer,
                 views: tuple[View, ...] | None = None, turn_deg: float = 0.0, close_gaps: bool = False,
                 looks: Looks | None = None) -> list[ViewAnswer]:
    """The detector's answer on each candidate view of the card (:mod:`vcorner.geometry.views`; ``views`` instead
    when given), in one batch; with ``turn_deg`` the film is turned by that many degrees about its letterbox's
    centre first, in its own frame (:func:`vcorner.geometry.views.turn_about_centre`), each view showing the film
    so turned (:attr:`vcorner.geometry.views.View.handedness`).

    Args:
        pyramid: the image's pyramid (:func:`vcorner.geometry.patches.build_pyramid`).
        shape: (H, W) of the image, pixels.
        looks: the answers of this card on this film already made (:data:`Looks`): only the others are made, and
            added to it.
    """
    config = card.detection
    views = views or tuple(parse_view(v) for v in config.views)
    if looks is not None:
        at = round(float(turn_deg), 6)
        missing = tuple(v for v in views if (v, at) not in looks)
        if missing:
            looks.update(((a.view, at), a) for a in view_answers(pyramid, shape, card, infer, missing, turn_deg,
                                                                  close_gaps))
        return [looks[(v, at)] for v in views]
    size = config.input_shape
    letterbox = letterbox_affine(shape, size)
    affines = [view_affine(letterbox, v, size) @ turn_about_centre(turn_deg * v.handedness, size) for v in views]
    # the plain view of the film so turned is cut once (twice with inverted views), then flipped and negated per
    # view: each view's own cut equals it (tests/test_views.py). An inverted view's margins are cut at the film's
    # brightest level, so that negated they read dark, as the margins of every view the detector learned a spine in
    turned = letterbox @ turn_about_centre(turn_deg, size) if turn_deg else letterbox
    plain = {False: detector_input(pyramid, turned, size)}
    if any(v.inverted for v in views):
        plain[True] = detector_input(pyramid, turned, size, brightest=True)
    inputs = [view_input(plain[v.inverted], v) for v in views]
    maps = infer(np.concatenate(inputs).astype(np.float32))
    answers = []
    for view, affine, view_maps in zip(views, affines, maps, strict=True):
        found, margin, merged = decode_spaced(view_maps, card.names, affine, config, close_gaps)
        answers.append(ViewAnswer(view, found, margin, merged))
    return answers


def spine_lean_deg(answer: ViewAnswer, card: DetectorCard, shape: tuple[int, int],
                   ends: tuple[str, str]) -> float | None:
    """How far the line between the two names ``ends`` of ``answer`` leans in its view, degrees from straight down
    towards +x (None unless both were found at the card's confidence: a film cut short gives no lean)."""
    config = card.detection
    at = {d.name: d.xy for d in answer.found if d.confidence >= config.min_confidence}
    if ends[0] not in at or ends[1] not in at:
        return None
    affine = view_affine(letterbox_affine(shape, config.input_shape), answer.view, config.input_shape)
    dx, dy = to_grid(affine, np.asarray(at[ends[1]])) - to_grid(affine, np.asarray(at[ends[0]]))
    return float(np.degrees(np.arctan2(dx, dy)))


LEAN_MIN_LEVELS = 2
"""The fewest levels between the two names :func:`span_lean_deg` takes a partial span's lean on (C3 and C5, say)."""


def span_lean_deg(answer: ViewAnswer, card: DetectorCard, shape: tuple[int, int], ends: tuple[str, str],
                  min_levels: int = LEAN_MIN_LEVELS) -> float | None:
    """The lean (:func:`spine_lean_deg`) of the span of ``card``'s names from ``ends[0]`` to ``ends[1]``: between its
    two ends where both were found at the card's confidence, else between the first and last of its names that were,
    when at least ``min_levels`` levels apart (a film cut short, or a C7 behind the shoulders, still shows how its
    spine leans); None otherwise."""
    whole = spine_lean_deg(answer, card, shape, ends)
    if whole is not None or ends[0] not in card.names or ends[1] not in card.names:
        return whole
    span = card.names[card.names.index(ends[0]):card.names.index(ends[1]) + 1]
    seen = {d.name for d in answer.found if d.confidence >= card.detection.min_confidence}
    found = [i for i, name in enumerate(span) if name in seen]
    if len(found) < 2 or found[-1] - found[0] < min_levels:
        return None
    return spine_lean_deg(answer, card, shape, (span[found[0]], span[found[-1]]))


def lean_ends(card: DetectorCard) -> tuple[str, str]:
    """The first and last names a detector outputs (its context names left out): the line its lean is taken on."""
    names = [n for n in card.names if n not in card.detection.context] or list(card.names)
    return names[0], names[-1]


def upright_turn(answer: ViewAnswer, finder: DetectorCard, shape: tuple[int, int], namer: DetectorCard) -> float:
    """Degrees to turn the finder's chosen view by (:func:`vcorner.geometry.views.turn_about_centre`) so that its
    spine leans as in the namer's films: minus the excess of the lean of the namer's span (:func:`lean_ends`; the part
    of it the finder found, :func:`span_lean_deg`) over the namer's ``spine_angle_deg``, when that exceeds
    ``align_deg`` (else 0: also when the finder found too little of that span to tell)."""
    lean = span_lean_deg(answer, finder, shape, lean_ends(namer))
    config = namer.detection
    if lean is None or config.align_deg <= 0:
        return 0.0
    excess = (lean - config.spine_angle_deg + 180.0) % 360.0 - 180.0
    return -excess if abs(excess) > config.align_deg else 0.0


def run_detector(pyramid: list[np.ndarray], shape: tuple[int, int], card: DetectorCard,
                 infer: Infer) -> list[Detection]:
    """Every channel's detection in one image on the view the detector finds its spine in (confidence included,
    none dropped)."""
    return searched_view(pyramid, shape, card, infer)[0].found


def best_view(answers: list[ViewAnswer]) -> tuple[ViewAnswer, float]:
    """The answer of the view with the highest score, and its lead over the second best (1.0 with one view)."""
    ranked = sorted(answers, key=lambda a: -a.score)
    return ranked[0], ranked[0].score - ranked[1].score if len(ranked) > 1 else 1.0


def searched_view(pyramid: list[np.ndarray], shape: tuple[int, int], card: DetectorCard, infer: Infer,
                  views: tuple[View, ...] | None = None, turn_deg: float = 0.0,
                  looks: Looks | None = None) -> tuple[ViewAnswer, float]:
    """:func:`best_view` of the card's candidate views (``views`` instead when given) on the film turned by
    ``turn_deg``, each view of the best single look's polarity scored by its mean score over the film turned further
    by each of the card's ``view_turns_deg`` (a steadier vote between two poses that look alike than one look). The
    other polarity's views, which the detector tells apart surely, keep their one look unless one of them reaches
    the best mean: then they are voted alike (a film turned 45 degrees reads worse turned further, and one look of
    the other polarity could win by that alone). The answer returned is the chosen view's on the film turned by
    ``turn_deg`` alone, the lead that of the scores so voted (``looks``: :func:`view_answers`)."""
    looks = {} if looks is None else looks
    plain = view_answers(pyramid, shape, card, infer, views, turn_deg, looks=looks)
    first, lead = best_view(plain)
    if not any(t != 0.0 for t in card.detection.view_turns_deg) or len(plain) < 2:
        return first, lead
    polarity = [a.view for a in plain if a.view.inverted == first.view.inverted]
    scores = voted_scores(pyramid, shape, card, infer, polarity, turn_deg, looks)
    others = [a for a in plain if a.view not in scores]
    if others and max(a.score for a in others) >= max(scores.values()):
        scores |= voted_scores(pyramid, shape, card, infer, [a.view for a in others], turn_deg, looks)
    ranked = sorted(plain, key=lambda a: -scores.get(a.view, a.score))
    return ranked[0], float(scores.get(ranked[0].view, ranked[0].score) - scores.get(ranked[1].view, ranked[1].score))


def voted_scores(pyramid: list[np.ndarray], shape: tuple[int, int], card: DetectorCard, infer: Infer,
                 views: list[View], turn_deg: float, looks: Looks | None = None) -> dict[View, float]:
    """Each of ``views``' score (:attr:`ViewAnswer.score`) averaged over the film turned by ``turn_deg`` and turned
    further by each of the card's ``view_turns_deg``: the view vote of :func:`searched_view` and
    :func:`upright_vote` (``looks``: :func:`view_answers`)."""
    turns = [0.0, *(t for t in card.detection.view_turns_deg if t != 0.0)]
    votes = [[a.score for a in view_answers(pyramid, shape, card, infer, tuple(views), turn_deg + t, looks=looks)]
             for t in turns]
    return dict(zip(views, np.mean(votes, axis=0), strict=True))


def image_flags(searched: DetectorCard | None, view_lead: float, namer: DetectorCard, margin: float,
                merged: bool = False, view_changed: bool = False) -> tuple[str, ...]:
    """The image-level flags of a detection: ``view_uncertain`` when the view chosen by the card that ``searched``
    its views (None: none did) leads the next by less than that card's ``view_margin``, or when a second search
    changed it (``view_changed``: :func:`searched_upright`); ``levels_uncertain`` when the naming margin is below
    the ``namer``'s ``naming_margin`` (NaN, too few names to compare, counts as below when the card sets one), or
    when the names rest on a merge of two names on one vertebra (``merged``:
    :func:`vcorner.postprocess.peaks.decode_spaced`)."""
    flags = []
    searched_views = searched is not None and len(searched.detection.views) > 1
    if view_changed or (searched_views and view_lead < searched.detection.view_margin):
        flags.append("view_uncertain")
    if merged or (namer.detection.naming_margin > 0 and not margin >= namer.detection.naming_margin):
        flags.append("levels_uncertain")
    return tuple(flags)


def chosen_answer(pyramid: list[np.ndarray], shape: tuple[int, int], card: DetectorCard, infer: Infer,
                  finder: Finder | None = None, search: bool = True, second: Finder | None = None
                  ) -> tuple[ViewAnswer, tuple[str, ...], DetectorCard]:
    """The detector's answer on the film's view and the image flags: the view is the one where the ``finder`` sees a
    spine (searched again on the film turned a quarter where it cannot measure the spine's lean:
    :func:`quarter_turned`; the detector then looks at that view only, turned upright when the finder's spine leans
    beyond the detector's ``align_deg``: :func:`upright_turn`, the view then searched again on the film so turned;
    and its levels are flagged uncertain where the finder names a vertebra otherwise, :func:`names_disagree`, or
    finds neither anchor, :func:`unanchored`), else the best of the detector's own candidates. The view is flagged
    uncertain where the chosen view, turned upright, does not lead each view of the other mirror, turned upright by
    its own lean, by the finder's ``view_margin``, the lead it asks of a sure view in its search
    (:func:`handedness_lead`). Levels are flagged uncertain too where two names on one vertebra were merged
    (:func:`vcorner.postprocess.peaks.decode_spaced`). A body cut by the film's edge that the detector hesitates on
    and the finder sees is the finder's (:func:`finder_ends`), after the outer of two names piled on one body at an
    end of the names is dropped (:func:`cut_end_pairs`). Without ``search`` both look at the film as it is
    (``as_is``) only. Where the levels are flagged uncertain and a ``second`` namer is given, the names are its, on
    the same view, the flags kept (:func:`second_opinion`). Returns the answer, the flags and the card of the namer
    that named.

    Raises:
        InputError: "no vertebrae found" when the finder finds fewer than two names at its confidence in its best
            view (it was trained on far more films without a spine than the namer; README.md, "Orientation,
            polarity and naming").
    """
    views = None if search else (AS_IS,)
    if finder is None:
        answer, lead = searched_view(pyramid, shape, card, infer, views)
        return cut_end_pairs(answer, card), image_flags(card if search else None, lead, card, answer.margin,
                                                        answer.merged), card
    looks: Looks = {}
    found, lead = searched_view(pyramid, shape, *finder, views, looks=looks)
    if search:
        found, lead = quarter_turned(pyramid, shape, finder, card, found, lead, looks)
    seen = seen_names(found, finder[0])
    if seen < 2:
        best = max((d.confidence for d in found.found), default=0.0)
        raise InputError(f"no vertebrae found (the view finder sees no spine in any view: {seen} name(s) at its "
                         f"confidence {finder[0].detection.min_confidence:g}, best {best:.2f})")
    film_turn = upright_turn(found, finder[0], shape, card) * found.view.handedness
    first = found.view
    if film_turn and search:
        found, lead, film_turn = searched_upright(pyramid, shape, finder, card, found, lead, film_turn, looks)
    answer = view_answers(pyramid, shape, card, infer, (found.view,), film_turn, close_gaps=True)[0]
    merged = answer.merged and not (names_agree(answer, card, found, finder[0]) and not unanchored(found, finder[0]))
    flags = image_flags(finder[0] if search else None, lead, card, answer.margin, merged, found.view != first)
    if (search and len(finder[0].detection.views) > 1 and "view_uncertain" not in flags
            and handedness_lead(pyramid, shape, finder, card, found.view, film_turn, looks)
            < finder[0].detection.view_margin):
        flags = ("view_uncertain", *flags)
    if "levels_uncertain" not in flags and (names_disagree(answer, card, found, finder[0])
                                            or unanchored(found, finder[0])):
        flags += ("levels_uncertain",)
    if second is not None and "levels_uncertain" in flags:
        answer, card = second_opinion(pyramid, shape, second, found.view, film_turn), second[0]
    return finder_ends(cut_end_pairs(answer, card), card, found, finder[0]), flags, card


QUARTER_TURN_DEG = 90.0
"""A film stored a quarter turn off (landscape for portrait) is searched again turned by this much; its views turned
180 degrees cover the other quarter."""


def quarter_turned(pyramid: list[np.ndarray], shape: tuple[int, int], finder: Finder, namer: DetectorCard,
                   found: ViewAnswer, lead: float, looks: Looks | None = None) -> tuple[ViewAnswer, float]:
    """The finder's answer and lead, searched again on the film turned by :data:`QUARTER_TURN_DEG` where its first
    search could not tell how the spine leans (fewer than two names, or too few of the namer's span:
    :func:`span_lean_deg`). The view search turns films leaning up to 45 degrees upright; a film lying on its side
    shows the finder a few names at most, none of them on a measurable line. The quarter-turned views are more
    candidates, compared as the search compares its views: kept where the best of them, voted over the finder's
    looks (:func:`voted_scores`), leads the first search's view by the finder's ``view_margin`` and shows at least
    two names (a film cut to C5-C7 is not read lying on its side). Its answer's detections are in image pixels, so
    the lean, and the upright turn, are then measured as for any film (:func:`upright_turn`)."""
    card, infer = finder
    if seen_names(found, card) >= 2 and span_lean_deg(found, card, shape, lean_ends(namer)) is not None:
        return found, lead
    again, again_lead = searched_view(pyramid, shape, card, infer, None, QUARTER_TURN_DEG, looks)
    first = voted_scores(pyramid, shape, card, infer, [found.view], 0.0, looks)[found.view]
    quarter = voted_scores(pyramid, shape, card, infer, [again.view], QUARTER_TURN_DEG, looks)[again.view]
    if seen_names(again, card) >= 2 and quarter - first >= card.detection.view_margin:
        return again, again_lead
    return found, lead


def second_opinion(pyramid: list[np.ndarray], shape: tuple[int, int], second: Finder, view: View,
                   film_turn: float) -> ViewAnswer:
    """The ``second`` namer's answer on the film's chosen ``view``, turned upright by ``film_turn`` degrees as the
    first namer's was: read where the first namer's levels are flagged uncertain. The shipped second namer
    (``detection.second_namer``) also maps C2 and T1 and names films cut to C5-C7 better, but places more centres
    3-5 mm off on films the first names surely, so it is asked only where the first is unsure
    (``benchmarks/results/namer_t1_choice.md``)."""
    return view_answers(pyramid, shape, second[0], second[1], (view,), film_turn, close_gaps=True)[0]


def cut_end_pairs(answer: ViewAnswer, card: DetectorCard) -> ViewAnswer:
    """``answer`` with the outer name of two neighbouring names that coincide at an end of its sure run (closer than
    :data:`vcorner.geometry.sequence.NEAR` typical spacings) set to confidence 0, not found: a body cut by the
    film's edge, or hidden, piles its map on its neighbour inside the film (a C5 on C4 in a film cut below C4), and
    the centre checks would refuse both names. The spacing is the larger of the run's typical spacing and the step
    (per level) from the inner name of the pair to the next sure name: with three names, two of them piled, the
    typical spacing is about half the true one. Needs three sure names (context names left out), so that two stay;
    the name may then be placed by the view finder (:func:`finder_ends`)."""
    mine = [d for d in answer.found if d.name not in card.detection.context]
    sure = [i for i, d in enumerate(mine) if is_sure(d, card.detection.min_confidence) and d.name not in answer.placed]
    if len(sure) < 3:
        return answer
    spacing = typical_spacing(np.array([mine[i].xy for i in sure]), np.array(sure, dtype=np.float64))
    drop = {mine[outer].name for outer, inner, beyond in ((sure[0], sure[1], sure[2]), (sure[-1], sure[-2], sure[-3]))
            if abs(outer - inner) == 1 and np.linalg.norm(mine[outer].xy - mine[inner].xy)
            < NEAR * max(spacing, np.linalg.norm(mine[inner].xy - mine[beyond].xy) / abs(inner - beyond))}
    if not drop:
        return answer
    return replace(answer, found=[replace(d, confidence=0.0) if d.name in drop else d for d in answer.found])


def finder_ends(answer: ViewAnswer, card: DetectorCard, other: ViewAnswer, other_card: DetectorCard) -> ViewAnswer:
    """``answer`` with a name just past either end of its sure run (context names left out) taken from ``other``
    (the view finder) where the namer's map is weak there (below its threshold) and the finder's is not: the finder
    sees that name at its own threshold within :data:`vcorner.postprocess.peaks.END_OFFSET` level steps of where the
    run's step puts it, and names the run's end vertebra alike (within half a step). A body cut by the film's edge
    (a C7 below the border) is where the namer, trained on whole films, hesitates, and the finder, trained on cut
    ones, does not (README.md, "Automatic centres")."""
    sure_at = card.detection.min_confidence
    mine = [d for d in answer.found if d.name not in card.detection.context]
    theirs = {d.name: d for d in other.found if d.confidence >= other_card.detection.min_confidence}
    sure = [is_sure(d, sure_at) for d in mine]
    taken = {}
    for end, near, expected, step in run_ends(mine, sure):
        weak, anchor = mine[end], mine[near]
        if sure[end] or weak.name not in theirs or anchor.name not in theirs:
            continue
        if (np.linalg.norm(theirs[anchor.name].xy - anchor.xy) < 0.5 * step
                and np.linalg.norm(theirs[weak.name].xy - expected) <= END_OFFSET * step):
            taken[weak.name] = theirs[weak.name]
    if not taken:
        return answer
    return replace(answer, found=[taken.get(d.name, d) for d in answer.found], placed=frozenset(taken))


def seen_names(answer: ViewAnswer, card: DetectorCard) -> int:
    """How many of ``answer``'s names reach ``card``'s confidence threshold."""
    return sum(d.confidence >= card.detection.min_confidence for d in answer.found)


def searched_upright(pyramid: list[np.ndarray], shape: tuple[int, int], finder: Finder, namer: DetectorCard,
                     found: ViewAnswer, lead: float, film_turn: float, looks: Looks | None = None
                     ) -> tuple[ViewAnswer, float, float]:
    """The finder's answer, its lead and the film's upright turn (degrees, the film's frame) after searching the
    views again on the film turned by ``film_turn``: the finder tells top from bottom surely on upright films
    only, and a film turned 35 degrees can look alike in two views, one of them upside down. A view the second
    search confirms (or one in which it sees fewer than two names) keeps the first answer; a changed one (flagged
    ``view_uncertain`` by :func:`chosen_answer`) is turned upright by its own lean (by ``film_turn``, as the finder
    saw it, when that lean cannot be measured)."""
    again, again_lead = searched_view(pyramid, shape, *finder, None, film_turn, looks)
    if again.view == found.view or seen_names(again, finder[0]) < 2:
        return found, lead, film_turn
    if span_lean_deg(again, finder[0], shape, lean_ends(namer)) is not None:
        film_turn = upright_turn(again, finder[0], shape, namer) * again.view.handedness
    return again, again_lead, film_turn


def upright_vote(pyramid: list[np.ndarray], shape: tuple[int, int], finder: Finder, namer: DetectorCard, view: View,
                 film_turn: float | None = None, looks: Looks | None = None) -> float:
    """The finder's score (:attr:`ViewAnswer.score`) of ``view`` on the film turned upright in that view, voted as
    :func:`searched_view` votes (:func:`voted_scores`). ``film_turn`` (degrees, the film's frame) is the upright turn
    when known; None measures it on the view (:func:`upright_turn`; ``looks``: :func:`view_answers`)."""
    if film_turn is None:
        answer = view_answers(pyramid, shape, *finder, (view,), looks=looks)[0]
        film_turn = upright_turn(answer, finder[0], shape, namer) * view.handedness
    return voted_scores(pyramid, shape, *finder, [view], film_turn, looks)[view]


def handedness_lead(pyramid: list[np.ndarray], shape: tuple[int, int], finder: Finder, namer: DetectorCard,
                    view: View, film_turn: float, looks: Looks | None = None) -> float:
    """How much better the finder reads a spine in the chosen ``view`` than in each of its candidate views of the other
    handedness (mirrored against not; the same polarity; inf without one), each on the film turned upright by its own
    lean (:func:`upright_vote`). The view search compares every view on the film as it is, where a film turned 35-45
    degrees and read in the other mirror leans less than it truly does: its lean then favours the wrong mirror. Turned
    upright, each view shows its spine in the learned pose, and the mirror the finder truly sees wins. Below the
    finder's ``view_margin`` (negative: the other handedness wins there) the film is flagged ``view_uncertain``
    (README.md, "Orientation, polarity and naming")."""
    others = [v for v in map(parse_view, finder[0].detection.views)
              if v.mirrored != view.mirrored and v.inverted == view.inverted]
    if not others:
        return float("inf")
    mine = upright_vote(pyramid, shape, finder, namer, view, film_turn, looks)
    return mine - max(upright_vote(pyramid, shape, finder, namer, other, None, looks) for other in others)


def unanchored(answer: ViewAnswer, card: DetectorCard) -> bool:
    """Whether a detector with anchor names (its card's ``context``: C2 and T1) found none of them in ``answer``,
    neither at its confidence nor as a weaker name that continues its confident run at the run's own step
    (:func:`vcorner.postprocess.peaks.split_confident`, as a body cut by the film's edge is kept): the levels then
    rest on the order of look-alike bodies alone, as on a film cut to C4-C6 or a thoracic segment (False for a card
    without anchors)."""
    anchors = card.detection.context
    if not anchors:
        return False
    kept = split_confident(answer.found, card.detection.min_confidence)[0]
    return not any(d.name in anchors for d in kept)


def _named_with_spacing(answer: ViewAnswer, card: DetectorCard) -> tuple[list[Detection], float]:
    """``answer``'s confident names (``card``'s context names left out) and their vertebra spacing, px: the median
    distance between consecutive ones (NaN with fewer than two)."""
    mine = [d for d in answer.found if d.confidence >= card.detection.min_confidence
            and d.name not in card.detection.context]
    if len(mine) < 2:
        return mine, float("nan")
    return mine, float(np.median(np.linalg.norm(np.diff([d.xy for d in mine], axis=0), axis=1)))


def names_agree(answer: ViewAnswer, card: DetectorCard, other: ViewAnswer, other_card: DetectorCard) -> bool:
    """Whether a second detector confirms every name of ``answer``: each confident name (context names left out) has
    a confident detection of ``other`` with the same name within half a vertebra spacing (the median distance between
    its consecutive names); False with fewer than two names. A merge of two names on one vertebra
    (:func:`vcorner.postprocess.peaks.decode_spaced`) that the view finder, trained apart, names alike and anchors
    (:func:`unanchored`) is not flagged."""
    mine, spacing = _named_with_spacing(answer, card)
    theirs = {d.name: d.xy for d in other.found if d.confidence >= other_card.detection.min_confidence}
    if len(mine) < 2:
        return False
    return all(d.name in theirs and np.linalg.norm(theirs[d.name] - d.xy) < 0.5 * spacing for d in mine)


def names_disagree(answer: ViewAnswer, card: DetectorCard, other: ViewAnswer, other_card: DetectorCard) -> bool:
    """Whether two detectors name a vertebra differently: a confident name of ``answer`` lies within half a
    vertebra spacing (the median distance between its consecutive names) of a confident detection of ``other``
    that carries another name (the view finder, trained apart and on other films, as a second reader)."""
    mine, spacing = _named_with_spacing(answer, card)
    theirs = [d for d in other.found if d.confidence >= other_card.detection.min_confidence]
    if len(mine) < 2 or not theirs:
        return False
    for d in mine:
        near = min(theirs, key=lambda t: float(np.linalg.norm(t.xy - d.xy)))
        if np.linalg.norm(near.xy - d.xy) < 0.5 * spacing and near.name != d.name:
            return True
    return False


EDGE_ROOM = 0.0
"""A guess past an end of the detected run (:func:`run_extension`) is made only where its centre lies at least this
many steps inside the image: anywhere inside it. Its patches then judge it as any guess, a corner outside the film
agreeing with none (confidence 0). Of the guesses within a quarter step of the edge on the 34 validation cells (none
was made there until 2026-12-07), the corner model confirmed 25: 23 right bodies, 2 a "C7" on T1 in runs already
misnamed and flagged (benchmarks/results/edge_guesses.md)."""


def _run_ranks(kept: list[Detection], names: tuple[str, ...]) -> list[int]:
    """The index in ``names`` of each of ``kept``, when every one has one and they increase; [] otherwise."""
    ranks = [names.index(d.name) if d.name in names else -1 for d in kept]
    return ranks if -1 not in ranks and ranks == sorted(ranks) else []


def run_extension(kept: list[Detection], names: tuple[str, ...], shape: tuple[int, int]) -> list[Detection]:
    """Guesses of the names just past either end of the run ``kept`` (detections in the order of ``names``, image
    px): each end's centre plus its step from its neighbour, where the two are consecutive names, the name past it
    is one of ``names`` and not found, and the guess lies inside the ``shape`` (H, W) image (:data:`EDGE_ROOM`).
    Confidence 0 (the caller gives them the detector's own, below its threshold): the corner model confirms them or
    they are left out (:func:`vcorner.stages.finish.confirmed_guesses`).
    Both detectors miss a C5 at the lower edge of a film cut below it, or a C7 beside a turned film's edge, that the
    corner model frames well from such a guess (README.md, "Automatic centres")."""
    ranks = _run_ranks(kept, names)
    if len(ranks) < 2:
        return []
    height, width = shape
    found = {d.name for d in kept}
    out = []
    for end, near in ((len(kept) - 1, len(kept) - 2), (0, 1)):
        after = 2 * ranks[end] - ranks[near]
        if abs(ranks[end] - ranks[near]) != 1 or not 0 <= after < len(names) or names[after] in found:
            continue
        step = np.asarray(kept[end].xy, dtype=np.float64) - np.asarray(kept[near].xy, dtype=np.float64)
        guess = np.asarray(kept[end].xy, dtype=np.float64) + step
        room = EDGE_ROOM * float(np.linalg.norm(step))
        if room <= guess[0] <= width - 1 - room and room <= guess[1] <= height - 1 - room:
            out.append(Detection(names[after], guess, 0.0))
    return out


def run_holes(kept: list[Detection], names: tuple[str, ...]) -> list[Detection]:
    """Guesses of the one name missing between two names of the run ``kept`` (detections in the order of ``names``,
    image px) that lie two levels apart: the middle of the two. Confidence 0, as :func:`run_extension`'s: the corner
    model confirms them or they are left out (:func:`vcorner.stages.finish.confirmed_guesses`)."""
    ranks = _run_ranks(kept, names)
    if len(ranks) < 2:
        return []
    return [Detection(names[ranks[k] + 1], (np.asarray(kept[k].xy, dtype=np.float64)
                                            + np.asarray(kept[k + 1].xy, dtype=np.float64)) / 2, 0.0)
            for k in range(len(kept) - 1) if ranks[k + 1] - ranks[k] == 2]


def detect_centres(pyramid: list[np.ndarray], shape: tuple[int, int], file: str, spacing_mm: float | None,
                   card: DetectorCard, infer: Infer, finder: Finder | None = None, search: bool = True,
                   second: Finder | None = None, extend: bool = False) -> DetectedCentres:
    """The checked, named centres of one image, found on the candidate view where the detector (or the ``finder``,
    when given) sees its spine (:func:`chosen_answer`; without ``search``, on the film as it is).

    The card's context names (C2, T1) anchor the naming and are then left out: only the other names are listed. Names
    whose steps are irregular (:func:`irregular_steps`) are flagged ``levels_uncertain``. A film whose levels the
    detector is unsure of is named by the ``second`` namer when given (:func:`second_opinion`), still flagged. With
    ``extend`` (a batch, whose corner model confirms them), the names just past the run's ends, and a name missing
    between two of it, are guessed (:func:`run_extension`, :func:`run_holes`; listed in ``guessed``).

    Raises:
        InputError: "no vertebrae found" when fewer than two detections reach the card's confidence; the
            sequence checks' reason when the detected sequence cannot frame any vertebra.
    """
    first = card
    answer, flags, card = chosen_answer(pyramid, shape, card, infer, finder, search, second)
    output = [d for d in answer.found if d.name not in card.detection.context]
    kept, dropped = split_confident(output, card.detection.min_confidence, answer.placed)
    outside = {d.name: why for d in kept if (why := outside_reason(d.xy, shape))}
    kept = [d for d in kept if d.name not in outside]
    if len(kept) < 2:
        best = max((d.confidence for d in kept + dropped), default=0.0)
        beside = f"; {len(outside)} found outside the image's pixels" if outside else ""
        raise InputError(f"no vertebrae found (the detector's best confidence {best:.2f}; at least two names need "
                         f"{card.detection.min_confidence:g}{beside})")
    if "levels_uncertain" not in flags and (irregular_steps(kept) or unchecked_gap(kept)):
        flags += ("levels_uncertain",)
    # centres at 0.001 px, as centers.detected.csv writes them: a resumed run, or vcorner batch --centers on that
    # file, frames the vertebrae from exactly the same numbers
    listed = _listed(file, kept, spacing_mm, answer.view.name, flags)
    try:
        record, left_out = checked_record(listed)
    except InputError as err:
        raise InputError(f"detected centres fail the sequence checks: {err}") from None
    confidence = {d.name: d.confidence for d in kept}
    guesses = _guesses(record, output, card, shape, listed) if extend else []
    if guesses:  # kept only where the centre checks, given them, leave out nothing more and refuse nothing
        wider = _listed(file, sorted(kept + guesses, key=lambda d: card.names.index(d.name)), spacing_mm,
                        answer.view.name, flags)
        try:
            wider_record, left = checked_record(wider)
        except InputError:
            wider_record, left = None, {}
        if wider_record is not None and set(left) <= set(left_out):
            listed, record = wider, wider_record
            confidence.update({g.name: g.confidence for g in guesses})
        else:
            guesses = []
    return DetectedCentres(listed, confidence, record, {**outside, **left_out}, tuple(dropped), answer.view.name,
                           answer.margin, flags, card is not first, frozenset(g.name for g in guesses),
                           frozenset(g.name for g in guesses if _inside(g.name, record, card)))


def _listed(file: str, found: list[Detection], spacing_mm: float | None, view: str,
            flags: tuple[str, ...]) -> ImageRecord:
    """The record of the detections ``found`` (centres at 0.001 px)."""
    return ImageRecord(file, tuple(Vertebra(d.name, np.round(np.asarray(d.xy, dtype=np.float64), 3)) for d in found),
                       spacing_mm, view=view, flags=flags)


def _inside(name: str, record: ImageRecord, card: DetectorCard) -> bool:
    """Whether ``name`` lies between the first and the last of ``record``'s names, in the card's order."""
    ranks = [card.names.index(v.name) for v in record.vertebrae if v.name in card.names]
    return bool(ranks) and min(ranks) < card.names.index(name) < max(ranks)


def _guesses(record: ImageRecord, output: list[Detection], card: DetectorCard, shape: tuple[int, int],
             listed: ImageRecord) -> list[Detection]:
    """The guesses past the ends of the checked ``record``'s run and between its names (:func:`run_extension`,
    :func:`run_holes`), each with the detector's own confidence in its name from ``output``; never a name ``listed``
    has (one the centre checks left out)."""
    order = tuple(n for n in card.names if n not in card.detection.context)
    mass = {d.name: d.confidence for d in output}
    run = [Detection(v.name, v.center, mass.get(v.name, 0.0)) for v in record.vertebrae]
    named = {v.name for v in listed.vertebrae}
    guesses = run_extension(run, order, shape) + run_holes(run, order)
    return [replace(g, confidence=mass.get(g.name, 0.0)) for g in guesses if g.name not in named]


GAP_RATIO = 1.5
"""A detected sequence whose longest step between consecutive names (per level between them) is more than this
many times its median step is flagged ``levels_uncertain``: a regular step gives 1, a skipped vertebra 2, so beyond
half-way a vertebra between two names was skipped or one name sits on a body of another level, and the names below
it may be shifted (README.md, "Orientation, polarity and naming")."""


def irregular_steps(found: list[Detection]) -> bool:
    """Whether the centres ``found`` (named, image pixels), in anatomical order, have a step per level longer than
    :data:`GAP_RATIO` times their median step, or a step across a name left out (two or more levels) that spans
    about one vertebra (shorter than :data:`vcorner.postprocess.peaks.SHORT_GAP` times its levels: "C7" on the body
    below C5); False with fewer than three names of known level."""
    ranked = sorted((r, i) for i, r in enumerate(level_ranks([d.name for d in found])) if r is not None)
    if len(ranked) < 3:
        return False
    levels = np.array([r for r, _ in ranked], dtype=np.float64)
    points = np.stack([np.asarray(found[i].xy, dtype=np.float64) for _, i in ranked])
    apart = np.diff(levels)
    step = np.linalg.norm(np.diff(points, axis=0), axis=1) / np.maximum(apart, 1.0)
    typical = np.median(step)
    return bool(step.max() > GAP_RATIO * typical or np.any((apart > 1) & (step < SHORT_GAP * typical)))


def unchecked_gap(found: list[Detection]) -> bool:
    """Whether the centres ``found`` are two names alone with two or more levels missing between them (C3 and C7): no
    third name gives a step to check theirs against (:func:`irregular_steps`), and no guess between them
    (:func:`run_holes`, one missing level) can fill the gap, so nothing says that both sit on one spine, at those
    levels. Two films side by side were answered so: C3 on one spine, "C7" beside the other, no flag."""
    ranks = [r for r in level_ranks([d.name for d in found]) if r is not None]
    return len(found) == 2 and len(ranks) == 2 and abs(ranks[1] - ranks[0]) > 2


def outside_reason(xy: np.ndarray, shape: tuple[int, int]) -> str:
    """Why a detected centre ``xy`` (px) cannot be used: it lies outside the image's own pixels (in the margin
    the detector's letterboxed view adds), or "" when it lies inside ``shape`` (H, W)."""
    height, width = shape
    x, y = float(xy[0]), float(xy[1])
    if -0.5 <= x <= width - 0.5 and -0.5 <= y <= height - 0.5:
        return ""
    return (f"detected centre ({x:.1f}, {y:.1f}) lies outside the image's {width} x {height} pixels (in the margin "
            "of the detector's letterboxed view); left out")
