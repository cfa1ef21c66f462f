"""What the compiled encoders assume of a record, checked at import.

`_nmsgpack.c` and `_cborpack.c` read records by field number and write the
pair and the unanswered query in fixed shapes; they expose those numbers,
shapes and type numbers, and `record.check_compiled` (called where
nmsg.py and spool.py import them) refuses a module built for others, so a
stale or edited build stops the sensor at start instead of writing
records that read back as something else.
"""

from __future__ import annotations

import types

import pytest

from sensor.records.record import PAIR_FIELDS, UNANSWERED_FIELDS, Field, RecordType, check_compiled
from sensor.spool import _cborpack, _nmsgpack

MODULES = [_nmsgpack, _cborpack]


def _copy(module, **changes) -> types.SimpleNamespace:
    """The module's exposed assumptions, some changed, under its name."""
    names = [name for name in dir(module) if name.isupper()]
    return types.SimpleNamespace(__name__=module.__name__, **{n: getattr(module, n) for n in names} | changes)


@pytest.mark.parametrize("module", MODULES, ids=lambda m: m.__name__)
def test_the_built_modules_assume_the_records_numbers_and_shapes(module):
    check_compiled(module)
    assert {name: getattr(Field, name) for name in module.FIELDS} == module.FIELDS
    assert set(module.FIELDS) == {name for name in vars(Field) if not name.startswith("_")}
    assert max(module.FIELDS.values()) + 1 == module.FIELD_COUNT
    assert (module.PAIR_FIELDS, module.UNANSWERED_FIELDS) == (PAIR_FIELDS, UNANSWERED_FIELDS)
    assert module.TYPE_UDP_QUERY_RESPONSE == RecordType.UDP_QUERY_RESPONSE


@pytest.mark.parametrize("module", MODULES, ids=lambda m: m.__name__)
@pytest.mark.parametrize(
    "change",
    [
        lambda m: {"FIELDS": m.FIELDS | {"QNAME": 23}},  # one number moved
        lambda m: {"FIELDS": {k: v for k, v in m.FIELDS.items() if k != "TIMEOUT"}},  # one field unknown
        lambda m: {"FIELD_COUNT": m.FIELD_COUNT - 1},  # its table of keys one short
        lambda m: {"PAIR_FIELDS": m.PAIR_FIELDS[:-1]},  # another pair shape
        lambda m: {"UNANSWERED_FIELDS": (*m.UNANSWERED_FIELDS, Field.RCODE)},
        lambda m: {"TYPE_UDP_QUERY_RESPONSE": RecordType.TCP},  # another type number
    ],
    ids=["field number", "field missing", "field count", "pair shape", "unanswered shape", "type number"],
)
def test_a_module_built_for_another_layout_is_refused_at_import(module, change):
    with pytest.raises(ImportError, match=rf"{module.__name__} was built for another record layout .*rebuild it"):
        check_compiled(_copy(module, **change(module)))
