import random
from datetime import datetime, timezone

import msgspec
import pytest
from aiokafka.partitioner import DefaultPartitioner

from events.codec import DecodeError, _UPCASTERS, decode, encode, upcaster
from events.log import KeyPartitioner
from events.position import Position
from events.types import SCHEMA_VERSIONS, MovieCatalogued, ReviewRetracted, ReviewSubmitted, schema_version

NOW = datetime(2024, 5, 1, 12, 0, tzinfo=timezone.utc)


def submitted(**overrides):
    fields = dict(event_id="e1", occurred_at=NOW, recorded_at=NOW, user_id="u", movie_id="m",
                  rating=4.5, reviewed_at=NOW)
    return ReviewSubmitted(**{**fields, **overrides})


@pytest.mark.parametrize("event", [
    submitted(summary="s", text="t"),
    ReviewRetracted(event_id="e2", occurred_at=NOW, recorded_at=NOW, user_id="u", movie_id="m"),
    MovieCatalogued(event_id="e3", occurred_at=NOW, recorded_at=NOW, movie_id="m", title="Heat", year=1995,
                    genres=("Crime",)),
])
def test_every_event_round_trips(event):
    assert decode(encode(event)) == event


def test_wire_format_is_flat_with_type_tag_and_envelope():
    wire = msgspec.json.decode(encode(submitted()))
    assert wire["type"] == "ReviewSubmitted"
    assert {"event_id", "schema_version", "occurred_at", "recorded_at", "user_id", "rating"} <= set(wire)
    assert submitted().key == "u"


@pytest.mark.parametrize("data,reason", [
    (b"\x00garbage", "undecodable"),
    (b'{"type": "Nope"}', "unknown event type"),
    (encode(submitted()).replace(b'"rating":4.5', b'"rating":7.0'), "rating"),
    (encode(submitted()).replace(b'"rating":4.5', b'"rating":3.3'), "rating"),
    (encode(submitted()).replace(b'"schema_version":1', b'"schema_version":9'), "newer than this code"),
    (encode(submitted()).replace(b'"schema_version":1', b'"schema_version":0'), "no upcaster"),
    (encode(submitted()).replace(b'"schema_version":1,', b''), "without a schema_version"),
])
def test_invalid_records_raise_decode_error_with_reason(data, reason):
    with pytest.raises(DecodeError, match=reason):
        decode(data)


def test_upcaster_lifts_an_old_event(monkeypatch):
    monkeypatch.setitem(_UPCASTERS, ("ReviewRetracted", 0), None)

    @upcaster("ReviewRetracted", 0)
    def rename_member(raw: dict) -> dict:
        raw["user_id"] = raw.pop("member")
        return raw

    old = b'{"type":"ReviewRetracted","schema_version":0,"event_id":"e","occurred_at":"2024-01-01T00:00:00Z",' \
          b'"recorded_at":"2024-01-01T00:00:00Z","member":"ana","movie_id":"m"}'
    event = decode(old)
    assert (event.user_id, event.schema_version) == ("ana", 1)


def test_an_event_type_writes_the_version_it_declares():
    class RetractedV2(ReviewRetracted, frozen=True, kw_only=True, tag="RetractedV2"):
        schema_version: int = 2

    event = RetractedV2(event_id="e", occurred_at=NOW, recorded_at=NOW, user_id="u", movie_id="m")
    assert schema_version(RetractedV2) == 2 == msgspec.json.decode(encode(event))["schema_version"]
    assert SCHEMA_VERSIONS == {"ReviewSubmitted": 1, "ReviewRetracted": 1, "MovieCatalogued": 1, "SubjectForgotten": 1}


def test_position_token_round_trips_and_rejects_garbage():
    assert Position.from_token(Position(3, 12345).token()) == Position(3, 12345)
    for bad in ("", "!!", Position(1, 2).token() + "x"):
        with pytest.raises(ValueError):
            Position.from_token(bad)


def test_the_key_partitioner_places_keys_as_the_default_partitioner_does():
    """A user's events must land where the log's earlier ones did: the remembered hash changes nothing."""
    cached, default, rng = KeyPartitioner(keys=8), DefaultPartitioner(), random.Random(3)
    keys = [rng.randbytes(rng.randrange(1, 40)) for _ in range(50)] + [b"movie:1", "ü".encode()]
    for partitions in ([0], list(range(3)), list(range(12))):
        for key in keys + keys:  # the second round is read from the remembered hashes (8 at most)
            assert cached(key, partitions, partitions) == default(key, partitions, partitions)
    assert cached(None, [4, 5], [5]) == 5  # no key: any available partition, as the default does
