"""Word/tag files for token classification: CoNLL and NeMo readers and writers, tagging schemes, label lists.

Formats (data.format)
  conll  one `word ... TAG` line per word, fields separated by whitespace; the tag is the LAST field and
         the ones between (CoNLL-2003's POS and chunk columns) are ignored. A blank line ends a sentence;
         `-DOCSTART-` lines are skipped (they end a sentence too). Every word line of a file must have the
         file's column count (its most common one; ties go to the count seen first).
  nemo   NeMo's pair of files read line by line together: text.txt holds one sentence per line (words
         separated by whitespace), labels.txt one tag per word. The two must have the same number of lines
         (trailing blank lines aside), else the pairing is unknown and reading stops with DataError.
Files are UTF-8 (a leading BOM is ignored); lines end with LF or CRLF.

Tagging schemes (data.tag_scheme)
  iob2   B-X begins an entity of type X, I-X continues it.
  iob1   I-X begins or continues; B-X only separates two adjacent entities of one type.
  bioes  B- begin, I- inside, E- end, S- a one-word entity (BILOU's L- and U- are read as E- and S-).
  io     bare type names (or I-X) only: adjacent words of one type are one entity.
  auto   (default) iob2, bioes or iob1: the one under which the file has the fewest problems; ties go
         to iob2, bioes, iob1 in that order. A file that reads the same under several (no entity, or only
         B- starts) is iob2. For detection only, an iob1 B-X that does not follow an X word counts as a
         problem. io is never guessed: with bare tags any last column (a word, a mis-split line) would
         read as an entity type, so it must be asked for.
Every scheme is converted to IOB2 when read: Sentence.tags, label lists and metrics are IOB2 only.

Problems, counted by kind in `TaggedData.counts` and named `file:line` (NeMo tags: labels file, line and
word number); the sentence holding one is left out and listed in `TaggedData.skipped` ({where: reason},
the skipped-item convention of data/items.py), the other sentences are kept:
  not_utf8            a line that is not UTF-8
  wrong_column_count  a CoNLL line with another column count than the file's (or a word without a tag)
  length_mismatch     a NeMo line pair with a different number of words and tags
  bad_tag             a tag that the scheme does not have (E-X in iob2, B-X in io, an empty type "B-"), or one
                      no class can be named (a control character: data.names)
  invalid_sequence    an I-X that continues nothing (iob2: follows O, the sentence start or another type),
                      BIOES misuse (E-X that closes nothing, an entity not closed by E-X, S-/B-/O inside
                      an open entity)
  unknown_tag         a tag outside the given label set (validation data against the training labels)
invalid_sequence alone can be repaired instead (data.invalid_tags=repair): a tag that cannot continue
begins a new entity (the IOB1 reading of I-X; a stray E-X becomes a one-word entity) and an entity left
open ends at its last word. Such sentences are kept and listed in `TaggedData.repaired`. The default
(`skip`) leaves them out: a file that says iob2 and breaks it is more likely mislabelled than IOB1, and
training on a guess is worse than training on less. Whole-file problems (missing, a folder, empty, no
sentence at all, or no usable sentence) raise DataError.
"""
from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, NamedTuple, Sequence

from ...data.names import class_name_problem
from ...errors import DataError, SpecError
from ...io import atomic_write_text
from ...text.data import read_lines

FORMATS = ("conll", "nemo")
SCHEMES = ("iob2", "bioes", "iob1", "io")
_DETECTED = SCHEMES[:3]  # what auto picks from, ties in this order
TAG_SCHEMES = ("auto", *SCHEMES)
INVALID_TAGS = ("skip", "repair")
OUTSIDE = "O"
DOCSTART = "-DOCSTART-"

_PREFIXED = re.compile(r"^([BIESLU])-(.+)$")
_PREFIX_ONLY = re.compile(r"^[BIESLU]-$")
_PREFIX_ALIASES = {"L": "E", "U": "S"}  # BILOU -> BIOES
_ALLOWED = {"iob2": "BI", "iob1": "BI", "bioes": "BIES", "io": "I"}
_EXPECTED = {"iob2": "O, B-TYPE or I-TYPE", "iob1": "O, B-TYPE or I-TYPE",
             "bioes": "O, B-TYPE, I-TYPE, E-TYPE or S-TYPE", "io": "O, TYPE or I-TYPE"}
