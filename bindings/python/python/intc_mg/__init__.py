"""MongoDB write descriptions for ``intc.IncClient.mongo_exec``.

Each ``mg_*`` function returns the BSON bytes of one write, encoded with
pymongo's ``bson`` package, so every value pymongo can store works: dict,
SON, RawBSONDocument, ObjectId, datetime, Decimal128, Binary, Int64,
Regex, uuid.UUID (as a standard subtype-4 Binary), ...

>>> ic.mongo_exec(path, 'db', 'coll', mg_insert_one({'_id': 1, 'name': 'Ada'}))

The description is ``{op: "insert_one", document}``, ``{op: "insert_many",
documents}``, ``{op: "update_one" | "update_many", filter, update, upsert}``,
``{op: "replace_one", filter, replacement, upsert}``, ``{op: "delete_one" |
"delete_many", filter}`` or ``{op: "drop"}``. Arguments are checked here as
pymongo's own ``update_one``/``replace_one`` check them; bad ones raise
``intc.InvalidOperation`` (a ``ValueError``).

The names of the original ``intc_mg`` work unchanged, with their positional
arguments and meanings: ``mg_insert(data)``, ``mg_insert_many(data)``,
``mg_delete_many(cond)``, ``mg_drop()``, ``mg_udpate(cond, new_kv, iine)``
(sic; ``mg_update`` beside it) and ``mg_update_many(cond, new_kv, iine)``,
where ``new_kv`` without update operators means "set these fields"
(``{'$set': new_kv}``) and ``iine`` ("insert if not exists") is upsert.
A collection drop is destructive: the server applies it only where a rule
names it (docs/rules.md).
"""

from collections.abc import Mapping
from typing import Any, Iterable, List, Sequence, Union

import bson
from bson.binary import UuidRepresentation
from bson.codec_options import CodecOptions
from bson.errors import BSONError

from intc._errors import InvalidOperation

__all__ = [
    "CODEC_OPTIONS",
    "mg_delete_many",
    "mg_delete_one",
    "mg_drop",
    "mg_insert",
    "mg_insert_many",
    "mg_insert_one",
    "mg_replace_one",
    "mg_udpate",
    "mg_update",
    "mg_update_many",
    "mg_update_one",
]

#: How values are encoded: pymongo's defaults, and uuid.UUID as the standard
#: (subtype 4) binary UUID.
CODEC_OPTIONS: "CodecOptions[Any]" = CodecOptions(uuid_representation=UuidRepresentation.STANDARD)

Document = Mapping[str, Any]
Update = Union[Mapping[str, Any], Sequence[Mapping[str, Any]]]


def _doc(what: str, value: Any) -> Document:
    if not isinstance(value, Mapping):
        raise InvalidOperation(
            f"{what} must be a document (dict, SON, RawBSONDocument...), "
            f"not {type(value).__name__}"
        )
    return value


def _first_key(doc: Document) -> Union[str, None]:
    for key in doc:
        return key
    return None


def _upsert(value: Any) -> bool:
    if not isinstance(value, bool):
        raise InvalidOperation(f"upsert must be a bool, not {type(value).__name__}")
    return value


def _encode(write: Document) -> bytes:
    try:
        return bson.encode(write, codec_options=CODEC_OPTIONS)
    except (BSONError, TypeError, ValueError, OverflowError) as e:
        raise InvalidOperation(f"cannot encode the {write['op']} write as BSON: {e}") from e


def mg_insert_one(doc: Document) -> bytes:
    """Insert ``doc``."""
    return _encode({"op": "insert_one", "document": _doc("doc", doc)})


