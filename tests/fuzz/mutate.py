"""Hypothesis strategies for the fuzz targets: raw bytes and text, and structured mutations of seeds.

A mutation keeps most of a valid input so that the parser gets past its first checks: it gives a
``Field: value`` or ``key = value`` line another value (most often), drops, repeats or swaps
lines, splices bytes, or cuts the input short. Up to four mutations pile up on one seed. Which
line or place is picked uniformly (Hypothesis' own choices favour the first), so every field is
as likely to be hit.
"""

from __future__ import annotations

import random

from hypothesis import strategies as st

TEXT = st.text(max_size=40)
WORDS = ["", " ", "0", "-1", "1" * 40, "9999-12-31", "0001-01-01", "2015-06-01T25:00:00Z", "nan", "inf",
         "true", "null", "[]", "{}", "\\", '"', "\x00", "\ufeff", "\U0001f600", "é", "=", ":", "#", "\r",
         "²", "١٢", "Ⅻ", "1_000", "+1", "0x10"]  # fmt: skip
EDITS = ["value"] * 5 + ["drop", "repeat", "swap", "insert", "overwrite", "delete", "truncate"]


def edit(data: bytes, rng: random.Random, text: str) -> bytes:
    """``data`` with one edit chosen by ``rng`` (``text``: a value it may write)."""
    how = rng.choice(EDITS)
    lines = data.split(b"\n")
    fields = [n for n, line in enumerate(lines) if b":" in line or b"=" in line]
    if how == "value" and fields:
        i = rng.choice(fields)
        cut = min(lines[i].find(sep) for sep in (b":", b"=") if sep in lines[i])
        value = rng.choice([*WORDS, text, text]).encode("utf-8", "surrogatepass")
        lines[i] = lines[i][: cut + 1] + b" " + value
        return b"\n".join(lines)
    i, j = rng.randrange(len(lines)), rng.randrange(len(lines))
    if how == "drop":
        del lines[i]
        return b"\n".join(lines)
    if how == "swap":
        lines[i], lines[j] = lines[j], lines[i]
        return b"\n".join(lines)
    if how in ("repeat", "value"):  # a value edit of an input without fields repeats a line
        lines.insert(i, lines[i])
        return b"\n".join(lines)
    at = rng.randrange(len(data) + 1)
    junk = rng.choice(
        [rng.randbytes(rng.randint(1, 16)), rng.choice(WORDS).encode(), text.encode("utf-8", "ignore")]
    )
    if how == "insert":
        return data[:at] + junk + data[at:]
    if how == "overwrite":
        return data[:at] + junk + data[at + len(junk) :]
    if how == "delete":
        return data[:at] + data[at + rng.randint(1, 16) :]
    return data[:at]


@st.composite
def mutants(draw: st.DrawFn, seeds: list[bytes], keep: int = 0) -> bytes:
    """A seed with one to four edits; the first ``keep`` bytes (a target's selector) are left alone."""
    rng = draw(st.randoms(use_true_random=True))
    seed = rng.choice(seeds)
    head, body = seed[:keep], seed[keep:]
    for _ in range(rng.randint(1, 4)):
        body = edit(body, rng, draw(TEXT))
    return head + body


def inputs(seeds: list[bytes], keep: int = 0) -> st.SearchStrategy[bytes]:
    """What a target is fed: its seeds as they are, mutated seeds (most often), random text and bytes."""
    raw = st.one_of(
        st.binary(max_size=256), st.text(max_size=256).map(lambda t: t.encode("utf-8", "surrogatepass"))
    )
    if keep:
        raw = st.tuples(st.binary(min_size=keep, max_size=keep), raw).map(lambda pair: pair[0] + pair[1])
    mutated = mutants(seeds, keep)
    return st.one_of(st.sampled_from(seeds), mutated, mutated, mutated, raw)