_ARTICLE = {"iob2": "an", "iob1": "an", "bioes": "a", "io": "an"}
REPAIRABLE = frozenset({"invalid_sequence"})


@dataclass(frozen=True)
class Sentence:
    """One labelled sentence: its words, their IOB2 tags, and where it starts (`file:line`)."""

    words: tuple[str, ...]
    tags: tuple[str, ...]
    where: str


@dataclass
class TaggedData:
    """The usable sentences of a file plus what was left out or repaired while reading it."""

    sentences: list[Sentence]
    scheme: str  # the scheme the tags were read in (auto resolved)
    skipped: dict[str, str] = field(default_factory=dict)  # where -> reason, one entry per sentence left out
    repaired: dict[str, str] = field(default_factory=dict)  # where -> what was read differently
    counts: dict[str, int] = field(default_factory=dict)  # problem kind -> occurrences (all of them)


class TagProblem(NamedTuple):
    index: int  # word position in the sentence
    kind: str  # bad_tag | invalid_sequence (see the module docstring)
    message: str


# ------------------------------------------------------------------------------------------- schemes

def parse_tag(tag: str) -> tuple[str, str]:
    """`"B-PER"` -> ("B", "PER"), `"O"` -> ("O", ""), a bare `"PER"` -> ("", "PER"); L-/U- read as E-/S-."""
    if tag == OUTSIDE:
        return OUTSIDE, ""
    m = _PREFIXED.match(tag)
    if m is None:
        return "", tag
    return _PREFIX_ALIASES.get(m.group(1), m.group(1)), m.group(2)


def _decode(tags: Sequence[str], scheme: str) -> tuple[list[tuple[str, int, int]], list[TagProblem]]:
    """Entities (type, first word, end word exclusive) read leniently, and every problem on the way."""
    spans: list[tuple[str, int, int]] = []
    problems: list[TagProblem] = []
    open_type: str | None = None
    open_start = 0

    def close(end: int) -> None:
        nonlocal open_type
        if open_type is not None:
            spans.append((open_type, open_start, end))
            open_type = None

    def begin(i: int, typ: str) -> None:
        nonlocal open_type, open_start
        close(i)
        open_type, open_start = typ, i

    def after(i: int) -> str:
        return f"{tags[i]} follows {tags[i - 1] if i else 'the start of the sentence'}"

    def unclosed(i: int, what: str) -> None:
        problems.append(TagProblem(i, "invalid_sequence", f"{what}: BIOES ends the {open_type} entity with "
                                                          f"E-{open_type} first"))

    for i, tag in enumerate(tags):
        prefix, typ = parse_tag(tag)
        if prefix == "" and scheme == "io":
            prefix = "I"
        if prefix == OUTSIDE:
            if scheme == "bioes" and open_type is not None:
                unclosed(i, after(i))
            close(i)
            continue
        if prefix not in _ALLOWED[scheme] or not prefix:
            hint = "; for IO tags without a prefix set data.tag_scheme=io" if prefix == "" else ""
            problems.append(TagProblem(i, "bad_tag", f"'{tag}' is not {_ARTICLE[scheme]} {scheme.upper()} tag "
                                                     f"(expected {_EXPECTED[scheme]}){hint}"))
            close(i)
            continue
        if scheme != "bioes":
            if prefix == "B" or open_type != typ:
                if prefix == "I" and scheme == "iob2":
                    problems.append(TagProblem(i, "invalid_sequence",
                                               f"{after(i)}: IOB2 begins an entity with B-{typ}"))
                begin(i, typ)
            continue
        # BIOES
        if prefix in "BS" and open_type is not None:
            unclosed(i, after(i))
        if prefix in "IE" and open_type != typ:
            hint = f"BIOES begins an entity with B-{typ} (S-{typ} for one word)" if prefix == "I" else \
                f"E-{typ} must close an entity begun with B-{typ}"
            problems.append(TagProblem(i, "invalid_sequence", f"{after(i)}: {hint}"))
            begin(i, typ)
        elif prefix in "BS":
            begin(i, typ)
        if prefix in "ES":
            close(i + 1)
    if scheme == "bioes" and open_type is not None:
        unclosed(len(tags) - 1, f"the sentence ends after {tags[-1]}")
    close(len(tags))
    return spans, problems


