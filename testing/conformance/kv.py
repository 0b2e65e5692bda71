"""The conformance kit's key/value area: ``insert``, ``get``, ``delete``, ``apply`` and ``last_applied``."""

from __future__ import annotations

from typing import Any

from segwal.testing.conformance.base import ContractBase, Harness, _entry, make_entries
from segwal.types import LogId


class KeyValueContract(ContractBase):
    """Key/value reads and writes, and ``apply`` with the ``last_applied`` it records."""

    # -- insert, get, delete ------------------------------------------------

    def test_insert_returns_the_previous_value(self, h: Harness) -> None:
        h.keys |= {b"k", b"other"}
        assert h.engine.insert(b"k", b"v1") is None
        assert h.engine.insert(b"k", b"v2") == b"v1"
        assert h.engine.get(b"k") == b"v2"
        assert h.engine.get(b"other") is None
        state = h.check_reopen()
        assert state.kv == ((b"k", b"v2"), (b"other", None))
        assert h.engine.insert(b"k", b"v3") == b"v2"

    def test_delete_returns_the_previous_value(self, h: Harness) -> None:
        h.keys |= {b"k", b"never"}
        h.engine.insert(b"k", b"v")
        assert h.engine.delete(b"k") == b"v"
        assert h.engine.delete(b"k") is None
        assert h.engine.delete(b"never") is None
        assert h.check_reopen().kv == ((b"k", None), (b"never", None))
        assert h.engine.insert(b"k", b"again") is None

    def test_empty_and_binary_values(self, h: Harness) -> None:
        key = bytes(range(256))
        h.keys |= {b"empty", key}
        assert h.engine.insert(b"empty", b"") is None
        assert h.engine.get(b"empty") == b""  # empty, not missing
        h.engine.insert(key, key[::-1] * 10)
        state = h.check_reopen()
        assert dict(state.kv) == {b"empty": b"", key: key[::-1] * 10}
        assert h.engine.delete(b"empty") == b""

    def test_many_keys_with_overwrites_and_deletes(self, h: Harness) -> None:
        model: dict[bytes, bytes] = {}
        for round_ in range(4):
            for i in range(150):
                key = b"key-%d" % i
                h.keys.add(key)
                if (i + round_) % 5 == 0:
                    assert h.engine.delete(key) == model.pop(key, None)
                else:
                    value = b"v%d-%d" % (round_, i) * (1 + i % 7)
                    assert h.engine.insert(key, value) == model.get(key)
                    model[key] = value
        state = h.check_reopen()
        assert dict(state.kv) == {k: model.get(k) for k in h.keys}

    def test_kv_data_is_apart_from_the_log(self, h: Harness) -> None:
        h.keys.add(b"1")
        h.engine.insert(b"1", b"kv")
        h.engine.persist_entries(make_entries(1, 3))
        assert h.engine.get(b"1") == b"kv"
        assert h.engine.entry(1) == _entry(1, 1)
        h.engine.truncate(1)
        h.engine.purge_logs(LogId(1, 10))
        state = h.check_reopen()
        assert state.kv == ((b"1", b"kv"),) and state.entries == ()

    def test_kv_rejects_non_bytes_and_changes_nothing(self, h: Harness) -> None:
        h.keys.add(b"k")
        h.engine.insert(b"k", b"v")
        bad: Any = "text"
        h.rejects((TypeError, ValueError), lambda: h.engine.insert(bad, b"v"))
        h.rejects((TypeError, ValueError), lambda: h.engine.insert(b"k", bad))
        h.rejects((TypeError, ValueError), lambda: h.engine.insert(b"k", None))  # type: ignore[arg-type]

    # -- apply and last_applied ---------------------------------------------

    def test_apply_sets_and_deletes_and_records_last_applied(self, h: Harness) -> None:
        h.keys |= {b"a", b"b", b"c"}
        h.engine.insert(b"c", b"old")
        h.engine.apply([(b"a", b"1"), (b"b", b"2"), (b"c", None)], applied=LogId(2, 7))
        assert h.engine.last_applied() == LogId(2, 7)
        state = h.check_reopen()
        assert state.kv == ((b"a", b"1"), (b"b", b"2"), (b"c", None))
        assert state.last_applied == LogId(2, 7)

    def test_apply_without_applied_keeps_last_applied(self, h: Harness) -> None:
        h.keys.add(b"a")
        h.engine.apply([(b"a", b"1")], applied=LogId(1, 3))
        h.engine.apply([(b"a", b"2")])
        state = h.check_reopen()
        assert state.last_applied == LogId(1, 3) and state.kv == ((b"a", b"2"),)

    def test_apply_with_no_changes_records_last_applied(self, h: Harness) -> None:
        h.engine.apply([], applied=LogId(4, 40))
        assert h.check_reopen().last_applied == LogId(4, 40)
        h.engine.apply(iter(()), applied=LogId(4, 41))
        assert h.check_reopen().last_applied == LogId(4, 41)

    def test_apply_later_changes_win(self, h: Harness) -> None:
        h.keys |= {b"k", b"j"}
        h.engine.apply([(b"k", b"1"), (b"k", b"2"), (b"j", b"x"), (b"j", None)], applied=LogId(1, 1))
        assert h.check_reopen().kv == ((b"j", None), (b"k", b"2"))

    def test_apply_accepts_a_generator(self, h: Harness) -> None:
        h.keys |= {b"g0", b"g1", b"g2"}
        h.engine.apply(((b"g%d" % i, b"%d" % i) for i in range(3)), applied=LogId(1, 2))
        assert h.check_reopen().kv == ((b"g0", b"0"), (b"g1", b"1"), (b"g2", b"2"))

    def test_apply_is_all_or_nothing(self, h: Harness) -> None:
        h.keys |= {b"a", b"b"}
        h.engine.apply([(b"a", b"1")], applied=LogId(1, 1))
        bad: Any = [(b"a", b"2"), (b"b", b"3"), ("not bytes", b"4")]
        h.rejects((TypeError, ValueError), lambda: h.engine.apply(bad, applied=LogId(1, 2)))
        assert h.engine.get(b"a") == b"1" and h.engine.get(b"b") is None
        assert h.engine.last_applied() == LogId(1, 1)

    def test_apply_many_then_reopen(self, h: Harness) -> None:
        for n in range(1, 60):
            key = b"n%d" % (n % 13)
            h.keys.add(key)
            h.engine.apply([(key, b"%d" % n), (b"n%d" % ((n + 5) % 13), None)], applied=LogId(1, n))
        before = h.state()
        assert before.last_applied == LogId(1, 59)
        assert h.check_reopen() == before
