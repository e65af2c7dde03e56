"""Hypothesis strategies for the fuzz targets: raw bytes and text, and structured mutations of seeds.

A mutation keeps most of a valid input so that the parser gets past its first checks: it edits
lines (drops, repeats, swaps them, or gives a ``Field: value`` line another value), splices bytes,
or cuts the input short. Several mutations may pile up on one seed.
"""

from __future__ import annotations

from collections.abc import Callable

from hypothesis import strategies as st

TEXT = st.text(max_size=40)
WORDS = st.sampled_from(
    ["", " ", "0", "-1", "1" * 40, "9999-12-31", "0001-01-01", "2015-06-01T25:00:00Z", "nan", "inf",
     "true", "null", "[]", "{}", "\\", '"', "\x00", "\ufeff", "\U0001f600", "é", "=", ":", "#", "\r",
     "²", "١٢", "Ⅻ", "1_000", "+1", "0x10"]
)  # fmt: skip
Mutation = Callable[[bytes], bytes]


@st.composite
def line_edit(draw: st.DrawFn) -> Mutation:
    """Drop, repeat or swap a line, or replace what follows a line's first ``:`` or ``=``."""
    how = draw(st.sampled_from(["drop", "repeat", "swap", "value"]))
    pick, other = draw(st.integers(0, 10_000)), draw(st.integers(0, 10_000))
    value = draw(st.one_of(TEXT, WORDS)).encode("utf-8", "surrogatepass")

    def edit(data: bytes) -> bytes:
        lines = data.split(b"\n")
        i, j = pick % len(lines), other % len(lines)
        if how == "drop":
            del lines[i]
        elif how == "repeat":
            lines.insert(i, lines[i])
        elif how == "swap":
            lines[i], lines[j] = lines[j], lines[i]
        else:
            cut = min((lines[i].find(sep) for sep in (b":", b"=") if sep in lines[i]), default=-1)
            lines[i] = lines[i][: cut + 1] + b" " + value
        return b"\n".join(lines)

    return edit


@st.composite
def byte_edit(draw: st.DrawFn) -> Mutation:
    """Insert, overwrite or delete a few bytes somewhere, or cut the input short."""
    how = draw(st.sampled_from(["insert", "overwrite", "delete", "truncate"]))
    where, size = draw(st.integers(0, 100_000)), draw(st.integers(1, 16))
    junk = draw(st.one_of(st.binary(min_size=1, max_size=16), WORDS.map(lambda w: w.encode())))

    def edit(data: bytes) -> bytes:
        at = where % (len(data) + 1)
        if how == "insert":
            return data[:at] + junk + data[at:]
        if how == "overwrite":
            return data[:at] + junk + data[at + len(junk) :]
        if how == "delete":
            return data[:at] + data[at + size :]
        return data[:at]

    return edit


def mutants(seeds: list[bytes], keep: int = 0) -> st.SearchStrategy[bytes]:
    """A seed with one to four edits; the first ``keep`` bytes (a target's selector) are left alone."""

    def apply(seed: bytes, edits: list[Mutation]) -> bytes:
        head, body = seed[:keep], seed[keep:]
        for edit in edits:
            body = edit(body)
        return head + body

    edits = st.lists(st.one_of(line_edit(), byte_edit()), min_size=1, max_size=4)
    return st.builds(apply, st.sampled_from(seeds), edits)


def inputs(seeds: list[bytes], keep: int = 0) -> st.SearchStrategy[bytes]:
    """What a target is fed: its seeds as they are, mutated seeds (most often), random text and bytes."""
    raw = st.one_of(
        st.binary(max_size=256), st.text(max_size=256).map(lambda t: t.encode("utf-8", "surrogatepass"))
    )
    if keep:
        raw = st.tuples(st.binary(min_size=keep, max_size=keep), raw).map(lambda pair: pair[0] + pair[1])
    return st.one_of(st.sampled_from(seeds), mutants(seeds, keep), mutants(seeds, keep), raw)