def _iob1_b_misuse(tags: Sequence[str]) -> int:
    """B-X tags that do not follow an X word: not IOB1 (a hint for detection only, never an error)."""
    count, previous = 0, ""
    for tag in tags:
        prefix, typ = parse_tag(tag)
        if prefix == "B" and previous != typ:
            count += 1
        previous = typ if prefix in ("B", "I") else ""
    return count


def detect_scheme(tag_sequences: Iterable[Sequence[str]]) -> str:
    """iob2, bioes or iob1: the one under which the sentences have the fewest problems (see the module docstring)."""
    cost = Counter({scheme: 0 for scheme in _DETECTED})
    for tags in tag_sequences:
        for scheme in _DETECTED:
            cost[scheme] += len(_decode(tags, scheme)[1])
        cost["iob1"] += _iob1_b_misuse(tags)
    return min(_DETECTED, key=lambda s: (cost[s], _DETECTED.index(s)))


def spans_to_iob2(spans: Iterable[tuple[str, int, int]], length: int) -> list[str]:
    """(type, start, end exclusive) entities -> IOB2 tags for a sentence of `length` words."""
    tags = [OUTSIDE] * length
    for typ, start, end in spans:
        tags[start] = f"B-{typ}"
        for i in range(start + 1, end):
            tags[i] = f"I-{typ}"
    return tags


def to_iob2(tags: Sequence[str], scheme: str) -> tuple[list[str], list[TagProblem]]:
    """Tags of `scheme` -> IOB2 tags, read leniently (as data.invalid_tags=repair would), and the problems.

    A tag the scheme does not have (a bad_tag problem) becomes O in the returned tags."""
    if scheme not in SCHEMES:
        raise ValueError(f"unknown tagging scheme {scheme!r}; expected one of {SCHEMES}")
    spans, problems = _decode(tags, scheme)
    return spans_to_iob2(spans, len(tags)), problems


def spans_from_iob2(tags: Sequence[str]) -> list[tuple[str, int, int]]:
    """Entities (type, start, end exclusive) of IOB2 tags, read strictly as seqeval's strict IOB2 mode does.

    B-X begins an entity that the following I-X words continue; an I-X that continues nothing (after O,
    at the start or after another type) belongs to no entity. Any other tag ends the open entity."""
    spans: list[tuple[str, int, int]] = []
    open_type, start = None, 0
    for i, tag in enumerate(tags):
        prefix, typ = parse_tag(tag)
        if prefix == "I" and typ == open_type:
            continue
        if open_type is not None:
            spans.append((open_type, start, i))
        open_type, start = (typ, i) if prefix == "B" else (None, 0)
    if open_type is not None:
        spans.append((open_type, start, len(tags)))
    return spans


def repair_iob2(tags: Sequence[str]) -> list[str]:
    """IOB2 tags in which an I-X that continues nothing begins an entity (becomes B-X): the IOB1 reading."""
    return to_iob2(tags, "iob1")[0]


