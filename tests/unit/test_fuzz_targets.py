"""Every parser of outside input, fuzzed briefly in the normal run (tox -e fuzz runs them for long).

Each target of tests/fuzz/targets (key files, revocation lists, trust files, operator commands,
scenario files, fleet descriptions, campaign documents, the agent's configuration file, the release
repository's TUF metadata) is fed its valid seeds, structured mutations of them, and random bytes
and text; the target's ``check`` lets only an exception the parser does not document escape, so
any escape fails the test.
"""

from __future__ import annotations

import json
import random
import tomllib
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.service.config import AgentConfig
from tests.fuzz import mutate, structure
from tests.fuzz.targets import TARGETS, command, config, load, release

FUZZ = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)


@pytest.mark.parametrize("name", TARGETS)
@FUZZ
@given(data=st.data())
def test_a_parser_returns_or_raises_its_own_error(name: str, data: st.DataObject) -> None:
    """Seeds, mutated seeds and random bytes either parse or raise the parser's documented error."""
    target = load(name)
    target.check(data.draw(mutate.inputs(target.seeds(), getattr(target, "PREFIX", 0)), label="input"))


@pytest.mark.parametrize("name", TARGETS)
def test_every_seed_is_valid(name: str) -> None:
    """Each target's seeds pass its check (else the fuzzer would have nothing valid to mutate)."""
    target = load(name)
    for seed in target.seeds():
        target.check(seed)


def json_containers(inner: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Lists and objects of ``inner`` (a named function: Hypothesis reads a lambda's source to check it)."""
    return st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=8), inner, max_size=3))


JSON_LEAVES = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=20), st.sampled_from(mutate.WORDS)
)
JSON = st.recursive(JSON_LEAVES, json_containers, max_leaves=10)
COMMAND_FIELDS = ["schema", "command", "args", "site", "serial", "client_token", "key_id", "nonce",
                  "issued_at", "expires_at", "signature", "to", "key", "extra"]  # fmt: skip
INSTANTS = st.datetimes(timezones=st.timezones() | st.none()).map(lambda d: d.isoformat())


@FUZZ
@given(
    seed=st.sampled_from(command.seeds()),
    changes=st.dictionaries(st.sampled_from(COMMAND_FIELDS), JSON | INSTANTS, min_size=1, max_size=3),
    drop=st.lists(st.sampled_from(COMMAND_FIELDS), max_size=2),
    in_args=st.booleans(),
)
def test_a_command_with_any_field_changed_is_checked_without_raising(
    seed: bytes, changes: dict[str, Any], drop: list[str], in_args: bool
) -> None:
    """A signed command with fields replaced by any JSON (re-signed or not) is accepted or refused."""
    document = json.loads(seed[2:])
    place = document["args"] if in_args else document
    for field in drop:
        place.pop(field, None)
    place.update(changes)
    command.check(seed[:2] + json.dumps(document).encode())


FIELDS_AT = {  # where in TUF metadata: its signed part, the image's target entry, the image's release facts
    "signed": ["_type", "spec_version", "version", "expires", "consistent_snapshot", "keys", "roles", "meta",
               "targets", "delegations", "extra"],
    "target": ["length", "hashes", "custom", "extra"],
    "custom": ["version", "build", "kind", "date", "db_schema", "models", "phone_firmware", "extra"],
}  # fmt: skip
RESIGNED = [s for s in release.seeds() if s[1] & release.RESIGN]


@FUZZ
@given(place=st.sampled_from(sorted(FIELDS_AT)), data=st.data())
def test_release_metadata_with_any_field_changed_and_signed_again_is_verified_or_refused(
    place: str, data: st.DataObject
) -> None:
    """TUF metadata with fields replaced by any JSON, signed again, is verified or a RELEASE_* error."""
    targets = [s for s in RESIGNED if release.FILES[s[0]] == "targets"]
    seed = data.draw(st.sampled_from(RESIGNED if place == "signed" else targets), label="seed")
    fields = st.sampled_from(FIELDS_AT[place])
    changes = data.draw(st.dictionaries(fields, JSON | INSTANTS, min_size=1, max_size=3), label="changes")
    drop = data.draw(st.lists(fields, max_size=2), label="drop")
    document = json.loads(seed[2:])
    where = document["signed"]
    if place != "signed":
        where = where["targets"][f"images/{release.BUILD}.img"]
        where = where["custom"] if place == "custom" else where
    for field in drop:
        where.pop(field, None)
    where.update(changes)
    release.check(seed[:2] + json.dumps(document).encode())


TOML_TEXT = st.text(st.characters(exclude_categories=("Cs",)), max_size=20)  # TOML holds no lone surrogate
TOML_VALUES = st.one_of(
    st.booleans(), st.integers(), st.floats(), TOML_TEXT,
    st.sampled_from([*mutate.WORDS, "mqtt://h:1", "mqtts://[::1]:8883", "h:99999", "debug", "5", "3.1.1"]),
    st.lists(st.integers(), max_size=2),
)  # fmt: skip


@FUZZ
@given(st.dictionaries(st.sampled_from([*AgentConfig.model_fields, "extra"]), TOML_VALUES, max_size=8))
def test_a_config_file_of_any_values_is_loaded_or_refused_in_one_line(values: dict[str, Any]) -> None:
    """A configuration file setting its options to values of any type loads or is refused, never raised."""
    config.check(
        "".join(f"{key} = {structure.toml_value(value)}\n" for key, value in values.items()).encode()
    )


@pytest.mark.parametrize("name", [n for n in TARGETS if getattr(load(n), "FORMAT", "") == "toml"])
@FUZZ
@given(seed=st.integers(0, 2**32))
def test_the_structured_mutator_writes_toml_that_reads_back(name: str, seed: int) -> None:
    """A TOML seed with one node changed is written as TOML that reads back with the same keys."""
    target = load(name)
    document = tomllib.loads(target.seeds()[seed % len(target.seeds())].decode())
    changed = structure.mutate_tree(document, random.Random(seed), ["w"], lambda b, n: b[::-1], True)
    if isinstance(changed, dict):
        assert tomllib.loads(structure.dump_toml(changed).decode()).keys() == changed.keys()