def mg_insert_many(docs: Iterable[Document]) -> bytes:
    """Insert every document of ``docs`` (at least one)."""
    if isinstance(docs, (Mapping, str, bytes)):
        raise InvalidOperation(
            f"docs must be a list or another iterable of documents, not {type(docs).__name__}"
        )
    try:
        items: List[Document] = [_doc(f"docs[{i}]", d) for i, d in enumerate(docs)]
    except TypeError as e:
        raise InvalidOperation(f"docs must be an iterable of documents: {e}") from e
    if not items:
        raise InvalidOperation("mg_insert_many needs at least one document")
    return _encode({"op": "insert_many", "documents": items})


def _update(
    op: str, filter: Document, update: Update, upsert: bool, set_fields: bool = False
) -> bytes:
    filt = _doc("filter", filter)
    if isinstance(update, Mapping):
        first = _first_key(update)
        if first is None:
            raise InvalidOperation("update is empty: give update operators such as $set")
        if set_fields and not first.startswith("$"):
            # The original intc_mg: fields without operators are set.
            update = {"$set": update}
        elif not first.startswith("$"):
            raise InvalidOperation(
                f"update must hold update operators such as $set (found {first!r}); "
                "use mg_replace_one to replace a whole document"
            )
        upd: Any = update
    elif isinstance(update, (list, tuple)):
        if not update:
            raise InvalidOperation("an update pipeline needs at least one stage")
        upd = [_doc(f"update[{i}]", stage) for i, stage in enumerate(update)]
    else:
        raise InvalidOperation(
            f"update must be a document of operators or a pipeline (a list of stages), "
            f"not {type(update).__name__}"
        )
    return _encode({"op": op, "filter": filt, "update": upd, "upsert": _upsert(upsert)})


def mg_update_one(filter: Document, update: Update, upsert: bool = False) -> bytes:
    """Update the first document matching ``filter`` with ``update``: update
    operators (``{'$set': {...}}``) or an aggregation pipeline (a list of
    stages). With ``upsert``, insert when nothing matches."""
    return _update("update_one", filter, update, upsert)


def mg_update_many(filter: Document, update: Update, upsert: bool = False) -> bytes:
    """As ``mg_update_one``, for every matching document; as in the original
    ``intc_mg``, ``update`` without operators sets those fields."""
    return _update("update_many", filter, update, upsert, set_fields=True)


def mg_update(cond: Document, new_kv: Update, iine: bool = False) -> bytes:
    """The original ``intc_mg`` update: the first document matching ``cond``
    gets the fields of ``new_kv`` (``{'$set': new_kv}`` unless it holds
    update operators); ``iine`` (insert if not exists) is upsert."""
    return _update("update_one", cond, new_kv, iine, set_fields=True)


#: The original ``intc_mg`` spelling of ``mg_update``, kept so that old
#: code runs unchanged.
mg_udpate = mg_update


def mg_insert(data: Document) -> bytes:
    """The original ``intc_mg`` name of ``mg_insert_one``."""
    return mg_insert_one(data)


def mg_drop() -> bytes:
    """Drop the collection. Destructive: the server applies it only where a
    rule names the ``drop`` operation; by default it is dropped (not
    applied) and counted."""
    return _encode({"op": "drop"})


def mg_replace_one(filter: Document, replacement: Document, upsert: bool = False) -> bytes:
    """Replace the first document matching ``filter`` with ``replacement``
    (which may not hold update operators)."""
    filt = _doc("filter", filter)
    repl = _doc("replacement", replacement)
    first = _first_key(repl)
    if first is not None and first.startswith("$"):
        raise InvalidOperation(
            f"replacement may not hold update operators (found {first!r}); use mg_update_one"
        )
    return _encode(
        {"op": "replace_one", "filter": filt, "replacement": repl, "upsert": _upsert(upsert)}
    )


def mg_delete_one(filter: Document) -> bytes:
    """Delete the first document matching ``filter``."""
    return _encode({"op": "delete_one", "filter": _doc("filter", filter)})


def mg_delete_many(filter: Document) -> bytes:
    """Delete every document matching ``filter`` (``{}`` matches all)."""
    return _encode({"op": "delete_many", "filter": _doc("filter", filter)})