def from_iob2(tags: Sequence[str], scheme: str) -> list[str]:
    """Valid IOB2 tags -> the same entities written in `scheme` (iob2, iob1, bioes or io)."""
    spans = spans_from_iob2(tags)
    if scheme == "iob2":
        return spans_to_iob2(spans, len(tags))
    out = [OUTSIDE] * len(tags)
    if scheme == "io":
        ends: dict[int, str] = {}
        for typ, start, end in spans:
            if ends.get(start) == typ:
                raise ValueError(f"IO cannot separate the two adjacent {typ} entities at words {start - 1}, {start}")
            out[start:end] = [f"I-{typ}"] * (end - start)
            ends[end] = typ
        return out
    if scheme == "iob1":
        ends = {}
        for typ, start, end in spans:
            out[start:end] = [f"I-{typ}"] * (end - start)
            if ends.get(start) == typ:
                out[start] = f"B-{typ}"
            ends[end] = typ
        return out
    if scheme == "bioes":
        for typ, start, end in spans:
            if end - start == 1:
                out[start] = f"S-{typ}"
            else:
                out[start:end] = [f"B-{typ}", *[f"I-{typ}"] * (end - start - 2), f"E-{typ}"]
        return out
    raise ValueError(f"unknown tagging scheme {scheme!r}; expected one of {SCHEMES}")


# -------------------------------------------------------------------------------------------- labels

def tags_for_types(types: Iterable[str]) -> list[str]:
    """Entity types -> the IOB2 class list: "O" first, then B-X, I-X per type, in the order given."""
    tags = [OUTSIDE]
    for typ in dict.fromkeys(types):
        tags += [f"B-{typ}", f"I-{typ}"]
    return tags


def entity_types(labels: Iterable[str]) -> list[str]:
    """The entity types of a tag list (any scheme, or bare names), in order of first appearance."""
    return list(dict.fromkeys(parse_tag(tag)[1] for tag in labels if tag != OUTSIDE))


def labels_from_sentences(sentences: Iterable[Sentence]) -> list[str]:
    """The IOB2 class list of some sentences: "O", then B-X, I-X for each entity type, types sorted."""
    return tags_for_types(sorted({parse_tag(t)[1] for s in sentences for t in s.tags if t != OUTSIDE}))


def read_labels_file(path: str | Path, key: str = "data.labels_file") -> list[str]:
    """A labels file (one tag or entity type per line, any scheme; blank lines ignored) -> the IOB2 class list.

    Types keep the file's order; "O" is always first, whether the file lists it or not."""
    path = Path(path)
    lines = _read_lines(path, key)
    names: list[str] = []
    for number, line in enumerate(lines, start=1):
        if line is None:
            raise DataError(f"{key}: {path}:{number} is not UTF-8 text; save the file as UTF-8")
        fields = line.split()
        if len(fields) > 1:
            raise DataError(f"{key}: {path}:{number}: '{line.strip()}' holds {len(fields)} fields; write one tag "
                            "or entity type per line")
        if fields and _PREFIX_ONLY.match(fields[0]):
            raise DataError(f"{key}: {path}:{number}: '{fields[0]}' names no entity type")
        if fields and (why := class_name_problem(fields[0])):
            raise DataError(f"{key}: {path}:{number}: {fields[0]!r} {why}")
        names += fields
    types = entity_types(names)
    if not types:
        raise DataError(f"{key}: {path} names no entity type (only O); list the types, e.g. PER, LOC, one per line")
    return tags_for_types(types)


# ------------------------------------------------------------------------------------------- readers

class _Raw(NamedTuple):
    """A sentence as found in the file, before its tags are checked."""

    words: list[str]
    tags: list[str]
    where: str  # file:line of its first word (Sentence.where)
    word_where: list[str]  # where each word's tag is (file:line)
    word_note: bool  # name the word in messages (NeMo: many words share a line)
    problem: tuple[str, str, str] | None  # (kind, where, message) found while splitting lines


def _check_options(scheme: str, invalid_tags: str) -> None:
    if scheme not in TAG_SCHEMES:
        raise SpecError(f"data.tag_scheme is '{scheme}'; use one of {', '.join(TAG_SCHEMES)}")
    if invalid_tags not in INVALID_TAGS:
        raise SpecError(f"data.invalid_tags is '{invalid_tags}'; use one of {', '.join(INVALID_TAGS)}")


def _read_lines(path: Path, key: str) -> list[str | None]:
    """The lines of a text file, None for a line that is not UTF-8; DataError when there is nothing to read."""
    if not path.exists():
        raise DataError(f"{key}: {path} does not exist; pass an existing file")
    if not path.is_file():
        raise DataError(f"{key}: {path} is not a file; pass the file itself")
    lines = [None if problem else line for _, line, problem in read_lines(path, key)]
    if not any(line is None or line.strip() for line in lines):
        raise DataError(f"{key}: {path} is empty")
    return lines


def _conll_sentences(path: Path, key: str) -> list[_Raw]:
    lines = _read_lines(path, key)
    groups: list[list[tuple[int, str | None]]] = [[]]
    widths: Counter[int] = Counter()
    for number, line in enumerate(lines, start=1):
        fields = line.split() if line is not None else None
        if fields is not None and (not fields or fields[0] == DOCSTART):
            groups.append([])
            continue
        groups[-1].append((number, line))
        if fields is not None:
            widths[len(fields)] += 1
    width = widths.most_common(1)[0][0] if widths else 2
    sentences = []
    for group in filter(None, groups):
        words, tags, wheres, problem = [], [], [], None
        for number, line in group:
            here = f"{path}:{number}"
            fields = line.split() if line is not None else []
            if problem is None:
                if line is None:
                    problem = ("not_utf8", here, "not UTF-8 text")
                elif len(fields) < 2:
                    problem = ("wrong_column_count", here, f"'{line.strip()}' is a word without a tag "
                                                           "(expected `word TAG`, the tag last)")
                elif len(fields) != width:
                    problem = ("wrong_column_count", here, f"{len(fields)} columns where the lines of this file "
                                                           f"have {width} (the tag is the last column)")
            words.append(fields[0] if fields else "")
            tags.append(fields[-1] if fields else "")
            wheres.append(here)
        sentences.append(_Raw(words, tags, f"{path}:{group[0][0]}", wheres, False, problem))
    return sentences


def _nemo_sentences(text_path: Path, labels_path: Path, key: str, labels_key: str) -> list[_Raw]:
    text_lines = _read_lines(text_path, key)
    label_lines = _read_lines(labels_path, labels_key)
    for lines in (text_lines, label_lines):
        while lines and lines[-1] is not None and not lines[-1].strip():
            lines.pop()
    if len(text_lines) != len(label_lines):
        raise DataError(f"{key}: {text_path} has {len(text_lines)} lines but {labels_key}: {labels_path} has "
                        f"{len(label_lines)}; NeMo's text and labels files pair line by line")
    sentences = []
    for number, (text, labels) in enumerate(zip(text_lines, label_lines), start=1):
        where, tag_where = f"{text_path}:{number}", f"{labels_path}:{number}"
        words = text.split() if text is not None else []
        tags = labels.split() if labels is not None else []
        problem = None
        if text is None:
            problem = ("not_utf8", where, "not UTF-8 text")
        elif labels is None:
            problem = ("not_utf8", tag_where, "not UTF-8 text")
        elif not words and not tags:
            continue  # a blank line in both files holds nothing
        elif len(words) != len(tags):
            problem = ("length_mismatch", where, f"{len(words)} words but {tag_where} has {len(tags)} tags")
        sentences.append(_Raw(words, tags, where, [tag_where] * len(words), True, problem))
    return sentences


def _finish(raw: list[_Raw], source: str, key: str, scheme: str, invalid_tags: str,
            labels: Sequence[str] | None) -> TaggedData:
    """Check, convert and keep the sentences; the problems counted, skipped or repaired."""
    if not raw:
        raise DataError(f"{key}: {source} holds no sentences")
    if scheme == "auto":
        scheme = detect_scheme(r.tags for r in raw if r.problem is None)
    allowed = set(labels) if labels is not None else None
    known_types = ", ".join(entity_types(labels or []))
    data = TaggedData(sentences=[], scheme=scheme)
    counts: Counter[str] = Counter()
    for r in raw:
        if r.problem is not None:
            kind, where, message = r.problem
            counts[kind] += 1
            data.skipped[where] = message
            continue
        tags, problems = to_iob2(r.tags, scheme)
        problems += [TagProblem(i, "bad_tag", f"tag {tag!r} {why}") for i, tag in enumerate(r.tags)
                     if (why := class_name_problem(tag))]
        if allowed is not None:
            problems += [TagProblem(i, "unknown_tag", f"tag '{r.tags[i]}' (type {parse_tag(t)[1]}) is not in the "
                                                      f"label set (types: {known_types})")
                         for i, t in enumerate(tags) if t not in allowed]
        problems.sort(key=lambda p: p.index)
        counts.update(p.kind for p in problems)
        if not problems:
            data.sentences.append(Sentence(tuple(r.words), tuple(tags), r.where))
            continue
        first = problems[0]
        note = f"word {first.index + 1} '{r.words[first.index]}': " if r.word_note else ""
        more = f" (+{len(problems) - 1} more in this sentence)" if len(problems) > 1 else ""
        message = f"{note}{first.message}{more}"
        if invalid_tags == "repair" and all(p.kind in REPAIRABLE for p in problems):
            data.repaired[r.word_where[first.index]] = message
            data.sentences.append(Sentence(tuple(r.words), tuple(tags), r.where))
        else:
            data.skipped[r.word_where[first.index]] = message
    data.counts = dict(counts)
    if not data.sentences:
        where, reason = next(iter(data.skipped.items()))
        raise DataError(f"{key}: none of the {len(raw)} sentences in {source} can be used, e.g. {where}: {reason}")
    return data


def read_conll(path: str | Path, key: str = "data.train_file", *, scheme: str = "auto",
               invalid_tags: str = "skip", labels: Sequence[str] | None = None) -> TaggedData:
    """A CoNLL file -> its usable sentences (IOB2 tags); with `labels` (IOB2 class list) other tags are problems."""
    _check_options(scheme, invalid_tags)
    path = Path(path)
    return _finish(_conll_sentences(path, key), str(path), key, scheme, invalid_tags, labels)


def read_nemo(text_path: str | Path, labels_path: str | Path, key: str = "data.train_file",
              labels_key: str = "data.train_labels", *, scheme: str = "auto", invalid_tags: str = "skip",
              labels: Sequence[str] | None = None) -> TaggedData:
    """NeMo's text.txt + labels.txt -> the usable sentences (IOB2 tags); `labels` as in read_conll."""
    _check_options(scheme, invalid_tags)
    text_path, labels_path = Path(text_path), Path(labels_path)
    raw = _nemo_sentences(text_path, labels_path, key, labels_key)
    return _finish(raw, f"{text_path} + {labels_path}", key, scheme, invalid_tags, labels)


# ------------------------------------------------------------------------------------------- writers

def _words_line(sentence: Sentence) -> str:
    for word in sentence.words:
        if not word or len(word.split()) != 1:
            raise ValueError(f"{sentence.where}: word {word!r} is empty or holds whitespace; it cannot be written")
    return " ".join(sentence.words)


def _written_tags(sentence: Sentence, scheme: str) -> list[str]:
    try:
        return from_iob2(sentence.tags, scheme)
    except ValueError as e:
        raise DataError(f"{sentence.where}: {e}; write this data in another tagging scheme") from None


def write_conll(sentences: Iterable[Sentence], path: str | Path, scheme: str = "iob2") -> Path:
    """Sentences -> a CoNLL file (`word TAG` lines, tags in `scheme`, a blank line after each sentence)."""
    blocks = []
    for s in sentences:
        _words_line(s)
        tags = _written_tags(s, scheme)
        blocks.append("".join(f"{w} {t}\n" for w, t in zip(s.words, tags)) + "\n")
    return atomic_write_text(path, "".join(blocks))


def write_nemo(sentences: Iterable[Sentence], text_path: str | Path, labels_path: str | Path,
               scheme: str = "iob2") -> tuple[Path, Path]:
    """Sentences -> NeMo's text.txt and labels.txt (one sentence per line in each, tags in `scheme`)."""
    sentences = list(sentences)
    text = "".join(_words_line(s) + "\n" for s in sentences)
    tags = "".join(" ".join(_written_tags(s, scheme)) + "\n" for s in sentences)
    return atomic_write_text(text_path, text), atomic_write_text(labels_path, tags)
